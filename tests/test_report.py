"""The REPORT step on a realistic results folder, a partial one, an empty one, and in Chromium.

The report reads only the steps' small files (JSON, CSV, PNG); the results folders here
hold unreadable h5/h5ad files to prove that it never opens them.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from matplotlib.figure import Figure

from scmaskgan.cli import main
from scmaskgan.core.config import FilterParams
from scmaskgan.method.encode import Encoding, image_side
from scmaskgan.method.generate import write_candidates
from scmaskgan.method.train import LOG_COLUMNS
from scmaskgan.pipeline import steps
from scmaskgan.pipeline.report import SECTIONS, build_report, write_report

ROOT = Path(__file__).resolve().parents[1]
SECTION_IDS = [sid for sid, _ in SECTIONS]


def _png(path: Path, title: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = Figure(figsize=(3, 2))
    fig.subplots().plot([0, 1, 2], [1, 0, 2])
    fig.suptitle(title)
    fig.savefig(path)


def _imputed(pbmc: ad.AnnData, n_cells: int, seed: int) -> ad.AnnData:
    """Real counts with their zeros filled by small values: an imputed.h5ad as IMPUTE writes it."""
    sub = pbmc[:n_cells].copy()
    x = sub.X.toarray()
    zero = x == 0
    x[zero] = np.random.default_rng(seed).random(zero.sum()) * 0.4
    out = ad.AnnData(X=x.astype(np.float32), obs=sub.obs.copy(), var=sub.var.copy())
    out.layers["counts"] = sp.csr_matrix(sub.X)
    out.obs["scmaskgan_label"] = sub.obs["cell_type"]
    return out


def make_results(root: Path, pbmc: ad.AnnData) -> dict[str, float]:
    """A results folder as `scmaskgan run` leaves it: sample s1 complete, s2 stopped after QC.

    Returns the key numbers the report must show.
    """
    numbers = {"cells_after": 612, "tau": 0.5123, "k": 7, "theta_sigma": 1.25, "filled": 0.4321,
               "ilisi": 1.732, "mcv_mse": 3.408, "val": 0.08765, "wasserstein": 0.2468}
    for sid, cells in (("s1", numbers["cells_after"]), ("s2", 333)):
        qc = {"sample": sid, "input_path": f"data/{sid}.h5ad", "label_source": "obs:cell_type",
              "cells_before": 700, "genes_before": 765, "cells_after": cells, "genes_after": 700,
              "cells_failing": {"min_genes": 700 - cells}, "params": {"min_genes": 200, "min_cells": 3}}
        (root / "qc").mkdir(parents=True, exist_ok=True)
        (root / "qc" / f"{sid}.qc.json").write_text(json.dumps(qc))
        _png(root / "qc" / f"{sid}.qc.png", f"{sid} QC")
    epochs = np.arange(1, 31)
    (root / "train").mkdir()
    log = pd.DataFrame({column: np.linspace(0.2, 0.6, 30) for column in LOG_COLUMNS})  # TRAIN's columns
    log["epoch"] = epochs
    # the early-stopping signal (smoothed) is the one reported, not the noisier raw score
    log["val_smoothed"] = np.r_[np.linspace(0.5, numbers["val"], 20), np.full(10, 0.1)]
    log["val_score"] = log["val_smoothed"] - 0.05
    log.to_csv(root / "train" / "s1.train_log.csv", index=False)
    # FILTER's summary, written by the FILTER step from real candidates
    rng = np.random.default_rng(0)
    candidates = root / "generate" / "s1.candidates.h5"
    candidates.parent.mkdir()
    write_candidates(candidates, rng.random((300, 20)).astype(np.float32), np.repeat(np.arange(3), 100),
                     ["B", "T", "NK"], [f"g{i}" for i in range(20)], Encoding(20, image_side(20), 1e4, 1.0, "counts"), {})
    steps.filter_candidates(candidates, None, root / "filter", "s1", FilterParams(reference="candidates"))
    numbers["tau"] = json.loads((root / "filter" / "s1.filter.json").read_text())["tau"][0]
    ks, thetas = [1, 3, 7, 15, 40, 7, 9], [0.0, 2.0, 1.25, -1.0, 0.5, 2.5, 1.0]
    # IMPUTE's trial records: the chosen trial (k 7, theta 1.25) has the lowest objective, not the lowest mse
    objective = [2.0 + 0.01 * abs(k - 7) + 0.01 * abs(t - 1.25) for k, t in zip(ks, thetas, strict=True)]
    trials = [{"k": k, "theta_sigma": t, "mse": 3.5 - 0.01 * k, "poisson": 0.2, "signal": 0.1, "objective": o}
              for k, t, o in zip(ks, thetas, objective, strict=True)]
    summary = {"mode": "zeros", "k": numbers["k"], "theta_sigma": numbers["theta_sigma"], "tuning": trials,
               "validation": "molecules", "fraction_zeros_filled": numbers["filled"], "n_observed_changed": 0,
               "label_source": "obs:cell_type", "seed": 0, "params": {"mode": "zeros", "k": None, "n_trials": 7},
               "n_cells": 200, "n_genes": 765, "neighbours_per_label": {"label": ["B", "T", "NK"], "mean_neighbours": [6.5, 7.0, 3.25]}}
    (root / "impute").mkdir()
    (root / "impute" / "s1.impute.json").write_text(json.dumps(summary))
    evaluation = {"sample": "s1", "n_cells": 200, "n_genes": 765, "label_key": "scmaskgan_label",
                  "metrics": {"wasserstein": numbers["wasserstein"], "jensen_shannon": 0.31,
                              "acc_original": 0.61, "acc_imputed": 0.66, "ari_original": 0.4, "ari_imputed": 0.45}}
    (root / "impute" / "s1.evaluation").mkdir()
    (root / "impute" / "s1.evaluation" / "s1.evaluation.json").write_text(json.dumps(evaluation))
    _png(root / "impute" / "s1.evaluation" / "s1.eval_umap.png", "umap")
    (root / "evaluate").mkdir()
    mcv = {"sample": "s1", "p_train": 0.9, "seed": 0, "mcv": [
        {"method": "no denoising", "mse": numbers["mcv_mse"], "poisson": 0.379, "seconds": None},
        {"method": "scMASKGAN (zeros)", "mse": 3.3, "poisson": 0.35, "seconds": 12.0},
        {"method": "perfect (test counts)", "mse": 0.0, "poisson": 0.1, "seconds": None}]}
    (root / "evaluate" / "s1.mcv.json").write_text(json.dumps(mcv))
    integ = root / "integrate"
    integ.mkdir()
    (integ / "integration_summary.json").write_text(json.dumps({"n_cells": 4, "n_genes": 2, "n_samples": 2, "n_clusters": 3}))
    # the data files: never read by the report
    for data in ("filter/s1.candidates.filtered.h5", "impute/s1.imputed.h5ad", "integrate/integrated.h5ad",
                 "prepare/s1.images.h5", "train/s1.model.pt"):
        (root / data).parent.mkdir(exist_ok=True)
        (root / data).write_bytes(b"not data")
    pd.DataFrame({"data": ["imputed", "imputed"], "stage": ["pca", "harmony"], "ilisi": [1.1, numbers["ilisi"]]}).to_csv(
        integ / "integration_metrics.csv", index=False)
    pd.DataFrame({"data": "imputed", "cluster": [0, 0, 1], "rank": [1, 2, 1], "gene": ["LYZ", "CST3", "CD3D"],
                  "score": [9.0, 8.0, 7.0]}).to_csv(integ / "markers.csv", index=False)
    _png(integ / "figures" / "umap.png", "integrated umap")
    info = root / "pipeline_info"
    (info / "steps").mkdir(parents=True)
    (info / "params.json").write_text(json.dumps({"input": "samplesheet.csv", "epochs": 30, "impute_mode": "zeros"}))
    (info / "versions.json").write_text(json.dumps({"python": "3.11.2", "scmaskgan": "0.1.0"}))
    (info / "run_summary.json").write_text(json.dumps({"samples": ["s1", "s2"], "wall_seconds": 98.7}))
    (info / "trace.tsv").write_text("sample\tstep\tstatus\tseconds\tprocess_peak_rss_mb\terror\n"
                                    "s1\tqc\tdone\t1.20\t300\t\ns2\ttrain\tfailed\t0.50\t310\tboom-s2\n")
    # the runner's resume record has a qc.json name too; the report must not read it as QC output
    (info / "steps" / "s1.qc.json").write_text(json.dumps({"key": "RECORD-KEY-abc123", "cells_after": 1}))
    return numbers


def _section(html: str, sid: str) -> str:
    match = re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S)
    assert match, f"section {sid} missing"
    return match.group(1)


def test_report_shows_every_section_and_key_numbers(pbmc_counts, tmp_path):
    numbers = make_results(tmp_path / "results", pbmc_counts)
    html = write_report(tmp_path / "results", tmp_path / "results" / "report").read_text()
    for sid in SECTION_IDS:
        assert "Not available" not in _section(html, sid), sid
    assert "Could not read" not in html and "not data" not in html
    assert re.search(r"<h2>Quality control</h2>", html)
    summary = _section(html, "summary")
    assert "98.7" in summary and "boom-s2" in summary  # wall time, trace with the failure
    assert "945" in summary  # cells after QC, both samples (612 + 333)
    qc = _section(html, "qc")
    assert str(numbers["cells_after"]) in qc and "333" in qc and "RECORD-KEY" not in html
    assert "lowest val_smoothed" in _section(html, "training") and "0.08765" in _section(html, "training")
    filtering = _section(html, "filtering")
    assert f"{numbers['tau']:.4g}" in filtering and "NK" in filtering and "<td class=\"num\">100</td>" in filtering
    assert "the Tukey fence of their scores" in filtering  # the rule FILTER ran with
    tuning = _section(html, "tuning")
    assert "<td class=\"num\">7</td>" in tuning and "1.25" in tuning and "molecules" in tuning
    assert "best validation objective" in tuning and '<td class="num">2</td>' in tuning  # the chosen trial's
    assert "B 6.5, T 7, NK 3.25" in tuning  # neighbours used per label
    imputation = _section(html, "imputation")
    assert "0.4321" in imputation and '<td class="num">200</td>' in imputation  # cells, from the json
    evaluation = _section(html, "evaluation")
    assert "0.2468" in evaluation and "3.408" in evaluation and "perfect (test counts)" in evaluation
    integration = _section(html, "integration")
    assert "1.732" in integration and "LYZ, CST3" in integration
    assert re.search(r'<div class="value">3</div><div class="label">clusters \(imputed\)</div>', integration)
    assert "impute_mode" in _section(html, "parameters")
    # self-contained: every image inline, no network reference anywhere
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html)
    images = re.findall(r'<img[^>]*src="([^"]*)"', html)
    # 2 QC, training, filtering, tuning, evaluation UMAP, integration UMAP
    assert len(images) == 7 and all(src.startswith("data:image/png;base64,") for src in images)


def test_report_of_an_empty_or_broken_run_says_what_is_missing(pbmc_counts, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    html = build_report(empty)
    for sid in SECTION_IDS[:-1]:  # parameters still lists the report's own versions
        assert "Not available" in _section(html, sid), sid
    assert "(missing)" in html
    results = tmp_path / "results"
    make_results(results, pbmc_counts)
    (results / "filter" / "s1.filter.json").write_text("{truncated")
    (results / "qc" / "s2.qc.json").write_text("{truncated")
    html = build_report(results)
    assert "Could not read s1.filter.json" in _section(html, "filtering")
    assert "cannot read s2.qc.json" in _section(html, "qc")
    assert "0.4321" in _section(html, "imputation")  # the rest is unaffected
    summary = _section(html, "summary")
    assert "Could not read" not in summary and "boom-s2" in summary


def test_impute_step_evaluation_is_what_the_report_shows(pbmc_counts, tmp_path):
    """IMPUTE's {id}.evaluation/ folder (steps.evaluate_sample) feeds the evaluation section."""
    results = tmp_path / "results"
    imputed = _imputed(pbmc_counts, 150, 1)
    folder = steps.evaluate_sample(imputed, "counts", results / "impute" / "a.evaluation", "a")
    record = json.loads((folder / "a.evaluation.json").read_text())
    assert record["metrics"]["n_observed_changed"] == 0 and (folder / "a.eval_umap.png").is_file()
    assert main(["report", str(results), "--outdir", str(results / "report")]) == 0
    evaluation = _section((results / "report" / "report.html").read_text(), "evaluation")
    assert f"{record['metrics']['wasserstein']:.4g}" in evaluation and "acc" in evaluation
    assert not (results / "report" / "evaluation").exists()  # the report computes nothing
    # a failed evaluation leaves a json naming the error, which the report shows
    steps.evaluate_sample(ad.AnnData(np.ones((3, 2), dtype=np.float32)), "counts", results / "impute" / "a.evaluation", "a")
    assert "the evaluation failed (KeyError" in _section(build_report(results), "evaluation")


def test_report_renders_in_headless_chromium(pbmc_counts, tmp_path):
    if not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no chromium on PATH (apt-get install chromium) to render the report")
    make_results(tmp_path / "results", pbmc_counts)
    html = write_report(tmp_path / "results", tmp_path / "report")
    png = tmp_path / "report.png"
    subprocess.run(["bash", str(ROOT / "scripts" / "render_report.sh"), str(html), str(png), "1280", "2400"],
                   check=True, capture_output=True, timeout=120)
    from matplotlib.image import imread

    pixels = imread(png)
    assert pixels.shape[:2] == (2400, 1280)
    # content, not a blank page: the header band is the accent colour, the body holds text and figures
    assert pixels[20, 640, :3] == pytest.approx([0x2C / 255, 0x5F / 255, 0x8A / 255], abs=0.02)
    assert pixels[200:, 300:].std() > 0.05


@pytest.mark.parametrize("clustering, shown", [
    ({"status": "circular", "suffix": "_circular", "reason": "circular: labels were given to the method (obs:cell_type)"},
     "circular: labels were given to the method"),
    ({"status": "accuracy", "suffix": "", "reason": "accuracy: the method computed its own labels"}, "accuracy"),
    (None, "unverified"),  # written before label sources were recorded
])
def test_report_marks_clustering_scores_that_are_not_accuracy(tmp_path, clustering, shown):
    suffix = clustering["suffix"] if clustering else ""
    metrics = {"wasserstein": 0.1, f"ari_original{suffix}": 0.4, f"ari_imputed{suffix}": 0.9876}
    record = {"sample": "s", "label_key": "cell_type", "metrics": metrics, "clustering": clustering}
    (tmp_path / "evaluate").mkdir()
    (tmp_path / "evaluate" / "s.evaluation.json").write_text(json.dumps(record))
    evaluation = _section(build_report(tmp_path), "evaluation")
    assert f"Clusters against the labels: {shown}" in evaluation and "0.9876" in evaluation
    row = re.search(r"<td>(ari[^<]*)</td>", evaluation).group(1)
    assert row == ("ari" if shown == "accuracy" else f"ari ({clustering['status'] if clustering else 'unverified'})")
    assert f"ari_imputed{suffix}" not in evaluation  # shown once, in the paired table
