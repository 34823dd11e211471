"""Cross-sample integration of imputed samples (the INTEGRATE step's computations).

The imputed samples are concatenated (obs ``sample``, ``batch`` and the samplesheet's
metadata columns), then the same scanpy analysis runs twice -- on the imputed values
and on the original counts -- so every result exists before and after imputation:
library-size normalisation (10,000 per cell, both by the observed counts' library size)
and log1p, batch-aware highly variable
genes, scaling, PCA, batch correction (Harmony by default; BBKNN, Scanorama, ComBat
selectable), neighbours, UMAP, Leiden clusters and Wilcoxon markers per cluster.
Integration quality is scored before and after correction
(:mod:`scmaskgan.analysis.integration_metrics`), and chosen genes are tabulated before and after
imputation (:func:`marker_gene_changes`). Reading and concatenating the samples is
:mod:`scmaskgan.analysis.integration_inputs`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scmaskgan.analysis.integration_inputs import (
    LABEL_KEY,
    concat_samples,
    read_imputed,
    read_sample_metadata,
)
from scmaskgan.analysis.integration_metrics import SCORE_COLUMNS, integration_scores
from scmaskgan.core.config import IntegrateParams
from scmaskgan.core.matrix import dense, library_sizes, lognormalise_in_place
from scmaskgan.errors import InputError
from scmaskgan.io.layout import INTEGRATE_OUTPUTS
from scmaskgan.method.labels import knn_transformer

#: What the two analyses are run on: name -> layer of the integrated AnnData.
DATA_LAYERS = {"imputed": "imputed", "original": "counts"}
#: Corrected-embedding key in obsm per method (bbknn corrects the graph, not an embedding).
CORRECTED_KEYS = {"harmony": "X_pca_harmony", "scanorama": "X_scanorama", "combat": "X_pca_combat"}
#: Library size every cell is normalised to before log1p.
TARGET_SUM = 1e4
_OPTIONAL = {"bbknn": "bbknn", "scanorama": "scanorama"}


# ------------------------------------------------------------------ analysis
def lognormalised_layer(adata: ad.AnnData, layer: str, input_scale: str = "counts") -> ad.AnnData:
    """A new AnnData (cells x all genes, obs copied) with X = log1p of ``layers[layer]``
    normalised to :data:`TARGET_SUM` per cell (taken as is for ``input_scale='lognorm'``).

    Both layers are normalised by the library size of the observed counts (``layers['counts']``,
    over the genes kept here): the imputed values were estimated for that depth, and their
    own totals would add a size factor shared by every gene (:data:`~scmaskgan.core.matrix.IMPUTED_LOGNORM`).
    """
    x = adata.layers[layer]
    x = x.astype(np.float32) if sp.issparse(x) else np.asarray(x, dtype=np.float32)
    work = ad.AnnData(X=x.copy(), obs=adata.obs.copy(), var=pd.DataFrame(index=adata.var_names))
    lognormalise_in_place(work, TARGET_SUM, input_scale, library=library_sizes(adata.layers["counts"]))
    return work


def _pca(hvg: ad.AnnData, n_comps: int, seed: int) -> np.ndarray:
    import scanpy as sc

    x = hvg.X
    scaled = ad.AnnData(X=dense(x, np.float32))
    sc.pp.scale(scaled, max_value=10)
    sc.tl.pca(scaled, n_comps=n_comps, svd_solver="arpack", random_state=seed)
    return np.asarray(scaled.obsm["X_pca"], dtype=np.float32)


def _optional(method: str):
    import importlib

    try:
        return importlib.import_module(_OPTIONAL[method])
    except ImportError as exc:
        raise InputError(
            f"integration method {method!r} needs the package {_OPTIONAL[method]!r}: "
            "pip install 'scmaskgan[integration]'"
        ) from exc


def _harmony(pca: np.ndarray, batches: np.ndarray, seed: int) -> np.ndarray:
    import harmonypy

    meta = pd.DataFrame({"batch": batches})
    z = np.asarray(harmonypy.run_harmony(pca, meta, ["batch"], random_state=seed, verbose=False).Z_corr)
    # harmonypy < 2 returns dimensions x cells, >= 2 cells x dimensions
    return (z if z.shape[0] == pca.shape[0] else z.T).astype(np.float32)


def _scanorama(pca: np.ndarray, batches: np.ndarray, n_neighbors: int) -> np.ndarray:
    scanorama = _optional("scanorama")
    names = list(dict.fromkeys(batches))
    idx = [np.flatnonzero(batches == b) for b in names]
    integrated = scanorama.assemble(
        [np.ascontiguousarray(pca[i], dtype=np.float64) for i in idx],
        knn=max(n_neighbors, 5), ds_names=names, verbose=False,
    )
    out = np.empty((pca.shape[0], integrated[0].shape[1]), dtype=np.float32)
    for i, block in zip(idx, integrated, strict=True):
        out[i] = block
    return out


def _graph(rep: np.ndarray, obs: pd.DataFrame, params: IntegrateParams, *, bbknn_key: str | None = None,
           umap: bool = True) -> ad.AnnData:
    """Neighbours (or BBKNN), Leiden clusters (obs ``leiden``) and optionally UMAP of ``rep``."""
    import scanpy as sc

    g = ad.AnnData(obs=obs.copy(), obsm={"X_rep": rep})
    if bbknn_key is None:
        n_neighbors = min(params.n_neighbors, g.n_obs - 1)
        sc.pp.neighbors(g, n_neighbors=n_neighbors, use_rep="X_rep", random_state=params.seed,
                        transformer=knn_transformer(g.n_obs, n_neighbors, params.seed))
    else:
        n_batches = obs[bbknn_key].nunique()
        _optional("bbknn").bbknn(g, batch_key=bbknn_key, use_rep="X_rep", n_pcs=rep.shape[1],
                                 neighbors_within_batch=max(1, round(params.n_neighbors / n_batches)))
    sc.tl.leiden(g, resolution=params.leiden_resolution, random_state=params.seed, flavor="igraph",
                 n_iterations=2, directed=False)
    if umap:
        sc.tl.umap(g, random_state=params.seed)
    return g


@dataclasses.dataclass
class Analysis:
    """One analysis (of the imputed values or of the original counts).

    Attributes
    ----------
    lognorm
        Cells x all genes, log1p of library-normalised values (X), markers in
        ``uns['rank_genes_groups']``.
    hvg
        Highly variable gene mask.
    pca, corrected
        Uncorrected PCA; the corrected embedding (None for bbknn/none/one batch).
    graph
        The final neighbour graph (obsp), ``obs['leiden']`` and ``obsm['X_umap']``.
    metrics
        Rows of the metrics table for this data (uncorrected, corrected).
    """

    lognorm: ad.AnnData
    hvg: np.ndarray
    pca: np.ndarray
    corrected: np.ndarray | None
    graph: ad.AnnData
    metrics: list[dict]


def analyse(
    work: ad.AnnData, params: IntegrateParams, *, batch_key: str = "sample", labels: np.ndarray | None = None,
    data: str = "imputed",
) -> Analysis:
    """Batch-aware HVG, PCA, correction, graph, UMAP, Leiden, markers and scores of ``work``.

    Parameters
    ----------
    work
        Cells x genes, X = log-normalised values; ``obs[batch_key]`` the batches.
    params
        The step's parameters (method, n_hvg, n_pcs, n_neighbors, leiden_resolution, seed).
    batch_key
        obs column of the batches corrected for. One batch: correction is skipped.
    labels
        Cell types shared across batches (for the label scores), or None.
    data
        Name written in the metrics rows (``imputed`` or ``original``).
    """
    import scanpy as sc

    batches = work.obs[batch_key].astype(str).to_numpy()
    n_batches = len(np.unique(batches))
    method = params.method if n_batches > 1 else "none"
    hvg_kwargs = {"batch_key": batch_key} if n_batches > 1 else {}
    sc.pp.highly_variable_genes(work, n_top_genes=min(params.n_hvg, work.n_vars), **hvg_kwargs)
    hvg_mask = work.var["highly_variable"].to_numpy()
    hvg = work[:, hvg_mask].copy()
    n_comps = max(2, min(params.n_pcs, hvg.n_vars - 1, hvg.n_obs - 1))
    pca = _pca(hvg, n_comps, params.seed)
    corrected = None
    if method == "harmony":
        corrected = _harmony(pca, batches, params.seed)
    elif method == "scanorama":
        corrected = _scanorama(pca, batches, params.n_neighbors)
    elif method == "combat":
        sc.pp.combat(hvg, key=batch_key)
        corrected = _pca(hvg, n_comps, params.seed)
    obs = work.obs[[batch_key]].copy()
    bbknn = method == "bbknn"
    final = _graph(pca if corrected is None else corrected, obs, params, bbknn_key=batch_key if bbknn else None)
    base = final if method == "none" else _graph(pca, obs, params, umap=bbknn)
    rows = [("uncorrected", "X_umap" if bbknn else "X_pca", base.obsm["X_umap"] if bbknn else pca, base)]
    if method != "none":
        space = "X_umap" if bbknn else CORRECTED_KEYS[method]
        rows.append(("corrected", space, final.obsm["X_umap"] if bbknn else corrected, final))
    metrics = []
    for stage, space, emb, g in rows:
        scores = integration_scores(emb, batches, labels=labels, clusters=g.obs["leiden"].to_numpy(),
                                    seed=params.seed)
        metrics.append({"data": data, "stage": stage, "method": method, "space": space,
                        "n_cells": work.n_obs, **scores})
    _rank_markers(work, final.obs["leiden"])
    return Analysis(lognorm=work, hvg=hvg_mask, pca=pca, corrected=corrected, graph=final, metrics=metrics)


def _rank_markers(work: ad.AnnData, clusters: pd.Series) -> None:
    """Wilcoxon markers of every cluster (with at least 2 cells) against the rest."""
    import scanpy as sc

    work.obs["leiden"] = clusters.to_numpy()
    work.obs["leiden"] = work.obs["leiden"].astype("category")
    sizes = work.obs["leiden"].value_counts()
    groups = [str(g) for g in work.obs["leiden"].cat.categories if sizes[g] >= 2]
    if len(groups) >= 2:
        sc.tl.rank_genes_groups(work, "leiden", groups=groups, method="wilcoxon", pts=True, use_raw=False)


def marker_table(analysis: Analysis, data: str, n_markers: int) -> pd.DataFrame:
    """Top ``n_markers`` markers per cluster (by Wilcoxon score) as a tidy table."""
    import scanpy as sc

    columns = ["data", "cluster", "rank", "gene", "score", "log2fc", "pval", "pval_adj",
               "pct_in_cluster", "pct_rest"]
    if "rank_genes_groups" not in analysis.lognorm.uns:
        return pd.DataFrame(columns=columns)
    df = sc.get.rank_genes_groups_df(analysis.lognorm, group=None)
    if "group" not in df.columns:  # one group: scanpy omits the column
        df.insert(0, "group", analysis.lognorm.uns["rank_genes_groups"]["names"].dtype.names[0])
    df = df.rename(columns={"group": "cluster", "names": "gene", "scores": "score", "logfoldchanges": "log2fc",
                            "pvals": "pval", "pvals_adj": "pval_adj", "pct_nz_group": "pct_in_cluster",
                            "pct_nz_reference": "pct_rest"})
    df = df.sort_values(["cluster", "score"], ascending=[True, False], kind="stable")
    df = df.groupby("cluster", observed=True, sort=False).head(n_markers).copy()
    df["rank"] = df.groupby("cluster", observed=True).cumcount() + 1
    df["data"] = data
    return df[columns].reset_index(drop=True)


# ------------------------------------------------------------------ genes before / after
def choose_genes(
    markers: str | None, table: pd.DataFrame, var_names: pd.Index, n_top: int
) -> tuple[list[str], list[str]]:
    """Genes to tabulate and plot: the user's ``markers`` (found, missing), else top markers.

    Without a user list, the best marker of each cluster of the imputed analysis is taken,
    then the second best, ... until ``n_top`` distinct genes.
    """
    if markers:
        wanted = [g.strip() for g in markers.split(",") if g.strip()]
        found = [g for g in dict.fromkeys(wanted) if g in var_names]
        return found, [g for g in wanted if g not in var_names]
    imputed = table[table["data"] == "imputed"].sort_values(["rank", "cluster"], kind="stable")
    return list(dict.fromkeys(imputed["gene"]))[:n_top], []


#: Columns of :func:`marker_gene_changes`' table.
GENE_CHANGE_COLUMNS = (
    "gene", "sample", "n_cells", "original_mean_quantile", "mean_original", "mean_imputed", "median_original",
    "median_imputed", "detected_original", "detected_imputed", "log2fc_mean", "observed_changed",
)


def marker_gene_changes(adata: ad.AnnData, genes: Sequence[str]) -> pd.DataFrame:
    """Per gene and sample (and ``all``): expression before and after imputation.

    Values are on the input scale (counts): mean, median and detection rate (fraction
    of cells > 0) of the original (``layers['counts']``) and imputed
    (``layers['imputed']``) values; ``log2fc_mean = log2((mean_imputed + 1) /
    (mean_original + 1))``; ``observed_changed`` = fraction of originally non-zero
    entries whose value changed (0 when only zeros are filled);
    ``original_mean_quantile`` = the gene's rank among all genes by original mean
    (0 lowest, 1 highest), to tell low- from high-expression genes.
    """
    counts = adata.layers["counts"]
    gene_means = np.asarray(counts.mean(axis=0)).ravel()
    quantile = pd.Series(gene_means).rank(pct=True).to_numpy()
    cols = np.array([adata.var_names.get_loc(g) for g in genes], dtype=int)
    orig = dense(counts[:, cols])
    imp = dense(adata.layers["imputed"][:, cols])
    samples = adata.obs["sample"].astype(str).to_numpy()
    rows = [dict.fromkeys(GENE_CHANGE_COLUMNS)] if not genes else []
    for j, gene in enumerate(genes):
        for sample in ["all", *dict.fromkeys(samples)]:
            mask = np.ones(len(samples), bool) if sample == "all" else samples == sample
            o, i = orig[mask, j], imp[mask, j]
            observed = o > 0
            changed = np.abs(i[observed] - o[observed]) > 1e-6 * np.maximum(1.0, o[observed])
            rows.append({
                "gene": gene, "sample": sample, "n_cells": int(mask.sum()),
                "original_mean_quantile": float(quantile[cols[j]]),
                "mean_original": float(o.mean()), "mean_imputed": float(i.mean()),
                "median_original": float(np.median(o)), "median_imputed": float(np.median(i)),
                "detected_original": float(np.mean(o > 0)), "detected_imputed": float(np.mean(i > 0)),
                "log2fc_mean": float(np.log2((i.mean() + 1.0) / (o.mean() + 1.0))),
                "observed_changed": float(changed.mean()) if observed.any() else float("nan"),
            })
    return pd.DataFrame(rows, columns=list(GENE_CHANGE_COLUMNS)).dropna(how="all")


# ------------------------------------------------------------------ the whole step
@dataclasses.dataclass
class IntegrationResult:
    """Everything INTEGRATE writes: the AnnData and its tables."""

    adata: ad.AnnData
    markers: pd.DataFrame
    metrics: pd.DataFrame
    gene_changes: pd.DataFrame
    genes: list[str]
    notes: list[str]
    params: IntegrateParams


def _method_version(method: str) -> str:
    package = {"harmony": "harmonypy", "bbknn": "bbknn", "scanorama": "scanorama", "combat": "scanpy"}.get(method)
    try:
        return importlib_metadata.version(package) if package else ""
    except importlib_metadata.PackageNotFoundError:
        return "not installed"


def integrate(
    samples: dict[str, ad.AnnData], params: IntegrateParams | None = None, *, metadata: pd.DataFrame | None = None
) -> IntegrationResult:
    """Concatenate, batch-correct, cluster and find markers, before and after imputation.

    Parameters
    ----------
    samples
        Sample id -> IMPUTE output (see :func:`read_imputed`).
    params
        Step parameters; ``IntegrateParams()`` when unset.
    metadata
        Per-sample metadata (:func:`read_sample_metadata`).

    Returns
    -------
    The integrated AnnData -- X = log-normalised imputed values; layers ``imputed``,
    ``counts`` and ``lognorm_original``; obsm ``X_pca``, the corrected embedding
    (``X_pca_harmony``, ``X_scanorama`` or ``X_pca_combat``), ``X_umap`` and the same with
    suffix ``_original``; obs ``leiden`` and ``leiden_original``; var
    ``highly_variable(_original)``; uns ``scmaskgan_integrate`` -- with the marker,
    metrics and gene-change tables. One sample: the analysis runs without correction
    and the metrics rows say so.
    """
    from scmaskgan.core.versions import package_versions

    params = params or IntegrateParams()
    adata = concat_samples(samples, gene_join=params.gene_join, metadata=metadata)
    info = adata.uns.pop("scmaskgan_integrate_input")
    if params.batch_key not in adata.obs:
        raise InputError(f"batch_key {params.batch_key!r} is not 'sample', 'batch' or a samplesheet column")
    notes = []
    n_batches = adata.obs[params.batch_key].nunique()
    if n_batches > 1 and params.method in _OPTIONAL:
        _optional(params.method)  # fail before the analysis when the package is missing
    if n_batches < 2:
        notes.append(f"integration skipped: one {params.batch_key} only; single-sample analysis")
    elif params.method == "none":
        notes.append("batch correction disabled (method none)")
    labels = adata.obs[LABEL_KEY].astype(str).to_numpy() if info["labels_shared"] else None
    if labels is None:
        notes.append("no cell labels shared across samples: label scores (label ASW, ARI, NMI) not computed")
    results = {}
    for data, layer in DATA_LAYERS.items():
        work = lognormalised_layer(adata, layer, info["input_scale"])
        results[data] = analyse(work, params, batch_key=params.batch_key, labels=labels, data=data)
    _store(adata, results, params)
    markers = pd.concat([marker_table(results[d], d, params.n_markers) for d in DATA_LAYERS], ignore_index=True)
    genes, missing = choose_genes(params.markers, markers, adata.var_names, params.n_top_markers)
    if missing:
        notes.append(f"marker genes not found: {', '.join(missing)}")
    metrics = pd.DataFrame([row for d in DATA_LAYERS for row in results[d].metrics])
    metrics = metrics[["data", "stage", "method", "space", "n_cells", *SCORE_COLUMNS]]
    metrics["note"] = "; ".join(n for n in notes if not n.startswith("marker"))
    adata.uns["scmaskgan_integrate"] = {
        "params_json": json.dumps(dataclasses.asdict(params)),
        "versions": {**package_versions(), f"method:{params.method}": _method_version(params.method)},
        "samples": list(samples),
        "input_scale": info["input_scale"],
        "labels_shared": bool(info["labels_shared"]),
        "genes_missing_per_sample": info["genes_missing"],
        "corrected_key": CORRECTED_KEYS.get(results["imputed"].metrics[-1]["method"], ""),
        "marker_genes": genes,
        "notes": notes,
    }
    return IntegrationResult(adata, markers, metrics, marker_gene_changes(adata, genes), genes, notes, params)


def _store(adata: ad.AnnData, results: dict[str, Analysis], params: IntegrateParams) -> None:
    """Copy both analyses' embeddings, clusters and HVGs into ``adata``."""
    for data, res in results.items():
        sfx = "" if data == "imputed" else "_original"
        adata.obsm[f"X_pca{sfx}"] = res.pca
        if res.corrected is not None:
            adata.obsm[f"{CORRECTED_KEYS[res.metrics[-1]['method']]}{sfx}"] = res.corrected
        adata.obsm[f"X_umap{sfx}"] = np.asarray(res.graph.obsm["X_umap"], dtype=np.float32)
        adata.obs[f"leiden{sfx}"] = pd.Categorical(res.graph.obs["leiden"].astype(str).to_numpy())
        adata.var[f"highly_variable{sfx}"] = res.hvg
    imputed, original = results["imputed"], results["original"]
    adata.X = imputed.lognorm.X
    adata.layers["lognorm_original"] = original.lognorm.X
    for key in ("connectivities", "distances"):
        adata.obsp[key] = imputed.graph.obsp[key]
    adata.uns["neighbors"] = dict(imputed.graph.uns["neighbors"])
    adata.uns["neighbors"]["params"] = {
        **adata.uns["neighbors"].get("params", {}),
        "use_rep": CORRECTED_KEYS.get(imputed.metrics[-1]["method"], "X_pca"),
    }
    adata.uns["leiden"] = {"params": {"resolution": params.leiden_resolution, "random_state": params.seed}}
    if "rank_genes_groups" in imputed.lognorm.uns:
        adata.uns["rank_genes_groups"] = imputed.lognorm.uns["rank_genes_groups"]


def dotplot_genes(result: IntegrationResult, per_cluster: int = 2, limit: int = 30) -> list[str]:
    """Genes of the marker dot plot: the user's markers, else the top markers of every cluster."""
    if result.params.markers:
        return result.genes
    imputed = result.markers[(result.markers["data"] == "imputed") & (result.markers["rank"] <= per_cluster)]
    return list(dict.fromkeys(imputed.sort_values(["cluster", "rank"], kind="stable")["gene"]))[:limit]


def write_outputs(result: IntegrationResult, outdir: str | Path) -> dict[str, Path]:
    """Write the INTEGRATE outputs (names from ``layout.INTEGRATE_OUTPUTS``) atomically."""
    from scmaskgan.analysis.integration_figures import write_figures
    from scmaskgan.io.atomic import atomic_path, write_text_atomic
    from scmaskgan.io.h5ad import write_h5ad

    paths = {key: Path(outdir) / name for key, name in INTEGRATE_OUTPUTS.items()}
    label_key = LABEL_KEY if LABEL_KEY in result.adata.obs else None
    write_figures(result.adata, result.genes, dotplot_genes(result), paths["figures"], label_key=label_key)
    for key, table in (("markers", result.markers), ("metrics", result.metrics), ("genes", result.gene_changes)):
        with atomic_path(paths[key]) as tmp:
            table.to_csv(tmp, index=False)
    write_h5ad(result.adata, paths["h5ad"])
    write_text_atomic(paths["summary"], json.dumps(integration_summary(result.adata), indent=2) + "\n")
    return paths


def integration_summary(adata: ad.AnnData) -> dict[str, int]:
    """Cells, genes, samples and Leiden clusters of the integrated data (for the report)."""
    obs = adata.obs
    summary = {"n_cells": int(adata.n_obs), "n_genes": int(adata.n_vars)}
    for key, column in (("n_samples", "sample"), ("n_clusters", "leiden"), ("n_clusters_original", "leiden_original")):
        if column in obs:
            summary[key] = int(obs[column].nunique())
    return summary


def integrate_files(
    imputed: Sequence[str | Path], outdir: str | Path, params: IntegrateParams | None = None,
    samplesheet: str | Path | None = None,
) -> dict[str, Path]:
    """The INTEGRATE step: read ``{id}.imputed.h5ad`` files (and a samplesheet), integrate, write.

    Returns
    -------
    Output name -> path, as ``layout.INTEGRATE_OUTPUTS``.
    """
    metadata = read_sample_metadata(samplesheet) if samplesheet else None
    result = integrate(read_imputed(imputed), params, metadata=metadata)
    return write_outputs(result, outdir)
