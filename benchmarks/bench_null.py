"""False signals on null data: does the imputation invent gene-gene correlations? (issue 14)

Null data (``scmaskgan.analysis.simulate.simulate_null``): one cell type, independent
negative-binomial genes, only the library size shared (800 cells x 200 genes, mean library
2,000). For every seed a ScMaskGAN is fitted with the default training (denoise mode, so that
its candidates' expected values are kept) and IMPUTE runs in every mode on the same cells;
the output is scored as the pipeline writes it (``layers['imputed_lognorm']``: each cell
divided by its observed library size) against the log-normalised counts
(``scmaskgan.analysis.false_signal.correlation_inflation``): the median and the 95th
percentile of ``|r|`` over the pairs of the genes, counts and output, and whether the
output passes the null check (neither rises by more than ``INFLATION_TOLERANCE``). MAGIC
(``benchmarks/methods.py`` settings) is scored the same way when ``magic-impute`` is
installed.

Example::

    python benchmarks/bench_null.py --seeds 0,1,2 --threads 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import machine, machine_markdown, markdown_table  # noqa: E402
from methods import METHODS, fit_scmaskgan_with_types, run_magic  # noqa: E402

from scmaskgan.analysis.false_signal import correlation_inflation, passes_null_check  # noqa: E402
from scmaskgan.analysis.simulate import simulate_null  # noqa: E402
from scmaskgan.core.config import IMPUTE_MODES, ImputeParams  # noqa: E402
from scmaskgan.core.matrix import lognormalise_nonnegative  # noqa: E402
from scmaskgan.io.atomic import write_text_atomic  # noqa: E402
from scmaskgan.method.imputation import impute_matrix  # noqa: E402

COLUMNS = ["seed", "method", "p95_counts", "p95_output", "median_counts", "median_output", "passes", "seconds",
           "note"]


def _row(seed: int, method: str, counts_lognorm: np.ndarray, output_lognorm: np.ndarray, seconds: float,
         note: str = "") -> dict[str, object]:
    result = correlation_inflation(counts_lognorm, output_lognorm)
    row = {"seed": seed, "method": method, "p95_counts": result["abs_corr_p95_original"],
           "p95_output": result["abs_corr_p95_imputed"], "median_counts": result["abs_corr_median_original"],
           "median_output": result["abs_corr_median_imputed"], "passes": passes_null_check(result),
           "seconds": seconds, "note": note}
    print(markdown_table([row], COLUMNS).splitlines()[-1], flush=True)
    return row


def run_seed(seed: int, cells: int, genes: int, threads: int, magic: bool) -> list[dict[str, object]]:
    """All rows of one seed: the method's modes and MAGIC."""
    counts = simulate_null(cells, genes, seed=seed).counts.astype(np.float32)
    reference = lognormalise_nonnegative(counts)
    model, fit_s, note = fit_scmaskgan_with_types(counts, np.full(cells, "A"), seed, mode="denoise", device="cpu",
                                                  threads=threads)
    note = f"fit {fit_s:.0f} s, {note}"
    rows = []
    labels = np.zeros(cells, dtype=np.int64)
    for mode in IMPUTE_MODES:
        start = time.perf_counter()
        result = impute_matrix(counts, labels, model.candidates_, model.candidate_labels_, model.encoding_,
                               ImputeParams(mode=mode, seed=seed), model.expected_candidates_)
        rows.append(_row(seed, f"scmaskgan {mode}", reference, result.lognorm, time.perf_counter() - start, note))
    if magic:
        start = time.perf_counter()
        out = run_magic(ad.AnnData(X=sp.csr_matrix(counts)))
        rows.append(_row(seed, "MAGIC", reference, lognormalise_nonnegative(out), time.perf_counter() - start))
    return rows


def main(argv: list[str] | None = None) -> None:
    """Run the seeds and write ``null.csv`` and ``null.md``."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--cells", type=int, default=800)
    parser.add_argument("--genes", type=int, default=200)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--no-magic", dest="magic", action="store_false", help="leave out the MAGIC rows")
    parser.add_argument("--outdir", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    magic = args.magic and METHODS["magic"].unavailable() is None
    rows = [row for seed in args.seeds.split(",") for row in run_seed(int(seed), args.cells, args.genes,
                                                                         args.threads, magic)]
    args.outdir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.outdir / "null.csv", pd.DataFrame(rows).to_csv(index=False))
    text = "\n\n".join([
        "# False signals on null data", (__doc__ or "").split("Example::")[0].strip(),
        markdown_table(rows, COLUMNS), "## Machine\n\n" + machine_markdown(machine(args.threads)),
        "Command: `" + " ".join(["python", "benchmarks/bench_null.py", *(sys.argv[1:] if argv is None else argv)]) + "`",
    ])
    write_text_atomic(args.outdir / "null.md", text + "\n")
    print(f"wrote {args.outdir / 'null.csv'} and {args.outdir / 'null.md'}")


if __name__ == "__main__":
    main()
