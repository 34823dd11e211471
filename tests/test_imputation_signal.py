"""Imputation keeps each cell's own signal (issue 14): hidden sub-states and trajectories, too coarse
labels, null data, the shrinkage of ``mode='denoise'`` and the tuning's signal guard.

No GAN is trained: every simulated sample (:mod:`scmaskgan.analysis.simulate`, known truth) is split
in two halves; the even cells are imputed and the encoded odd cells stand in for the
generator's candidates (real cells of the same sample and labels).

The MAGIC reference (:func:`magic`) is MAGIC's algorithm (van Dijk et al. 2018) implemented
minimally here, so that magic-impute is not a test dependency; it follows magic-impute 3.0
with the settings of ``benchmarks/methods.py``: library-normalise to 1e4, square root, PCA
to 100 components, alpha-decay kernel (decay 1, bandwidth the distance to the 5th nearest
other cell, each cell's 15 nearest others and itself, weights below 1e-4 dropped), symmetrised
``(K + K.T) / 2``, row-stochastic Markov matrix, ``t = 3`` diffusion steps of the data (the
exact solver), squared back and scaled to each cell's library size. Checked once against
magic-impute 3.0 on ``simulate(800, 200, structure='substates')`` (all cells): error against
the truth (:func:`~scmaskgan.method.mcv.mcv_mse`) 0.0877 here and 0.0879 there, within-label signal
0.9135 and 0.9136.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.stats import spearmanr
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

from scmaskgan.analysis.false_signal import correlation_inflation, passes_null_check
from scmaskgan.analysis.simulate import Simulation, simulate, simulate_null
from scmaskgan.core.config import ImputeParams
from scmaskgan.core.matrix import lognormalise_nonnegative
from scmaskgan.method.encode import Encoding, fit_encoding, to_unit
from scmaskgan.method.imputation import (
    SHRINKAGE_RANGE,
    ImputeResult,
    cell_depth,
    denoise_prior,
    impute_matrix,
    label_mean_rates,
    mean_rate,
    moment_shrinkage,
    prior_molecules,
    rate_recentre,
)
from scmaskgan.method.mcv import mcv_mse, within_label_signal
from scmaskgan.method.neighbours import (
    EncodedRows,
    Neighbours,
    find_neighbours,
    fit_pca_space,
    select_neighbours,
)

#: Optuna trials of every tuned run here (the default is 25; 12 keep a run near 3 s).
TRIALS = 12
TARGET_SUM = 1e4


@dataclass(frozen=True)
class Halves:
    """A simulated sample split in two: ``x`` (even cells) is imputed, the odd cells are the candidates."""

    sim: Simulation
    rows: np.ndarray
    x: np.ndarray
    labels: np.ndarray
    candidates: np.ndarray
    candidate_labels: np.ndarray
    enc: Encoding

    @property
    def truth(self) -> np.ndarray:
        return self.sim.truth[self.rows]

    def impute(self, **params: object) -> ImputeResult:
        return impute_matrix(
            self.x, self.labels, self.candidates, self.candidate_labels, self.enc, ImputeParams(**params)
        )


def _halves(sim: Simulation, labels: np.ndarray | None = None) -> Halves:
    labels = sim.labels if labels is None else labels
    counts = sim.counts.astype(np.float32)
    enc = fit_encoding(counts)
    unit, _ = to_unit(counts, enc)
    even = np.arange(len(counts)) % 2 == 0
    return Halves(sim, even, counts[even], labels[even], unit[~even], labels[~even], enc)


def magic(counts: np.ndarray, n_pca: int = 100, knn: int = 5, knn_max: int = 15, t: int = 3) -> np.ndarray:
    """MAGIC's smoothing of counts (cells x genes), back on the counts' scale (see the module docstring)."""
    lib = counts.sum(axis=1, keepdims=True)
    data = np.sqrt(counts / lib * TARGET_SUM)
    reduced = PCA(n_pca, svd_solver="full").fit_transform(data) if data.shape[1] > n_pca else data
    dist = cdist(reduced, reduced)
    order = np.argsort(dist, axis=1)
    bandwidth = np.take_along_axis(dist, order[:, knn:knn + 1], axis=1)  # order[:, 0] is the cell itself
    kernel = np.exp(-dist / bandwidth)
    beyond = np.ones(kernel.shape, dtype=bool)
    np.put_along_axis(beyond, order[:, :knn_max + 1], False, axis=1)
    kernel[beyond | (kernel < 1e-4)] = 0.0
    kernel = (kernel + kernel.T) / 2
    markov = kernel / kernel.sum(axis=1, keepdims=True)
    smoothed = np.linalg.matrix_power(markov, t) @ data
    return smoothed**2 / TARGET_SUM * lib


def _within_label_pc1(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Every cell's score on the first principal component of its label's centred log-normalised cells."""
    lognorm = lognormalise_nonnegative(x)
    score = np.empty(len(x))
    for label in np.unique(labels):
        rows = labels == label
        u, s, _ = np.linalg.svd(lognorm[rows] - lognorm[rows].mean(axis=0), full_matrices=False)
        score[rows] = u[:, 0] * s[0]
    return score


def hidden_structure(halves: Halves, x: np.ndarray) -> float:
    """How well the within-label PC 1 of ``x`` recovers what the labels hide, averaged over labels.

    Sub-states: the AUC (either direction) of the sub-state; trajectory: ``|Spearman rho|`` with pseudotime.
    """
    score = _within_label_pc1(x, halves.labels)
    substate, pseudotime = halves.sim.substate[halves.rows], halves.sim.pseudotime[halves.rows]
    values = []
    for label in np.unique(halves.labels):
        rows = halves.labels == label
        if substate[0] >= 0:
            auc = roc_auc_score(substate[rows], score[rows])
            values.append(max(auc, 1.0 - auc))
        else:
            values.append(abs(spearmanr(score[rows], pseudotime[rows])[0]))
    return float(np.mean(values))


def nearest_candidates(halves: Halves, k: int) -> Neighbours:
    """The ``k`` nearest candidates of every imputed cell, searched as :func:`impute_matrix` does by default."""
    params = ImputeParams()
    cells = EncodedRows(halves.x, halves.enc)
    space = fit_pca_space(cells, params.n_pcs, params.seed)
    return find_neighbours(cells, halves.labels, halves.candidates, halves.candidate_labels, k, space=space)


@functools.cache
def structured(structure: str) -> tuple[Halves, ImputeResult]:
    """Four labels, each hiding two sub-states or a trajectory; denoised with tuned parameters."""
    halves = _halves(simulate(800, 200, n_labels=4, structure=structure, seed=0))
    return halves, halves.impute(mode="denoise", n_trials=TRIALS)


@functools.cache
def structured_posterior(structure: str) -> tuple[Halves, ImputeResult]:
    """:func:`structured`'s samples imputed with ``mode='posterior'``."""
    halves = structured(structure)[0]
    return halves, halves.impute(mode="posterior", n_trials=TRIALS)


@functools.cache
def coarse(mode: str) -> tuple[Halves, ImputeResult]:
    """Labels too coarse: the four simulated labels merged in pairs into two, each with sub-states and a trajectory."""
    sim = simulate(800, 200, n_labels=4, structure="both", seed=0)
    halves = _halves(sim, sim.labels // 2)
    return halves, halves.impute(mode=mode, n_trials=TRIALS)


@functools.cache
def null(mode: str, seed: int = 0) -> tuple[Halves, ImputeResult]:
    """One cell type, independent genes (:func:`~scmaskgan.analysis.simulate.simulate_null`)."""
    halves = _halves(simulate_null(800, 200, seed=seed))
    return halves, halves.impute(mode=mode, n_trials=TRIALS)


#: How much more within-label signal against the truth than the raw counts an imputation must keep (measured
#: 1.36-2.6x), and how much better it must recover the hidden structure (measured +0.09 to +0.18): margins,
#: so that an imputation returning its input unchanged fails.
SIGNAL_MARGIN, RECOVERY_MARGIN = 1.2, 0.04


# --- 1. hidden structure: kept, recovered, and the error against the truth -------------------------


@pytest.mark.parametrize("structure", ["substates", "trajectory"])
def test_denoise_keeps_at_least_the_raw_within_label_signal_against_the_truth(structure: str) -> None:
    halves, result = structured(structure)
    raw = within_label_signal(halves.truth, halves.x, halves.labels)
    ours = within_label_signal(halves.truth, result.values, halves.labels)
    # measured: substates 0.342 vs raw 0.217; trajectory 0.261 vs 0.192 (MAGIC 0.916, 0.808); an output that
    # only copied the counts would score the raw level, so a margin is asserted
    assert ours > SIGNAL_MARGIN * raw


@pytest.mark.parametrize("structure", ["substates", "trajectory"])
def test_denoise_recovers_the_hidden_structure_at_least_as_well_as_raw_counts(structure: str) -> None:
    halves, result = structured(structure)
    # measured: sub-state AUC 1.000 vs raw 0.914 (MAGIC 1.000); trajectory |rho| 0.947 vs 0.763 (MAGIC 0.931)
    assert hidden_structure(halves, result.values) > hidden_structure(halves, halves.x) + RECOVERY_MARGIN


def test_the_nearest_candidates_of_a_cell_come_from_its_own_substate() -> None:
    halves, _ = structured("substates")
    neigh = nearest_candidates(halves, 5)
    same = halves.sim.substate[~halves.rows][neigh.index] == halves.sim.substate[halves.rows][:, None]
    # measured: 0.95 of the 5 nearest (0.97 of the nearest); about half by chance
    assert same.mean() > 0.85


@pytest.mark.xfail(
    strict=True,
    reason="met by mode='posterior' (test_posterior_error_against_the_truth_is_below_magic), not by denoise, "
    "whose prior sits on the log scale: tuned denoise (k 39 / 30, shrinkage 0.88 / 0.62) has error against "
    "the truth (mcv_mse) 0.217 (substates) and 0.270 (trajectory); MAGIC 0.087 and 0.082. The tuning "
    "objective (held-out MSE + Poisson) prefers light shrinkage: among its own trials k 18 / shrinkage 43 "
    "reaches 0.037 and k 20 / shrinkage 11 0.072. Tuning on the Poisson loss alone picks k 17 / shrinkage "
    "10.6 (0.064 and 0.065, below MAGIC) but then raises the null data's 95th percentile |r| by 33 % (the output normalised by its own totals; not re-measured on the imputed_lognorm layer)",
)
@pytest.mark.parametrize("structure", ["substates", "trajectory"])
def test_denoise_error_against_the_truth_is_below_magic(structure: str) -> None:
    halves, result = structured(structure)
    # MAGIC sees every real cell the imputer sees (the imputed half and the candidates' half)
    smoothed = magic(halves.sim.counts.astype(np.float64))[halves.rows]
    assert mcv_mse(halves.truth, result.values) < mcv_mse(halves.truth, smoothed)


@pytest.mark.parametrize("structure", ["substates", "trajectory"])
def test_posterior_error_against_the_truth_is_below_magic(structure: str) -> None:
    halves, result = structured_posterior(structure)
    smoothed = magic(halves.sim.counts.astype(np.float64))[halves.rows]
    # measured: 0.060 (substates) and 0.061 (trajectory); MAGIC 0.087 and 0.082
    assert mcv_mse(halves.truth, result.values) < mcv_mse(halves.truth, smoothed)
    # and well below the tuned denoise mode's (measured 0.217 / 0.270), whose prior is not unbiased
    assert mcv_mse(halves.truth, result.values) < 0.6 * mcv_mse(halves.truth, structured(structure)[1].values)


@pytest.mark.parametrize("structure", ["substates", "trajectory"])
def test_posterior_keeps_and_recovers_the_hidden_structure(structure: str) -> None:
    halves, result = structured_posterior(structure)
    # measured: signal 0.563 / 0.459 (raw 0.217 / 0.192); recovery 0.999 / 0.938 (raw 0.914 / 0.763)
    assert within_label_signal(halves.truth, result.values, halves.labels) > SIGNAL_MARGIN * within_label_signal(
        halves.truth, halves.x, halves.labels
    )
    assert hidden_structure(halves, result.values) > hidden_structure(halves, halves.x) + RECOVERY_MARGIN


def test_the_posterior_prior_holds_the_cells_molecules_label_by_label() -> None:
    """Candidates that are each label's mean *log-scale* profile hold a fraction of the cells'
    molecules (Jensen); recentred on the mean rates, the prior's centre sums to the cells' counts."""
    halves = structured("substates")[0]
    enc, scale = halves.enc, halves.enc.scale
    labels = np.unique(halves.labels)
    log_means = np.stack([halves.candidates[halves.candidate_labels == k].mean(0) for k in labels])
    cand_labels = np.repeat(labels, 20)
    candidates = np.repeat(log_means, 20, axis=0)
    neigh = find_neighbours(to_unit(halves.x, enc)[0], halves.labels, candidates, cand_labels, 10)
    weights = select_neighbours(neigh, 10, 3.0)
    depth = cell_depth(halves.x, enc)
    expressed = halves.x.mean(0) > 0.05

    def held(source: np.ndarray) -> np.ndarray:
        prior = prior_molecules(depth, source, neigh, weights, scale, mean_rate(source, scale))
        return prior.sum(0)[expressed] / halves.x.sum(0)[expressed]

    biased = held(candidates)
    fixed = held(rate_recentre(candidates, cand_labels, label_mean_rates(halves.x, halves.labels, enc), scale))
    # measured: median 0.67 before (the ablation's sparser data: 0.19-0.30), 1.00 after (90th percentile off by 0.04)
    assert np.median(biased) < 0.9
    assert np.median(fixed) == pytest.approx(1.0, abs=0.03)
    assert np.percentile(np.abs(fixed - 1.0), 90) < 0.1


def test_the_moment_shrinkage_recovers_the_overdispersion_of_negative_binomial_counts() -> None:
    rng = np.random.default_rng(0)
    prior = rng.gamma(2.0, 5.0, size=(20000, 3))  # the prior means of 20,000 cells x 3 genes
    alpha = np.array([0.5, 5.0, 1e9])  # the last gene: Poisson noise only
    counts = rng.poisson(rng.gamma(alpha, prior / alpha))
    estimate = moment_shrinkage(counts, prior)
    assert estimate[0] == pytest.approx(0.5, rel=0.2)
    assert estimate[1] == pytest.approx(5.0, rel=0.2)
    assert estimate[2] > 50  # no overdispersion: shrunk (nearly) all the way to the prior (measured 0.51, 4.99, 938)
    assert np.all((estimate >= SHRINKAGE_RANGE[0]) & (estimate <= SHRINKAGE_RANGE[1]))


# --- 2. null data: no invented gene-gene correlations ------------------------------------------------


def _inflation(halves: Halves, result: ImputeResult) -> dict[str, float]:
    """Counts and output log-normalised as the pipeline writes them: the output by the observed
    library size (``layers['imputed_lognorm']``)."""
    return correlation_inflation(lognormalise_nonnegative(halves.x), result.lognorm)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode", ["zeros", "denoise", "posterior"])
def test_imputation_does_not_inflate_gene_correlations_on_null_data(mode: str, seed: int) -> None:
    halves, result = null(mode, seed)
    inflation = _inflation(halves, result)
    # measured, 95th percentile of |r| raw -> imputed (seeds 0, 1, 2): zeros 0.118 -> 0.108, 0.118 -> 0.110,
    # 0.115 -> 0.109; denoise 0.118 -> 0.112, 0.118 -> 0.113, 0.115 -> 0.113 (a log-scale prior mean: 0.198, 0.211,
    # 0.219); posterior 0.118 -> 0.117, 0.118 -> 0.127, 0.115 -> 0.116
    assert passes_null_check(inflation), inflation


def test_the_null_check_catches_heavy_smoothing() -> None:
    halves, _ = null("zeros")
    heavy = halves.impute(mode="denoise", k=50, theta_sigma=3.0, shrinkage=1e4)
    inflation = _inflation(halves, heavy)
    # measured: median |r| 0.040 -> 0.095, 95th percentile 0.118 -> 0.268
    assert not passes_null_check(inflation), inflation


# --- 3. no collapse: coarse labels, the shrinkage, observed counts -----------------------------------


def test_denoise_with_too_coarse_labels_keeps_at_least_the_raw_within_label_signal() -> None:
    halves, result = coarse("denoise")
    raw = within_label_signal(halves.truth, halves.x, halves.labels)
    ours = within_label_signal(halves.truth, result.values, halves.labels)
    # measured: 0.629 vs raw 0.426 (the merged types are part of both)
    assert ours > SIGNAL_MARGIN * raw


def test_zeros_mode_keeps_every_observed_count_bit_identical() -> None:
    halves, result = coarse("zeros")
    observed = halves.x > 0
    assert result.n_observed_changed == 0
    assert np.array_equal(result.values[observed], halves.x[observed])
    assert (result.values[~observed] > 0).mean() > 0.5


SHRINKAGES = (1e-6, 1e-2, 1.0, 1e2, 1e6)


@functools.cache
def shrinkage_sweep() -> tuple[Halves, np.ndarray, np.ndarray, list[np.ndarray], np.ndarray]:
    """Denoise at fixed k 15 over :data:`SHRINKAGES`: (halves, own unit values, the prior's centre (the
    neighbours' mean rate with the mean candidate as one more), outputs, the kept neighbours' plain mean rate;
    centres on the unit scale)."""
    halves, _ = coarse("denoise")
    k, theta_sigma = 15, 3.0
    neigh = nearest_candidates(halves, k)
    weights = select_neighbours(neigh, k, theta_sigma)
    scale = halves.enc.scale
    rates = torch.expm1(torch.from_numpy(np.ascontiguousarray(halves.candidates[neigh.index[:, :k]])) * scale)
    background = torch.from_numpy(mean_rate(halves.candidates, scale))
    neighbour_mean = (torch.log1p(denoise_prior(torch.from_numpy(weights), rates, background)) / scale).numpy()
    plain = (torch.log1p(denoise_prior(torch.from_numpy(weights), rates, None)) / scale).numpy()
    own, _ = to_unit(halves.x, halves.enc)
    outputs = [
        halves.impute(mode="denoise", k=k, theta_sigma=theta_sigma, shrinkage=alpha).lognorm / halves.enc.scale
        for alpha in SHRINKAGES
    ]
    return halves, own, neighbour_mean, outputs, plain


def test_the_shrinkage_moves_the_output_from_the_cells_counts_to_its_neighbours() -> None:
    _, own, neighbour_mean, outputs, _ = shrinkage_sweep()
    to_neighbours = [float(np.abs(out - neighbour_mean).mean()) for out in outputs]
    to_own = [float(np.abs(out - own).mean()) for out in outputs]
    assert np.all(np.diff(to_neighbours) < 0), to_neighbours
    assert np.all(np.diff(to_own) > 0), to_own
    # measured: 7e-5 (the neighbours' mean rate, on the unit scale where values reach 1)
    assert np.abs(outputs[-1] - neighbour_mean).max() < 1e-3
    expressed = neighbour_mean > 0
    assert np.abs(outputs[0] - own)[expressed].max() < 1e-3  # measured 2.7e-4: alpha / m of the rarest genes


def test_a_tiny_shrinkage_keeps_observed_counts_that_no_neighbour_expresses() -> None:
    halves, own, _, outputs, plain = shrinkage_sweep()
    unexpressed = (plain == 0) & (halves.x > 0)
    assert unexpressed.any()  # the case exists in this sample
    assert np.abs(outputs[0] - own)[unexpressed].max() < 1e-3  # measured 2.7e-4 (0.43 when m was 0)


# --- 4. the tuning record and its within-label signal guard -----------------------------------------

TUNED = {
    "substates denoise": lambda: structured("substates"),
    "trajectory denoise": lambda: structured("trajectory"),
    "coarse zeros": lambda: coarse("zeros"),
    "coarse denoise": lambda: coarse("denoise"),
    "null zeros": lambda: null("zeros"),
    "null denoise": lambda: null("denoise"),
}


def _chosen(result: ImputeResult) -> dict[str, float]:
    """The tuning row of the parameters the result was imputed with."""
    rows = [
        t for t in result.tuning
        if t["k"] == result.k and t["theta_sigma"] == result.theta_sigma
        and ("shrinkage" not in t or t["shrinkage"] == result.shrinkage)
    ]
    assert rows, "no tuning row holds the chosen parameters"
    return rows[0]


@pytest.mark.parametrize("mode", ["zeros", "denoise"])
def test_the_tuning_record_holds_every_trials_values_and_scores(mode: str) -> None:
    _, result = coarse(mode)
    expected = {"k", "theta_sigma", "mse", "poisson", "signal", "objective"} | ({"shrinkage"} if mode == "denoise" else set())
    assert len(result.tuning) == TRIALS and result.validation == "molecules"
    assert all(set(t) == expected for t in result.tuning)
    assert all(math.isfinite(v) for t in result.tuning for v in t.values())
    assert _chosen(result)["objective"] == min(t["objective"] for t in result.tuning)
    assert (mode == "denoise") == math.isfinite(result.shrinkage)
    assert math.isfinite(result.raw_signal) and result.raw_signal > 0
    per_label = result.neighbours_per_label  # every label has cells: a finite mean, between 1 and k
    assert per_label.shape == (2,) and np.all((per_label >= 1) & (per_label <= result.k))


def test_the_chosen_trial_keeps_the_raw_signal_when_any_trial_reaches_it() -> None:
    checked = 0
    for make in TUNED.values():
        _, result = make()
        if any(t["signal"] >= result.raw_signal for t in result.tuning):
            assert _chosen(result)["signal"] >= result.raw_signal
            checked += 1
    assert checked >= 2  # the guard was tested on tunings that could keep the signal, not skipped


def test_a_trial_that_loses_within_label_signal_pays_for_it_in_the_objective() -> None:
    """Trials at or above the raw signal score ``mse / raw_mse + poisson / raw_poisson`` exactly (fitted
    here); every trial below it pays on top a penalty proportional to its shortfall."""
    checked = 0
    for make in TUNED.values():
        result = make()[1]
        trials = result.tuning
        kept = [t for t in trials if t["signal"] >= result.raw_signal]
        lost = [t for t in trials if t["signal"] < result.raw_signal]
        if len(kept) < 3 or not lost:
            continue
        scores = np.array([[t["mse"], t["poisson"]] for t in kept])
        weights, *_ = np.linalg.lstsq(scores, np.array([t["objective"] for t in kept]), rcond=None)
        np.testing.assert_allclose(scores @ weights, [t["objective"] for t in kept], rtol=1e-9)
        penalty = np.array([t["objective"] - weights @ [t["mse"], t["poisson"]] for t in lost])
        shortfall = np.array([result.raw_signal - t["signal"] for t in lost])
        assert np.all(penalty > 0)
        np.testing.assert_allclose(penalty / shortfall, penalty[0] / shortfall[0], rtol=1e-6)
        checked += 1
    assert checked >= 2  # the guard was exercised, not only described
