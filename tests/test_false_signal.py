"""False-signal check on null data: raw counts pass, smoothing and low-rank outputs fail."""

from __future__ import annotations

import numpy as np
import pytest

from scmaskgan.analysis.false_signal import correlation_inflation, passes_null_check
from scmaskgan.core.matrix import lognormalise_nonnegative
from scmaskgan.errors import InputError


@pytest.fixture(scope="module")
def null_counts() -> np.ndarray:
    """One cell type, 400 cells x 120 independent negative-binomial genes (seeded)."""
    rng = np.random.default_rng(0)
    mean = rng.lognormal(0.5, 1.0, size=120) * rng.lognormal(0.0, 0.2, size=(400, 1))
    return rng.negative_binomial(4, 4 / (4 + mean)).astype(np.float64)


def _knn_average(x: np.ndarray, k: int = 30) -> np.ndarray:
    """Each cell replaced by the mean of its k nearest cells (itself included), as kNN smoothing."""
    d = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return x[np.argsort(d, axis=1)[:, :k]].mean(1)


def _random_average(x: np.ndarray, k: int = 30) -> np.ndarray:
    """Each cell replaced by the mean of k random cells: no structure to find, only shared neighbours."""
    return x[np.random.default_rng(2).integers(0, len(x), (len(x), k))].mean(1)


def _low_rank(x: np.ndarray, rank: int = 3) -> np.ndarray:
    mean = x.mean(0)
    u, s, vt = np.linalg.svd(x - mean, full_matrices=False)
    return mean + (u[:, :rank] * s[:rank]) @ vt[:rank]


def test_raw_counts_and_their_thinning_pass(null_counts):
    raw = lognormalise_nonnegative(null_counts)
    same = correlation_inflation(raw, raw)
    assert same["abs_corr_p95_inflation"] == 0 and passes_null_check(same)
    assert 0.05 < same["abs_corr_p95_original"] < 0.15  # sampling noise of 400 cells: about 2 / sqrt(400)
    thinned = np.random.default_rng(1).binomial(null_counts.astype(np.int64), 0.9)  # noise, no smoothing
    assert passes_null_check(correlation_inflation(raw, lognormalise_nonnegative(thinned)))


@pytest.mark.parametrize("smooth", [_knn_average, _random_average, _low_rank])
def test_smoothing_outputs_fail(null_counts, smooth):
    raw = lognormalise_nonnegative(null_counts)
    result = correlation_inflation(raw, smooth(raw))
    assert result["abs_corr_p95_imputed"] > 1.3 * result["abs_corr_p95_original"]
    assert not passes_null_check(result)


def test_inflation_checks_its_inputs(null_counts):
    with pytest.raises(InputError, match="shapes differ"):
        correlation_inflation(null_counts, null_counts[:10])
    with pytest.raises(InputError, match="genes vary"):
        correlation_inflation(null_counts, np.zeros_like(null_counts))
