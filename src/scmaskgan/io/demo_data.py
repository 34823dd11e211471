"""Real demo data: counts recovered from scanpy's bundled ``pbmc68k_reduced``, split into samples."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scmaskgan.core.matrix import dense
from scmaskgan.errors import InputError, StepError
from scmaskgan.io.atomic import atomic_path, write_text_atomic


def pbmc_counts() -> ad.AnnData:
    """700 real PBMCs x 765 genes as integer counts, ``obs['cell_type']`` from ``bulk_labels``.

    scanpy ships the data log-normalised; the counts are recovered as
    ``round(expm1(raw.X) * n_counts / 1e4)`` and checked to be integral (to float32 precision).
    """
    import scanpy as sc

    ref = sc.datasets.pbmc68k_reduced()
    raw = ref.raw.to_adata()
    scaled = np.expm1(dense(raw.X)) * ref.obs["n_counts"].to_numpy()[:, None] / 1e4
    counts = np.round(scaled)
    # raw.X is float32: allow its relative rounding error on large counts
    if np.any(np.abs(scaled - counts) > 0.05 + 1e-3 * counts):
        raise StepError("pbmc68k_reduced: recovered counts are not integral; scanpy's data changed")
    adata = ad.AnnData(
        X=sp.csr_matrix(counts.astype(np.float32)),
        obs=ref.obs[["bulk_labels"]].rename(columns={"bulk_labels": "cell_type"}).copy(),
        var=raw.var[[]].copy(),
    )
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str).astype("category")
    return adata


#: File formats of the demo samples in turn: AnnData, and GEO-style gzipped CSV (genes in rows).
_DEMO_FORMATS = ("h5ad", "csv.gz")
MAX_DEMO_SAMPLES = 7


def split_stratified(labels: np.ndarray, n_parts: int, seed: int = 0) -> np.ndarray:
    """Assign cells to ``n_parts`` parts so that every label is spread evenly (seeded).

    Returns
    -------
    The part (0 .. n_parts - 1) of every cell.
    """
    rng = np.random.default_rng(seed)
    part = np.empty(len(labels), dtype=np.int64)
    for label in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == label))
        part[idx] = (np.arange(idx.size) + rng.integers(n_parts)) % n_parts
    return part


def write_demo(outdir: str | Path, n_samples: int = 2, seed: int = 0) -> dict[str, Path]:
    """Write a multi-sample demo from :func:`pbmc_counts` and its samplesheet.

    The 700 PBMCs are split into ``n_samples`` samples (seeded, stratified by cell type).
    Samples alternate between ``sample<X>.h5ad`` (labels in ``obs['cell_type']``) and
    ``sample<X>.csv.gz`` (GEO layout: genes in rows, first column gene ids; labels in
    ``sample<X>.labels.csv`` with columns ``cell,label``), so the demo exercises both
    readers and both kinds of ``label_key``.

    Parameters
    ----------
    outdir
        Folder to write into (created).
    n_samples
        Number of samples, 1 to :data:`MAX_DEMO_SAMPLES`.
    seed
        Seed of the split.

    Returns
    -------
    Paths keyed by sample id, plus ``'samplesheet'`` (``sample,path,label_key,batch`` with
    absolute paths, so it works from any working folder and with Nextflow).
    """
    from scmaskgan.io.h5ad import write_h5ad

    if not 1 <= n_samples <= MAX_DEMO_SAMPLES:
        raise InputError(f"n_samples={n_samples}: the demo makes 1 to {MAX_DEMO_SAMPLES} samples")
    outdir = Path(outdir).resolve()
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"{outdir}: exists and is not a folder")
    counts = pbmc_counts()
    part = split_stratified(counts.obs["cell_type"].to_numpy(), n_samples, seed)
    written: dict[str, Path] = {}
    rows = [["sample", "path", "label_key", "batch"]]
    for i in range(n_samples):
        sid = f"sample{chr(ord('A') + i)}"
        sample = counts[part == i].copy()
        if _DEMO_FORMATS[i % 2] == "h5ad":
            path = write_h5ad(sample, outdir / f"{sid}.h5ad")
            label_key = "cell_type"
        else:
            path = outdir / f"{sid}.csv.gz"
            table = pd.DataFrame(
                sample.X.toarray().T.astype(np.int64), index=sample.var_names, columns=sample.obs_names
            )
            with atomic_path(path) as tmp:
                table.to_csv(tmp, index_label="gene", compression="gzip")
            labels = outdir / f"{sid}.labels.csv"
            with atomic_path(labels) as tmp:
                sample.obs["cell_type"].rename("label").to_csv(tmp, index_label="cell")
            label_key = str(labels)
        written[sid] = path
        rows.append([sid, str(path), label_key, f"batch{i + 1}"])
    sheet = io.StringIO()
    csv.writer(sheet, lineterminator="\n").writerows(rows)
    written["samplesheet"] = write_text_atomic(outdir / "samplesheet.csv", sheet.getvalue())
    return written
