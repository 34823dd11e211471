"""The paper's metrics of an imputation, each on matrices of cells x genes.

Unless a function says otherwise the values are log-normalised
(:func:`~scmaskgan.core.matrix.lognormalise_nonnegative`: each cell scaled to 10,000 total,
then ``log1p``), so deeply sequenced cells do not dominate and counts, imputed counts
and log-normalised input are compared on one scale.

The paper's metrics (Wu et al. 2025, section 3):

* UMAP of original and imputed data (:func:`embed`), compared by the overlap of each
  cell's neighbours in the two embeddings (:func:`knn_overlap`) and the separation of
  the known labels in each (:func:`label_silhouette`);
* Z-score distributions (:func:`zscores`, :func:`zscore_outlier_fraction`);
* coefficient of variation per gene (:func:`coefficient_of_variation`);
* Wasserstein and Jensen-Shannon distances between the original and imputed value
  distributions of each gene (:func:`wasserstein`, :func:`jensen_shannon`);
* ACC, AUC and F1 of clusters against known labels, with clusters matched to labels
  by the Hungarian algorithm, plus ARI and NMI (:func:`clustering_scores`), reported as
  accuracy only when the labels were not given to the method (:func:`clustering_status`);
* Pearson correlation of each cell's original and imputed profile
  (:func:`pearson_per_cell`) and the preservation of gene-gene correlations
  (:func:`gene_correlation`, :func:`~scmaskgan.method.quality.correlation_similarity`).

Beyond the paper, the false-signal check (:func:`scmaskgan.analysis.false_signal.correlation_inflation`):
the distribution of ``|r|`` over gene pairs, imputed against original.

:func:`imputation_changes` says what imputation did to the entries. They are combined for one
original/imputed pair by :func:`scmaskgan.analysis.evaluate.evaluate_imputation`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import anndata as ad
import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance
from sklearn import metrics as skm
from sklearn.neighbors import NearestNeighbors

from scmaskgan.core.matrix import dense
from scmaskgan.errors import InputError
from scmaskgan.io.counts import LABEL_COLUMN
from scmaskgan.method.labels import knn_transformer


# ------------------------------------------------------------------ distributions
def zscores(x: np.ndarray) -> np.ndarray:
    """Per-gene Z-scores ``(x - mean) / std`` over cells (population std, ddof=0).

    Genes constant over cells get Z-score 0.
    """
    x = np.asarray(x, dtype=np.float64)
    std = x.std(axis=0)
    safe = np.where(std > 0, std, 1.0)
    return np.where(std > 0, (x - x.mean(axis=0)) / safe, 0.0)


def zscore_outlier_fraction(x: np.ndarray, threshold: float = 3.0) -> float:
    """Fraction of entries whose per-gene Z-score exceeds ``threshold`` in absolute value.

    The paper reads a more concentrated Z-score distribution (fewer outliers) as
    better data quality.
    """
    return float(np.mean(np.abs(zscores(x)) > threshold))


def coefficient_of_variation(x: np.ndarray) -> np.ndarray:
    """Per-gene coefficient of variation ``std / mean`` over cells (ddof=0).

    Returns
    -------
    One value per gene; NaN for genes whose mean is 0.
    """
    x = np.asarray(x, dtype=np.float64)
    mean = x.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mean > 0, x.std(axis=0) / mean, np.nan)


def _check_pair(original: np.ndarray, imputed: np.ndarray) -> None:
    if original.shape != imputed.shape:
        raise InputError(f"original {original.shape} and imputed {imputed.shape} shapes differ")


def wasserstein(original: np.ndarray, imputed: np.ndarray) -> float:
    """Mean over genes of the Wasserstein-1 (earth mover's) distance between the gene's
    original and imputed values over cells (``scipy.stats.wasserstein_distance``).

    In the units of the values (log-normalised expression); 0 means identical
    distributions.
    """
    _check_pair(original, imputed)
    return float(np.mean([wasserstein_distance(original[:, j], imputed[:, j]) for j in range(original.shape[1])]))


def jensen_shannon(original: np.ndarray, imputed: np.ndarray, bins: int = 50) -> float:
    """Mean over genes of the Jensen-Shannon distance between the gene's original and
    imputed value histograms (``scipy.spatial.distance.jensenshannon``, base 2).

    Both histograms of a gene share ``bins`` equal bins over the range of its values in
    either matrix. The distance is the square root of the JS divergence, in [0, 1].
    """
    _check_pair(original, imputed)
    distances = []
    for j in range(original.shape[1]):
        a, b = original[:, j], imputed[:, j]
        lo, hi = min(a.min(), b.min()), max(a.max(), b.max())
        p, _ = np.histogram(a, bins=bins, range=(lo, hi))
        q, _ = np.histogram(b, bins=bins, range=(lo, hi))
        distances.append(jensenshannon(p, q, base=2))
    return float(np.mean(distances))


# ------------------------------------------------------------------ correlation
def pearson_per_cell(original: np.ndarray, imputed: np.ndarray) -> np.ndarray:
    """Pearson correlation of each cell's original and imputed profile over genes.

    Returns
    -------
    One value per cell; NaN where either profile is constant.
    """
    _check_pair(original, imputed)
    a = original - original.mean(axis=1, keepdims=True)
    b = imputed - imputed.mean(axis=1, keepdims=True)
    denom = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(denom > 0, (a * b).sum(axis=1) / denom, np.nan)


def top_variable_genes(x: np.ndarray, n: int = 30) -> np.ndarray:
    """Indices of the ``n`` genes with the largest variance over cells (descending)."""
    return np.argsort(-np.asarray(x).var(axis=0), kind="stable")[: min(n, x.shape[1])]


def gene_correlation(x: np.ndarray, genes: np.ndarray | Sequence[int]) -> np.ndarray:
    """Gene-gene Pearson correlation matrix of the columns ``genes`` (NaN for constant genes)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.corrcoef(np.asarray(x)[:, list(genes)], rowvar=False)


# ------------------------------------------------------------------ clusters vs labels
def match_clusters(labels: np.ndarray | Sequence[Any], clusters: np.ndarray | Sequence[Any], unmatched: str = "<unmatched>") -> np.ndarray:
    """Map each cluster to one label by the Hungarian algorithm (most shared cells).

    ``scipy.optimize.linear_sum_assignment`` on the contingency table pairs every
    label with at most one cluster; cells of clusters left without a label get
    ``unmatched`` (and so count as errors).

    Returns
    -------
    The predicted label of every cell (an object array).
    """
    labels = np.asarray(labels).astype(str)
    clusters = np.asarray(clusters).astype(str)
    label_names, label_idx = np.unique(labels, return_inverse=True)
    cluster_names, cluster_idx = np.unique(clusters, return_inverse=True)
    table = np.zeros((len(cluster_names), len(label_names)), dtype=np.int64)
    np.add.at(table, (cluster_idx, label_idx), 1)
    rows, cols = linear_sum_assignment(table, maximize=True)
    mapping = np.full(len(cluster_names), unmatched, dtype=object)
    mapping[rows] = label_names[cols]
    return mapping[cluster_idx]


def clustering_scores(labels: np.ndarray | Sequence[Any], clusters: np.ndarray | Sequence[Any]) -> dict[str, float]:
    """ACC, AUC, F1, ARI and NMI of a clustering against known labels.

    * ``acc``: fraction of cells whose Hungarian-matched cluster label (see
      :func:`match_clusters`) equals their label;
    * ``auc``: one-vs-rest ROC AUC of the matched predictions for every label
      (``sklearn.metrics.roc_auc_score``), averaged over labels;
    * ``f1``: macro F1 of the matched predictions over the labels;
    * ``ari``, ``nmi``: ``sklearn.metrics.adjusted_rand_score`` and
      ``normalized_mutual_info_score`` (need no matching);
    * ``n_clusters``.
    """
    labels = np.asarray(labels).astype(str)
    if len(labels) != len(clusters):
        raise InputError(f"{len(labels)} labels but {len(clusters)} cluster assignments")
    predicted = match_clusters(labels, clusters)
    names = np.unique(labels)
    aucs = [
        skm.roc_auc_score(labels == name, predicted == name)
        for name in names
        if 0 < (labels == name).sum() < len(labels)
    ]
    return {
        "acc": float(np.mean(predicted == labels)),
        "auc": float(np.mean(aucs)) if aucs else float("nan"),
        "f1": float(skm.f1_score(labels, predicted.astype(str), labels=names, average="macro", zero_division=0)),
        "ari": float(skm.adjusted_rand_score(labels, clusters)),
        "nmi": float(skm.normalized_mutual_info_score(labels, clusters)),
        "n_clusters": float(len(np.unique(np.asarray(clusters).astype(str)))),
    }


#: Scores of clusters against labels: accuracy only when the method was not given the labels.
LABEL_SCORES: tuple[str, ...] = ("acc", "auc", "f1", "ari", "nmi", "silhouette")


def clustering_status(label_key: str, label_source: str | None) -> dict[str, str]:
    """Whether clustering scores against the labels in ``label_key`` measure accuracy.

    They do only when the method computed its own labels (``label_source == 'leiden'``)
    and the scores use other, known labels kept aside. Labels given to the method come
    back out of it, and its own Leiden labels were computed from the same data: both
    are circular.

    Parameters
    ----------
    label_key
        obs column of the labels the clusters are scored against.
    label_source
        ``uns['scmaskgan']['label_source']`` of the imputed data (``obs:<column>``,
        ``csv:<file>`` or ``leiden``); None when the imputed file records none.

    Returns
    -------
    ``status`` (``'accuracy'``, ``'circular'`` or ``'unverified'``), ``reason`` (one line
    for tables) and ``suffix`` (appended to the metric names, ``''`` for accuracy).
    """
    if label_source is None:
        status, reason = "unverified", "unverified: the imputed data records no label source, so the labels may have been given to the method"
    elif label_source != "leiden":
        status, reason = "circular", f"circular: labels were given to the method ({label_source})"
    elif label_key == LABEL_COLUMN:
        status, reason = "circular", "circular: scored against the method's own Leiden labels; pass known types kept aside as the label key"
    else:
        status, reason = "accuracy", f"accuracy: the method computed its own labels; scored against {label_key}, kept aside"
    return {"status": status, "reason": reason, "suffix": "" if status == "accuracy" else f"_{status}"}


# ------------------------------------------------------------------ embeddings
def embed(x: np.ndarray, *, n_pcs: int = 30, n_neighbors: int = 15, resolution: float = 1.0, seed: int = 0) -> ad.AnnData:
    """PCA, neighbour graph, UMAP and Leiden clusters of log-normalised values (scanpy).

    Returns
    -------
    An AnnData with ``obsm['X_pca']``, ``obsm['X_umap']`` and ``obs['leiden']``.
    """
    import scanpy as sc

    adata = ad.AnnData(X=np.asarray(x, dtype=np.float32))
    n_comps = max(2, min(n_pcs, adata.n_obs - 1, adata.n_vars - 1))
    sc.pp.pca(adata, n_comps=n_comps, random_state=seed)
    n_neighbors = min(n_neighbors, adata.n_obs - 1)
    sc.pp.neighbors(adata, n_neighbors=n_neighbors, random_state=seed,
                    transformer=knn_transformer(adata.n_obs, n_neighbors, seed))
    sc.tl.umap(adata, random_state=seed)
    sc.tl.leiden(adata, resolution=resolution, random_state=seed, flavor="igraph", n_iterations=2, directed=False)
    return adata


def knn_overlap(embedding_a: np.ndarray, embedding_b: np.ndarray, k: int = 15) -> float:
    """Mean fraction of each cell's ``k`` nearest neighbours shared by two embeddings.

    1 means imputation kept every cell's neighbourhood; ``k / n_cells`` is what two
    unrelated embeddings share by chance.
    """
    if len(embedding_a) != len(embedding_b):
        raise InputError("embeddings have different numbers of cells")
    k = min(k, len(embedding_a) - 1)
    sets = [
        NearestNeighbors(n_neighbors=k + 1).fit(e).kneighbors(e, return_distance=False)[:, 1:]
        for e in (embedding_a, embedding_b)
    ]
    shared = [len(np.intersect1d(a, b)) for a, b in zip(*sets, strict=True)]
    return float(np.mean(shared) / k)


def label_silhouette(embedding: np.ndarray, labels: np.ndarray | Sequence[Any]) -> float:
    """Silhouette width of the known labels in an embedding (``sklearn.metrics.silhouette_score``), in [-1, 1]."""
    labels = np.asarray(labels).astype(str)
    if not 1 < len(np.unique(labels)) < len(labels):
        return float("nan")
    return float(skm.silhouette_score(embedding, labels))


# ------------------------------------------------------------------ what imputation changed
def imputation_changes(original: Any, imputed: Any, rtol: float = 1e-4) -> dict[str, float]:
    """What imputation did to the entries, on the input scale.

    Returns
    -------
    ``fraction_zeros_original`` (share of zero entries before), ``fraction_zeros_filled``
    (share of those zeros now > 0), ``n_observed_changed`` (observed entries whose value
    changed by more than ``rtol`` relative; 0 in the paper's zeros-only mode) and
    ``max_observed_change`` (largest absolute change of an observed entry).
    """
    a, b = dense(original), dense(imputed)
    _check_pair(a, b)
    zero = a == 0
    diff = np.abs(b - a)[~zero]
    return {
        "fraction_zeros_original": float(zero.mean()),
        "fraction_zeros_filled": float((b[zero] > 0).mean()) if zero.any() else 0.0,
        "n_observed_changed": float((diff > rtol * np.abs(a[~zero])).sum()),
        "max_observed_change": float(diff.max()) if diff.size else 0.0,
    }

