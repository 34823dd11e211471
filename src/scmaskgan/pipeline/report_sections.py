"""The REPORT step's sections, one function per section id (:data:`BUILDERS`): summary, QC,
training, filtering, tuning, imputation, evaluation, integration, parameters.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from scmaskgan.io.layout import SAMPLE_OUTPUTS
from scmaskgan.pipeline.report_parts import (
    RunFiles,
    cards,
    esc,
    flatten,
    fmt,
    guarded,
    missing,
    note,
    output_suffix,
    png_figure,
    png_file,
    read_json,
    read_table,
    table,
    try_json,
)

log = logging.getLogger("scmaskgan.pipeline.report")

#: Label histograms drawn per sample in the filtering section.
MAX_LABEL_PANELS = 12


# ------------------------------------------------------------------ what the sections share
@dataclass
class ReportContext:
    """What every section reads: the run's files, the IMPUTE summaries and evaluation files per sample."""

    files: RunFiles
    impute: dict[str, dict[str, Any]] = field(default_factory=dict)
    evaluations: dict[str, Path] = field(default_factory=dict)

    @property
    def samples(self) -> list[str]:
        ids: set[str] = set()
        for step, outputs in SAMPLE_OUTPUTS.items():
            for key in outputs:
                ids.update(self.files.per_sample(output_suffix(step, key)))
        ids.update(map(str, try_json(self.files.info("run_summary.json")).get("samples", [])))
        return sorted(ids)


def impute_summaries(files: RunFiles) -> dict[str, dict[str, Any]]:
    """Per sample: the IMPUTE summary from ``{id}.impute.json``."""
    summaries: dict[str, dict[str, Any]] = {}
    for sid, path in files.per_sample(output_suffix("impute", "json")).items():
        try:
            summaries[sid] = read_json(path)
        except (OSError, ValueError) as exc:
            log.warning("report: %s: %s", path, exc)
    return summaries


# ------------------------------------------------------------------ sections
def _summary(ctx: ReportContext) -> str:
    samples = ctx.samples
    if not samples:
        return missing(f"no per-sample outputs (*.qc.json, *.imputed.h5ad, ...) under {ctx.files.root}")
    parts = []
    key_numbers: list[tuple[str, Any]] = [("samples", len(samples))]
    qc = ctx.files.per_sample(output_suffix("qc", "json"))
    after = [try_json(p).get("cells_after") for p in qc.values()]
    if after and all(isinstance(v, int) for v in after):
        key_numbers.append(("cells after QC", sum(after)))
    if ctx.impute:
        key_numbers.append(("samples imputed", len(ctx.impute)))
        filled = [float(s["fraction_zeros_filled"]) for s in ctx.impute.values() if s.get("fraction_zeros_filled") is not None]
        if filled:
            key_numbers.append(("zeros filled (mean)", float(np.mean(filled))))
    wall = try_json(ctx.files.info("run_summary.json")).get("wall_seconds")
    if wall is not None:
        key_numbers.append(("wall time (s)", wall))
    parts.append(cards(key_numbers))
    # the small file each step leaves (PREPARE and GENERATE only leave data: TRAIN and FILTER imply them)
    step_files = [
        ("QC", output_suffix("qc", "json")), ("TRAIN", output_suffix("train", "log")),
        ("FILTER", output_suffix("filter", "json")), ("IMPUTE", output_suffix("impute", "json")), ("evaluation", ".evaluation.json"),
    ]
    found = {name: ctx.files.per_sample(suffix) for name, suffix in step_files}
    rows = [{"sample": s, **{name: "✓" if s in found[name] else "–" for name, _ in step_files}} for s in samples]
    parts.append("<h3>Outputs per sample and step</h3>" + table(rows))
    trace = ctx.files.info("trace.tsv")
    if trace is not None:
        parts.append("<h3>Steps run</h3>" + guarded(lambda: table(read_table(trace, sep="\t")), trace.name))
    return "".join(parts)


def _qc(ctx: ReportContext) -> str:
    reports = ctx.files.per_sample(output_suffix("qc", "json"))
    figures = ctx.files.per_sample(output_suffix("qc", "png"))
    if not reports and not figures:
        return missing("no {id}.qc.json or {id}.qc.png (the QC step's outputs)")
    per_sample: dict[str, dict[str, Any]] = {}
    for sid, path in reports.items():
        try:
            per_sample[sid] = flatten(read_json(path), skip=("sample", "params", "versions", "input_path"))
        except (OSError, ValueError) as exc:
            per_sample[sid] = {"error": f"cannot read {path.name}: {exc}"}
    # one row per QC number, one column per sample: stays readable with many samples
    names = list(dict.fromkeys(k for values in per_sample.values() for k in values))
    rows = [{"": name, **{sid: values.get(name) for sid, values in per_sample.items()}} for name in names]
    parts = [table(rows, ["", *per_sample])] if rows else [missing("no {id}.qc.json")]
    parts += [guarded(partial(png_file, p, f"{sid}: QC metrics and thresholds"), p.name) for sid, p in figures.items()]
    return "".join(parts)


#: Columns of the training log drawn as the validation curves (beside any ``val*`` column), with the
#: discriminator's augmentation strength, on the same 0-1 scale.
_VALIDATION_CURVES = ("c2st_auc", "recall", "coverage", "corr_agreement", "d_accuracy", "d_auc", "augment_p")


def _training_figure(log_df: pd.DataFrame, sid: str) -> Figure:
    x = log_df["epoch"] if "epoch" in log_df else pd.Series(range(1, len(log_df) + 1))
    numeric = [c for c in log_df.columns if c not in ("epoch", "seconds") and pd.api.types.is_numeric_dtype(log_df[c])]
    losses = [c for c in numeric if c.startswith("loss")]
    val = [c for c in numeric if c in _VALIDATION_CURVES or "val" in c.lower()]
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, cols, title in ((axes[0], losses, "training losses"), (axes[1], val, "held-out quality, D's augmentation")):
        for c in cols:
            ax.plot(x, log_df[c], label=c, lw=1.3)
        ax.set_title(f"{sid}: {title}")
        ax.set_xlabel("epoch")
        if cols:
            ax.legend(fontsize=7, frameon=False)
        else:
            ax.text(0.5, 0.5, "no such column", ha="center", va="center", transform=ax.transAxes)
    return fig


def _training_sample(sid: str, path: Path) -> str:
    log_df = pd.read_csv(path)
    if log_df.empty:
        return missing(f"{path.name} has no rows")
    row: dict[str, Any] = {"sample": sid, "epochs": len(log_df)}
    val = [c for c in log_df.columns if "val" in c.lower() and pd.api.types.is_numeric_dtype(log_df[c])]
    val.sort(key=lambda c: "smoothed" not in c)  # the early-stopping signal first
    if val and log_df[val[0]].notna().any():
        best = int(log_df[val[0]].idxmin())
        row[f"lowest {val[0]}"] = float(log_df[val[0]].iloc[best])
        row["at epoch"] = int(log_df["epoch"].iloc[best]) if "epoch" in log_df else best + 1
    if "seconds" in log_df:
        row["seconds"] = float(log_df["seconds"].sum())
    quality = path.with_name(f"{sid}.train_quality.csv")
    parts = [table([row]), png_figure(_training_figure(log_df, sid), f"{sid}: losses and held-out candidate quality "
                                      f"per epoch ({path.name})")]
    if quality.is_file() and quality.stat().st_size:
        frame = pd.read_csv(quality)
        if not frame.empty:
            parts.append(note("Candidates of the model (best epoch) against held-out cells, overall and per label; "
                              "*_real is the level of real training cells. Energy: lower is better, gap_closed the "
                              "share of the initial gap above the real level that training removed; precision, "
                              "recall, density, coverage: k-NN manifold estimates (recall and coverage are low for "
                              "label prototypes); c2st_auc: 0.5 means a classifier cannot tell candidates from cells; "
                              f"gene ratios: median |log2| of candidates over cells ({quality.name})."))
            parts.append(table(frame))
    return "".join(parts)


def _training(ctx: ReportContext) -> str:
    logs = ctx.files.per_sample(output_suffix("train", "log"))
    pngs = ctx.files.per_sample(output_suffix("train", "png"))
    if not logs and not pngs:
        return missing("no {id}.train_log.csv or {id}.train_loss.png (the TRAIN step's outputs)")
    parts = [f"<h3>{esc(sid)}</h3>" + guarded(partial(_training_sample, sid, p), p.name) for sid, p in logs.items()]
    parts += [guarded(partial(png_file, p, f"{sid}: training loss"), p.name) for sid, p in pngs.items() if sid not in logs]
    return "".join(parts)


def _filter_sample(sid: str, path: Path) -> str:
    record = read_json(path)
    scores, kept = np.asarray(record["scores"], dtype=float), np.asarray(record["kept"], dtype=bool)
    tau = np.atleast_1d(np.asarray(record.get("tau", []), dtype=float))
    labels = np.asarray(record.get("labels", np.zeros(len(scores))), dtype=int)
    names = [str(n) for n in record.get("label_names", [])]
    present = sorted(np.unique(labels).tolist())
    name_of = {i: names[i] if i < len(names) else str(i) for i in present}
    rows = []
    for i in present:
        m = labels == i
        rows.append({"label": name_of[i], "candidates": int(m.sum()), "kept": int(kept[m].sum()),
                     "fraction kept": float(kept[m].mean()), "tau": float(tau[i]) if i < len(tau) else None})
    shown = present[:MAX_LABEL_PANELS]
    ncol = min(4, len(shown))
    nrow = math.ceil(len(shown) / ncol)
    fig = Figure(figsize=(3.2 * ncol, 2.4 * nrow), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrow, ncol, squeeze=False)).ravel()
    for ax, i in zip(axes, shown, strict=False):
        m = labels == i
        edges = np.histogram_bin_edges(scores[m], bins=30)
        ax.hist(scores[m & kept], bins=edges, color="#4393c3", alpha=0.8, label="kept")
        ax.hist(scores[m & ~kept], bins=edges, color="#d6604d", alpha=0.8, label="dropped")
        if i < len(tau) and np.isfinite(tau[i]):
            ax.axvline(tau[i], color="k", ls="--", lw=1, label=f"τ = {tau[i]:.3g}")
        ax.set_title(name_of[i], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, frameon=False)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    fig.supxlabel("anomaly score s(x)", fontsize=9)
    caption = f"{sid}: anomaly scores of the generated candidates per label; candidates right of τ are dropped"
    caption += {"cells": " (the forest fitted on half of the label's real cells, τ the highest score of the other half)",
                "candidates": " (the forest fitted on the candidates, τ the Tukey fence of their scores)"}.get(
        str(record.get("reference")), "")
    if len(present) > len(shown):
        caption += f" (first {len(shown)} of {len(present)} labels shown)"
    summary = cards([("candidates", len(scores)), ("kept", int(kept.sum())), ("fraction kept", float(kept.mean()))])
    return summary + table(rows) + png_figure(fig, caption)


def _filtering(ctx: ReportContext) -> str:
    files = ctx.files.per_sample(output_suffix("filter", "json"))
    if not files:
        return missing("no {id}.filter.json (the FILTER step's summary)")
    return "".join(f"<h3>{esc(sid)}</h3>" + guarded(partial(_filter_sample, sid, p), p.name) for sid, p in files.items())


def _tuning_score(trials: pd.DataFrame) -> str | None:
    """The trial column IMPUTE chose by: ``objective`` (held-out MSE and Poisson loss relative to the seen
    counts', plus the within-label signal penalty), or ``mse`` in summaries written before it existed."""
    return next((name for name in ("objective", "mse") if name in trials), None)


def _tuning_png(sid: str, trials: pd.DataFrame, k: Any, theta: Any) -> str:
    return png_figure(
        _tuning_figure(sid, trials, k, theta),
        f"{sid}: validation {_tuning_score(trials)} of every Optuna trial against k (left) and the search history "
        "(right)",
    )


def _tuning_figure(sid: str, trials: pd.DataFrame, k: Any, theta: Any) -> Figure:
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    ax_k, ax_hist = fig.subplots(1, 2)
    score = _tuning_score(trials) or trials.select_dtypes("number").columns[-1]
    colour = trials["theta_sigma"] if "theta_sigma" in trials else None
    points = ax_k.scatter(trials["k"], trials[score], c=colour, cmap="viridis", s=22)
    if colour is not None:
        fig.colorbar(points, ax=ax_k, label="θ σ-multiple")
    if k is not None:
        ax_k.axvline(float(k), color="#d6604d", ls="--", lw=1, label=f"chosen k = {fmt(k)}")
        ax_k.legend(fontsize=7, frameon=False)
    ax_k.set_xscale("log")
    ax_k.set(xlabel="k (nearest candidates)", ylabel=f"validation {score}",
             title=f"{sid}: validation curve, θ = μ + {fmt(theta)}σ")
    ax_hist.plot(range(1, len(trials) + 1), trials[score], "o", ms=3, color="#9aa5b1", label="trial")
    ax_hist.plot(range(1, len(trials) + 1), trials[score].cummin(), color="#2c5f8a", label="best so far")
    ax_hist.set(xlabel="Optuna trial", ylabel=f"validation {score}", title="search history")
    ax_hist.legend(fontsize=7, frameon=False)
    return fig


def _tuning(ctx: ReportContext) -> str:
    if not ctx.impute:
        return missing("no {id}.impute.json (the IMPUTE step's summary)")
    rows, figures = [], []
    for sid, s in ctx.impute.items():
        trials = pd.DataFrame(s.get("tuning") or [])
        score = _tuning_score(trials)
        used = s.get("neighbours_per_label") or {}
        per_label = dict(zip(used.get("label", []), used.get("mean_neighbours", []), strict=True))
        rows.append({"sample": sid, "k": s.get("k"), "theta_sigma": s.get("theta_sigma"),
                     "validation": s.get("validation"), "trials": len(trials),
                     f"best validation {score or 'score'}": float(trials[score].min()) if score else None,
                     "neighbours used per label (mean)": ", ".join(f"{name} {n:g}" for name, n in per_label.items())})
        if not trials.empty and "k" in trials:
            figures.append(guarded(partial(
                _tuning_png, sid, trials, s.get("k"), s.get("theta_sigma")), f"{sid} tuning trials"))
        else:
            figures.append(note(f"{sid}: k and θ were given, not tuned (no trials recorded)."))
    return table(rows) + "".join(figures)


def _imputation(ctx: ReportContext) -> str:
    if not ctx.impute:
        return missing("no {id}.impute.json (the IMPUTE step's summary)")
    rows = []
    for sid, s in ctx.impute.items():
        row = {"sample": sid, "mode": s.get("mode"), "cells": s.get("n_cells"), "genes": s.get("n_genes"),
               "fraction of zeros filled": s.get("fraction_zeros_filled"),
               "observed values changed": s.get("n_observed_changed")}
        row.update({k: v for k, v in flatten(s, skip=("params", "versions", "tuning", "k", "theta_sigma", "encoding",
                                                                  "neighbours_per_label")).items()
                    if k not in {"mode", "n_cells", "n_genes", "fraction_zeros_filled", "n_observed_changed"}})
        rows.append(row)
    parts = [table(rows)]
    for sid, s in ctx.impute.items():
        if s.get("mode") == "zeros" and s.get("n_observed_changed") not in (None, 0):
            parts.append(missing(f"{sid}: zeros mode changed {s['n_observed_changed']} observed values (expected 0)"))
    parts.append(note("zeros mode (the paper's): only zero entries are filled, so 'observed values changed' "
                      "is 0; denoise and posterior modes also replace observed values by their posterior mean "
                      "(posterior: a prior unbiased for the counts, shrinkage estimated per gene; the 'shrinkage' "
                      "column is then the median over genes)."))
    return "".join(parts)


_PAIRED = ("n_clusters", "cv_median", "zscore_outliers", "abs_corr_median", "abs_corr_p95")


def _clustering_pairs(clustering: dict[str, Any] | None) -> tuple[list[tuple[str, str, str]], str]:
    """``(row name, original key, imputed key)`` of the clusters' scores against the labels, and their status.

    The row names carry the status unless it is accuracy. Files written before label
    sources were checked hold plain names and no status: shown as unverified, never as accuracy.
    """
    from scmaskgan.analysis.imputation_metrics import LABEL_SCORES

    clustering = clustering or {"status": "unverified", "suffix": "",
                                "reason": "unverified: evaluated before label sources were recorded"}
    suffix, status = clustering["suffix"], clustering["status"]
    label = "" if status == "accuracy" else f" ({status})"
    pairs = [(f"{m}{label}", f"{m}_original{suffix}", f"{m}_imputed{suffix}") for m in LABEL_SCORES]
    return pairs, f"Clusters against the labels: {clustering['reason']}."


def _evaluation_sample(sid: str, path: Path) -> str:
    record = read_json(path)
    if "error" in record:
        return missing(f"{sid}: the evaluation failed ({record['error']})")
    metrics: dict[str, Any] = record.get("metrics", {})
    clustering_pairs, clustering_note = _clustering_pairs(record.get("clustering"))
    pairs = [p for p in clustering_pairs + [(m, f"{m}_original", f"{m}_imputed") for m in _PAIRED] if p[1] in metrics]
    paired = [{"metric": name, "original": metrics[o], "imputed": metrics.get(i)} for name, o, i in pairs]
    shown = {key for _, o, i in pairs for key in (o, i)}
    single = [{"metric": k, "value": v} for k, v in metrics.items() if k not in shown]
    source = f"from {path.name}"
    labels_note = f" {clustering_note}" if record.get("label_key") else ""
    parts = [note(f"{record.get('n_cells', '?')} cells x {record.get('n_genes', '?')} genes, labels: "
                  f"{record.get('label_key') or 'none'} ({source}).{labels_note}"),
             f'<div class="side-by-side">{table(single)}{table(paired) if paired else ""}</div>']

    def figure(key: str, caption: str) -> str:
        png = path.with_name(f"{sid}.{key}.png")
        return png_file(png, f"{sid}: {caption}") if png.is_file() else ""

    parts.append(figure("eval_umap", "UMAP of the original and the imputed data, coloured by label"))
    parts.append('<div class="fig-row">' + figure("eval_zscore", "per-gene Z-score distributions")
                 + figure("eval_cv", "coefficient of variation per gene") + "</div>")
    parts.append(figure("eval_gene_correlation", "gene-gene correlation of the most variable genes"))
    return "".join(parts)


def _mcv_sample(sid: str, path: Path) -> str:
    record = read_json(path)
    return (note(f"{sid}: molecular cross-validation (p_train = {fmt(record.get('p_train'))}, seed "
                 f"{fmt(record.get('seed'))}); lower is better, read each method between the two controls.")
            + table(record.get("mcv", []), ["method", "mse", "poisson", "within_label_signal", "seconds"]))


def _evaluation(ctx: ReportContext) -> str:
    mcv_files = ctx.files.per_sample(".mcv.json")
    if not ctx.evaluations and not mcv_files:
        return missing("no {id}.evaluation.json (written by IMPUTE and scmaskgan evaluate) or {id}.mcv.json")
    parts = [note("Metrics of the paper on log-normalised values (the imputed ones from their layer imputed_lognorm, "
                  "divided by each cell's observed library size): distances between the original and imputed "
                  "value distributions per gene (Wasserstein, Jensen-Shannon), per-cell Pearson correlation, "
                  "preservation of gene-gene correlations and of UMAP neighbourhoods, and clusters (Leiden) "
                  "against the labels (ACC with Hungarian matching, AUC, F1, ARI, NMI). Those scores are accuracy "
                  "only when the method computed its own labels and known types were kept aside for scoring; "
                  "with labels given to the method they are marked circular: the labels went in and came out. "
                  "abs_corr: median and 95th percentile of |Pearson r| over gene pairs (the most expressed genes); "
                  "a rise (inflation) above the original's may be a false signal of smoothing.")]
    parts += [f"<h3>{esc(sid)}</h3>" + guarded(partial(_evaluation_sample, sid, p), p.name)
              for sid, p in sorted(ctx.evaluations.items())]
    if mcv_files:
        parts.append("<h3>Molecular cross-validation</h3>")
        parts += [guarded(partial(_mcv_sample, sid, p), p.name) for sid, p in mcv_files.items()]
    else:
        parts.append(note("No molecular cross-validation in this run (scmaskgan evaluate --mcv INPUT writes {id}.mcv.json)."))
    return "".join(parts)


_OVERVIEW = (("n_cells", "cells"), ("n_genes", "genes"), ("n_samples", "samples"),
             ("n_clusters", "clusters (imputed)"), ("n_clusters_original", "clusters (original)"))


def _integration_overview(path: Path) -> str:
    summary = read_json(path)
    return cards([(label, summary[key]) for key, label in _OVERVIEW if key in summary])


def _top_markers(path: Path, per_cluster: int = 5) -> str:
    markers = pd.read_csv(path)
    if markers.empty:
        return note("markers.csv is empty (fewer than two clusters).")
    if "data" in markers:
        markers = markers[markers["data"] == "imputed"]
    order = "rank" if "rank" in markers else markers.columns[0]
    top = markers.sort_values(["cluster", order], kind="stable").groupby("cluster", sort=False).head(per_cluster)
    rows = [{"cluster": c, f"top {per_cluster} markers": ", ".join(map(str, g["gene"]))}
            for c, g in top.groupby("cluster", sort=True)]
    return table(rows)


def _integration(ctx: ReportContext) -> str:
    summary = ctx.files.named("integration_summary.json")
    metrics = ctx.files.named("integration_metrics.csv")
    markers = ctx.files.named("markers.csv")
    changes = ctx.files.named("marker_gene_changes.csv")
    figures = ctx.files.in_folder("figures")
    if not any((summary, metrics, markers, changes, figures)):
        return missing("no integration_summary.json, integration_metrics.csv, markers.csv or figures/*.png "
                       "(the INTEGRATE step's outputs)")
    parts = []
    if summary:
        parts.append(guarded(lambda: _integration_overview(summary), summary.name))
    if metrics:
        parts.append("<h3>Integration metrics</h3>" + guarded(lambda: table(read_table(metrics)), metrics.name))
    else:
        parts.append(missing("integration_metrics.csv"))
    if changes:
        parts.append("<h3>Chosen genes before and after imputation</h3>"
                     + guarded(lambda: table(read_table(changes).head(60)), changes.name))
    if markers:
        parts.append("<h3>Marker genes per cluster</h3>" + guarded(lambda: _top_markers(markers), markers.name))
    parts += [guarded(partial(png_file, p, p.stem.replace("_", " ")), p.name) for p in figures]
    return "".join(parts)


def _params_table(path: Path) -> str:
    return _key_values(read_json(path).get("params", {}))


def _key_values(record: dict[str, Any]) -> str:
    return table([{"name": k, "value": json.dumps(v) if isinstance(v, dict | list) else v} for k, v in record.items()])


def _parameters(ctx: ReportContext) -> str:
    from scmaskgan.core.versions import package_versions

    parts = []
    params, versions = ctx.files.info("params.json"), ctx.files.info("versions.json")
    if params is not None:
        parts.append("<h3>Pipeline parameters</h3>" + guarded(lambda: _key_values(read_json(params)), params.name))
    else:
        parts.append(note("No pipeline_info/params.json (not a `scmaskgan run` or Nextflow results folder); "
                          "the parameters the steps recorded follow."))
        for sid, path in ctx.files.per_sample(output_suffix("qc", "json")).items():
            parts.append(f"<h3>QC ({esc(sid)})</h3>"
                         + guarded(partial(_params_table, path), path.name))
        for sid, summary in ctx.impute.items():
            parts.append(f"<h3>IMPUTE ({esc(sid)})</h3>" + _key_values(summary.get("params", {})))
    if versions is not None:
        parts.append("<h3>Versions of the run</h3>" + guarded(lambda: _key_values(read_json(versions)), versions.name))
    else:
        parts.append(note("No pipeline_info/versions.json."))
    parts.append("<h3>Versions that built this report</h3>"
                 + table([{"package": k, "version": v} for k, v in package_versions().items()]))
    return "".join(parts)


BUILDERS: dict[str, Callable[[ReportContext], str]] = {
    "summary": _summary, "qc": _qc, "training": _training, "filtering": _filtering, "tuning": _tuning,
    "imputation": _imputation, "evaluation": _evaluation, "integration": _integration, "parameters": _parameters,
}

