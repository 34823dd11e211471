"""Compare the reconstruction-loss choices of TRAIN by the quality of the candidates on held-out cells.

Trains one model per ``rec_loss`` on the same images file (scanpy's pbmc68k_reduced counts,
or a seeded negative-binomial simulation of any size), generates candidates for every
label and scores them against the validation cells the model never saw
(:func:`scmaskgan.generate.candidate_quality`). Also reports seconds per epoch and
parameter counts. Usage::

    python benchmarks/rec_loss_compare.py --epochs 40 --threads 2 [--cells 10000 --genes 2000]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from scmaskgan.config import GenerateParams, TrainParams
from scmaskgan.encode import fit_encoding
from scmaskgan.generate import candidate_quality, generate_candidates, read_candidates
from scmaskgan.images_h5 import ImageStore, ImageWriter
from scmaskgan.train import fit, split_validation


def write_images(path: Path, cells: int | None, genes: int | None, seed: int) -> None:
    """pbmc68k_reduced counts (no ``cells``) or a simulation of ``cells`` x ``genes``."""
    if cells is None:
        from scmaskgan.demo_data import pbmc_counts

        adata = pbmc_counts()
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from conftest import simulate_counts

        adata, _ = simulate_counts(n_cells=cells, n_genes=genes or 2000, n_types=8, seed=seed)
    enc = fit_encoding(adata.X)
    codes = adata.obs["cell_type"].cat.codes.to_numpy()
    names = list(adata.obs["cell_type"].cat.categories)
    with ImageWriter(path, adata.n_obs, enc, adata.obs_names, adata.var_names, names,
                     {"label_source": "obs:cell_type", "params_json": "{}"}) as writer:
        for start in range(0, adata.n_obs, 2048):
            writer.append(adata.X[start:start + 2048], codes[start:start + 2048])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cells", type=int, default=None, help="simulate this many cells (default: pbmc)")
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--rec-loss", nargs="+", default=["moments", "inpaint", "none"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--base-channels", type=int, default=TrainParams().base_channels)
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    parser.add_argument("--early-stopping", action="store_true", help="use the default patience instead of a fixed run")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = tmp / "s.images.h5"
        write_images(images, args.cells, args.genes, args.seed)
        with ImageStore(images) as store:
            labels = store.labels
            val = split_validation(labels, TrainParams().val_fraction, args.seed)
            vectors, _ = store.vectors()
        for rec in args.rec_loss:
            fixed = {} if args.early_stopping else {"min_epochs": args.epochs, "patience": max(args.epochs, 1)}
            params = TrainParams(epochs=args.epochs, rec_loss=rec, device="cpu", threads=args.threads,
                                 seed=args.seed, checkpoint_every=10**6, base_channels=args.base_channels, **fixed)
            paths = {k: tmp / f"{rec}.{k}" for k in ("model", "log", "png")}
            paths["model"] = tmp / f"{rec}.model.pt"
            started, cpu = time.perf_counter(), time.process_time()
            meta = fit(images, paths, rec, params, progress=False)
            train_s, train_cpu = time.perf_counter() - started, time.process_time() - cpu
            started = time.perf_counter()
            generate_candidates(paths["model"], images, tmp / f"{rec}.candidates.h5", GenerateParams(seed=args.seed))
            gen_s = time.perf_counter() - started
            cand = read_candidates(tmp / f"{rec}.candidates.h5")
            quality = candidate_quality(cand.values, cand.labels, vectors[val], labels[val], vectors[~val], labels[~val])
            results[rec] = {
                **{k: round(v, 4) for k, v in quality.items()},
                "epochs_run": meta["epochs_run"], "best_epoch": meta["best_epoch"],
                "sec_per_epoch": round(meta["seconds_per_epoch"], 2), "train_s": round(train_s, 1),
                "train_cpu_s": round(train_cpu, 1), "cpu_s_per_epoch": round(train_cpu / max(meta["epochs_run"], 1), 2),
                "generate_s": round(gen_s, 1), "params_G": meta["parameters_generator"],
                "params_D": meta["parameters_discriminator"],
            }
            print(rec, json.dumps(results[rec]), flush=True)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
