"""How good is an imputation? The paper's metrics for one original/imputed pair
(:func:`evaluate_imputation`, the metrics themselves in :mod:`scmaskgan.analysis.imputation_metrics`),
their figures and files, and molecular cross-validation (:func:`run_mcv`, :mod:`scmaskgan.method.mcv`).
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

from scmaskgan.analysis.false_signal import correlation_inflation
from scmaskgan.analysis.imputation_metrics import (
    LABEL_SCORES,
    clustering_scores,
    clustering_status,
    coefficient_of_variation,
    embed,
    gene_correlation,
    imputation_changes,
    jensen_shannon,
    knn_overlap,
    label_silhouette,
    pearson_per_cell,
    top_variable_genes,
    wasserstein,
    zscore_outlier_fraction,
    zscores,
)
from scmaskgan.core.config import IMPUTE_CHAIN, IMPUTE_MODES, all_flat_names, flat_fields
from scmaskgan.core.matrix import IMPUTED_LOGNORM, dense, lognormalise_nonnegative
from scmaskgan.core.versions import package_versions
from scmaskgan.errors import InputError, StepError
from scmaskgan.io.atomic import atomic_path, write_text_atomic
from scmaskgan.io.h5ad import read_h5ad
from scmaskgan.method import mcv
from scmaskgan.method.quality import correlation_similarity

#: Modes :func:`run_mcv` scores unless told (each is a whole fit).
DEFAULT_MCV_MODES: tuple[str, ...] = ("zeros", "denoise")


# ------------------------------------------------------------------ one pair
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


def _imputed_lognorm(imputed: ad.AnnData, scale: Callable[[Any], np.ndarray]) -> np.ndarray:
    """The imputed values log-normalised: a scmaskgan output's own ``layers['imputed_lognorm']``
    (normalised by each cell's observed library size, see
    :data:`~scmaskgan.core.matrix.IMPUTED_LOGNORM`), any other
    output's ``X`` by ``scale``."""
    if IMPUTED_LOGNORM in imputed.layers:
        return dense(imputed.layers[IMPUTED_LOGNORM])
    return scale(imputed.X)


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
        ``'counts'`` (log-normalised here) or ``'lognorm'`` (used as they are). Every metric
        reads a scmaskgan output's imputed values from its ``layers['imputed_lognorm']``
        (normalised by the observed library size) when it has one.
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
    x_orig, x_imp = scale(original.X), _imputed_lognorm(imputed, scale)
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
    modes: Sequence[str] = DEFAULT_MCV_MODES,
    label_key: str | None = None,
    p_train: float = 0.9,
    seed: int = 0,
    imputer: Imputer,
    impute_kwargs: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Molecular cross-validation of scMASKGAN with its two controls.

    The counts are split binomially (:func:`scmaskgan.method.mcv.split_counts`); the train
    part is imputed in every ``mode`` and scored against the test part
    (:func:`scmaskgan.method.mcv.score`), next to the controls *no denoising* (the train
    counts as they are) and *perfect* (the test counts themselves, MSE 0).

    Parameters
    ----------
    counts
        Integer counts in ``X`` (cells x genes).
    modes
        Imputation modes to score (of :data:`IMPUTE_MODES`).
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
    also ``within_label_signal`` (:func:`scmaskgan.method.mcv.within_label_signal`: what is left of
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
    """Write ``{name}.mcv.json`` (rows, info, versions) and ``{name}.mcv.csv`` (the rows' columns, with
    ``within_label_signal`` when labels were given: empty for the rows without one); returns the paths."""
    outdir = Path(outdir)
    paths = {"json": outdir / f"{name}.mcv.json", "csv": outdir / f"{name}.mcv.csv"}
    record = {"sample": name, "mcv": rows, **info, "versions": package_versions()}
    write_text_atomic(paths["json"], json.dumps(record, indent=2))
    header = ["method", "mse", "poisson", "seconds"]
    if any("within_label_signal" in row for row in rows):
        header.append("within_label_signal")
    _write_csv(paths["csv"], header, [[row.get(h) for h in header] for row in rows])
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

    ``ORIGINAL`` is any counts file :func:`scmaskgan.io.counts.read_counts` reads (the input
    of the pipeline), ``IMPUTED`` an ``.h5ad`` with imputed values in ``X`` (the IMPUTE
    step's ``{id}.imputed.h5ad``). ``options`` go to :func:`evaluate_imputation`.
    """
    from scmaskgan.io.counts import read_counts

    original = read_counts(original_path, input_scale=options.get("input_scale", "counts"))
    evaluation = evaluate_imputation(original, read_h5ad(imputed_path), **options)
    evaluation.info.update(original=str(original_path), imputed=str(imputed_path))
    return write_evaluation(evaluation, outdir, name)


def mcv_file(
    input_path: str | Path,
    outdir: str | Path,
    name: str,
    *,
    modes: Sequence[str] = DEFAULT_MCV_MODES,
    label_key: str | None = None,
    p_train: float = 0.9,
    seed: int = 0,
    imputer: Imputer,
    impute_kwargs: dict[str, Any] | None = None,
) -> dict[str, Path]:
    """``scmaskgan evaluate --mcv INPUT``: molecular cross-validation of a counts file.

    Reads the counts with :func:`scmaskgan.io.counts.read_counts`, runs :func:`run_mcv` and
    writes ``{name}.mcv.json`` and ``{name}.mcv.csv``.
    """
    from scmaskgan.io.counts import read_counts

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


