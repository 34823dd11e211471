"""Molecular cross-validation (Batson et al. 2019), the score of ``docs/method.md`` and ``benchmarks/bench_mcv.py``.

Counts are split binomially into a train part the method sees and a test part it
does not; a denoised train part is scored against the test part with a
log-normalised MSE and a Poisson loss. No ground truth is needed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from scmaskgan.errors import InputError
from scmaskgan.matrix import dense, lognormalise_nonnegative


@dataclass(frozen=True)
class MCVScore:
    """MSE (log-normalised, target sum 1e4) and Poisson loss of one prediction."""

    mse: float
    poisson: float


def split_counts(
    counts: np.ndarray | sp.spmatrix, p_train: float = 0.9, seed: int = 0
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Split every count binomially: ``train ~ Binomial(counts, p_train)``, ``test = counts - train``.

    The binomial draws are made with ``numpy.random.default_rng(seed)`` on the CSR data
    array in row-major order, so ``train + test == counts`` exactly and the split is the
    one of the reference numbers in ``benchmarks/results/mcv_pbmc.md``.
    """
    csr = sp.csr_matrix(counts, dtype=np.float64, copy=True)
    csr.sort_indices()
    data = csr.data
    if data.size and (np.any(data < 0) or np.any(data != np.round(data))):
        raise InputError("molecular cross-validation needs non-negative integer counts")
    rng = np.random.default_rng(seed)
    train = csr.copy()
    train.data = rng.binomial(data.astype(np.int64), p_train).astype(np.float64)
    test = csr.copy()
    test.data = data - train.data
    train.eliminate_zeros()
    test.eliminate_zeros()
    return train, test


def mcv_mse(test: np.ndarray | sp.spmatrix, denoised: np.ndarray | sp.spmatrix) -> float:
    """Mean squared difference of the log-normalised test counts and denoised output."""
    return float(np.mean((lognormalise_nonnegative(test) - lognormalise_nonnegative(denoised)) ** 2))


def mcv_poisson(
    train: np.ndarray | sp.spmatrix, test: np.ndarray | sp.spmatrix, denoised: np.ndarray | sp.spmatrix
) -> float:
    """Poisson loss of the denoised output rescaled to the test's total count."""
    pred = np.clip(dense(denoised), 0.0, None) * (float(test.sum()) / float(train.sum()))
    t = dense(test)
    return float(np.mean(pred - t * np.log(pred + 1e-6)))


def score(
    train: np.ndarray | sp.spmatrix, test: np.ndarray | sp.spmatrix, denoised: np.ndarray | sp.spmatrix
) -> MCVScore:
    """Both MCV scores of a denoised train matrix (cells x genes, any non-negative scale)."""
    if denoised.shape != test.shape:
        raise InputError(f"denoised shape {denoised.shape} differs from the counts' {test.shape}")
    return MCVScore(mcv_mse(test, denoised), mcv_poisson(train, test, denoised))
