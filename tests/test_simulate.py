"""The simulation with hidden within-label structure and the null data keep their promises."""

from __future__ import annotations

import numpy as np
import pytest

from scmaskgan.analysis.simulate import simulate, simulate_null


@pytest.fixture(scope="module")
def sim():
    return simulate(400, 200, n_labels=4, structure="both", seed=0)


def _log_freq(x: np.ndarray) -> np.ndarray:
    return np.log1p(x / x.sum(axis=1, keepdims=True) * 1e4)


def test_shapes_and_types(sim) -> None:
    n, g = sim.counts.shape
    assert (n, g) == (400, 200) and sim.truth.shape == (n, g)
    assert sim.counts.dtype == np.int64 and sim.counts.min() >= 0
    assert set(np.unique(sim.labels)) == {0, 1, 2, 3}
    assert set(np.unique(sim.substate)) == {0, 1}
    assert np.all((sim.pseudotime >= 0) & (sim.pseudotime <= 1))
    np.testing.assert_allclose(sim.truth.sum(axis=1), sim.library, rtol=1e-9)
    assert 0.1 < (sim.counts == 0).mean() < 0.9


def test_same_seed_same_data_other_seed_other_data(sim) -> None:
    again = simulate(400, 200, n_labels=4, structure="both", seed=0)
    np.testing.assert_array_equal(again.counts, sim.counts)
    assert not np.array_equal(simulate(400, 200, n_labels=4, seed=1).counts, sim.counts)


def test_counts_average_to_the_truth() -> None:
    big = simulate(4000, 100, n_labels=2, seed=3, theta=10.0, mean_library=500.0)
    mean_counts, mean_truth = big.counts.mean(axis=0), big.truth.mean(axis=0)
    # NB variance mu + mu^2/theta: the column means are within a few standard errors of the truth
    se = np.sqrt((big.truth + big.truth**2 / 10.0).mean(axis=0) / big.counts.shape[0])
    assert np.all(np.abs(mean_counts - mean_truth) < 5 * se + 1e-9)


def test_dropout_only_removes_counts() -> None:
    plain = simulate(300, 100, n_labels=2, seed=5)
    dropped = simulate(300, 100, n_labels=2, seed=5, dropout=0.8)
    np.testing.assert_array_equal(plain.truth, dropped.truth)
    assert (dropped.counts == 0).mean() > (plain.counts == 0).mean() + 0.02


def test_substates_are_separable_in_the_truth(sim) -> None:
    log_truth = _log_freq(sim.truth)
    for label in range(4):
        rows = sim.labels == label
        prog0, prog1 = (np.asarray(p) for p in sim.programs["substate"][label])
        score = log_truth[rows][:, prog1].mean(axis=1) - log_truth[rows][:, prog0].mean(axis=1)
        state = sim.substate[rows]
        assert score[state == 1].min() > score[state == 0].max()  # perfectly separable in the truth
        assert score[state == 1].mean() - score[state == 0].mean() > 1.5


def test_trajectory_program_follows_pseudotime(sim) -> None:
    log_truth = _log_freq(sim.truth)
    for label in range(4):
        rows = sim.labels == label
        score = log_truth[rows][:, sim.programs["trajectory"][label]].mean(axis=1)
        assert np.corrcoef(score, sim.pseudotime[rows])[0, 1] > 0.95


def test_labels_only_structure_has_no_hidden_states() -> None:
    flat = simulate(200, 100, n_labels=2, structure="none", seed=0)
    assert np.all(flat.substate == -1) and np.all(np.isnan(flat.pseudotime))


@pytest.mark.parametrize(
    "kwargs", [{"structure": "other"}, {"dropout": 1.0}, {"n_labels": 20}, {"theta": 0.0}, {"n_cells": 1}]
)
def test_bad_arguments_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        simulate(**{"n_cells": 100, "n_genes": 100, **kwargs})


def _pair_correlations(x: np.ndarray, library: np.ndarray) -> np.ndarray:
    """Pearson correlation of every gene pair of the counts divided by the cells' library sizes."""
    freq = x / library[:, None]
    corr = np.corrcoef(freq, rowvar=False)
    return corr[np.triu_indices_from(corr, k=1)]


def test_null_data_has_no_gene_gene_correlation() -> None:
    null = simulate_null(2000, 40, seed=0)
    assert np.all(null.labels == 0)
    r = _pair_correlations(null.counts.astype(float), null.library)
    noise = 1.0 / np.sqrt(null.counts.shape[0])  # SD of one pair's correlation under independence
    assert abs(r.mean()) < noise  # no common shift of all pairs
    assert np.abs(r).max() < 4.5 * noise  # no single pair beyond sampling noise (780 pairs)
    # the check can fail: structured cells do show gene-gene correlation
    structured = simulate(2000, 40, n_labels=2, seed=0, program_genes=4)
    assert np.abs(_pair_correlations(structured.counts.astype(float), structured.library)).max() > 10 * noise
