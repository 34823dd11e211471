"""Figures of the INTEGRATE step (PNG, drawn on matplotlib ``Figure`` objects, no pyplot).

* ``umap.png`` -- UMAP of the original counts (top) and of the imputed values (bottom),
  coloured by sample, cluster and cell label.
* ``marker_dotplot.png`` -- chosen genes x clusters of the imputed analysis: mean
  log-normalised expression (colour) and fraction of cells expressing (size), original
  beside imputed.
* ``marker_violin.png`` -- the paper's Fig. 8B: log-normalised expression of each chosen
  gene, original beside imputed.
* ``marker_umap.png`` -- the paper's Fig. 8C: each chosen gene on the integrated UMAP,
  original beside imputed (same cells, same coordinates).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import anndata as ad
import numpy as np
from matplotlib.figure import Figure

from scmaskgan.core.matrix import dense
from scmaskgan.io.atomic import atomic_path

#: Output file names inside the figures folder.
FIGURES = {
    "umap": "umap.png",
    "dotplot": "marker_dotplot.png",
    "violin": "marker_violin.png",
    "gene_umap": "marker_umap.png",
}
_ORIGINAL, _IMPUTED = "#d6604d", "#4393c3"  # red = original, blue = imputed (as in Fig. 8)


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


def _scatter_categories(ax, xy: np.ndarray, values, title: str) -> None:
    values = np.asarray(values).astype(str)
    cats = sorted(set(values), key=_natural)
    palette = _palette(len(cats))
    size = max(2.0, 60000 / max(len(values), 1) ** 1.2)
    for colour, cat in zip(palette, cats, strict=True):
        m = values == cat
        ax.scatter(xy[m, 0], xy[m, 1], s=size, color=colour, label=cat, linewidths=0, rasterized=True)
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    if len(cats) <= 30:
        ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=7, markerscale=2, frameon=False)


def _natural(name: str) -> tuple:
    """Sort key putting cluster '10' after '9'."""
    return (0, int(name), "") if name.isdigit() else (1, 0, name)


def _palette(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab20" if n > 10 else "tab10"]
    return [cmap(i % cmap.N) for i in range(n)]


def umap_overview(adata: ad.AnnData, path: Path, *, label_key: str | None) -> Path:
    """UMAP grid: rows original / imputed; columns sample, cluster, label (when given)."""
    columns = [("sample", "sample"), ("leiden", "cluster")] + ([(label_key, "label")] if label_key else [])
    fig = Figure(figsize=(5.2 * len(columns), 9))
    axes = fig.subplots(2, len(columns), squeeze=False)
    for row, (data, sfx) in enumerate((("original", "_original"), ("imputed", ""))):
        xy = np.asarray(adata.obsm[f"X_umap{sfx}"])
        for col, (key, name) in enumerate(columns):
            obs_key = f"leiden{sfx}" if key == "leiden" else key
            _scatter_categories(axes[row, col], xy, adata.obs[obs_key].to_numpy(), f"{data}: {name}")
    return _save(fig, path)


def _gene_values(adata: ad.AnnData, genes: Sequence[str], layer: str | None) -> np.ndarray:
    cols = [adata.var_names.get_loc(g) for g in genes]
    return dense((adata.X if layer is None else adata.layers[layer])[:, cols])


#: (title, layer) of the two data shown side by side: original first, as in the paper.
_SIDES = (("original", "lognorm_original"), ("imputed", None))


def marker_dotplot(adata: ad.AnnData, genes: Sequence[str], path: Path) -> Path:
    """Dot plot of ``genes`` per cluster of the imputed analysis, original beside imputed."""
    clusters = adata.obs["leiden"].astype(str).to_numpy()
    groups = sorted(set(clusters), key=_natural)
    fig = Figure(figsize=(2 * max(2.5, 0.45 * len(genes) + 1.5) + 1.5, 0.35 * len(groups) + 2))
    axes = fig.subplots(1, 2, sharey=True)
    stats = {}
    for title, layer in _SIDES:
        values = _gene_values(adata, genes, layer)
        mean = np.array([values[clusters == g].mean(axis=0) for g in groups])
        frac = np.array([(values[clusters == g] > 0).mean(axis=0) for g in groups])
        stats[title] = (mean, frac)
    vmax = max(float(m.max()) for m, _ in stats.values()) or 1.0
    for ax, (title, _) in zip(axes, _SIDES, strict=True):
        mean, frac = stats[title]
        gx, gy = np.meshgrid(np.arange(len(genes)), np.arange(len(groups)))
        dots = ax.scatter(gx.ravel(), gy.ravel(), s=frac.ravel() * 200, c=mean.ravel(), cmap="Reds",
                          vmin=0, vmax=vmax, edgecolors="grey", linewidths=0.3)
        ax.set_xticks(range(len(genes)), genes, rotation=90)
        ax.set_yticks(range(len(groups)), groups)
        ax.set_xlim(-0.7, len(genes) - 0.3)
        ax.set_ylim(len(groups) - 0.5, -0.5)
        ax.set_title(title)
        ax.set_xlabel("dot size: fraction of cells > 0")
    axes[0].set_ylabel("cluster (imputed analysis)")
    fig.colorbar(dots, ax=axes, label="mean log-normalised expression", shrink=0.6)
    return _save(fig, path)


def marker_violin(adata: ad.AnnData, genes: Sequence[str], path: Path) -> Path:
    """Per gene, violins of log-normalised expression: original (red) beside imputed (blue)."""
    fig = Figure(figsize=(max(6.0, 1.3 * len(genes) + 2), 4.5))
    ax = fig.subplots()
    for offset, (title, layer), colour in ((-0.2, _SIDES[0], _ORIGINAL), (0.2, _SIDES[1], _IMPUTED)):
        values = _gene_values(adata, genes, layer)
        parts = ax.violinplot([values[:, j] for j in range(len(genes))],
                              positions=np.arange(len(genes)) + offset, widths=0.38, showmedians=True)
        for body in parts["bodies"]:  # type: ignore[attr-defined]  # stubs: a Collection, in fact a list
            body.set_facecolor(colour)
            body.set_alpha(0.7)
        for key in ("cmedians", "cmins", "cmaxes", "cbars"):
            parts[key].set_color(colour)
        ax.scatter([], [], color=colour, label=title)
    ax.set_xticks(range(len(genes)), genes, rotation=45)
    ax.set_ylabel("log-normalised expression")
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _save(fig, path)


def marker_umap(adata: ad.AnnData, genes: Sequence[str], path: Path) -> Path:
    """Per gene, the integrated UMAP coloured by expression: original beside imputed."""
    xy = np.asarray(adata.obsm["X_umap"])
    fig = Figure(figsize=(10, 4 * len(genes)))
    axes = fig.subplots(len(genes), 2, squeeze=False)
    values = {title: _gene_values(adata, genes, layer) for title, layer in _SIDES}
    size = max(2.0, 60000 / max(adata.n_obs, 1) ** 1.2)
    for j, gene in enumerate(genes):
        vmax = max(float(v[:, j].max()) for v in values.values()) or 1.0
        for col, (title, _) in enumerate(_SIDES):
            v = values[title][:, j]
            order = np.argsort(v, kind="stable")
            ax = axes[j, col]
            dots = ax.scatter(xy[order, 0], xy[order, 1], c=v[order], s=size, cmap="Reds", vmin=0, vmax=vmax,
                              linewidths=0, rasterized=True)
            ax.set_title(f"{gene} ({title})")
            ax.set_xticks([])
            ax.set_yticks([])
        fig.colorbar(dots, ax=axes[j, :], label="log-normalised expression", shrink=0.8)
    return _save(fig, path)


def write_figures(adata: ad.AnnData, genes: Sequence[str], dotplot_genes: Sequence[str], folder: Path,
                  *, label_key: str | None) -> dict[str, Path]:
    """Write every figure into ``folder``; the gene figures only when genes are given."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {"umap": umap_overview(adata, folder / FIGURES["umap"], label_key=label_key)}
    if dotplot_genes:
        out["dotplot"] = marker_dotplot(adata, dotplot_genes, folder / FIGURES["dotplot"])
    if genes:
        out["violin"] = marker_violin(adata, genes, folder / FIGURES["violin"])
        out["gene_umap"] = marker_umap(adata, genes, folder / FIGURES["gene_umap"])
    return out
