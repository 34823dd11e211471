"""Quality control of one sample, as the paper does it with scanpy, every threshold a parameter.

Order of operations (see :func:`run_qc`):

1. QC metrics of every cell on the input matrix (scanpy ``calculate_qc_metrics``):
   ``n_genes_by_counts``, ``total_counts``, ``pct_counts_mt``.
2. Cell filters, each judged on those metrics: fewer than ``min_genes`` genes, more than
   ``max_genes`` genes, more than ``max_counts`` counts, ``pct_counts_mt >= max_mito_pct``.
3. Gene filter on the cells kept: genes detected (> 0) in fewer than ``min_cells`` cells go.
4. The metrics are recomputed on the filtered matrix and stored in obs/var.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scmaskgan.core.config import QCParams
from scmaskgan.errors import StepError

log = logging.getLogger(__name__)

MITO_PREFIXES = ("MT-", "mt-")


def detect_mito_prefix(genes: Sequence[str], prefix: str | None = None) -> str | None:
    """The mitochondrial gene prefix: ``prefix`` when given, else ``'MT-'`` or ``'mt-'``
    (whichever names more genes), else ``None`` (no mitochondrial genes)."""
    if prefix:
        return prefix
    names = pd.Index(genes).astype(str)
    hits = {p: int(names.str.startswith(p).sum()) for p in MITO_PREFIXES}
    best = max(hits, key=hits.__getitem__)
    return best if hits[best] > 0 else None


def _add_metrics(adata: ad.AnnData, prefix: str | None) -> None:
    """scanpy QC metrics in obs/var; ``pct_counts_mt`` is 0 without mitochondrial genes."""
    import scanpy as sc

    names = adata.var_names.astype(str)
    adata.var["mt"] = names.str.startswith(prefix) if prefix else np.zeros(adata.n_vars, dtype=bool)
    qc_vars = ["mt"] if adata.var["mt"].any() else []
    sc.pp.calculate_qc_metrics(adata, qc_vars=qc_vars, percent_top=None, log1p=False, inplace=True)
    if not qc_vars:
        adata.obs["total_counts_mt"] = 0.0
        adata.obs["pct_counts_mt"] = 0.0


def run_qc(adata: ad.AnnData, params: QCParams) -> tuple[ad.AnnData, dict[str, Any]]:
    """Filter cells and genes of one sample.

    Parameters
    ----------
    adata
        Cells x genes counts (CSR). QC metrics of the unfiltered cells are added to its
        obs/var (as scanpy does), which :func:`plot_qc` draws.
    params
        Thresholds (:class:`~scmaskgan.core.config.QCParams`).

    Returns
    -------
    ``(filtered, summary)``: the filtered AnnData (counts in X as float32 CSR, metrics
    recomputed in obs/var) and a JSON-ready summary: cells/genes before and after, cells
    failing each cell filter (a cell may fail several), genes removed, mitochondrial prefix.

    Raises
    ------
    StepError
        When fewer than ``params.min_cells_after`` cells or fewer than 2 genes remain.
    """
    prefix = detect_mito_prefix(adata.var_names, params.mito_prefix)
    n_mito = int(adata.var_names.astype(str).str.startswith(prefix).sum()) if prefix else 0
    if n_mito == 0:
        log.warning("no mitochondrial genes (prefix %s): the max_mito_pct filter is skipped", prefix or "MT-/mt-")
    _add_metrics(adata, prefix)
    obs = adata.obs
    fails = {"min_genes": (obs["n_genes_by_counts"] < params.min_genes).to_numpy()}
    if params.max_genes is not None:
        fails["max_genes"] = (obs["n_genes_by_counts"] > params.max_genes).to_numpy()
    if params.max_counts is not None:
        fails["max_counts"] = (obs["total_counts"] > params.max_counts).to_numpy()
    if n_mito:
        fails["max_mito_pct"] = (obs["pct_counts_mt"] >= params.max_mito_pct).to_numpy()
    keep_cells = ~np.logical_or.reduce(list(fails.values()))
    x = sp.csr_matrix(adata.X)
    if not keep_cells.all():
        x = x[keep_cells]
    detected_in = np.bincount(x.indices[x.data > 0], minlength=adata.n_vars)
    keep_genes = detected_in >= params.min_cells
    summary: dict[str, Any] = {
        "cells_before": int(adata.n_obs),
        "genes_before": int(adata.n_vars),
        "cells_after": int(keep_cells.sum()),
        "genes_after": int(keep_genes.sum()),
        "cells_failing": {name: int(mask.sum()) for name, mask in fails.items()},
        "cells_removed": int((~keep_cells).sum()),
        "genes_removed_min_cells": int((~keep_genes).sum()),
        "mito_prefix": prefix if n_mito else None,
        "n_mito_genes": n_mito,
    }
    _check_enough(summary, params)
    if not keep_genes.all():
        x = x[:, keep_genes]
    filtered = ad.AnnData(
        X=x.astype(np.float32, copy=False), obs=adata.obs.loc[keep_cells].copy(), var=adata.var.loc[keep_genes].copy()
    )
    _add_metrics(filtered, prefix if n_mito else None)
    summary["median_genes_per_cell_after"] = float(filtered.obs["n_genes_by_counts"].median())
    summary["median_counts_per_cell_after"] = float(filtered.obs["total_counts"].median())
    return filtered, summary


def _check_enough(summary: dict[str, Any], params: QCParams) -> None:
    cells, genes = summary["cells_after"], summary["genes_after"]
    if cells >= params.min_cells_after and genes >= 2:
        return
    failing = ", ".join(f"{k} {v}" for k, v in summary["cells_failing"].items())
    raise StepError(
        f"QC left {cells} cells and {genes} genes of {summary['cells_before']} x {summary['genes_before']} "
        f"(need >= {params.min_cells_after} cells and >= 2 genes; cells failing: {failing}); "
        "relax min_genes/max_mito_pct/min_cells or check the input"
    )


def plot_qc(obs: pd.DataFrame, params: QCParams, summary: dict[str, Any], path: str | Path, title: str = "") -> None:
    """Histograms of genes per cell, counts per cell and mitochondrial % with the thresholds drawn.

    Parameters
    ----------
    obs
        QC metrics of the unfiltered cells (the input's obs after :func:`run_qc`).
    params, summary
        The thresholds and :func:`run_qc`'s summary (for the caption).
    path
        PNG file to write.
    title
        Start of the heading above the panels (the sample's name).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    panels: list[tuple[str, str, list[float | None]]] = [
        ("n_genes_by_counts", "genes per cell", [params.min_genes, params.max_genes]),
        ("total_counts", "counts per cell", [params.max_counts]),
        ("pct_counts_mt", "mitochondrial counts (%)",
         [params.max_mito_pct] if summary["n_mito_genes"] else []),
    ]
    for ax, (column, label, thresholds) in zip(axes, panels, strict=True):
        ax.hist(obs[column].to_numpy(), bins=50, color="#4c78a8")
        for t in thresholds:
            if t is not None:
                ax.axvline(t, color="#e45756", linestyle="--", linewidth=1.5)
        ax.set_xlabel(label)
        ax.set_ylabel("cells")
    fig.suptitle(
        f"{title} QC: {summary['cells_before']} -> {summary['cells_after']} cells, "
        f"{summary['genes_before']} -> {summary['genes_after']} genes (dashed: thresholds)".strip()
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
