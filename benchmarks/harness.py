"""Run each method in its own process, measure it, score it; describe the machine.

``run_isolated`` starts ``python benchmarks/harness.py worker ...`` (or, for a method
with a command line, that command) in a child process through the tiny launcher
:mod:`measure`, which waits for it with ``os.wait4`` and so gets that child's own
resource usage: ``peak_rss_mb`` is its maximum resident set size (Linux
``ru_maxrss``), which includes the Python interpreter, the imported libraries and the
loaded data, as a user running the method would see it. The worker also reports
``wall_s`` (the method call alone, after its package is imported, without start-up
and file IO), ``cpu_s`` (the CPU seconds of that call, all threads; a busy shared
machine disturbs them less than the wall time) and ``rss_before_mb`` (its RSS just
before the call), so the method's own increment can be read as
``peak_rss_mb - rss_before_mb``. For a command line, ``wall_s`` and ``cpu_s`` are
the whole process's (``process_s``, ``process_cpu_s``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import anndata as ad

HERE = Path(__file__).resolve().parent
_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS")


@dataclass
class RunResult:
    """What one isolated run measured. ``status`` is ``ok``, ``failed``, ``timeout`` or ``skipped``."""

    status: str
    wall_s: float = float("nan")
    cpu_s: float = float("nan")
    process_s: float = float("nan")
    process_cpu_s: float = float("nan")
    peak_rss_mb: float = float("nan")
    rss_before_mb: float = float("nan")
    note: str = ""
    output: str = ""
    seconds_per_epoch: float = float("nan")
    device: str = ""


def _env(threads: int) -> dict[str, str]:
    env = dict(os.environ)
    env.update({name: str(threads) for name in _THREAD_VARS})
    env["PYTHONWARNINGS"] = "ignore"
    return env


def run_command(command: list[str], log: Path, threads: int, timeout_s: float | None = None) -> RunResult:
    """Run ``command`` through :mod:`measure` (see why there); its wall time and peak RSS.

    Parameters
    ----------
    command
        The argv to execute.
    log
        File receiving the child's stdout and stderr; the measurements go beside it.
    threads
        Thread count given to BLAS/OpenMP/torch through the environment.
    timeout_s
        Kill the command after this many seconds (status ``timeout``).
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    measured = log.with_suffix(".measure.json")
    launcher = [sys.executable, str(HERE / "measure.py"), str(measured), str(timeout_s or 0), "--", *command]
    with open(log, "w") as out:
        subprocess.run(launcher, stdout=out, stderr=subprocess.STDOUT, env=_env(threads), check=False)
    if not measured.exists():
        return RunResult("failed", note=f"the launcher wrote no measurements; see {log}")
    m = json.loads(measured.read_text())
    result = RunResult("ok", wall_s=m["process_s"], cpu_s=m["cpu_s"], process_s=m["process_s"],
                       process_cpu_s=m["cpu_s"], peak_rss_mb=m["peak_rss_mb"])
    if m["exit_code"] != 0:
        result.status = "timeout" if m["timed_out"] else "failed"
        tail = log.read_text(errors="replace").strip().splitlines()[-1:]
        result.note = f"killed after {timeout_s:.0f} s" if m["timed_out"] else (tail[0][:200] if tail else "")
    return result


def run_isolated(
    method: str, input_h5ad: Path, workdir: Path, threads: int, timeout_s: float | None = None
) -> RunResult:
    """Run one method of :mod:`methods` on ``input_h5ad`` in a fresh process.

    Returns
    -------
    The measurements; ``output`` is the file with the denoised counts (``.npy`` from
    the worker, ``.h5ad`` from a command line).
    """
    from methods import METHODS

    spec = METHODS[method]
    reason = spec.unavailable()
    if reason:
        return RunResult("skipped", note=reason)
    stem = f"{input_h5ad.stem}.{method}"
    log = workdir / f"{stem}.log"
    if spec.cli is not None:
        output = workdir / f"{stem}.h5ad"
        result = run_command(spec.cli(input_h5ad, output), log, threads, timeout_s)
    else:
        output = workdir / f"{stem}.npy"
        report = workdir / f"{stem}.json"
        command = [sys.executable, str(HERE / "harness.py"), "worker", "--method", method,
                   "--input", str(input_h5ad), "--output", str(output), "--report", str(report),
                   "--threads", str(threads)]
        result = run_command(command, log, threads, timeout_s)
        if result.status == "ok":
            inner = json.loads(report.read_text())
            result.wall_s = inner["wall_s"]
            result.cpu_s = inner["cpu_s"]
            result.rss_before_mb = inner["rss_before_mb"]
            _training_info(result, inner.get("info", {}))
    if result.status == "ok":
        result.output = str(output)
        if spec.cli is not None:
            _training_info(result, _uns_of(output))
    return result


def find_key(tree: object, key: str) -> object | None:
    """The first value stored under ``key`` anywhere in nested dicts/lists, or ``None``."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        children = list(tree.values())
    elif isinstance(tree, list | tuple):
        children = list(tree)
    else:
        return None
    for child in children:
        found = find_key(child, key)
        if found is not None:
            return found
    return None


def _training_info(result: RunResult, info: object) -> None:
    """Seconds per training epoch and device, when the method reported them (scMASKGAN does)."""
    spe = find_key(info, "seconds_per_epoch")
    if spe is not None:
        result.seconds_per_epoch = float(spe)
        result.device = str(find_key(info, "device") or "cpu")


def _uns_of(path: Path) -> dict[str, object]:
    import anndata as ad

    return dict(ad.read_h5ad(path, backed="r").uns)


def _rss_now_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def worker(method: str, input_h5ad: Path, output: Path, report: Path, threads: int) -> None:
    """Inside the child: load the counts, time the method call, save its output."""
    import anndata as ad
    from methods import METHODS

    spec = METHODS[method]
    if spec.uses_torch:
        import torch

        torch.set_num_threads(threads)
    for module in spec.imports:
        importlib.import_module(module)
    adata = ad.read_h5ad(input_h5ad)
    rss_before = _rss_now_mb()
    start, cpu_start = time.perf_counter(), time.process_time()
    denoised = spec.run(adata)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    info: object = {}
    if isinstance(denoised, tuple):
        denoised, info = denoised
    np.save(output, np.asarray(denoised, dtype=np.float32))
    report.write_text(json.dumps({"wall_s": wall, "cpu_s": cpu, "rss_before_mb": rss_before, "info": info}, default=str))


def load_output(path: str, reference: ad.AnnData) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A method's output as a dense array, with the input rows and columns it covers.

    An ``.h5ad`` output (a command line) may have lost cells or genes to the tool's
    own QC; it is matched to ``reference`` by ``obs_names`` and ``var_names``.

    Returns
    -------
    ``(denoised, rows, cols)``: ``denoised`` has shape ``(len(rows), len(cols))``.
    """
    import anndata as ad

    if path.endswith(".npy"):
        x = np.load(path)
        return x, np.arange(x.shape[0]), np.arange(x.shape[1])
    out = ad.read_h5ad(path)
    rows = reference.obs_names.get_indexer(out.obs_names)
    cols = reference.var_names.get_indexer(out.var_names)
    if (rows < 0).any() or (cols < 0).any():
        raise ValueError(f"{path}: cells or genes not in the input")
    x = out.X.toarray() if hasattr(out.X, "toarray") else np.asarray(out.X)
    return x, rows, cols


def evaluate_methods(
    adata: ad.AnnData,
    names: list[str],
    workdir: Path,
    threads: int,
    timeout_s: float | None = None,
    cluster: bool = True,
    repeats: int = 1,
    seed: int = 0,
) -> list[dict[str, object]]:
    """Split ``adata``'s counts for MCV, run every method on the train part in its own process, score it.

    Parameters
    ----------
    adata
        Integer counts in X; ``obs['cell_type']`` gives the labels for ARI/NMI.
    names
        Method names of :data:`methods.METHODS`.
    workdir
        Folder for the train counts, the methods' outputs and logs.
    threads, timeout_s
        As for :func:`run_isolated`.
    cluster
        Also compute ARI/NMI of Leiden clusters.
    repeats
        Runs per method; the fastest is kept (the machine is shared, so the minimum
        is the least disturbed measurement).
    seed
        Seed of the MCV split.

    Returns
    -------
    One row per method: measurements and scores.
    """
    import anndata as ad
    from methods import METHODS
    from scoring import score_output

    from scmaskgan.method.mcv import split_counts

    workdir.mkdir(parents=True, exist_ok=True)
    train, test = split_counts(adata.X, seed=seed)
    train_path = workdir / "train.h5ad"
    ad.AnnData(X=train.astype(np.float32), obs=adata.obs[["cell_type"]].copy(),
               var=adata.var[[]].copy()).write_h5ad(train_path)
    labels = adata.obs["cell_type"].astype(str).to_numpy() if cluster else None
    rows = []
    for name in names:
        print(f"[bench] {name} on {adata.n_obs} x {adata.n_vars} ...", flush=True)
        runs = [run_isolated(name, train_path, workdir, threads, timeout_s) for _ in range(max(1, repeats))]
        ok = [r for r in runs if r.status == "ok"]
        result = min(ok, key=lambda r: r.wall_s) if ok else runs[0]
        row: dict[str, object] = {"method": name, "label": METHODS[name].label, **result_dict(result),
                                  "load_1min": os.getloadavg()[0],
                                  "measured_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime())}
        if result.status == "ok":
            denoised, r_idx, c_idx = load_output(result.output, adata)
            if len(r_idx) < adata.n_obs or len(c_idx) < adata.n_vars:
                row["note"] = f"scored on the {len(r_idx)} cells x {len(c_idx)} genes the method kept"
            row.update(score_output(train[r_idx][:, c_idx], test[r_idx][:, c_idx], denoised,
                                    labels[r_idx] if cluster else None))
            for r in ok:
                Path(r.output).unlink(missing_ok=True)
        print(f"[bench] {name}: {result.status} wall {result.wall_s:.1f} s, peak RSS {result.peak_rss_mb:.0f} MB "
              f"{result.note}", flush=True)
        rows.append(row)
    return rows


def result_dict(result: RunResult) -> dict[str, object]:
    """A result as a flat dict (without the output path)."""
    row = asdict(result)
    row.pop("output")
    return row


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine(threads: int) -> dict[str, str]:
    """Cores, CPU model, RAM, OS, load, torch version and threads, GPU, and the peers' versions."""
    from importlib import metadata

    import psutil
    import torch

    info = {
        "cpu": _cpu_model(),
        "logical cores": str(os.cpu_count()),
        "physical cores": str(psutil.cpu_count(logical=False)),
        "RAM": f"{psutil.virtual_memory().total / 2**30:.1f} GiB",
        "OS": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "CUDA": torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none",
        "threads (BLAS/OpenMP/torch) per method": str(threads),
        "load average (1, 5, 15 min) at the end": ", ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    for package in ("scmaskgan", "numpy", "scanpy", "magic-impute", "halra", "scvi-tools"):
        try:
            info[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            info[package] = "not installed"
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True,
                                text=True, check=True).stdout.strip()
        info["git commit"] = commit
    except (OSError, subprocess.CalledProcessError):
        pass
    info["date (UTC)"] = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    return info


def machine_markdown(info: dict[str, str]) -> str:
    """The machine description as a markdown bullet list."""
    return "\n".join(f"- {k}: {v}" for k, v in info.items())


def markdown_table(rows: list[dict[str, object]], columns: list[str]) -> str:
    """A GitHub markdown table of ``rows`` restricted to ``columns`` (floats to 4 significant digits)."""

    def cell(value: object) -> str:
        if isinstance(value, float):
            return "–" if np.isnan(value) else f"{value:.4g}"
        return str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(r.get(c, float("nan"))) for c in columns) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the worker process (``harness.py worker ...``)."""
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    w = sub.add_parser("worker", help="run one method (used by the benchmarks)")
    w.add_argument("--method", required=True)
    w.add_argument("--input", type=Path, required=True)
    w.add_argument("--output", type=Path, required=True)
    w.add_argument("--report", type=Path, required=True)
    w.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    worker(args.method, args.input, args.output, args.report, args.threads)


if __name__ == "__main__":
    main()
