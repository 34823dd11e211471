"""How good is an imputation? The paper's metrics, and molecular cross-validation.

Every metric takes matrices of cells x genes. Unless a function says otherwise the
values are log-normalised (:func:`lognormalize`: each cell scaled to 10,000 total,
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
  (:func:`gene_correlation`, :func:`correlation_similarity`).

Beyond the paper, the false-signal check (:func:`scmaskgan.false_signal.correlation_inflation`):
the distribution of ``|r|`` over gene pairs, imputed against original.

:func:`evaluate_imputation` computes all of them for one original/imputed pair, and
:func:`run_mcv` scores imputation by molecular cross-validation (:mod:`scmaskgan.mcv`).
"""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anndata as ad
import matplotlib
import numpy as np
from matplotlib.figure import Figure
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import jensenshannon
from scipy.stats import wasserstein_distance
from sklearn import metrics as skm
from sklearn.neighbors import NearestNeighbors

from scmaskgan import mcv
from scmaskgan.atomic import atomic_path, write_text_atomic
from scmaskgan.config import IMPUTE_CHAIN, all_flat_names, flat_fields
from scmaskgan.errors import InputError, StepError
from scmaskgan.false_signal import correlation_inflation
from scmaskgan.h5ad import read_h5ad
from scmaskgan.io import LABEL_COLUMN
from scmaskgan.labels import knn_transformer
from scmaskgan.matrix import dense, lognormalise_nonnegative
from scmaskgan.quality import correlation_similarity
from scmaskgan.versions import package_versions

#: Modes of ``scmaskgan.impute`` scored by :func:`run_mcv`.
IMPUTE_MODES: tuple[str, ...] = ("zeros", "denoise")


# ------------------------------------------------------------------ scales
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


# ------------------------------------------------------------------ one pair
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


@dataclass
class Evaluation:
    """Everything :func:`evaluate_imputation` measured for one original/imputed pair.

    Attributes
    ----------
    metrics
        Flat ``name -> value`` (what the JSON and CSV hold).
    info
        Cells, genes, label key, parameters.
    arrays
        Per-cell and per-gene values behind the figures (not written to JSON).
    """

    metrics: dict[str, float]
    info: dict[str, Any]
    arrays: dict[str, Any] = field(default_factory=dict)


def _align(original: ad.AnnData, imputed: ad.AnnData) -> tuple[ad.AnnData, ad.AnnData]:
    cells = original.obs_names.intersection(imputed.obs_names, sort=False)
    genes = original.var_names.intersection(imputed.var_names, sort=False)
    if len(cells) < 3 or len(genes) < 2:
        raise InputError(
            f"original and imputed data share {len(cells)} cells and {len(genes)} genes (obs/var names); "
            "need at least 3 and 2"
        )
    return original[cells, genes], imputed[cells, genes]


def _labels(original: ad.AnnData, imputed: ad.AnnData, label_key: str | None) -> tuple[np.ndarray | None, str | None]:
    if label_key is None:
        label_key = "scmaskgan_label" if "scmaskgan_label" in imputed.obs else None
        if label_key is None:
            return None, None
    for adata in (original, imputed):
        if label_key in adata.obs:
            return adata.obs[label_key].astype(str).to_numpy(), label_key
    raise InputError(f"label column {label_key!r} is in neither the original nor the imputed obs")


def evaluate_imputation(
    original: ad.AnnData,
    imputed: ad.AnnData,
    *,
    label_key: str | None = None,
    genes: Sequence[str] | None = None,
    input_scale: str = "counts",
    max_cells: int = 20000,
    resolution: float = 1.0,
    seed: int = 0,
) -> Evaluation:
    """All of the paper's metrics for one original/imputed pair.

    Parameters
    ----------
    original, imputed
        AnnData on the same input scale (``X``); aligned by cell and gene names, so
        the original may hold cells or genes that QC removed.
    label_key
        obs column with known labels (original or imputed obs). Default:
        ``'scmaskgan_label'`` when the imputed data has it, else no label metrics. The
        clusters' scores against them (:data:`LABEL_SCORES`) keep their plain names
        (``ari_imputed``) only when they measure accuracy; otherwise the names end in
        ``_circular`` or ``_unverified`` (:func:`clustering_status`, recorded in
        ``info['clustering']``).
    genes
        Genes of the gene-gene correlation; default the 30 most variable original genes.
    input_scale
        ``'counts'`` (log-normalised here) or ``'lognorm'`` (used as they are).
    max_cells
        Seeded subsample of cells above this size (UMAP and Leiden cost).
    resolution
        Leiden resolution of the clusters scored against the labels.
    seed
        Random seed (subsample, PCA, UMAP, Leiden).
    """
    if input_scale not in ("counts", "lognorm"):
        raise InputError(f"input_scale={input_scale!r} is not one of counts, lognorm")
    original, imputed = _align(original, imputed)
    if original.n_obs > max_cells:
        keep = np.sort(np.random.default_rng(seed).choice(original.n_obs, max_cells, replace=False))
        original, imputed = original[keep], imputed[keep]
    labels, label_key = _labels(original, imputed, label_key)
    scale = lognormalise_nonnegative if input_scale == "counts" else dense
    x_orig, x_imp = scale(original.X), scale(imputed.X)
    gene_names = np.asarray(original.var_names)
    if genes:
        missing = sorted(set(genes) - set(gene_names))
        if missing:
            raise InputError(f"gene(s) not in both data sets: {', '.join(missing[:10])}")
        chosen = np.asarray([int(np.flatnonzero(gene_names == g)[0]) for g in genes])
    else:
        chosen = top_variable_genes(x_orig)
    corr_orig, corr_imp = gene_correlation(x_orig, chosen), gene_correlation(x_imp, chosen)
    emb_orig = embed(x_orig, resolution=resolution, seed=seed)
    emb_imp = embed(x_imp, resolution=resolution, seed=seed)
    pearson = pearson_per_cell(x_orig, x_imp)
    cv_orig, cv_imp = coefficient_of_variation(x_orig), coefficient_of_variation(x_imp)
    metrics: dict[str, float] = {
        **imputation_changes(original.X, imputed.X),
        "wasserstein": wasserstein(x_orig, x_imp),
        "jensen_shannon": jensen_shannon(x_orig, x_imp),
        "pearson_cell_median": float(np.nanmedian(pearson)),
        "gene_correlation_similarity": correlation_similarity(corr_orig, corr_imp),
        "cv_median_original": float(np.nanmedian(cv_orig)),
        "cv_median_imputed": float(np.nanmedian(cv_imp)),
        "zscore_outliers_original": zscore_outlier_fraction(x_orig),
        "zscore_outliers_imputed": zscore_outlier_fraction(x_imp),
        "umap_knn_overlap": knn_overlap(emb_orig.obsm["X_umap"], emb_imp.obsm["X_umap"]),
        **correlation_inflation(x_orig, x_imp),
    }
    clustering = None
    if labels is not None:
        clustering = clustering_status(str(label_key), imputed.uns.get("scmaskgan", {}).get("label_source"))
        for name, emb in (("original", emb_orig), ("imputed", emb_imp)):
            scores = {**clustering_scores(labels, emb.obs["leiden"]), "silhouette": label_silhouette(emb.obsm["X_umap"], labels)}
            for key, value in scores.items():
                metrics[f"{key}_{name}{clustering['suffix'] if key in LABEL_SCORES else ''}"] = value
    info = {
        "n_cells": int(original.n_obs),
        "n_genes": int(original.n_vars),
        "label_key": label_key,
        "clustering": clustering,
        "correlation_genes": [str(g) for g in gene_names[chosen]],
        "params": {"input_scale": input_scale, "max_cells": max_cells, "resolution": resolution, "seed": seed},
    }
    arrays = {
        "umap_original": emb_orig.obsm["X_umap"],
        "umap_imputed": emb_imp.obsm["X_umap"],
        "labels": labels if labels is not None else emb_orig.obs["leiden"].to_numpy(),
        "zscore_original": zscores(x_orig).ravel(),
        "zscore_imputed": zscores(x_imp).ravel(),
        "cv_original": cv_orig,
        "cv_imputed": cv_imp,
        "pearson": pearson,
        "corr_original": corr_orig,
        "corr_imputed": corr_imp,
    }
    return Evaluation(metrics=metrics, info=info, arrays=arrays)


# ------------------------------------------------------------------ figures
def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


def _umap_figure(arrays: dict[str, Any]) -> Figure:
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    labels = np.asarray(arrays["labels"]).astype(str)
    names = list(np.unique(labels))
    cmap = matplotlib.colormaps["tab20"]
    for ax, key, title in zip(fig.subplots(1, 2), ("umap_original", "umap_imputed"), ("original", "imputed"), strict=True):
        emb = arrays[key]
        for i, name in enumerate(names):
            sel = labels == name
            ax.scatter(emb[sel, 0], emb[sel, 1], s=4, color=cmap(i % 20), label=name)
        ax.set_title(f"UMAP, {title}")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.axes[1].legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=2, frameon=False)
    return fig


def _overlay_hist_figure(a: np.ndarray, b: np.ndarray, xlabel: str, bins: int = 60) -> Figure:
    fig = Figure(figsize=(6, 3.5), layout="constrained")
    ax = fig.subplots()
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    edges = np.histogram_bin_edges(np.concatenate([a, b]), bins=bins)
    ax.hist(a, bins=edges, alpha=0.55, density=True, label="original")  # type: ignore[arg-type]  # stubs: no arrays
    ax.hist(b, bins=edges, alpha=0.55, density=True, label="imputed")  # type: ignore[arg-type]
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.legend(frameon=False)
    return fig


def _correlation_figure(arrays: dict[str, Any], genes: Sequence[str]) -> Figure:
    fig = Figure(figsize=(11, 5), layout="constrained")
    for ax, key, title in zip(fig.subplots(1, 2), ("corr_original", "corr_imputed"), ("original", "imputed"), strict=True):
        image = ax.imshow(np.nan_to_num(arrays[key]), vmin=-1, vmax=1, cmap="RdBu_r")
        ax.set_title(f"gene-gene correlation, {title}")
        ax.set_xticks(range(len(genes)), genes, rotation=90, fontsize=6)
        ax.set_yticks(range(len(genes)), genes, fontsize=6)
    fig.colorbar(image, ax=fig.axes, shrink=0.8, label="Pearson r")
    return fig


def write_evaluation(evaluation: Evaluation, outdir: str | Path, name: str) -> dict[str, Path]:
    """Write ``{name}.evaluation.json``/``.csv`` and the figures; returns the paths by key.

    Figures: ``{name}.eval_umap.png`` (UMAP original vs imputed, coloured by label),
    ``{name}.eval_zscore.png``, ``{name}.eval_cv.png`` (distributions, original vs
    imputed) and ``{name}.eval_gene_correlation.png`` (heatmaps of the chosen genes).
    """
    outdir = Path(outdir)
    paths = {
        "json": outdir / f"{name}.evaluation.json",
        "csv": outdir / f"{name}.evaluation.csv",
        "umap": outdir / f"{name}.eval_umap.png",
        "zscore": outdir / f"{name}.eval_zscore.png",
        "cv": outdir / f"{name}.eval_cv.png",
        "gene_correlation": outdir / f"{name}.eval_gene_correlation.png",
    }
    record = {"sample": name, "metrics": evaluation.metrics, **evaluation.info, "versions": package_versions()}
    write_text_atomic(paths["json"], json.dumps(record, indent=2, allow_nan=True))
    _write_csv(paths["csv"], ["metric", "value"], list(evaluation.metrics.items()))
    arrays = evaluation.arrays
    _save(_umap_figure(arrays), paths["umap"])
    _save(_overlay_hist_figure(arrays["zscore_original"], arrays["zscore_imputed"], "per-gene Z-score"), paths["zscore"])
    _save(_overlay_hist_figure(arrays["cv_original"], arrays["cv_imputed"], "coefficient of variation per gene"), paths["cv"])
    _save(_correlation_figure(arrays, evaluation.info["correlation_genes"]), paths["gene_correlation"])
    return paths


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


# ------------------------------------------------------------------ molecular cross-validation
Imputer = Callable[..., ad.AnnData]


def run_mcv(
    counts: ad.AnnData,
    *,
    modes: Sequence[str] = IMPUTE_MODES,
    label_key: str | None = None,
    p_train: float = 0.9,
    seed: int = 0,
    imputer: Imputer,
    impute_kwargs: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Molecular cross-validation of scMASKGAN with its two controls.

    The counts are split binomially (:func:`scmaskgan.mcv.split_counts`); the train
    part is imputed in every ``mode`` and scored against the test part
    (:func:`scmaskgan.mcv.score`), next to the controls *no denoising* (the train
    counts as they are) and *perfect* (the test counts themselves, MSE 0).

    Parameters
    ----------
    counts
        Integer counts in ``X`` (cells x genes).
    modes
        Imputation modes to score (``'zeros'``, ``'denoise'``).
    label_key
        obs column with labels, passed to the imputer.
    p_train, seed
        Binomial split probability and seed.
    imputer
        ``imputer(adata, mode=..., label_key=..., seed=..., **impute_kwargs)`` returning
        an AnnData with the imputed values in ``X``: :func:`scmaskgan.api.impute_copy` for
        scMASKGAN (given by the caller: this module sits below the API).
    impute_kwargs
        Further keyword arguments of the imputer: for ``scmaskgan.impute``, flat
        pipeline parameters (``epochs``, ``impute_n_trials``, ``device`` ...), e.g. a
        runner ``--params-file``. ``impute_mode`` and ``seed`` are ignored (``modes``
        and ``seed`` decide them), and so are the QC and INTEGRATE parameters.

    Returns
    -------
    One row per method: ``method``, ``mse``, ``poisson``, ``seconds``; with ``label_key``
    also ``within_label_signal`` (:func:`scmaskgan.mcv.within_label_signal`: what is left of
    each cell beyond its label's mean) and a *label-mean baseline* row (each cell replaced
    by its label's mean frequencies times its own library size), which a label-conditioned
    imputer has to beat to have learned anything about the single cell.
    """
    for mode in modes:
        if mode not in IMPUTE_MODES:
            raise InputError(f"impute mode {mode!r} is not one of {', '.join(IMPUTE_MODES)}")
    if label_key is not None and label_key not in counts.obs:
        raise InputError(f"label column {label_key!r} not in the input's obs")
    ignored = {"impute_mode", "seed"} | (all_flat_names() - set(flat_fields(IMPUTE_CHAIN)))
    kwargs = {k: v for k, v in (impute_kwargs or {}).items() if k not in ignored}
    train, test = mcv.split_counts(counts.X, p_train=p_train, seed=seed)
    rows: list[dict[str, Any]] = []

    labels = None if label_key is None else counts.obs[label_key].astype(str).to_numpy()

    def add(method: str, denoised: Any, seconds: float | None) -> None:
        result = mcv.score(train, test, denoised)
        row = {"method": method, "mse": result.mse, "poisson": result.poisson, "seconds": seconds}
        if labels is not None:
            row["within_label_signal"] = mcv.within_label_signal(test, denoised, labels)
        rows.append(row)

    add("no denoising", train, None)
    if labels is not None:
        add("label-mean baseline", mcv.label_mean_baseline(train, labels), None)
    for mode in modes:
        train_adata = ad.AnnData(X=train.astype(np.float32), obs=counts.obs.copy(), var=counts.var.copy())
        start = time.perf_counter()
        out = imputer(train_adata, mode=mode, label_key=label_key, seed=seed, **kwargs)
        seconds = time.perf_counter() - start
        if out.shape != train_adata.shape:
            raise StepError(
                f"imputation ({mode}) returned {out.shape[0]} cells x {out.shape[1]} genes for "
                f"{train_adata.shape[0]} x {train_adata.shape[1]}; MCV needs every cell and gene kept"
            )
        add(f"scMASKGAN ({mode})", out.X, seconds)
    add("perfect (test counts)", test, None)
    return rows


def write_mcv(rows: list[dict[str, Any]], outdir: str | Path, name: str, info: dict[str, Any]) -> dict[str, Path]:
    """Write ``{name}.mcv.json`` (rows, info, versions) and ``{name}.mcv.csv``; returns the paths."""
    outdir = Path(outdir)
    paths = {"json": outdir / f"{name}.mcv.json", "csv": outdir / f"{name}.mcv.csv"}
    record = {"sample": name, "mcv": rows, **info, "versions": package_versions()}
    write_text_atomic(paths["json"], json.dumps(record, indent=2))
    header = ["method", "mse", "poisson", "seconds"]
    _write_csv(paths["csv"], header, [[row[h] for h in header] for row in rows])
    return paths


# ------------------------------------------------------------------ files in, files out
def evaluate_files(
    original_path: str | Path,
    imputed_path: str | Path,
    outdir: str | Path,
    name: str,
    **options: Any,
) -> dict[str, Path]:
    """``scmaskgan evaluate ORIGINAL IMPUTED``: read both files, evaluate, write the outputs.

    ``ORIGINAL`` is any counts file :func:`scmaskgan.io.read_counts` reads (the input
    of the pipeline), ``IMPUTED`` an ``.h5ad`` with imputed values in ``X`` (the IMPUTE
    step's ``{id}.imputed.h5ad``). ``options`` go to :func:`evaluate_imputation`.
    """
    from scmaskgan.io import read_counts

    original = read_counts(original_path, input_scale=options.get("input_scale", "counts"))
    evaluation = evaluate_imputation(original, read_h5ad(imputed_path), **options)
    evaluation.info.update(original=str(original_path), imputed=str(imputed_path))
    return write_evaluation(evaluation, outdir, name)


def mcv_file(
    input_path: str | Path,
    outdir: str | Path,
    name: str,
    *,
    modes: Sequence[str] = IMPUTE_MODES,
    label_key: str | None = None,
    p_train: float = 0.9,
    seed: int = 0,
    imputer: Imputer,
    impute_kwargs: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """``scmaskgan evaluate --mcv INPUT``: molecular cross-validation of a counts file.

    Reads the counts with :func:`scmaskgan.io.read_counts`, runs :func:`run_mcv` and
    writes ``{name}.mcv.json`` and ``{name}.mcv.csv``.
    """
    from scmaskgan.io import read_counts

    counts = read_counts(input_path)
    rows = run_mcv(
        counts, modes=modes, label_key=label_key, p_train=p_train, seed=seed, imputer=imputer,
        impute_kwargs=impute_kwargs,
    )
    info = {
        "input": str(input_path), "n_cells": int(counts.n_obs), "n_genes": int(counts.n_vars),
        "label_key": label_key, "p_train": p_train, "seed": seed, "impute_kwargs": impute_kwargs or {},
    }
    return write_mcv(rows, outdir, name, info)


