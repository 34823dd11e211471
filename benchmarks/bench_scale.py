"""Performance and scaling of scMASKGAN next to MAGIC in the same run (``make bench-scale``).

Three parts (``--parts``), all on counts built from the demo's real cells by
:func:`datasets.synthesise` (resampling, binomial thinning, NB-modelled extra genes),
every method in its own process on the MCV train part (so an MCV score comes free):

* ``scaling``: ``--sizes`` cells (default 1k, 2k, 4k, 8k) x ``--genes`` (2,000) for
  ``--methods`` (default MAGIC and scMASKGAN); wall time and peak RSS per method, fitted
  log-log exponents (targets for scMASKGAN: time <= 1.05, memory <= 1.0), a plot.
* ``10k``: ``--big`` (10,000 x 2,000): the full ``scmaskgan impute`` command with default
  settings (the API ``scmaskgan.impute`` when the command is not there) and MAGIC;
  targets <= 5 min, peak RSS <= 1 GiB; ratios to MAGIC.
* ``wide``: ``--wide`` (1,000 x 33,514, the neuroblastoma samples' shape; 92 % zeros,
  within their 84-97 %): the same; targets <= 15 min, <= 2 GiB.
* ``steps``: a profile: every pipeline step (``scmaskgan qc|prepare|train|generate|
  filter|impute-step``, defaults, QC filters off) in its own process on the ``--big``
  data: time, CPU time and peak RSS per step, and seconds per training epoch.

Targets are judged on the whole process (``process_s``: start-up, reading and writing
included) and its peak RSS. Prints the tables with PASS/MISS and the training seconds
per epoch per device, and writes ``scale_scaling.csv``, ``scale_targets.csv``,
``scale_steps.csv``, ``scale.md`` and ``scale_scaling.png`` to ``--outdir``.

Example (a quick run)::

    .venv/bin/python benchmarks/bench_scale.py --parts scaling --sizes 1000,2000 --methods magic
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets  # noqa: E402
from harness import evaluate_methods, machine, machine_markdown, markdown_table, run_command  # noqa: E402
from methods import METHODS  # noqa: E402

from scmaskgan.io.atomic import atomic_path, write_text_atomic  # noqa: E402

#: Per case: (seconds, MiB) targets of issue 8.
TARGETS = {"10k": (300.0, 1024.0), "wide": (900.0, 2048.0)}
#: Scaling targets: log-log exponent of wall time and of peak memory.
EXPONENT_TARGETS = {"wall": 1.05, "memory": 1.0}
WIDE_ZERO_FRACTION = 0.92
SCALING_COLUMNS = ["n_cells", "n_genes", "method", "status", "wall_s", "cpu_s", "process_s", "peak_rss_mb",
                   "rss_before_mb", "mcv_mse", "mcv_poisson", "seconds_per_epoch", "note"]
TARGET_COLUMNS = ["case", "data", "method", "status", "process_s", "process_cpu_s", "peak_rss_mb", "target_s", "target_mb",
                  "time", "memory", "time_vs_magic", "memory_vs_magic", "mcv_mse", "mcv_poisson",
                  "seconds_per_epoch", "note"]


def parse_shape(text: str) -> tuple[int, int]:
    """``'10000x2000'`` -> ``(10000, 2000)``."""
    try:
        cells, genes = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"bench_scale: error: {text!r} is not '<cells>x<genes>'") from None
    return cells, genes


def scmaskgan_method() -> str:
    """The user's command ``scmaskgan impute`` when it exists, else the API."""
    return "scmaskgan-cli" if METHODS["scmaskgan-cli"].unavailable() is None else "scmaskgan-zeros"


def fit_exponent(x: list[float], y: list[float]) -> float:
    """Slope of log(y) against log(x) (least squares); NaN with fewer than two finite points."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    ok = np.isfinite(xs) & np.isfinite(ys) & (xs > 0) & (ys > 0)
    if ok.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(xs[ok]), np.log(ys[ok]), 1)[0])


def _verdict(value: float, limit: float) -> str:
    return "–" if not np.isfinite(value) else ("PASS" if value <= limit else "MISS")


def exponents(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Fitted exponents of wall time, peak RSS and RSS increment per method, with verdicts."""
    frame = pd.DataFrame(rows)
    out = []
    for method, group in frame[frame["status"] == "ok"].groupby("method", sort=False):
        n = group["n_cells"].tolist()
        wall = fit_exponent(n, group["wall_s"].tolist())
        cpu = fit_exponent(n, group["cpu_s"].tolist())
        peak = fit_exponent(n, group["peak_rss_mb"].tolist())
        increment = fit_exponent(n, (group["peak_rss_mb"] - group["rss_before_mb"]).tolist())
        top = group.nlargest(2, "n_cells")
        last = fit_exponent(top["n_cells"].tolist(), top["cpu_s"].tolist())
        judged = str(method).startswith("scmaskgan")
        out.append({
            "method": method, "sizes": ",".join(str(v) for v in n),
            "wall_exponent": wall, "cpu_exponent": cpu, "peak_rss_exponent": peak, "rss_increment_exponent": increment,
            "cpu_exponent_largest_pair": last,
            "wall_target": _verdict(wall, EXPONENT_TARGETS["wall"]) if judged else "(reference)",
            "memory_target": _verdict(peak, EXPONENT_TARGETS["memory"]) if judged else "(reference)",
        })
    return out


def plot_scaling(rows: list[dict[str, object]], exps: list[dict[str, object]], path: Path) -> None:
    """Log-log plot of wall time and peak RSS against cells, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame(rows)
    frame = frame[frame["status"] == "ok"]
    slopes = {e["method"]: e for e in exps}
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(10, 4))
    for method, group in frame.groupby("method", sort=False):
        e = slopes.get(method, {})
        ax_t.loglog(group["n_cells"], group["wall_s"], "o-", label=f"{method} (slope {e.get('wall_exponent', np.nan):.2f})")
        ax_m.loglog(group["n_cells"], group["peak_rss_mb"], "o-",
                    label=f"{method} (slope {e.get('peak_rss_exponent', np.nan):.2f})")
    for ax, ylabel in ((ax_t, "wall time of the method call (s)"), (ax_m, "peak RSS of the process (MiB)")):
        ax.set_xlabel("cells (2,000 genes)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Scaling on counts built from the demo's real cells")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def run_scaling(args: argparse.Namespace, workdir: Path) -> list[dict[str, object]]:
    """Part ``scaling``: every size, every method."""
    rows = []
    for n_cells in args.sizes:
        adata = datasets.synthesise(n_cells, args.genes, seed=args.seed)
        found = evaluate_methods(adata, args.methods, workdir / f"scaling_{n_cells}", args.threads, args.timeout,
                                 cluster=False, seed=args.seed)
        rows += [{"n_cells": n_cells, "n_genes": args.genes, **r} for r in found]
    return rows


def run_target(case: str, shape: tuple[int, int], args: argparse.Namespace, workdir: Path) -> list[dict[str, object]]:
    """Parts ``10k`` and ``wide``: scMASKGAN's full run and MAGIC on one data set, judged on the targets."""
    n_cells, n_genes = shape
    zeros = WIDE_ZERO_FRACTION if case == "wide" else None
    adata = datasets.synthesise(n_cells, n_genes, seed=args.seed, zero_fraction=zeros)
    data = f"{n_cells} x {n_genes} ({adata.uns['benchmark_data']['zero_fraction']:.1%} zeros)"
    names = [scmaskgan_method(), "magic"]
    found = evaluate_methods(adata, names, workdir / case, args.threads, args.timeout, cluster=False, seed=args.seed)
    target_s, target_mb = TARGETS[case]
    magic = next(r for r in found if r["method"] == "magic")
    rows = []
    for r in found:
        row = {"case": case, "data": data, **r, "target_s": target_s, "target_mb": target_mb}
        row["time"] = _verdict(float(r["process_s"]), target_s)
        row["memory"] = _verdict(float(r["peak_rss_mb"]), target_mb)
        row["time_vs_magic"] = float(r["process_s"]) / float(magic["process_s"])
        row["memory_vs_magic"] = float(r["peak_rss_mb"]) / float(magic["peak_rss_mb"])
        if r["method"] == "magic":
            row["time"] = row["memory"] = "(reference)"
        rows.append(row)
    return rows


def step_commands(counts: Path, folder: Path, sample: str = "s") -> list[tuple[str, list[str]]]:
    """The pipeline's steps as ``scmaskgan`` commands, one process each, with default settings.

    QC runs with its filters off (``--min-genes 0 --min-cells 0 --max-mito-pct 100``),
    so the steps see the same cells and genes as ``scmaskgan impute`` (which has no QC).
    """
    from scmaskgan.pipeline.steps import output_paths

    cli = str(Path(sys.executable).parent / "scmaskgan")
    out = {step: output_paths(step, folder, sample) for step in ("qc", "prepare", "train", "generate", "filter")}
    common = ["--outdir", str(folder), "--sample-id", sample]
    qc, images = str(out["qc"]["h5ad"]), str(out["prepare"]["images"])
    return [
        ("qc", [cli, "qc", str(counts), *common, "--min-genes", "0", "--min-cells", "0", "--max-mito-pct", "100"]),
        ("prepare", [cli, "prepare", qc, *common]),
        ("train", [cli, "train", images, *common]),
        ("generate", [cli, "generate", str(out["train"]["model"]), images, *common]),
        ("filter", [cli, "filter", str(out["generate"]["candidates"]), *common]),
        ("impute-step", [cli, "impute-step", qc, images, str(out["filter"]["filtered"]), *common]),
    ]


def run_steps(shape: tuple[int, int], args: argparse.Namespace, workdir: Path) -> list[dict[str, object]]:
    """Part ``steps``: time, CPU and peak RSS of every pipeline step on the ``--big`` data (a profile)."""
    n_cells, n_genes = shape
    folder = workdir / "steps"
    folder.mkdir(parents=True, exist_ok=True)
    counts = folder / "counts.h5ad"
    datasets.synthesise(n_cells, n_genes, seed=args.seed).write_h5ad(counts)
    rows: list[dict[str, object]] = []
    for step, command in step_commands(counts, folder):
        print(f"[bench] step {step} on {n_cells} x {n_genes} ...", flush=True)
        r = run_command(command, folder / f"{step}.log", args.threads, args.timeout)
        rows.append({"step": step, "status": r.status, "process_s": r.process_s, "process_cpu_s": r.process_cpu_s,
                     "peak_rss_mb": r.peak_rss_mb, "note": r.note})
        if r.status != "ok":
            break
    if len(rows) > 2 and rows[2]["status"] == "ok":
        rows[2].update(_epoch_record(folder / "s.model.pt"))
        rows += _other_devices(folder, args, rows[2]["device"])
    return rows


def _epoch_record(model_pt: Path) -> dict[str, object]:
    """Seconds per epoch, epochs and device from a model file's training record."""
    import torch

    train = torch.load(model_pt, map_location="cpu", weights_only=True)["train"]
    return {"seconds_per_epoch": float(train["seconds_per_epoch"]), "device": str(train["device"]),
            "note": f"{train['epochs_run']} epochs (best {train['best_epoch']}), early stopped: {train['early_stopped']}"}


def _other_devices(folder: Path, args: argparse.Namespace, used: object) -> list[dict[str, object]]:
    """A short TRAIN (3 epochs) on every other device found (CPU, CUDA), for seconds per epoch there."""
    import torch

    found = ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    rows = []
    images = folder / "s.images.h5"
    for device in found:
        if str(used).startswith(device.split(":")[0]):
            continue
        out = folder / f"train_{device.replace(':', '')}"
        command = [str(Path(sys.executable).parent / "scmaskgan"), "train", str(images), "--outdir", str(out),
                   "--sample-id", "s", "--device", device, "--epochs", "3", "--min-epochs", "3"]
        r = run_command(command, out / "train.log", args.threads, args.timeout)
        row = {"step": f"train ({device}, 3 epochs)", "status": r.status, "process_s": r.process_s,
               "process_cpu_s": r.process_cpu_s, "peak_rss_mb": r.peak_rss_mb, "note": r.note}
        if r.status == "ok":
            row.update(_epoch_record(out / "s.model.pt"))
        rows.append(row)
    return rows


def epoch_lines(rows: list[dict[str, object]]) -> list[str]:
    """'device: seconds per epoch' lines from the scMASKGAN runs that reported them."""
    lines = []
    for r in rows:
        spe = r.get("seconds_per_epoch")
        if isinstance(spe, float) and np.isfinite(spe):
            what = r.get("method") or f"step {r.get('step')}"
            where = f"{r['n_cells']} cells" if "n_cells" in r else str(r.get("data", "the steps' data"))
            lines.append(f"- {r.get('device') or 'cpu'}: {spe:.2f} s/epoch ({what}, {where})")
    return lines


def main(argv: list[str] | None = None) -> None:
    """Parse options, run the parts, print and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outdir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--parts", default="scaling,10k,wide,steps",
                        help="comma-separated, of: scaling, 10k, wide, steps")
    parser.add_argument("--sizes", default="1000,2000,4000,8000", help="cells of the scaling part")
    parser.add_argument("--genes", type=int, default=2000, help="genes of the scaling part")
    parser.add_argument("--methods", default="magic,scmaskgan-zeros", help="methods of the scaling part")
    parser.add_argument("--big", default="10000x2000", help="shape of the '10k' part")
    parser.add_argument("--wide", default="1000x33514", help="shape of the 'wide' part")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads per method")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a method is killed")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.sizes = [int(v) for v in args.sizes.split(",") if v.strip()]
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = sorted(set(args.methods) - set(METHODS)) + sorted(set(parts) - {"scaling", "10k", "wide", "steps"})
    if unknown:
        raise SystemExit(f"bench_scale: error: unknown method(s) or part(s): {', '.join(unknown)}")

    scaling_rows: list[dict[str, object]] = []
    target_rows: list[dict[str, object]] = []
    step_rows: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory(prefix="scmaskgan-scale-") as tmp:
        workdir = args.workdir or Path(tmp)
        if "scaling" in parts:
            scaling_rows = run_scaling(args, workdir)
        for case, shape in (("10k", args.big), ("wide", args.wide)):
            if case in parts:
                target_rows += run_target(case, parse_shape(shape), args, workdir)
        if "steps" in parts:
            step_rows = run_steps(parse_shape(args.big), args, workdir)

    info = machine(args.threads)
    sections = [
        "# Performance and scaling (issue 8)",
        "Data built from the demo's real cells (`benchmarks/datasets.py`); every method in its own process on the "
        "MCV train part. `wall_s`: the method call, `cpu_s` its CPU seconds (all threads); `process_s`, "
        "`process_cpu_s`: the whole process; `peak_rss_mb`: its peak resident memory (MiB). The 2-core machine is shared with other work while this runs, so times carry "
        "noise of some tens of percent.",
    ]
    print()
    if scaling_rows:
        exps = exponents(scaling_rows)
        args.outdir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.outdir / "scale_scaling.csv", pd.DataFrame(scaling_rows).to_csv(index=False))
        plot_scaling(scaling_rows, exps, args.outdir / "scale_scaling.png")
        exp_cols = ["method", "sizes", "wall_exponent", "wall_target", "cpu_exponent", "cpu_exponent_largest_pair",
                    "peak_rss_exponent", "memory_target",
                    "rss_increment_exponent"]
        text = (f"## Scaling ({args.genes} genes)\n\n" + markdown_table(scaling_rows, SCALING_COLUMNS)
                + "\n\nFitted log-log exponents (targets for scMASKGAN: wall time <= 1.05, peak memory <= 1.0; the "
                "CPU-time exponent is less disturbed by other work on the machine; a fixed cost, such as training "
                "on a fixed number of cells per epoch, flattens a fit over all sizes, so the exponent between the "
                "two largest sizes shows the growth that remains):\n\n"
                + markdown_table(exps, exp_cols) + "\n\n![scaling](scale_scaling.png)")
        sections.append(text)
        print(text + "\n")
    if target_rows:
        write_text_atomic(args.outdir / "scale_targets.csv", pd.DataFrame(target_rows).to_csv(index=False))
        text = "## Targets (whole process)\n\n" + markdown_table(target_rows, TARGET_COLUMNS)
        sections.append(text)
        print(text + "\n")
    if step_rows:
        write_text_atomic(args.outdir / "scale_steps.csv", pd.DataFrame(step_rows).to_csv(index=False))
        text = (f"## Profile: the pipeline's steps, one process each, on the {args.big} data\n\n"
                + markdown_table(step_rows, ["step", "status", "process_s", "process_cpu_s", "peak_rss_mb",
                                             "seconds_per_epoch", "device", "note"]))
        sections.append(text)
        print(text + "\n")
    epochs = epoch_lines(scaling_rows + target_rows + step_rows)
    text = "## Training seconds per epoch per device\n\n" + ("\n".join(epochs) or "- none reported")
    sections += [text, "## Machine\n\n" + machine_markdown(info),
                 "Command: `" + " ".join(["python", "benchmarks/bench_scale.py", *sys.argv[1:]]) + "`"]
    print(text)
    md = write_text_atomic(args.outdir / "scale.md", "\n\n".join(sections) + "\n")
    print(f"\nwrote {md}")


if __name__ == "__main__":
    main()
