"""Conditioning labels: given cell types or automatic Leiden clusters, with small labels merged.

Automatic labels (:func:`auto_labels`) follow the usual scanpy recipe: ``normalize_total``
to ``target_sum`` → ``log1p`` → the 2000 most variable genes (only when there are more) →
PCA → kNN graph (15 neighbours, Gaussian-kernel connectivities) → Leiden (igraph flavour,
2 iterations, undirected) at ``resolution`` (PREPARE's ``leiden_resolution``, default 0.8).
Every random step is seeded. The Gaussian kernel (``method='gauss'``) replaces scanpy's
default UMAP connectivities, whose numba kernels are compiled on first use in every process:
8-15 s and ~120 MiB per PREPARE, for clusters that agree with the known cell types as well
(``docs/method.md``, "Automatic labels").

A label with very few cells gives the conditional GAN almost nothing to learn from, so
:func:`merge_small_labels` merges every label with fewer than ``min_cells`` cells into the
label whose centroid (in PCA space) is nearest, smallest label first. Should every label
collapse into one, the GAN simply runs with a single label (unconditioned); that is valid.
Each merge is recorded (``label``, ``n_cells``, ``into``) and stored in ``{id}.images.h5``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anndata as ad
import numpy as np
import scipy.sparse as sp

from scmaskgan.core.matrix import lognormalise_in_place

log = logging.getLogger(__name__)

N_TOP_GENES = 2000
N_NEIGHBORS = 15
#: PCA densifies the log-normalised top genes up to this many entries (128 MB of float32).
DENSE_PCA_ENTRIES = 1 << 25


def pca_features(
    counts: ad.AnnData, *, n_pcs: int, seed: int, target_sum: float = 1e4, input_scale: str = "counts"
) -> np.ndarray:
    """PCA coordinates of cells (normalise, log1p, top variable genes, PCA); ``counts`` is left untouched.

    Parameters
    ----------
    counts
        Cells x genes counts (or log-normalised values with ``input_scale='lognorm'``).
    n_pcs
        Components wanted; capped at ``min(n_cells, n_genes) - 1``.
    seed
        Random state of the PCA.
    target_sum
        Library size of ``normalize_total``.
    input_scale
        ``'counts'`` or ``'lognorm'`` (normalisation and log1p are skipped).
    """
    import scanpy as sc

    x = counts.X
    work = ad.AnnData(X=sp.csr_matrix(x, dtype=np.float32, copy=True) if sp.issparse(x) else np.array(x, np.float32))
    lognormalise_in_place(work, target_sum, input_scale)
    if work.n_vars > N_TOP_GENES:
        sc.pp.highly_variable_genes(work, n_top_genes=N_TOP_GENES, flavor="seurat")
        work = work[:, work.var["highly_variable"].to_numpy()].copy()
    n_comps = max(1, min(n_pcs, work.n_obs - 1, work.n_vars - 1))
    if sp.issparse(work.X) and work.n_obs * work.n_vars <= DENSE_PCA_ENTRIES:
        work.X = work.X.toarray()  # scanpy's implicitly centred sparse PCA: 5.1 s at 10,000 x 2,000, dense 1.4 s
    sc.pp.pca(work, n_comps=n_comps, random_state=seed)
    return np.asarray(work.obsm["X_pca"], dtype=np.float64)


def auto_labels(
    counts: ad.AnnData,
    *,
    resolution: float,
    n_pcs: int,
    seed: int,
    target_sum: float = 1e4,
    input_scale: str = "counts",
) -> tuple[np.ndarray, np.ndarray]:
    """Leiden clusters of the cells (see the module docstring for the recipe).

    Parameters
    ----------
    counts
        Cells x genes counts; not modified.
    resolution
        Leiden resolution (higher: more clusters).
    n_pcs, seed, target_sum, input_scale
        As in :func:`pca_features`; ``seed`` also seeds the graph and Leiden.

    Returns
    -------
    ``(labels, features)``: cluster names (strings ``'0'``, ``'1'``, ...) and the PCA
    coordinates used, for :func:`merge_small_labels`.
    """
    import scanpy as sc

    features = pca_features(counts, n_pcs=n_pcs, seed=seed, target_sum=target_sum, input_scale=input_scale)
    graph = ad.AnnData(obs={"i": np.arange(features.shape[0])}, obsm={"X_pca": features})
    n_neighbors = max(2, min(N_NEIGHBORS, graph.n_obs - 1))
    sc.pp.neighbors(
        graph, n_neighbors=n_neighbors, use_rep="X_pca", random_state=seed, method="gauss",
        transformer=knn_transformer(graph.n_obs, n_neighbors, seed),
    )
    sc.tl.leiden(graph, resolution=resolution, flavor="igraph", n_iterations=2, directed=False, random_state=seed)
    return graph.obs["leiden"].astype(str).to_numpy(), features


#: Up to this many cells, neighbours are exact (brute force on the PCA coordinates).
EXACT_KNN_MAX_CELLS = 100_000


def knn_transformer(n_obs: int, n_neighbors: int, seed: int) -> Any:
    """The kNN transformer for ``sc.pp.neighbors``: exact up to :data:`EXACT_KNN_MAX_CELLS` cells.

    Exact neighbours (``'sklearn'``: brute force, chunked, on the 30-50 PCA dimensions)
    are fast and reproducible without a seed, where scanpy would switch to pynndescent
    at 8192 cells and compile numba code on first use (``docs/measurements.md``). Above
    the bound pynndescent is used with scanpy's settings, returning ``csr_matrix``
    (scanpy 1.11 queries its ``csr_array`` output with ``getnnz``, which scipy 1.17's
    sparse arrays no longer have).
    """
    if n_obs <= EXACT_KNN_MAX_CELLS:
        return "sklearn"
    import scanpy as sc
    from pynndescent import PyNNDescentTransformer

    class CsrMatrixNNDescent(PyNNDescentTransformer):
        def fit_transform(self, X, y=None, **fit_params):  # noqa: N803 (sklearn's argument name)
            return sp.csr_matrix(super().fit_transform(X, y, **fit_params))

        def transform(self, X, y=None):  # noqa: N803
            return sp.csr_matrix(super().transform(X, y))

    return CsrMatrixNNDescent(
        n_neighbors=n_neighbors, metric="euclidean", random_state=seed, n_jobs=sc.settings.n_jobs,
        n_trees=min(64, 5 + round(n_obs**0.5 / 20.0)), n_iters=max(5, round(np.log2(n_obs))),
    )


def merge_small_labels(
    labels: np.ndarray, features: np.ndarray, min_cells: int
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Merge labels with fewer than ``min_cells`` cells into the label with the nearest centroid.

    The smallest label is merged first (ties: the first name in sorted order) and centroids
    are recomputed after each merge, until every label has ``min_cells`` cells or only one
    label is left (a single label is valid: the GAN then runs unconditioned).

    Parameters
    ----------
    labels
        One label per cell.
    features
        Cells x dimensions coordinates (PCA) in which centroids are compared.
    min_cells
        Smallest label size kept as is.

    Returns
    -------
    ``(merged, merges)``: the new labels (a copy) and one record ``{'label', 'n_cells',
    'into'}`` per merge, in order.
    """
    merged = np.asarray(labels).astype(str)
    features = np.asarray(features, dtype=np.float64)
    merges: list[dict[str, Any]] = []
    while True:
        names, sizes = np.unique(merged, return_counts=True)
        smallest = int(np.argmin(sizes))
        if len(names) <= 1 or sizes[smallest] >= min_cells:
            break
        centroids = np.stack([features[merged == n].mean(axis=0) for n in names])
        dist = np.linalg.norm(centroids - centroids[smallest], axis=1)
        dist[smallest] = np.inf
        source, target = names[smallest], names[int(np.argmin(dist))]
        merged[merged == source] = target
        merges.append({"label": str(source), "n_cells": int(sizes[smallest]), "into": str(target)})
    if merges:
        log.info("merged %d small label(s): %s", len(merges), merges)
        if len(np.unique(merged)) == 1:
            log.warning("every label was merged into %r: the GAN runs with a single label", merged[0])
    return merged, merges


@dataclass
class CellLabels:
    """Labels of a sample as PREPARE stores them.

    Attributes
    ----------
    codes
        int32 label index of every cell.
    names
        Label names (index -> name).
    source
        ``obs:<column>``, ``csv:<file>`` (given labels) or ``leiden``.
    merges
        Records of :func:`merge_small_labels`.
    """

    codes: np.ndarray
    names: list[str]
    source: str
    merges: list[dict[str, Any]] = field(default_factory=list)


def resolve_labels(
    given: np.ndarray | None,
    load_counts: Callable[[], ad.AnnData],
    *,
    source: str,
    resolution: float,
    n_pcs: int,
    min_cells: int,
    seed: int,
    target_sum: float = 1e4,
    input_scale: str = "counts",
) -> CellLabels:
    """The labels PREPARE stores: ``given`` ones, or Leiden clusters when ``given`` is None.

    Labels with fewer than ``min_cells`` cells are merged (:func:`merge_small_labels`).

    Parameters
    ----------
    given
        One label per cell, or None for automatic labels.
    load_counts
        Returns the sample's counts (cells x genes, sparse); called only when labels must be
        computed or merged, so large samples with usable labels are never loaded whole.
    source
        Where ``given`` came from (``obs:<column>`` or ``csv:<file>``); ``leiden`` otherwise.
    resolution, n_pcs, seed, target_sum, input_scale
        As in :func:`auto_labels`.
    min_cells
        Smallest label size kept unmerged (PREPARE's ``min_label_cells``).
    """
    pca_args: dict[str, Any] = {"n_pcs": n_pcs, "seed": seed, "target_sum": target_sum, "input_scale": input_scale}
    if given is None:
        labels, features = auto_labels(load_counts(), resolution=resolution, **pca_args)
        source = "leiden"
    else:
        labels, features = np.asarray(given).astype(str), None
    names, sizes = np.unique(labels, return_counts=True)
    merges: list[dict[str, Any]] = []
    if len(names) > 1 and sizes.min() < min_cells:
        if features is None:
            features = pca_features(load_counts(), **pca_args)
        labels, merges = merge_small_labels(labels, features, min_cells)
    names_out = sorted(set(labels), key=_natural_key)
    index = {n: i for i, n in enumerate(names_out)}
    codes = np.fromiter((index[v] for v in labels), dtype=np.int32, count=len(labels))
    return CellLabels(codes, names_out, source, merges)


def _natural_key(name: str) -> tuple[int, int | str]:
    """Numbers in numeric order before other names (Leiden's '2' before '10')."""
    return (0, int(name)) if name.isdigit() else (1, name)
