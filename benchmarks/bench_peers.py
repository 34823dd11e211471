"""Side-by-side benchmark of scMASKGAN and its peers on the same data (``make bench``).

Every method runs in its own process on the MCV train part of the counts (binomial
split, p = 0.9, seed 0) and is scored on the held-out test part (MCV MSE and Poisson,
as in ``docs/evaluation.md``); its output is also clustered (log-normalise, PCA-50,
15 neighbours, Leiden at resolution 1) and compared with the known ``cell_type``
(ARI, NMI). Wall time is the method call alone; peak RSS is the whole process's.

Writes ``peers_<data>.csv`` and ``peers_<data>.md`` (table + machine) to ``--outdir``.

Example::

    .venv/bin/python benchmarks/bench_peers.py --outdir benchmarks/results
    .venv/bin/python benchmarks/bench_peers.py --methods none,magic --data 2000x2000
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets  # noqa: E402
from harness import evaluate_methods, machine, machine_markdown, markdown_table  # noqa: E402
from methods import METHODS  # noqa: E402

from scmaskgan.io.atomic import write_text_atomic  # noqa: E402

COLUMNS = ["method", "status", "mcv_mse", "mcv_poisson", "ari", "nmi", "n_clusters", "wall_s", "cpu_s", "process_s",
           "peak_rss_mb", "rss_before_mb", "load_1min", "measured_utc", "note"]
#: Methods run by default (``scmaskgan-cli`` is the same method as ``scmaskgan-zeros``, timed as a command).
DEFAULT_METHODS = [m for m in METHODS if m != "scmaskgan-cli"]


def merge_rows(previous: Path, rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """``rows`` plus the rows of other methods in an earlier CSV, in :data:`METHODS` order."""
    if not previous.exists():
        return rows
    ran = {r["method"] for r in rows}
    kept = [r for r in pd.read_csv(previous, keep_default_na=False, na_values=[""]).to_dict("records")
            if r["method"] not in ran]
    order = list(METHODS)
    return sorted(kept + rows, key=lambda r: order.index(r["method"]) if r["method"] in order else len(order))


def load_data(spec: str, seed: int) -> tuple[str, object]:
    """``pbmc`` (the real demo data) or ``<cells>x<genes>`` (built by :func:`datasets.synthesise`)."""
    if spec == "pbmc":
        return "pbmc", datasets.pbmc()
    try:
        n_cells, n_genes = (int(v) for v in spec.lower().split("x"))
    except ValueError:
        raise SystemExit(f"bench_peers: error: --data {spec!r} is neither 'pbmc' nor '<cells>x<genes>'") from None
    return f"{n_cells}x{n_genes}", datasets.synthesise(n_cells, n_genes, seed=seed)


def write_results(rows: list[dict[str, object]], name: str, outdir: Path, info: dict[str, str],
                  description: str) -> tuple[Path, Path]:
    """Write the CSV and the markdown report of one benchmark run."""
    frame = pd.DataFrame(rows)
    csv_path = write_text_atomic(outdir / f"peers_{name}.csv", frame.to_csv(index=False))
    text = "\n\n".join([
        f"# Imputation peers on {description}",
        "Every method in its own process on the MCV train part (binomial p = 0.9, seed 0); MCV scores "
        "on the held-out part (lower is better; the 'perfect' control scores MSE 0), ARI/NMI of Leiden "
        "clusters of the output vs `cell_type` (higher is better). `wall_s`: the method call alone, "
        "`cpu_s` its CPU seconds (all threads); `process_s`: the whole process (start-up, imports, IO), both of the fastest of `--repeats` runs; `peak_rss_mb`: the process's peak "
        "resident memory, `rss_before_mb`: its RSS just before the method call (interpreter, libraries, data). "
        "The 2-core machine is shared with other work: `load_1min` is the load average when the method "
        "finished (above 2 means the method got less than the 2 cores), so times carry that noise; "
        "`measured_utc` says when each row was measured (`--update` refreshes some rows only).",
        markdown_table(rows, COLUMNS),
        "## Machine\n\n" + machine_markdown(info),
        "Command: `" + " ".join(["python", "benchmarks/bench_peers.py", *sys.argv[1:]]) + "`",
    ])
    md_path = write_text_atomic(outdir / f"peers_{name}.md", text + "\n")
    return csv_path, md_path


def main(argv: list[str] | None = None) -> None:
    """Parse options, run the methods, print and write the table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outdir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                        help="comma-separated, of: " + ", ".join(METHODS))
    parser.add_argument("--data", default="pbmc", help="'pbmc' (700 x 765 real cells) or '<cells>x<genes>'")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="threads per method")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds before a method is killed")
    parser.add_argument("--repeats", type=int, default=1, help="runs per method; the fastest is reported")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: a temp folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--update", action="store_true",
                        help="keep the other methods' rows of an existing peers_<data>.csv in --outdir")
    args = parser.parse_args(argv)

    names = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise SystemExit(f"bench_peers: error: unknown method(s) {', '.join(unknown)}; known: {', '.join(METHODS)}")
    name, adata = load_data(args.data, args.seed)
    description = ("scanpy's pbmc68k_reduced (700 real PBMCs x 765 genes, counts recovered, 10 cell types)"
                   if name == "pbmc" else f"{adata.n_obs} x {adata.n_vars} counts built from the demo's real cells")
    with tempfile.TemporaryDirectory(prefix="scmaskgan-bench-") as tmp:
        workdir = args.workdir or Path(tmp)
        rows = evaluate_methods(adata, names, workdir, args.threads, args.timeout, cluster=True,
                                repeats=args.repeats, seed=args.seed)
    if args.update:
        rows = merge_rows(args.outdir / f"peers_{name}.csv", rows)
    info = machine(args.threads)
    csv_path, md_path = write_results(rows, name, args.outdir, info, description)
    print(markdown_table(rows, COLUMNS))
    print(f"\nwrote {csv_path} and {md_path}")


if __name__ == "__main__":
    main()
