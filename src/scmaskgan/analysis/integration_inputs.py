"""INTEGRATE's inputs: the imputed samples read and checked (shared genes, input scale,
labels), the samplesheet's metadata, and their concatenation into one AnnData
(:func:`concat_samples`).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import pandas as pd

from scmaskgan.errors import InputError
from scmaskgan.io.h5ad import read_h5ad
from scmaskgan.io.layout import SAMPLE_OUTPUTS
from scmaskgan.io.samplesheet import read_samplesheet

#: obs column of the cell labels (as written by QC/IMPUTE).
LABEL_KEY = "scmaskgan_label"


# ------------------------------------------------------------------ inputs
def sample_id_from_imputed(path: str | Path) -> str:
    """Sample id of an IMPUTE output: the file name without ``.imputed.h5ad`` (or ``.h5ad``)."""
    name = Path(path).name
    for suffix in (SAMPLE_OUTPUTS["impute"]["h5ad"].format(id=""), ".h5ad"):
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return name


def read_imputed(paths: Sequence[str | Path]) -> dict[str, ad.AnnData]:
    """Read IMPUTE outputs (``{id}.imputed.h5ad``), keyed by sample id, in the given order.

    Raises
    ------
    InputError
        A file is missing, unreadable or not an IMPUTE output, or a sample id repeats.
    """
    samples: dict[str, ad.AnnData] = {}
    origin: dict[str, Path] = {}
    for path in map(Path, paths):
        adata = read_h5ad(path)
        if "counts" not in adata.layers:
            raise InputError(f"{path}: no layers['counts'] (original counts); is it an IMPUTE output?")
        if not adata.var_names.is_unique:
            dup = adata.var_names[adata.var_names.duplicated()][0]
            raise InputError(f"{path}: gene {dup!r} appears more than once")
        sample_id = sample_id_from_imputed(path)
        if sample_id in samples:
            raise InputError(f"sample id {sample_id!r} is repeated: {origin[sample_id]} and {path}")
        samples[sample_id] = adata
        origin[sample_id] = path
    if not samples:
        raise InputError("no imputed samples given")
    return samples


def read_sample_metadata(samplesheet: str | Path) -> pd.DataFrame:
    """Per-sample metadata from a samplesheet: index ``sample``, column ``batch`` and extras.

    Every column except ``sample``, ``path`` and ``label_key`` is metadata (e.g. ``risk``);
    ``batch`` defaults to the sample id when absent or empty. The ``path`` column is not
    checked: INTEGRATE reads the imputed files, and the counts files need not be reachable
    from where it runs (a cloud executor stages the samplesheet alone).
    """
    samples = read_samplesheet(samplesheet, check_paths=False)
    rows = [{"sample": s.sample, "batch": s.batch or s.sample, **s.meta} for s in samples]
    return pd.DataFrame(rows, dtype=object).set_index("sample")


def _input_scale(adata: ad.AnnData) -> str:
    for key in ("scmaskgan", "scmaskgan_qc"):
        info = adata.uns.get(key)
        if isinstance(info, dict) and "input_scale" in info:
            return str(info["input_scale"])
    return "counts"


def _labels_shared(adata: ad.AnnData) -> bool:
    """True when the labels are given cell types (``uns['scmaskgan']['label_source']`` is
    ``obs:<column>`` or ``csv:<file>``), not per-sample automatic clusters (``leiden``)."""
    info = adata.uns.get("scmaskgan", {})
    source = str(info.get("label_source", "")) if isinstance(info, dict) else ""
    return LABEL_KEY in adata.obs and source.startswith(("obs:", "csv:"))


def _check_shared_genes(samples: dict[str, ad.AnnData]) -> None:
    genes = {sid: set(a.var_names) for sid, a in samples.items()}
    for a, b in itertools.combinations(genes, 2):
        if not genes[a] & genes[b]:
            raise InputError(
                f"samples {a!r} and {b!r} share no gene; check that every sample uses the same "
                "gene identifiers (symbols or Ensembl ids)"
            )


def concat_samples(
    samples: dict[str, ad.AnnData], *, gene_join: str = "inner", metadata: pd.DataFrame | None = None
) -> ad.AnnData:
    """Concatenate imputed samples into one AnnData.

    Parameters
    ----------
    samples
        Sample id -> IMPUTE output (X imputed, ``layers['counts']`` original).
    gene_join
        ``'inner'`` keeps the genes of every sample; ``'outer'`` keeps all genes and fills
        a gene missing from a sample with 0 (``var['missing_in']`` names those samples).
    metadata
        From :func:`read_sample_metadata`; its columns (``batch``, ``risk``...) go to obs.
        ``batch`` is the sample id when unset.

    Returns
    -------
    Cells of all samples (obs names ``{barcode}-{sample}``) with obs ``sample``, ``batch``,
    the metadata columns and ``scmaskgan_label`` (prefixed ``{sample}:`` when the labels
    are per-sample clusters), layers ``imputed`` and ``counts``.
    """
    _check_shared_genes(samples)
    scales = {sid: _input_scale(a) for sid, a in samples.items()}
    if len(set(scales.values())) > 1:
        raise InputError(f"samples have different input scales: {scales}")
    shared_labels = all(_labels_shared(a) for a in samples.values())
    has_labels = all(LABEL_KEY in a.obs for a in samples.values())
    parts = []
    for sid, a in samples.items():
        part = ad.AnnData(
            X=None, obs=pd.DataFrame(index=a.obs_names.copy()), var=pd.DataFrame(index=a.var_names.copy()),
            layers={"imputed": a.X, "counts": a.layers["counts"]},
        )
        if has_labels:
            labels = a.obs[LABEL_KEY].astype(str)
            part.obs[LABEL_KEY] = labels if shared_labels else sid + ":" + labels
        parts.append(part)
    ids = list(samples)
    fill = {"fill_value": 0} if gene_join == "outer" else {}
    combined = ad.concat(parts, join=gene_join, label="sample", keys=ids, index_unique="-", **fill)
    if combined.n_vars == 0:
        raise InputError(f"no gene is shared by all samples ({', '.join(ids)}); use --gene-join outer")
    combined.obs["sample"] = pd.Categorical(combined.obs["sample"].astype(str), categories=ids)
    if has_labels:
        combined.obs[LABEL_KEY] = combined.obs[LABEL_KEY].astype("category")
    missing = [[sid for sid in ids if g not in samples[sid].var_names] for g in combined.var_names]
    combined.var["missing_in"] = [",".join(m) for m in missing]
    combined.var["n_samples"] = [len(ids) - len(m) for m in missing]
    if metadata is not None:
        absent = [sid for sid in ids if sid not in metadata.index]
        if absent:
            raise InputError(f"sample {absent[0]!r} is not in the samplesheet")
        for column in metadata.columns:
            values = combined.obs["sample"].map(metadata[column].to_dict()).astype(str)
            combined.obs[column] = pd.Categorical(values)
    if "batch" not in combined.obs:
        combined.obs["batch"] = combined.obs["sample"]
    combined.uns["scmaskgan_integrate_input"] = {
        "input_scale": next(iter(scales.values())),
        "labels_shared": shared_labels and has_labels,
        "genes_missing": {sid: int(sum(sid in m for m in missing)) for sid in ids},
    }
    return combined


