"""Within-label signal (docs/evaluation.md): what each cell keeps beyond its label's average."""

from __future__ import annotations

import numpy as np
import pytest

from scmaskgan.analysis.simulate import simulate
from scmaskgan.errors import InputError
from scmaskgan.method.mcv import cell_scores, score, split_counts, within_label_signal


@pytest.fixture(scope="module")
def split():
    sim = simulate(400, 200, n_labels=4, structure="both", seed=0)
    train, test = split_counts(sim.counts, 0.9, seed=0)
    return sim, train.toarray(), test.toarray()


def _label_mean_output(train: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each cell replaced by its label's mean frequencies x its own library size."""
    lib = train.sum(axis=1, keepdims=True)
    freq = train / lib
    means = np.stack([freq[labels == k].mean(axis=0) for k in range(labels.max() + 1)])
    return means[labels] * lib


def test_label_mean_output_scores_zero(split) -> None:
    sim, train, test = split
    assert within_label_signal(test, _label_mean_output(train, sim.labels), sim.labels) == pytest.approx(0.0, abs=1e-6)


def test_perfect_output_keeps_more_than_raw_counts(split) -> None:
    sim, train, test = split
    raw = within_label_signal(test, train, sim.labels)
    perfect = within_label_signal(test, sim.truth, sim.labels)
    assert 0.02 < raw < perfect
    assert perfect > 1.2 * raw


def test_cells_shuffled_within_their_label_lose_the_signal(split) -> None:
    sim, train, test = split
    rng = np.random.default_rng(0)
    shuffled = train.copy()
    for k in range(4):
        rows = np.flatnonzero(sim.labels == k)
        shuffled[rows] = train[rng.permutation(rows)]
    assert abs(within_label_signal(test, shuffled, sim.labels)) < 0.25 * within_label_signal(test, train, sim.labels)


def test_labels_of_any_type_and_bad_shapes(split) -> None:
    sim, train, test = split
    names = np.array([f"type{k}" for k in sim.labels])
    assert within_label_signal(test, train, names) == pytest.approx(within_label_signal(test, train, sim.labels))
    with pytest.raises(InputError):
        within_label_signal(test, train[:, :-1], sim.labels)
    with pytest.raises(InputError):
        within_label_signal(test, train, sim.labels[:-1])


def test_cell_scores_average_to_the_mcv_scores_and_rank_cells(split) -> None:
    sim, train, test = split
    mse, poisson = cell_scores(train, test, sim.truth)
    whole = score(train, test, sim.truth)
    assert mse.shape == poisson.shape == (len(train),)
    assert mse.mean() == pytest.approx(whole.mse) and poisson.mean() == pytest.approx(whole.poisson)
    # the truth beats the label mean on the Poisson loss in most cells, not just on average
    _, label_mean = cell_scores(train, test, _label_mean_output(train, sim.labels))
    assert (poisson < label_mean).mean() > 0.5
    with pytest.raises(InputError, match="shape"):
        cell_scores(train, test, sim.truth[:, :-1])
