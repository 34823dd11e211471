"""Peak memory of QC and PREPARE on a large sparse sample (default 50k cells x 30k genes).

The counts are simulated (seeded): every cell draws ~``--genes-per-cell`` x 1.3 reads
from a skewed gene popularity, so it ends up with roughly 1-2 thousand detected genes;
13 ``MT-`` genes hold ~2 % of the reads; 12 cell types are given as ``obs['cell_type']``.
The h5ad is written chunk by chunk (the matrix is never whole in memory, not even sparse).

Then ``scmaskgan qc`` and ``scmaskgan prepare`` run as separate processes, each started
through ``benchmarks/measure.py`` so its peak RSS (``ru_maxrss`` from ``wait4``) is its
own. A dense float32 copy of the matrix would take cells x genes x 4 bytes (6 GB here).

Usage::

    python benchmarks/bench_prepare_memory.py [--cells 50000] [--genes 30000]
        [--labels given|leiden] [--chunk-cells 1024] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
N_MITO = 13
N_TYPES = 12


def build(path: Path, n_cells: int, n_genes: int, genes_per_cell: int, seed: int, chunk: int = 2000) -> None:
    """Write the simulated counts h5ad at ``path`` chunk by chunk."""
    import anndata as ad
    import h5py
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp
    from anndata.io import sparse_dataset, write_elem

    rng = np.random.default_rng(seed)
    popularity = rng.lognormal(0.0, 1.5, n_genes)
    popularity[:N_MITO] *= 0.02 * popularity[N_MITO:].sum() / popularity[:N_MITO].sum()
    p = popularity / popularity.sum()
    genes = [f"MT-{j}" for j in range(N_MITO)] + [f"GENE{j}" for j in range(N_MITO, n_genes)]
    types = rng.integers(0, N_TYPES, n_cells)
    obs = pd.DataFrame(
        {"cell_type": pd.Categorical([f"type{t}" for t in types])}, index=[f"cell{i}" for i in range(n_cells)]
    )
    ad.AnnData(obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(path)
    with h5py.File(path, "a") as f:
        for start in range(0, n_cells, chunk):
            rows = min(chunk, n_cells - start)
            draws = rng.integers(int(genes_per_cell * 0.9), int(genes_per_cell * 1.7), rows)
            cols = rng.choice(n_genes, size=int(draws.sum()), p=p)
            block = sp.csr_matrix(
                (np.ones(cols.size, np.float32), (np.repeat(np.arange(rows), draws), cols)), shape=(rows, n_genes)
            )
            block.sum_duplicates()
            if start == 0:
                write_elem(f, "X", block)
            else:
                sparse_dataset(f["X"]).append(block)


def measured(name: str, command: list[str], workdir: Path, timeout: float) -> dict:
    """Run ``command`` through measure.py; its wall time and peak RSS."""
    report = workdir / f"{name}.measure.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    rc = subprocess.call([sys.executable, str(HERE / "measure.py"), str(report), str(timeout), "--", *command], env=env)
    result = json.loads(report.read_text())
    if rc != 0:
        raise SystemExit(f"{name} failed (exit {rc}): {' '.join(command)}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=50_000)
    parser.add_argument("--genes", type=int, default=30_000)
    parser.add_argument("--genes-per-cell", type=int, default=1200, help="Reads drawn per cell / 1.3 (about).")
    parser.add_argument("--labels", choices=("given", "leiden"), default="given")
    parser.add_argument("--chunk-cells", type=int, default=1024)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", type=Path, default=None, help="Scratch folder (default: a temporary one).")
    parser.add_argument("--keep", action="store_true", help="Keep the scratch files.")
    parser.add_argument("--timeout", type=float, default=7200.0, help="Seconds per step.")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "prepare_memory.md")
    parser.add_argument("--build-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.build_only is not None:
        build(args.build_only, args.cells, args.genes, args.genes_per_cell, args.seed)
        return 0

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="scmaskgan-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    counts = workdir / "big.h5ad"
    scmaskgan = [sys.executable, "-m", "scmaskgan.cli"]
    results = {}
    if not counts.exists():  # an earlier run's --workdir is reused as it is
        results["build"] = measured(
            "build", [sys.executable, __file__, "--build-only", str(counts), "--cells", str(args.cells), "--genes",
                      str(args.genes), "--genes-per-cell", str(args.genes_per_cell), "--seed", str(args.seed)],
            workdir, args.timeout,
        )
    results["import"] = measured(
        "import", [sys.executable, "-c", "import scanpy, anndata, scmaskgan.pipeline.steps, scmaskgan.io.counts"], workdir, args.timeout
    )
    label_opts = ["--label-key", "cell_type"] if args.labels == "given" else []
    results["qc"] = measured("qc", [*scmaskgan, "qc", str(counts), "--outdir", str(workdir), "--sample-id", "big",
                                    *label_opts], workdir, args.timeout)
    results["prepare"] = measured("prepare", [*scmaskgan, "prepare", str(workdir / "big.qc.h5ad"), "--outdir",
                                              str(workdir), "--sample-id", "big", "--chunk-cells",
                                              str(args.chunk_cells)], workdir, args.timeout)
    text = report(args, workdir, results)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.out.exists():
        text = args.out.read_text().rstrip() + "\n\n" + text.split("\n", 2)[2]  # keep earlier runs, one title
    args.out.write_text(text)
    if not args.keep and args.workdir is None:
        shutil.rmtree(workdir)
    return 0


def report(args: argparse.Namespace, workdir: Path, results: dict) -> str:
    """Markdown summary of one run."""
    import anndata as ad
    import h5py

    qc = ad.read_h5ad(workdir / "big.qc.h5ad", backed="r")
    nnz = qc.X.group["data"].shape[0] if hasattr(qc.X, "group") else qc.X.nnz
    cells, genes = qc.shape
    qc.file.close()
    with h5py.File(workdir / "big.images.h5") as f:
        side = f["images"].shape[1]
        label_source = f.attrs["label_source"]
    dense_gb = args.cells * args.genes * 4 / 1e9
    sizes = {name: (workdir / name).stat().st_size / 1e6 for name in ("big.h5ad", "big.qc.h5ad", "big.images.h5")}
    rows = [
        *([("build the counts h5ad (chunked)", results["build"])] if "build" in results else []),
        ("import scanpy + scmaskgan (baseline)", results["import"]),
        ("`scmaskgan qc`", results["qc"]),
        (f"`scmaskgan prepare` (labels: {label_source}, chunk {args.chunk_cells} cells)", results["prepare"]),
    ]
    lines = [
        "# QC and PREPARE peak memory on a large sparse sample",
        "",
        f"## {args.cells:,} cells x {args.genes:,} genes, labels {args.labels} "
        f"({time.strftime('%Y-%m-%d')}, {os.cpu_count()} CPUs, 1 thread)",
        "",
        f"After QC: {cells:,} cells x {genes:,} genes, {nnz:,} non-zeros ({nnz / cells:,.0f} genes per cell); "
        f"images {cells:,} x {side} x {side}.",
        f"A dense float32 copy of the input would take **{dense_gb:.1f} GB**; its CSR in memory "
        f"(float32 values + int32 indices) {nnz * 8 / 1e9:.2f} GB.",
        "",
        "| step | wall time (s) | peak RSS (MiB) |",
        "|---|---:|---:|",
        *[f"| {name} | {r['process_s']:.1f} | {r['peak_rss_mb']:.0f} |" for name, r in rows],
        "",
        "Files: " + ", ".join(f"{k} {v:,.0f} MB" for k, v in sizes.items()) + ".",
        "",
        f"Command: `python benchmarks/bench_prepare_memory.py --cells {args.cells} --genes {args.genes} "
        f"--labels {args.labels} --chunk-cells {args.chunk_cells}`",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
