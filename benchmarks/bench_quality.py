"""Generative quality of the GAN's candidates beside reference candidate sets (issue 13).

Data: the demo's 700 real PBMCs (``pbmc``) and Zeisel et al.'s 3,005 mouse brain cells
(``zeisel``, its 1,000 highest-mean genes; ``datasets.py``), each with its known
``cell_type``. Every cell is encoded as the GAN sees it (``scmaskgan.method.encode``); a
tenth of every label is held out (seeded) and never given to anything below. The other
cells are the training cells: :class:`scmaskgan.method.quality.QualityReference` takes its
PCA and the real level (``*_real``) from them, and every candidate set is fitted on or
drawn from them only:

* **training cells**: ``per_label`` training cells per label, drawn without replacement (all
  of a smaller label's; repeated cells would lower the candidates' within-set distance and
  show as an energy gap);
* **genes shuffled within the label**: ``per_label`` cells per label whose every gene is
  drawn on its own from the label's training cells (right gene-wise distributions, no
  co-expression);
* **label mean + independent noise**: each label's mean cell plus Gaussian noise of each
  gene's SD within the label, clipped to [0, 1];
* **label mean**: each label's mean cell, repeated;
* **GAN, initialised** and **GAN, trained**: the candidates (after FILTER) of
  ``scmaskgan.ScMaskGAN(label_key='cell_type')`` fitted on the training cells' counts with
  0 epochs and with the default training.

``gap_closed`` is ``1 - energy_gap / energy_gap`` of the initialised GAN (the energy
distance is measured in the reference's 30 principal components, see ``quality.py``).

``--trained-fit NAME=VALUE`` passes an estimator parameter to the trained GAN only (``learned_latent=free``).

``--folds 0-9`` holds out each tenth in turn (cross-fitting: every set is drawn or fitted anew on
the other nine tenths) and adds a table of every score's mean over the folds, with ``gap_closed``
computed from the mean gaps (``1 - mean gap / mean initial gap``): on PBMC's 66 held-out cells a
single tenth's energy gaps are as noisy as the differences between sets (the initialised GAN's gap
ranged 0.004-0.042 over three seeds), and ten tenths score every cell once.

Writes ``quality.csv`` and ``quality.md`` to ``--outdir``.

Example::

    .venv/bin/python benchmarks/bench_quality.py --outdir benchmarks/results
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets  # noqa: E402
from harness import machine, machine_markdown, markdown_table  # noqa: E402
from methods import fit_scmaskgan_with_types  # noqa: E402

from scmaskgan.io.atomic import write_text_atomic  # noqa: E402
from scmaskgan.io.demo_data import split_stratified  # noqa: E402
from scmaskgan.method.encode import fit_encoding, to_unit  # noqa: E402
from scmaskgan.method.quality import QualityReference, gap_closed  # noqa: E402

COLUMNS = ["dataset", "fold", "candidates", "energy", "energy_real", "energy_gap", "gap_closed", "recall", "recall_real",
           "coverage", "coverage_real", "c2st_auc", "c2st_auc_real", "corr_agreement", "corr_agreement_real",
           "gene_var_log2", "seconds", "note"]
MIN_LABEL_CELLS = 20
#: Parts of the held-out split (one is held out at a time).
FOLDS = 10
#: Zeisel's genes of highest mean count that the benchmark keeps.
ZEISEL_GENES = 1000


def load(name: str) -> ad.AnnData:
    """The data set's counts with ``obs['cell_type']`` (Zeisel: its 1,000 highest-mean genes), without
    labels of fewer than :data:`MIN_LABEL_CELLS` cells (too few to hold any out) and genes without a count."""
    adata = datasets.pbmc() if name == "pbmc" else datasets.zeisel()
    if name != "pbmc":
        adata = datasets.top_mean_genes(adata, ZEISEL_GENES)
    sizes = adata.obs["cell_type"].value_counts()
    adata = adata[adata.obs["cell_type"].isin(sizes.index[sizes >= MIN_LABEL_CELLS])]
    return adata[:, np.asarray((adata.X > 0).sum(axis=0)).ravel() > 0].copy()


def reference_sets(unit: np.ndarray, labels: np.ndarray, per_label: int,
                   rng: np.random.Generator) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """The reference candidate sets: name -> (cells, their labels)."""
    sets: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {
        "training cells": [], "genes shuffled within the label": [], "label mean + independent noise": [],
        "label mean": []}
    for label in np.unique(labels):
        cells = unit[labels == label]
        same = np.full(per_label, label)
        real = cells[rng.choice(len(cells), size=min(per_label, len(cells)), replace=False)]
        sets["training cells"].append((real, same[: len(real)]))
        sets["genes shuffled within the label"].append(
            (np.column_stack([cells[rng.integers(len(cells), size=per_label), j] for j in range(cells.shape[1])]), same))
        noise = rng.normal(size=(per_label, cells.shape[1])) * cells.std(0)
        sets["label mean + independent noise"].append((np.clip(cells.mean(0) + noise, 0.0, 1.0), same))
        sets["label mean"].append((np.repeat(cells.mean(0)[None], per_label, axis=0), same))
    return {name: (np.vstack([c for c, _ in parts]), np.concatenate([lab for _, lab in parts]))
            for name, parts in sets.items()}


def gan_candidates(counts: sp.csr_matrix, names: np.ndarray, epochs: int | None, threads: int,
                   seed: int, trained_fit: dict[str, object] | None = None) -> tuple[np.ndarray, np.ndarray, float, str]:
    """Candidates of ScMaskGAN fitted on ``counts`` (labels ``names``), on all its genes: values, label names,
    seconds, note. ``trained_fit``: estimator parameters of the trained fit only (``epochs`` None)."""
    params: dict[str, object] = {"threads": threads, "device": "cpu"}
    if epochs is not None:
        params["epochs"] = epochs
    else:
        params.update(trained_fit or {})
    model, seconds, note = fit_scmaskgan_with_types(counts, names, seed, **params)
    # the model leaves out genes without a count in its cells: they are 0 in its candidates
    values = np.zeros((len(model.candidates_), counts.shape[1]), dtype=np.float32)
    values[:, model.used_genes_] = model.candidates_
    return values, np.asarray(model.label_names_)[model.candidate_labels_], seconds, note


def rows_for(name: str, per_label: int, threads: int, seed: int, fold: int = 0,
             trained_fit: dict[str, object] | None = None) -> list[dict[str, object]]:
    """Every candidate set of one data set, scored against its held-out cells (the tenth ``fold`` of a
    split stratified by label)."""
    adata = load(name)
    counts = sp.csr_matrix(adata.X, dtype=np.float32)
    names = adata.obs["cell_type"].astype(str).to_numpy()
    unit, _ = to_unit(counts, fit_encoding(counts))
    held = split_stratified(names, FOLDS, seed) == fold
    reference = QualityReference(unit[held], names[held], unit[~held], names[~held], seed=seed)
    rng = np.random.default_rng(seed)
    train_names = names[~held]
    sets: dict[str, tuple[np.ndarray, np.ndarray, float, str]] = {}
    start = time.perf_counter()
    for set_name, (values, labels) in reference_sets(unit[~held], train_names, per_label, rng).items():
        sets[set_name] = (values, labels, time.perf_counter() - start, "")
    for set_name, epochs in (("GAN, initialised", 0), ("GAN, trained", None)):
        sets[set_name] = gan_candidates(counts[~held], train_names, epochs, threads, seed, trained_fit)
    scored = {set_name: reference.score(values, labels) for set_name, (values, labels, _, _) in sets.items()}
    initial_gap = scored["GAN, initialised"]["energy_gap"]
    rows = []
    for set_name, s in scored.items():
        row: dict[str, object] = {"dataset": f"{name} ({held.sum()} held out)", "fold": fold, "candidates": set_name,
                                  **{c: s[c] for c in COLUMNS if c in s}}
        row["gap_closed"] = gap_closed(s["energy_gap"], initial_gap)
        row["seconds"], row["note"] = sets[set_name][2], sets[set_name][3]
        rows.append(row)
        print(name, set_name, {k: round(v, 3) for k, v in row.items() if isinstance(v, float)}, flush=True)
    return rows


def fold_means(rows: list[dict[str, object]]) -> list[dict[str, object]]:
    """Every data set's and candidate set's mean score over the folds in ``rows``, ``gap_closed`` from
    the mean gaps, ``seconds`` summed, the folds counted in ``fold``."""
    frame = pd.DataFrame(rows)
    frame["dataset"] = frame["dataset"].str.replace(r" \(\d+ held out\)", "", regex=True)
    numeric = [c for c in COLUMNS if c not in ("dataset", "fold", "candidates", "note", "gap_closed")]
    out = []
    for (dataset, candidates), part in frame.groupby(["dataset", "candidates"], sort=False):
        initial = frame[(frame["dataset"] == dataset) & (frame["candidates"] == "GAN, initialised")]
        row: dict[str, object] = {"dataset": dataset, "fold": f"{len(part)} folds", "candidates": candidates,
                                  **{c: float(part[c].mean()) for c in numeric}}
        row["seconds"] = float(part["seconds"].sum())
        row["gap_closed"] = gap_closed(float(part["energy_gap"].mean()), float(initial["energy_gap"].mean()))
        row["note"] = ""
        out.append(row)
    return out


def parse_folds(text: str) -> list[int]:
    """``'0'``, ``'0,3'`` or ``'0-9'`` as a list of folds, each in ``0 .. FOLDS - 1``."""
    folds = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        folds.extend(range(int(first), int(last or first) + 1))
    if not folds or min(folds) < 0 or max(folds) >= FOLDS:
        raise SystemExit(f"--folds must lie in 0-{FOLDS - 1}, got {text!r}")
    return folds


def _parameter(text: str) -> tuple[str, object]:
    """``'name=value'`` as ``(name, value)``, the value a number when it reads as one."""
    name, sep, value = text.partition("=")
    if not sep:
        raise SystemExit(f"--trained-fit needs NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(value)
    except json.JSONDecodeError:
        return name, value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", default="pbmc,zeisel")
    parser.add_argument("--per-label", type=int, default=100, help="Candidates per label of the reference sets.")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", default="0", help="Held-out tenths, each in turn: '0', '0,3' or '0-9'.")
    parser.add_argument("--trained-fit", action="append", default=[], metavar="NAME=VALUE",
                        help="An estimator parameter of the trained GAN only, e.g. learned_latent=free (repeatable).")
    parser.add_argument("--outdir", type=Path, required=True)
    args = parser.parse_args(argv)
    folds = parse_folds(args.folds)
    trained_fit = dict(_parameter(text) for text in args.trained_fit)
    rows = [row for name in args.datasets.split(",") for fold in folds
            for row in rows_for(name, args.per_label, args.threads, args.seed, fold, trained_fit)]
    args.outdir.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.outdir / "quality.csv", pd.DataFrame(rows, columns=COLUMNS).to_csv(index=False))
    command = "" if not trained_fit else f"Trained GAN with {trained_fit} (`--trained-fit`).\n"
    text = [f"# Generative quality of candidates\n\n{__doc__.split(chr(10) + chr(10), 1)[1].split('Writes')[0].strip()}\n",
            command,
            markdown_table(rows, COLUMNS)]
    if len(folds) > 1:
        text += ["\n## Means over the folds\n", markdown_table(fold_means(rows), COLUMNS)]
    text += ["\n## Machine\n", machine_markdown(machine(args.threads))]
    write_text_atomic(args.outdir / "quality.md", "\n".join(text) + "\n")


if __name__ == "__main__":
    main()
