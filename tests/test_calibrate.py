"""GENERATE's calibration: expected values keep the shared variation that real cells show and
lose what only the candidates claim."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import calibrate_in_memory

from scmaskgan.method.calibrate import SharedVariance, principal_directions, shrink_factors

N_GENES = 60


def _cells(rng: np.random.Generator, n: int, factor_sd: float, direction: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(expected, observed)``: unit-scale cells around one profile, moved together along
    ``direction`` by ``factor_sd``, observed with independent noise and dropouts per entry."""
    profile = np.linspace(0.2, 0.6, N_GENES)
    expected = np.clip(profile + rng.normal(0, factor_sd, (n, 1)) * direction, 0.01, 1.0)
    observed = np.clip(expected + rng.normal(0, 0.08, expected.shape), 0.0, 1.0) * (rng.random(expected.shape) < 0.7)
    return expected.astype(np.float32), observed.astype(np.float32)


@pytest.fixture
def direction() -> np.ndarray:
    v = np.random.default_rng(9).normal(size=N_GENES)
    return v / np.linalg.norm(v)


def _spread_along(values: np.ndarray, direction: np.ndarray) -> float:
    return float(((values - values.mean(0)) @ direction).var())


def test_shared_variance_is_zero_for_independent_genes_and_the_factor_variance_otherwise(direction):
    rng = np.random.default_rng(0)
    _, independent = _cells(rng, 4000, 0.0, direction)
    expected, _ = _cells(rng, 4000, 0.3, direction)
    basis = direction[:, None]
    shared = SharedVariance({0: basis, 1: basis})
    shared.add(np.vstack([independent, expected]), np.repeat([0, 1], 4000))
    result = shared.result()
    assert abs(result[0][0]) < 0.003 < _spread_along(independent, direction)  # noise alone shares nothing
    assert result[1][0] == pytest.approx(0.09, rel=0.15)  # 0.3^2, minus what the genes do alone
    blockwise = SharedVariance({0: basis, 1: basis})  # summed a few rows at a time: the same sums
    blockwise.add(np.vstack([independent, expected]), np.repeat([0, 1], 4000), block_rows=333)
    assert all(np.allclose(blockwise.result()[label], result[label], rtol=1e-9, atol=1e-12) for label in (0, 1))
    assert shrink_factors(np.array([0.01, 0.5, np.nan]), np.array([0.05, 0.2, 0.1])) == pytest.approx([0.2, 1.0, 1.0])


def test_invented_shared_variation_is_shrunk_to_what_the_real_cells_show(direction):
    rng = np.random.default_rng(1)
    _, real = _cells(rng, 600, 0.0, direction)  # real cells: independent genes
    expected, sampled = _cells(rng, 300, 0.25, direction)  # candidates: one invented direction
    before = _spread_along(expected, direction)
    factors = calibrate_in_memory(expected, sampled, np.zeros(300, dtype=int), [(real, np.zeros(600, dtype=int), None)]).factors
    assert factors[0][0] < 0.2
    assert _spread_along(expected, direction) < 0.05 * before


def test_variation_the_real_cells_share_is_kept(direction):
    rng = np.random.default_rng(2)
    _, real = _cells(rng, 600, 0.25, direction)  # real cells move along it too
    expected, sampled = _cells(rng, 300, 0.25, direction)
    original = expected.copy()
    real_labels = np.zeros(600, dtype=int)
    blocks = [(real[:250], real_labels[:250], None), (real[250:], real_labels[250:], None)]
    calibration = calibrate_in_memory(expected, sampled, np.zeros(300, dtype=int), blocks)
    assert calibration.factors[0][0] > 0.8
    assert np.allclose(calibration.real_means[0], real.mean(0), atol=1e-6)  # the blocks' label mean
    assert _spread_along(expected, direction) > 0.75 * _spread_along(original, direction)
    # applied a block of rows at a time in float32: the same as the whole projection in float64
    mean, basis = calibration.directions[0]
    whole = np.clip(original - (((original - mean) @ basis) * (1 - calibration.factors[0])) @ basis.T, 0, 1)
    assert np.allclose(calibration.apply(0, original, block_rows=7), whole, atol=1e-5)
    mean, basis = principal_directions(original, rank=3)
    assert basis.shape == (N_GENES, 3) and abs(abs(float(basis[:, 0] @ direction)) - 1) < 0.01
    assert np.allclose(mean, original.mean(0))


def test_variation_only_the_training_cells_share_is_shrunk_when_enough_cells_were_held_out(direction):
    """The generator's directions may follow where its training cells co-varied by chance; the
    held-out cells, when a label has enough of them, decide whether that variation is real."""
    rng = np.random.default_rng(4)
    _, seen = _cells(rng, 600, 0.25, direction)  # the training cells happen to share the direction
    _, new = _cells(rng, 100, 0.0, direction)  # cells the generator did not see do not
    real, labels = np.vstack([seen, new]), np.zeros(700, dtype=int)
    unseen = np.repeat([False, True], [600, 100])
    expected, sampled = _cells(rng, 300, 0.25, direction)
    trusting = calibrate_in_memory(expected.copy(), sampled, labels[:300], [(real, labels, None)])
    assert trusting.measured_on == {0: "all"} and trusting.factors[0][0] > 0.6
    checked = calibrate_in_memory(expected.copy(), sampled, labels[:300], [(real[:350], labels[:350], None),
                                                                          (real[350:], labels[350:], None)], unseen=unseen)
    assert checked.measured_on == {0: "held-out"} and checked.factors[0][0] < 0.2
    few = unseen & (np.arange(700) < 630)  # 30 held-out cells: too few to measure on alone
    assert calibrate_in_memory(expected.copy(), sampled, labels[:300], [(real, labels, None)], unseen=few).measured_on == {0: "all"}
    with pytest.raises(ValueError, match="unseen marks 699 cells"):
        calibrate_in_memory(expected.copy(), sampled, labels[:300], [(real, labels, None)], unseen=unseen[:699])


def test_variation_that_depth_explains_is_not_counted_as_shared(direction):
    rng = np.random.default_rng(3)
    depth = rng.normal(8.0, 0.5, 3000)
    _, noise = _cells(rng, 3000, 0.0, direction)
    deep = noise + 0.3 * (depth - 8.0)[:, None] * np.abs(direction)  # every gene rises with depth
    basis = np.abs(direction)[:, None] / np.linalg.norm(direction)
    ignoring, netting = SharedVariance({0: basis}), SharedVariance({0: basis})
    ignoring.add(deep, np.zeros(3000, dtype=int))
    netting.add(deep, np.zeros(3000, dtype=int), depth)
    shared = ignoring.result()[0][0]
    assert shared > 0.02  # depth alone makes the genes co-vary ...
    assert abs(netting.result()[0][0]) < min(0.003, 0.1 * shared)  # ... and the regression on it removes that
