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

The real cells' side is measured on cells the generator did not see (TRAIN's held-out
cells) wherever a label has at least :data:`MIN_UNSEEN_CELLS` of them. The directions are
the generator's, and a generator fitted to a sample learns where its cells happened to
co-vary by chance: measured on those same cells, such a direction looks real (null data,
800 cells, ``docs/method.md``: a shared variance of 0.010 on the training cells, within
+-0.0004 of 0 on new cells from the same distribution). Labels with fewer held-out cells are
measured on all their cells, as before.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from sklearn.utils.extmath import randomized_svd

#: Principal directions of each label's expected values that are checked.
RANK = 20
#: Held-out cells a label needs for its shared variance to be measured on them alone (fewer:
#: on all its cells). The estimate's standard error is about ``sqrt(2 / n)`` of the variance
#: along a direction, 0.2 at 50 cells.
MIN_UNSEEN_CELLS = 50


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

    def add(
        self, values: np.ndarray, labels: np.ndarray, depth: np.ndarray | None = None, block_rows: int = 1024
    ) -> None:
        """Add cells ``(n, g)`` with their labels and log depths (``None``: all alike); labels
        without a basis are ignored. Summed ``block_rows`` cells at a time, so that the float64
        copies stay small."""
        d_all = np.zeros(len(labels)) if depth is None else np.asarray(depth, dtype=np.float64)
        for start in range(0, len(labels), block_rows):
            part = slice(start, start + block_rows)
            self._add_block(values[part], labels[part], d_all[part])

    def _add_block(self, values: np.ndarray, labels: np.ndarray, d_all: np.ndarray) -> None:
        for label in np.unique(labels):
            if int(label) not in self.bases:
                continue
            rows = labels == label
            x, d = np.asarray(values[rows], dtype=np.float64), d_all[rows]
            p = x @ self.bases[int(label)]
            self.depth[int(label)] += (len(x), d.sum(), d @ d)
            self.proj[int(label)] += (p.sum(0), (p * p).sum(0), d @ p)
            self.gene[int(label)] += (x.sum(0), (x * x).sum(0), d @ x)

    def n_cells(self, label: int) -> int:
        """Cells of ``label`` added so far."""
        return int(self.depth[label][0])

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


class Calibrator:
    """The calibration of a sample's candidates, one label at a time, so that GENERATE never holds
    more than one label's candidates: :meth:`add_label` for every label's candidates, one
    :meth:`measure` over the real cells, then :meth:`apply` to every label's expected values.

    Parameters
    ----------
    rank
        Directions checked per label.

    Attributes
    ----------
    factors
        ``{label: (r,)}`` the multiplier applied along each of the label's directions (1 = kept;
        set by :meth:`measure`).
    real_means
        ``{label: (g,)}`` mean of the label's real cells, from the same pass over them (what
        :func:`~scmaskgan.method.generate.recentre` centres the candidates on).
    measured_on
        ``{label: 'held-out' | 'all'}`` the real cells :attr:`factors` were measured on.
    """

    def __init__(self, rank: int = RANK) -> None:
        self.rank = rank
        self.directions: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self.claimed: dict[int, np.ndarray] = {}
        self.factors: dict[int, np.ndarray] = {}
        self.real_means: dict[int, np.ndarray] = {}
        self.measured_on: dict[int, str] = {}

    def add_label(
        self, label: int, expected: np.ndarray, sampled: np.ndarray, sampled_depth: np.ndarray | None = None
    ) -> None:
        """Take one label's candidates: the principal directions of their expected values ``(m, g)``
        and the shared variance their sampled versions ``(m, g)``, drawn at log depths ``sampled_depth``
        (``None``: no depth covariate), claim along them."""
        mean, basis = principal_directions(expected, self.rank)
        self.directions[label] = (mean, basis)
        claimed = SharedVariance({label: basis})
        claimed.add(sampled, np.full(len(sampled), label), sampled_depth)
        self.claimed[label] = claimed.result()[label]

    def measure(
        self,
        real_blocks: Iterable[tuple[np.ndarray, np.ndarray, np.ndarray | None]],
        unseen: np.ndarray | None = None,
    ) -> None:
        """One pass over the real cells: blocks ``(values (n, g), labels (n,), log depths (n,) or None)``,
        unit scale, dropouts as 0; sets :attr:`factors`, :attr:`measured_on` and :attr:`real_means`.

        ``unseen`` marks, over all cells in the blocks' order, those the generator was not trained
        on; a label with at least :data:`MIN_UNSEEN_CELLS` of them is measured on them alone.
        """
        bases = {label: basis for label, (_, basis) in self.directions.items()}
        every, held_out = SharedVariance(bases), SharedVariance(bases)
        start = 0
        for values, labels, depth in real_blocks:
            every.add(values, labels, depth)
            start += len(labels)
            if unseen is None:
                continue
            if start > len(unseen):
                raise ValueError(f"unseen marks {len(unseen)} cells, the blocks hold more")
            if (rows := unseen[start - len(labels):start]).any():
                held_out.add(values[rows], labels[rows], None if depth is None else depth[rows])
        if unseen is not None and start != len(unseen):
            raise ValueError(f"unseen marks {len(unseen)} cells, the blocks held {start}")
        shared_every, shared_held_out = every.result(), held_out.result()
        self.measured_on = {
            label: "held-out" if held_out.n_cells(label) >= MIN_UNSEEN_CELLS else "all" for label in self.directions
        }
        self.factors = {
            label: shrink_factors(
                shared_held_out[label] if self.measured_on[label] == "held-out" else shared_every[label],
                self.claimed[label],
            )
            for label in self.directions
        }
        self.real_means = every.means()

    def apply(self, label: int, expected: np.ndarray, block_rows: int = 1024) -> np.ndarray:
        """``expected`` ``(m, g)`` of ``label`` with each component along its directions multiplied by
        the label's factor, clipped to the unit scale's [0, 1] (a new float32 array).

        Computed in float32, ``block_rows`` rows at a time: whole and in float64 it held five
        label-sized temporaries (200 MB for a label of 4,000 candidates x 2,000 genes, GENERATE's
        peak at 10,000 cells).
        """
        mean, basis = self.directions[label]
        centre, directions = mean.astype(np.float32), basis.astype(np.float32)
        removed = (1.0 - self.factors[label]).astype(np.float32)
        out = np.array(expected, dtype=np.float32)
        for start in range(0, len(out), block_rows):
            block = out[start:start + block_rows]  # a view: changed in place
            block -= (((block - centre) @ directions) * removed) @ directions.T
            np.clip(block, 0.0, 1.0, out=block)
        return out

    def record(self) -> dict[int, list[float]]:
        """``{label: factors}`` rounded for the candidates file's ``params_json``."""
        return {label: [round(float(x), 4) for x in f] for label, f in self.factors.items()}
