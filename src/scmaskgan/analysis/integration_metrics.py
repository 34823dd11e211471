"""Integration quality of one embedding: batch mixing and biology kept.

The scores follow the scIB benchmark (Luecken et al. 2022, Nat. Methods) and are
computed with maintained building blocks:

* **iLISI** -- median Local Inverse Simpson Index of the batch labels
  (Korsunsky et al. 2019), computed with ``harmonypy.compute_lisi`` (perplexity 30, or
  ``(n_cells - 1) / 3`` on small data). It is the effective number of batches in a
  cell's neighbourhood: 1 = no mixing, ``n_batches`` = perfect mixing.
  ``ilisi_scaled = (iLISI - 1) / (n_batches - 1)`` maps it to [0, 1].
* **batch ASW** -- scIB's batch silhouette: within each cell label (or over all cells
  when there are no labels), the silhouette of the batch labels ``s`` (sklearn) is
  turned into ``1 - |s|``, averaged per label, then over labels. 1 = batches mixed,
  0 = batches separated.
* **label ASW** -- silhouette of the cell labels, rescaled ``(s + 1) / 2``; higher =
  cell types better separated.
* **ARI / NMI** of clusters against the cell labels (sklearn).

Silhouettes are quadratic in the number of cells; above ``max_cells`` cells they are
computed on a seeded random subsample.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score, silhouette_samples

#: Columns of :func:`integration_scores`' result, in order.
SCORE_COLUMNS = ("n_batches", "ilisi", "ilisi_scaled", "batch_asw", "label_asw", "ari", "nmi")


def ilisi(embedding: np.ndarray, batches: np.ndarray, *, perplexity: float = 30.0) -> float:
    """Median iLISI of the batch labels in ``embedding`` (1 .. number of batches).

    Parameters
    ----------
    embedding
        Cells x dimensions.
    batches
        Batch label of every cell.
    perplexity
        Effective neighbourhood size; lowered to ``(n_cells - 1) / 3`` on small data.
    """
    from harmonypy import compute_lisi

    n_cells = embedding.shape[0]
    perplexity = float(min(perplexity, max(1.0, (n_cells - 1) / 3.0)))
    meta = pd.DataFrame({"batch": np.asarray(batches).astype(str)})
    lisi = compute_lisi(np.asarray(embedding, dtype=np.float64), meta, ["batch"], perplexity=perplexity)
    return float(np.median(lisi[:, 0]))


def _subsample(n_cells: int, max_cells: int, seed: int) -> np.ndarray:
    if n_cells <= max_cells:
        return np.arange(n_cells)
    return np.sort(np.random.default_rng(seed).choice(n_cells, size=max_cells, replace=False))


def batch_asw(
    embedding: np.ndarray, batches: np.ndarray, labels: np.ndarray | None = None
) -> float:
    """scIB batch silhouette: mean over labels of the mean of ``1 - |s|`` (1 = mixed).

    Labels whose cells all come from one batch are skipped; NaN when none is left.
    """
    batches = np.asarray(batches).astype(str)
    groups = np.zeros(len(batches), dtype=int) if labels is None else np.asarray(labels).astype(str)
    per_label = []
    for group in np.unique(groups):
        idx = np.flatnonzero(groups == group)
        n_batches = len(np.unique(batches[idx]))
        if n_batches < 2 or len(idx) <= n_batches:
            continue
        s = silhouette_samples(embedding[idx], batches[idx])
        per_label.append(float(np.mean(1.0 - np.abs(s))))
    return float(np.mean(per_label)) if per_label else float("nan")


def label_asw(embedding: np.ndarray, labels: np.ndarray) -> float:
    """Cell-label silhouette rescaled to [0, 1]; NaN with fewer than two labels."""
    labels = np.asarray(labels).astype(str)
    n_labels = len(np.unique(labels))
    if n_labels < 2 or n_labels >= len(labels):
        return float("nan")
    return float((np.mean(silhouette_samples(embedding, labels)) + 1.0) / 2.0)


def integration_scores(
    embedding: np.ndarray,
    batches: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    clusters: np.ndarray | None = None,
    max_cells: int = 10_000,
    seed: int = 0,
) -> dict[str, float]:
    """Batch-mixing and biology-conservation scores of one embedding.

    Parameters
    ----------
    embedding
        Cells x dimensions (a PCA, a corrected PCA or a UMAP).
    batches
        Batch of every cell. With a single batch, the batch scores are NaN.
    labels
        Cell-type labels shared across batches; the label scores are NaN when unset.
    clusters
        Clusters computed in this embedding, scored against ``labels`` (ARI, NMI).
    max_cells
        Silhouettes use a seeded random subsample of at most this many cells.
    seed
        Seed of that subsample.

    Returns
    -------
    A dict with the keys of :data:`SCORE_COLUMNS`.
    """
    embedding = np.asarray(embedding, dtype=np.float64)
    batches = np.asarray(batches).astype(str)
    n_batches = len(np.unique(batches))
    nan = float("nan")
    scores: dict[str, float] = dict.fromkeys(SCORE_COLUMNS, nan)
    scores["n_batches"] = float(n_batches)
    sub = _subsample(len(batches), max_cells, seed)
    sub_labels = None if labels is None else np.asarray(labels).astype(str)[sub]
    if n_batches > 1:
        scores["ilisi"] = ilisi(embedding, batches)
        scores["ilisi_scaled"] = (scores["ilisi"] - 1.0) / (n_batches - 1.0)
        scores["batch_asw"] = batch_asw(embedding[sub], batches[sub], sub_labels)
    if sub_labels is not None:  # labels given
        scores["label_asw"] = label_asw(embedding[sub], sub_labels)
        if clusters is not None:
            labels = np.asarray(labels).astype(str)
            clusters = np.asarray(clusters).astype(str)
            scores["ari"] = float(adjusted_rand_score(labels, clusters))
            scores["nmi"] = float(normalized_mutual_info_score(labels, clusters))
    return scores
