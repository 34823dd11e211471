"""Molecular cross-validation (Batson et al. 2019), the score of ``docs/method.md`` and ``benchmarks/bench_mcv.py``.

Counts are split binomially into a train part the method sees and a test part it
does not; a denoised train part is scored against the test part with a
log-normalised MSE and a Poisson loss. No ground truth is needed.

:func:`within_label_signal` checks what MCV cannot see: how much of each cell's own
signal, beyond its label's average, the output keeps (``docs/evaluation.md``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from scmaskgan.core.matrix import dense, lognormalise_nonnegative
from scmaskgan.errors import InputError


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


def poisson_losses(
    train: np.ndarray | sp.spmatrix, test: np.ndarray | sp.spmatrix, denoised: np.ndarray | sp.spmatrix
) -> np.ndarray:
    """Every entry's Poisson loss of the denoised output rescaled to the test's total count
    (cells x genes; :func:`mcv_poisson` is their mean)."""
    pred = np.clip(dense(denoised), 0.0, None) * (float(test.sum()) / float(train.sum()))
    t = dense(test)
    return pred - t * np.log(pred + 1e-6)


def mcv_poisson(
    train: np.ndarray | sp.spmatrix, test: np.ndarray | sp.spmatrix, denoised: np.ndarray | sp.spmatrix
) -> float:
    """Poisson loss of the denoised output rescaled to the test's total count."""
    return float(np.mean(poisson_losses(train, test, denoised)))


def score(
    train: np.ndarray | sp.spmatrix, test: np.ndarray | sp.spmatrix, denoised: np.ndarray | sp.spmatrix
) -> MCVScore:
    """Both MCV scores of a denoised train matrix (cells x genes, any non-negative scale): the means of
    :func:`cell_scores` (every cell has as many genes, so the mean of the cells' means)."""
    mse, poisson = cell_scores(train, test, denoised)
    return MCVScore(float(mse.mean()), float(poisson.mean()))


def cell_scores(
    train: np.ndarray | sp.spmatrix, test: np.ndarray | sp.spmatrix, denoised: np.ndarray | sp.spmatrix
) -> tuple[np.ndarray, np.ndarray]:
    """Both MCV scores of every cell: ``(mse, poisson)``, each ``(cells,)``, of :func:`mcv_mse` and
    :func:`poisson_losses`.

    For paired comparisons of two outputs on the same cells (a bootstrap over cells of the
    difference, as ``benchmarks/bench_ablation.py`` reports): a difference of the means says
    nothing of whether it stands above the cell-to-cell scatter.
    """
    if denoised.shape != test.shape:
        raise InputError(f"denoised shape {denoised.shape} differs from the counts' {test.shape}")
    mse = ((lognormalise_nonnegative(test) - lognormalise_nonnegative(denoised)) ** 2).mean(axis=1)
    return mse, poisson_losses(train, test, denoised).mean(axis=1)


def within_label_signal(
    test: np.ndarray | sp.spmatrix, denoised: np.ndarray | sp.spmatrix, labels: np.ndarray
) -> float:
    """Pearson correlation of the held-out and the output signal left after removing each label's means.

    Both matrices are log-normalised as for :func:`mcv_mse` (negative output clipped to 0);
    every label's gene means are subtracted from its cells in each; the correlation is
    taken over all entries. An output equal to its label's profile scores 0 (it has no
    residual); raw counts score the biological signal they share with the held-out
    molecules; a denoiser that keeps each cell's own state scores at least as much.

    Parameters
    ----------
    test
        Held-out counts (cells x genes), or any reference such as the true means.
    denoised
        The method's output, any non-negative scale.
    labels
        (cells,) label of every cell (any hashable values).
    """
    if denoised.shape != test.shape or len(labels) != test.shape[0]:
        raise InputError(
            f"shapes differ: test {test.shape}, output {denoised.shape}, {len(labels)} labels"
        )
    ref, out = lognormalise_nonnegative(test), lognormalise_nonnegative(denoised)
    _, codes = np.unique(np.asarray(labels), return_inverse=True)
    for code in np.unique(codes):
        rows = codes == code
        ref[rows] -= ref[rows].mean(axis=0)
        out[rows] -= out[rows].mean(axis=0)
    ref, out = ref.ravel(), out.ravel()
    scale = float(np.linalg.norm(ref) * np.linalg.norm(out))
    return float(ref @ out / scale) if scale > 1e-12 * ref.size else 0.0


def label_mean_baseline(counts: np.ndarray | sp.spmatrix, labels: np.ndarray) -> np.ndarray:
    """Each cell replaced by its label's mean frequencies times its own library size (``docs/evaluation.md``)."""
    x = dense(counts).astype(np.float64)
    library = x.sum(axis=1, keepdims=True)
    frequencies = x / np.maximum(library, 1.0)
    out = np.empty_like(x)
    for label in np.unique(np.asarray(labels)):
        rows = np.asarray(labels) == label
        out[rows] = frequencies[rows].mean(axis=0) * library[rows]
    return out
