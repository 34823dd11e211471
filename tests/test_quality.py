"""Generative quality metrics: hand-computed cases, and real, collapsed and shifted candidates."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scmaskgan.errors import InputError
from scmaskgan.method import quality as q

N_GENES, N_LABELS = 200, 2


def _sampler(seed: int = 0):
    """Cells of two labels in the unit scale: a label profile, 4 latent factors per label and noise."""
    rng = np.random.default_rng(seed)
    centers = 0.2 + 0.3 * rng.random((N_LABELS, N_GENES))
    loadings = 0.05 * rng.normal(size=(N_LABELS, 4, N_GENES))

    def sample(n: int, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """``n`` cells; ``shift`` moves their profile that far toward the other label's."""
        labels = np.repeat(np.arange(N_LABELS), n // N_LABELS)
        profile = centers[labels] + shift * (centers[1 - labels] - centers[labels])
        z = rng.normal(size=(len(labels), 4))
        x = profile + np.einsum("nk,nkg->ng", z, loadings[labels]) + 0.03 * rng.normal(size=(len(labels), N_GENES))
        return np.clip(x, 0, 1).astype(np.float32), labels

    return sample


@pytest.fixture(scope="module")
def setting():
    sample = _sampler()
    held, held_labels = sample(160)
    train, train_labels = sample(400)
    reference = q.QualityReference(held, held_labels, train, train_labels, n_components=20)
    return sample, held, held_labels, reference


# ------------------------------------------------------------------ by hand
def test_energy_distance_by_hand():
    assert q.energy_distance(np.array([[0.0]]), np.array([[1.0]])) == pytest.approx(2.0)
    # cross mean 1, within A: |0-2| = 2, within B: 0 -> 2*1 - 2 - 0
    assert q.energy_distance(np.array([[0.0], [2.0]]), np.array([[1.0]])) == pytest.approx(0.0)
    a = np.random.default_rng(0).normal(size=(50, 3))
    assert q.energy_distance(a, a + 5) > 5 > abs(q.energy_distance(a, a))


def test_prdc_by_hand():
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [10.0]])
    # k=1: real balls have radius 1, fake balls 9.5. Fake 0.5 lies in the balls of real 0 and 1,
    # fake 10 in none; every real point lies in the ball of fake 0.5; reals 0 and 1 hold a fake.
    assert q.prdc(real, fake, k=1) == {"precision": 0.5, "recall": 1.0, "density": 1.0, "coverage": 0.5}
    assert all(np.isnan(v) for v in q.prdc(real, fake[:1], k=5).values())


def test_c2st_separates_spread_and_location_but_not_samples_of_one_distribution():
    rng = np.random.default_rng(1)
    real = rng.normal(size=(200, 10))
    assert abs(q.c2st_auc(real, rng.normal(size=(300, 10))) - 0.5) < 0.1
    assert q.c2st_auc(real, 0.01 * rng.normal(size=(200, 10))) > 0.95  # same mean, no spread
    assert q.c2st_auc(real, rng.normal(size=(200, 10)) + 1.0) > 0.95
    assert np.isnan(q.c2st_auc(real, real[:1]))


def test_gene_ratios_and_gap_closed():
    rng = np.random.default_rng(2)
    real = rng.random((100, 30))
    ratios = q.gene_ratios(real, 2 * real)
    assert ratios["gene_mean_abs_log2"] == pytest.approx(1.0, abs=0.01)
    assert ratios["gene_var_log2"] == pytest.approx(2.0, abs=0.01)  # variance scales by 4
    assert q.gap_closed(0.015, 0.076) == pytest.approx(1 - 0.015 / 0.076)
    assert np.isnan(q.gap_closed(0.01, 0.0))


# ------------------------------------------------------------------ the reference
def test_real_cells_score_like_the_training_cells(setting):
    sample, _, _, reference = setting
    cells, labels = sample(400)
    s = reference.score(cells, labels)
    for name in ("precision", "recall", "coverage"):
        assert s[name] > 0.8 and s[f"{name}_real"] > 0.8, name
    assert abs(s["c2st_auc"] - 0.5) < 0.1 and abs(s["c2st_auc_real"] - 0.5) < 0.1
    assert abs(s["energy_gap"]) < 0.1 * s["energy_real"] + 0.05
    assert s["corr_agreement"] > 0.8 and abs(s["gene_var_log2"]) < 0.3
    assert set(s["per_label"]) == {"0", "1"} and s["per_label"]["0"]["recall"] > 0.8


@pytest.mark.parametrize("noise", [0.0, 1e-3])
def test_collapsed_candidates_score_low_recall_and_coverage(setting, noise):
    _, held, held_labels, reference = setting
    labels = np.repeat(np.arange(N_LABELS), 200)
    means = np.stack([held[held_labels == k].mean(0) for k in range(N_LABELS)])
    cells = means[labels] + noise * np.random.default_rng(3).normal(size=(len(labels), N_GENES))
    s = reference.score(cells, labels)
    assert s["recall"] < 0.1 and s["coverage"] < 0.3 < s["coverage_real"]
    assert s["c2st_auc"] > 0.95
    assert s["gene_mean_abs_log2"] < 0.1 and s["gene_var_log2"] < -3  # right means, no spread
    assert s["energy_gap"] > 0.5


def test_shifted_candidates_score_low_precision(setting):
    sample, _, _, reference = setting
    cells, labels = sample(400, shift=1.0)  # around the other label's profile
    s = reference.score(torch.from_numpy(cells), torch.from_numpy(labels))  # torch input as in training
    assert s["precision"] < 0.2 < s["precision_real"]
    assert s["c2st_auc"] > 0.95 and s["gene_mean_abs_log2"] > 0.3


def test_reference_energy_is_the_energy_distance_in_its_pca(setting):
    sample, held, held_labels, reference = setting
    cells, labels = sample(100)
    s = reference.score(cells, labels)
    for k in range(N_LABELS):
        pcs = [reference.project(x[lab == k].astype(np.float64)) for x, lab in ((held, held_labels), (cells, labels))]
        assert s["per_label"][str(k)]["energy"] == pytest.approx(q.energy_distance(*pcs), rel=1e-6)


def test_energy_sees_missing_co_expression(setting):
    """Real cells with every gene shuffled among their label's cells (right gene-wise
    distributions, no co-expression) are far from the held-out cells; real cells are not."""
    sample, _, _, reference = setting
    cells, labels = sample(400)
    rng = np.random.default_rng(5)
    shuffled = cells.copy()
    for k in range(N_LABELS):
        rows = np.flatnonzero(labels == k)
        shuffled[rows] = np.column_stack([rng.permutation(cells[rows, j]) for j in range(N_GENES)])
    real_gap, shuffled_gap = reference.score(cells, labels)["energy_gap"], reference.score(shuffled, labels)["energy_gap"]
    assert shuffled_gap > 0.05 > abs(real_gap)


def test_reference_checks_its_inputs(setting):
    _, held, held_labels, reference = setting
    with pytest.raises(InputError, match="no candidates for held-out label"):
        reference.score(held[held_labels == 0], held_labels[held_labels == 0])
    with pytest.raises(InputError, match="genes"):
        reference.score(held[:, :10], held_labels)
    with pytest.raises(InputError, match="labels for"):
        reference.score(held, held_labels[:5])


def test_a_single_held_out_cell_gives_nan_not_an_error():
    rng = np.random.default_rng(4)
    reference = q.QualityReference(rng.random((1, 20)), ["a"], rng.random((10, 20)), ["a"] * 10, n_components=3)
    s = reference.score(rng.random((5, 20)), ["a"] * 5)
    # one held-out cell has no within-sample distance: no energy either
    assert np.isnan(s["c2st_auc"]) and np.isnan(s["recall"]) and np.isnan(s["energy"])
    assert np.isfinite(s["gene_mean_abs_log2"])
