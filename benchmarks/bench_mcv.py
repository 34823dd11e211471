"""Molecular cross-validation of scMASKGAN's imputation on real PBMCs.

Data: scanpy's ``pbmc68k_reduced`` as counts (700 cells x 765 genes, 10 cell types).
Every count is split binomially (``scmaskgan.method.mcv.split_counts``, seed 0); methods see
the train part, scores are the MSE of log-normalised values and the Poisson loss on
the held-out part (``docs/evaluation.md``). Three tables:

1. **Peers** (each in its own process, see ``harness.py``; p_train = 0.9): no
   denoising, kNN smoothing and MAGIC with ``docs/evaluation.md``'s settings.
2. **scMASKGAN, the whole pipeline** with the known cell types (``label_key='cell_type'``;
   ``--leiden`` lets PREPARE find Leiden labels instead): one fit of PREPARE, TRAIN,
   GENERATE, FILTER with the defaults, then IMPUTE in both modes, in one measured
   process per split, for p_train = 0.9 and 0.5. Wall time includes the GAN's
   training; peak RSS is the process's. (``bench_peers.py`` runs the API without labels
   next to more peers.)
3. **The IMPUTE step alone, with stand-in candidates**: the cells are split in two
   halves; each half is imputed from the other half's (real, encoded) cells of the
   same label, as if the GAN had generated perfect copies of real cells. Rows: the
   shipped algorithm in both modes (k and theta tuned), and ablations at fixed k:
   the zero-fill rule (Poisson posterior given the zero, the neighbours' plain mean,
   keep the zero) and the distance (all genes, the cell's observed genes only).
   p_train = 0.9 (``docs/evaluation.md``) and 0.5 (the held-out half is then a replicate
   of the seen half at the same depth).

Writes ``mcv_pbmc.csv`` and ``mcv_pbmc.md`` to ``--outdir``.

Example::

    .venv/bin/python benchmarks/bench_mcv.py --outdir benchmarks/results
    .venv/bin/python benchmarks/bench_mcv.py --skip-peers --skip-gan   # the IMPUTE step only, a few minutes
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import evaluate_methods, machine, machine_markdown, markdown_table, run_command  # noqa: E402

from scmaskgan.core.config import ImputeParams  # noqa: E402
from scmaskgan.io.atomic import write_text_atomic  # noqa: E402
from scmaskgan.io.demo_data import pbmc_counts  # noqa: E402
from scmaskgan.method.encode import decode, fit_encoding  # noqa: E402
from scmaskgan.method.imputation import cell_depth, estimate, impute_matrix  # noqa: E402
from scmaskgan.method.mcv import score, split_counts  # noqa: E402
from scmaskgan.method.neighbours import encode_rows, find_neighbours, select_neighbours  # noqa: E402

COLUMNS = ["table", "method", "candidates", "p_train", "mse", "poisson", "k", "theta_sigma", "wall_s",
           "peak_rss_mb", "note"]
PEERS = ("none", "knn", "magic")
#: Neighbours of the fixed-k ablations (about what tuning picks on this data).
ABLATION_K = 30


def _row(table: str, method: str, candidates: str, p_train: float, train, test, values,  # noqa: ANN001
         seconds: float, **extra: object) -> dict[str, object]:
    s = score(train, test, values)
    return {"table": table, "method": method, "candidates": candidates, "p_train": p_train, "mse": s.mse,
            "poisson": s.poisson, "wall_s": seconds, **extra}


# ---------------------------------------------------------------- table 1
def peer_rows(adata: ad.AnnData, threads: int, timeout: float) -> list[dict[str, object]]:
    """No denoising, kNN and MAGIC, each in its own measured process."""
    with tempfile.TemporaryDirectory(prefix="scmaskgan-mcv-") as tmp:
        rows = evaluate_methods(adata, list(PEERS), Path(tmp), threads, timeout, cluster=False)
    return [{"table": "1 peers", "method": r["label"], "candidates": "–", "p_train": 0.9, "mse": r.get("mcv_mse"),
             "poisson": r.get("mcv_poisson"), "wall_s": r.get("wall_s"), "peak_rss_mb": r.get("peak_rss_mb"),
             "note": r.get("note", "")} for r in rows]


# ---------------------------------------------------------------- table 2
def gan_worker(p_train: float, seed: int, leiden: bool, report: Path) -> None:
    """Inside the measured child: fit the real pipeline once, IMPUTE in both modes, score."""
    import scmaskgan

    adata = pbmc_counts()
    train, test = split_counts(adata.X, p_train, seed)
    data = ad.AnnData(X=train.astype(np.float32), obs=adata.obs[["cell_type"]].copy(), var=adata.var[[]].copy())
    start = time.perf_counter()
    model = scmaskgan.ScMaskGAN(seed, label_key=None if leiden else "cell_type").fit(data)
    fit_s = time.perf_counter() - start
    meta = model.train_record_
    rows = []
    for mode in ("zeros", "denoise"):
        model.flat_params_["impute_mode"] = mode
        start = time.perf_counter()
        out = model.transform(data)
        impute_s = time.perf_counter() - start
        rec = out.uns["scmaskgan"]
        rows.append(_row(
            "2 scMASKGAN pipeline", f"scMASKGAN {mode}", f"GAN ({'Leiden' if leiden else 'cell_type'} labels)",
            p_train, train, test, out.X, fit_s + impute_s, k=rec["k"], theta_sigma=rec["theta_sigma"],
            note=f"fit {fit_s:.0f} s ({meta.get('epochs_run')} epochs, best {meta.get('best_epoch')}), "
                 f"impute {impute_s:.1f} s, {len(model.candidates_)} candidates kept",
        ))
    report.write_text(json.dumps(rows))


def gan_rows(p_train: float, seed: int, leiden: bool, threads: int, timeout: float) -> list[dict[str, object]]:
    """Run :func:`gan_worker` in its own process through the harness (peak RSS of that process)."""
    with tempfile.TemporaryDirectory(prefix="scmaskgan-mcv-") as tmp:
        report = Path(tmp) / "rows.json"
        command = [sys.executable, __file__, "--gan-worker", str(p_train), "--seed", str(seed),
                   "--report", str(report)] + (["--leiden"] if leiden else [])
        result = run_command(command, Path(tmp) / "gan.log", threads, timeout)
        if result.status != "ok":
            return [{"table": "2 scMASKGAN pipeline", "method": "scMASKGAN", "p_train": p_train,
                     "note": f"{result.status}: {result.note}"}]
        rows = json.loads(report.read_text())
    for row in rows:
        row["peak_rss_mb"] = result.peak_rss_mb
    return rows


# ---------------------------------------------------------------- table 3
def _halves(n: int) -> list[np.ndarray]:
    cells = np.arange(n) % 2 == 0
    return [cells, ~cells]


def stand_in_rows(adata: ad.AnnData, p_train: float, seed: int, n_trials: int) -> list[dict[str, object]]:
    """The IMPUTE step with the other half's real cells as candidates: tuned modes and ablations."""
    train, test = split_counts(adata.X, p_train, seed)
    x = train.toarray().astype(np.float32)
    labels = adata.obs["cell_type"].cat.codes.to_numpy().astype(np.int64)
    enc = fit_encoding(x)
    unit, lib = encode_rows(x, enc)
    depth = cell_depth(x, enc)
    table, cand = "3 IMPUTE step", "real cells (other half)"
    rows = [_row(table, "no denoising", "–", p_train, train, test, x, 0.0)]

    for mode in ("zeros", "denoise"):
        out = np.zeros_like(x)
        start = time.perf_counter()
        picked = []
        for cells in _halves(len(x)):
            r = impute_matrix(x[cells], labels[cells], unit[~cells], labels[~cells], enc,
                              ImputeParams(mode=mode, n_trials=n_trials, seed=seed))
            out[cells] = r.values
            picked.append(f"{r.k}/{r.theta_sigma:.2f}")
        rows.append(_row(table, f"scMASKGAN {mode} (tuned)", cand, p_train, train, test, out,
                         time.perf_counter() - start, note="k/theta per half: " + ", ".join(picked)))

    def ablation(name: str, mode: str, fill: str, genes: str) -> None:
        out = np.zeros_like(x)
        for cells in _halves(len(x)):
            obs = x[cells] > 0
            neigh = find_neighbours(unit[cells], labels[cells], unit[~cells], labels[~cells], ABLATION_K,
                                    observed=obs if genes == "observed" else None)
            w = select_neighbours(neigh, ABLATION_K, np.inf)
            est = estimate(unit[cells], obs, depth[cells], unit[~cells], neigh, w, enc.scale, mode)
            if fill != "posterior":
                mean = np.einsum("nk,nkg->ng", w, unit[~cells][neigh.index])
                est = np.where(obs, est, mean if fill == "mean" else 0.0)
            values = decode(est, lib[cells], enc)
            out[cells] = np.where(obs, x[cells], values) if mode == "zeros" else values
        rows.append(_row(table, name, cand, p_train, train, test, out, float("nan"), k=ABLATION_K,
                         theta_sigma=float("inf")))

    for mode in ("zeros", "denoise"):
        ablation(f"{mode}: zeros <- posterior given the zero (shipped)", mode, "posterior", "all")
        ablation(f"{mode}: zeros <- neighbours' plain mean", mode, "mean", "all")
        ablation(f"{mode}: distance over observed genes only", mode, "posterior", "observed")
    ablation("denoise: zeros kept at 0", "denoise", "zero", "all")
    return rows


def write_results(rows: list[dict[str, object]], outdir: Path, info: dict[str, str]) -> tuple[Path, Path]:
    """``mcv_pbmc.csv`` and ``mcv_pbmc.md``."""
    csv_path = write_text_atomic(outdir / "mcv_pbmc.csv", pd.DataFrame(rows).to_csv(index=False))
    text = "\n\n".join([
        "# Molecular cross-validation on real PBMCs (scanpy's pbmc68k_reduced, 700 x 765 counts)",
        (__doc__ or "").split("Writes ")[0].strip(),
        "Lower is better for both scores. docs/evaluation.md's reference rows (same split): no denoising "
        "3.408 / 0.379, kNN smoothing 3.939 / 0.197, MAGIC 3.137 / 0.205. `wall_s` of table 2 includes "
        "the GAN's training; table 3 rows without a time are ablations computed at fixed k = "
        f"{ABLATION_K} without tuning. `peak_rss_mb` is measured for the tables' separate processes only. "
        "The machine is shared with other work: times carry noise of tens of percent.",
        markdown_table(rows, COLUMNS),
        "## Machine\n\n" + machine_markdown(info),
        "Command: `" + " ".join(["python", "benchmarks/bench_mcv.py", *sys.argv[1:]]) + "`",
    ])
    return csv_path, write_text_atomic(outdir / "mcv_pbmc.md", text + "\n")


def main(argv: list[str] | None = None) -> None:
    """Run the three tables and write them."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outdir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--timeout", type=float, default=4 * 3600.0, help="seconds before a measured process is killed")
    parser.add_argument("--n-trials", type=int, default=ImputeParams().n_trials, help="Optuna trials of table 3")
    parser.add_argument("--skip-peers", action="store_true", help="leave out table 1")
    parser.add_argument("--skip-gan", action="store_true", help="leave out table 2")
    parser.add_argument("--leiden", action="store_true", help="table 2 without the known labels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--gan-worker", type=float, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    if args.gan_worker is not None:
        gan_worker(args.gan_worker, args.seed, args.leiden, args.report)
        return
    adata = pbmc_counts()
    rows: list[dict[str, object]] = []
    if not args.skip_peers:
        rows += peer_rows(adata, args.threads, args.timeout)
    for p_train in (0.9, 0.5):
        if not args.skip_gan:
            rows += gan_rows(p_train, args.seed, args.leiden, args.threads, args.timeout)
        rows += stand_in_rows(adata, p_train, args.seed, args.n_trials)
        print(markdown_table(rows, COLUMNS), flush=True)
    rows.sort(key=lambda r: (str(r["table"]), -float(r["p_train"])))
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")
    csv_path, md_path = write_results(rows, args.outdir, machine(args.threads))
    print(f"wrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
