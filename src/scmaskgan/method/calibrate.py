"""GENERATE's guard against invented structure: the candidates' expected values may vary along a
direction only as much as the label's real cells co-vary along it.

A generator can make its candidates vary together along a few directions that the real
cells do not share (measured in ``docs/method.md``: on null data, independent genes, the
trained generator's candidates put a shared variance of 0.06 on each of two directions
where the real cells show 0.01). Denoise picks for every cell the candidates nearest to
it, so a cell's own noise decides where along those directions its prior lies, and the
output gains gene-gene correlations the data never had.

The check compares like with like: the *sampled* candidates, which have the noise and
dropouts of real cells, against the real cells of the same label, in the encoded scale.
Along each of the top :data:`RANK` principal directions ``v`` of a label's expected values,
the *shared variance* of a set of cells is ``Var(x . v) - sum_g v_g^2 Var(x_g)``: the variance
of the projection minus what independent genes would give it, the part that needs genes
to co-vary (0 in expectation for independent genes, whatever their noise). Each expected
value's component along ``v`` is multiplied by ``clip(real / sampled, 0, 1)``: kept where the
candidates claim no more shared variation than the real cells show, shrunk where they
claim more, never enlarged.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from sklearn.utils.extmath import randomized_svd

#: Principal directions of each label's expected values that are checked.
RANK = 20


def principal_directions(values: np.ndarray, rank: int = RANK) -> tuple[np.ndarray, np.ndarray]:
    """``(mean, basis)``: the rows' mean ``(g,)`` and their top ``rank`` principal directions ``(g, r)``
    (orthonormal columns; ``r <= rank``, fewer for fewer rows or genes)."""
    mean = values.mean(0, dtype=np.float64)
    r = max(0, min(rank, values.shape[0] - 1, values.shape[1]))
    if r == 0:
        return mean, np.zeros((values.shape[1], 0))
    _, _, vt = randomized_svd(values - mean.astype(values.dtype), r, random_state=0)
    return mean, vt.T.astype(np.float64)


class SharedVariance:
    """The shared variance (module docstring) of cells along given per-label directions, net of
    what the cells' depth explains, accumulated over blocks of cells.

    Depth moves all of a cell's genes together (a deeper cell detects more of them), so the
    real cells share variance even where no gene depends on another; the sampled candidates,
    drawn at real cells' depths, share it too. Both are measured after a linear regression
    on the log depth within each label, which leaves the variation a label's cells share
    beyond depth, the part the expected values (all taken at one depth) may carry.

    Parameters
    ----------
    bases
        ``{label: (g, r) basis}``: the directions to measure each label's cells along.
    """

    def __init__(self, bases: dict[int, np.ndarray]) -> None:
        self.bases = bases
        # per label: n, sum d, sum d^2; sums of p, p^2, p d (r each); sums of x, x^2, x d (g each)
        self.depth = {label: np.zeros(3) for label in bases}
        self.proj = {label: np.zeros((3, b.shape[1])) for label, b in bases.items()}
        self.gene = {label: np.zeros((3, b.shape[0])) for label, b in bases.items()}

    def add(self, values: np.ndarray, labels: np.ndarray, depth: np.ndarray | None = None) -> None:
        """Add a block of cells ``(n, g)`` with their labels and log depths (``None``: all alike);
        labels without a basis are ignored."""
        d_all = np.zeros(len(labels)) if depth is None else np.asarray(depth, dtype=np.float64)
        for label in np.unique(labels):
            if int(label) not in self.bases:
                continue
            rows = labels == label
            x, d = np.asarray(values[rows], dtype=np.float64), d_all[rows]
            p = x @ self.bases[int(label)]
            self.depth[int(label)] += (len(x), d.sum(), d @ d)
            self.proj[int(label)] += (p.sum(0), (p * p).sum(0), d @ p)
            self.gene[int(label)] += (x.sum(0), (x * x).sum(0), d @ x)

    def means(self) -> dict[int, np.ndarray]:
        """``{label: (g,)}`` mean of each label's cells, gene by gene (float32; zeros for a label with no cells)."""
        return {
            label: (sums[0] / max(self.depth[label][0], 1.0)).astype(np.float32) for label, sums in self.gene.items()
        }

    def result(self) -> dict[int, np.ndarray]:
        """``{label: (r,)}`` shared variance along each direction (``nan`` for a label with < 2 cells)."""
        out = {}
        for label, basis in self.bases.items():
            n, d_sum, d_sq = self.depth[label]
            if n < 2:
                out[label] = np.full(basis.shape[1], np.nan)
                continue
            var_d = d_sq / n - (d_sum / n) ** 2
            var_p = _residual_variance(self.proj[label], d_sum, var_d, n)
            var_g = np.maximum(_residual_variance(self.gene[label], d_sum, var_d, n), 0.0)
            out[label] = var_p - (basis**2 * var_g[:, None]).sum(0)
        return out


def _residual_variance(sums: np.ndarray, d_sum: float, var_d: float, n: float) -> np.ndarray:
    """Variance left after a linear regression on depth, from the sums of ``y``, ``y^2`` and ``y d``."""
    mean = sums[0] / n
    var = sums[1] / n - mean**2
    if var_d <= 1e-12:
        return var
    cov = sums[2] / n - mean * d_sum / n
    return var - cov**2 / var_d


def shrink_factors(real: np.ndarray, sampled: np.ndarray) -> np.ndarray:
    """``clip(real / sampled, 0, 1)`` per direction; 1 where the candidates claim no shared variance
    (``sampled <= 0``) or the real cells' is unknown."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(sampled > 0, real / sampled, 1.0)
    return np.where(np.isfinite(ratio), np.clip(ratio, 0.0, 1.0), 1.0)


@dataclass
class Calibration:
    """What :func:`calibrate` applied and measured.

    Attributes
    ----------
    factors
        ``{label: factors}``: the multiplier applied along each of the label's directions (1 = kept).
    real_means
        ``{label: (g,)}`` mean of the label's real cells, from the same pass over them (what
        :func:`~scmaskgan.method.generate.recentre` centres the candidates on).
    """

    factors: dict[int, list[float]]
    real_means: dict[int, np.ndarray]


def calibrate(
    expected: np.ndarray,
    sampled: np.ndarray,
    labels: np.ndarray,
    real_blocks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    sampled_depth: np.ndarray | None = None,
    rank: int = RANK,
) -> Calibration:
    """Shrink each label's expected values along directions where its sampled candidates share
    more variance than its real cells (in place; clipped to the unit scale's [0, 1]).

    Parameters
    ----------
    expected
        ``(m, g)`` the candidates' expected values (unit scale), changed in place.
    sampled
        ``(m, g)`` the same candidates as sampled (noise and dropouts drawn).
    labels
        ``(m,)`` label of each candidate.
    real_blocks
        Blocks ``(values (n, g), labels (n,), log depths (n,) or None)`` of the real cells, unit
        scale, dropouts as 0.
    sampled_depth
        ``(m,)`` the log depth each sampled candidate was drawn at (``None``: no depth covariate).
    rank
        Directions checked per label.

    Returns
    -------
    :class:`Calibration`: the factors applied and the real cells' label means (one pass over them).
    """
    bases, means = {}, {}
    for label in np.unique(labels).tolist():
        means[label], bases[label] = principal_directions(expected[labels == label], rank)
    real = SharedVariance(bases)
    for values, real_labels, real_depth in real_blocks:
        real.add(values, real_labels, real_depth)
    claimed = SharedVariance(bases)
    claimed.add(sampled, labels, sampled_depth)
    real_shared, claimed_shared = real.result(), claimed.result()
    factors = {}
    for label, basis in bases.items():
        f = shrink_factors(real_shared[label], claimed_shared[label])
        rows = labels == label
        coords = (expected[rows] - means[label]) @ basis
        expected[rows] = np.clip(expected[rows] - (coords * (1.0 - f)) @ basis.T, 0.0, 1.0)
        factors[label] = [round(float(x), 4) for x in f]
    return Calibration(factors, real.means())
