"""IMPUTE: fill dropouts from the nearest retained GAN candidates (arrays in, arrays out; no IO).

For every real cell, the candidates of its label are ranked by Euclidean distance in
the encoded (log-normalised, unit) space; candidates farther than the label's
``theta = mu + theta_sigma * sigma`` are dropped and the ``k`` nearest of the rest are
kept (at least the nearest one). From these neighbours:

* a zero entry gets the **posterior mean given the zero**: the neighbours' unit values
  weighted by the Poisson probability that each of them would have produced a zero at
  this cell's sequencing depth, ``P(0 | lambda) = exp(-lambda)`` with ``lambda`` the
  neighbour's expression in molecules at the cell's library size. A gene the
  neighbours express highly contributes little (its zero is evidence against it);
  a gene they express lowly is filled at that low level.
* an observed entry is kept exactly (``mode='zeros'``, the paper) or replaced by the
  neighbours' plain mean (``mode='denoise'``).

``k`` and ``theta_sigma`` are tuned with Optuna on a real validation: a binomial
molecule split of a subsample of cells (train part imputed, held-out part scored
with the log-normalised MSE of :mod:`scmaskgan.mcv`), or, for log-normalised input,
a fraction of observed entries hidden before imputation. The reasoning and the
measured alternatives are in ``docs/method.md`` ("Imputation").
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp
import torch

from scmaskgan.config import ImputeParams
from scmaskgan.encode import Encoding, decode, library_sizes, to_unit
from scmaskgan.errors import InputError, StepError
from scmaskgan.mcv import mcv_mse, mcv_poisson, split_counts, within_label_signal

#: Elements of the (cells, neighbours, genes) block processed at once (bounds memory).
_BLOCK_ELEMENTS = 1_000_000
#: Cells encoded, estimated and decoded at once (at most; fewer for wide samples, see
#: :data:`_ROW_ELEMENTS`): bounds the float64 temporaries.
_ROW_BLOCK = 1024
#: Cells x genes of one row block: 1,024 cells at 2,000 genes, 119 cells at 33,514.
_ROW_ELEMENTS = 4_000_000
#: Cells x genes imputed by every tuning trial (at most; 1,000 cells at 2,000 genes and
#: 119 at 33,514, where 1,000 cells took 20 s per trial), and the fewest cells tuned on.
_TUNE_ENTRIES, _TUNE_MIN_CELLS = 4_000_000, 100
#: Objective penalty per unit of within-label signal lost against the seen counts.
_SIGNAL_PENALTY = 10.0


@dataclass(frozen=True)
class Neighbours:
    """The ``k_max`` nearest candidates of every cell and its label's distance statistics.

    Attributes
    ----------
    index
        (n, k_max) int64 rows of the candidate matrix, nearest first; -1 when the label
        has fewer candidates than ``k_max``.
    distance
        (n, k_max) float32 Euclidean distances; ``inf`` where ``index`` is -1.
    mu, sigma
        (n,) mean and standard deviation of all cell-candidate distances of the cell's
        label (the paper's ``theta = mu + k sigma`` statistics).
    """

    index: np.ndarray
    distance: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray

    def rows(self, sl: slice) -> Neighbours:
        """The neighbours of the cells in ``sl``."""
        return Neighbours(self.index[sl], self.distance[sl], self.mu[sl], self.sigma[sl])


@dataclass
class ImputeResult:
    """What :func:`impute_matrix` computed.

    Attributes
    ----------
    values
        (n, n_genes) float32 imputed values on the input scale.
    lognorm
        (n, n_genes) float32 imputed values log-normalised with the input's library sizes.
    k, theta_sigma
        The neighbourhood used (tuned or given).
    shrinkage
        The denoise prior's ``alpha`` (tuned or given; ``nan`` in zeros mode).
    tuning
        One dict per Optuna trial (``k``, ``theta_sigma``, ``shrinkage``, ``mse``, ``signal``,
        ``objective``); empty when not tuned.
    raw_signal
        Within-label signal of the seen counts in the tuning fold (the level a trial must keep).
    validation
        How the tuning score was obtained (``'molecules'``, ``'entries'`` or ``'none'``).
    fraction_zeros_filled
        Fraction of the input's zero entries that received a positive value.
    n_observed_changed
        Observed (non-zero) input entries whose value changed (0 in ``zeros`` mode).
    """

    values: np.ndarray
    lognorm: np.ndarray
    k: int
    theta_sigma: float
    shrinkage: float = math.nan
    tuning: list[dict[str, float]] = field(default_factory=list)
    raw_signal: float = math.nan
    validation: str = "none"
    fraction_zeros_filled: float = 0.0
    n_observed_changed: int = 0


def _dense32(x: np.ndarray | sp.spmatrix) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float32)  # type: ignore[union-attr]  # scipy stubs


def _row_blocks(shape: tuple[int, int]) -> list[slice]:
    """Row slices of a (cells, genes) matrix, each at most ``_ROW_BLOCK`` rows and about ``_ROW_ELEMENTS`` entries."""
    n, g = shape
    step = max(1, min(_ROW_BLOCK, _ROW_ELEMENTS // max(g, 1)))
    return [slice(start, start + step) for start in range(0, n, step)]


def encode_rows(x: np.ndarray | sp.spmatrix, enc: Encoding) -> tuple[np.ndarray, np.ndarray]:
    """:func:`scmaskgan.encode.to_unit` in row blocks: float32 unit vectors and library sizes."""
    unit = np.empty(x.shape, dtype=np.float32)
    lib = np.empty(x.shape[0], dtype=np.float64)
    for sl in _row_blocks(x.shape):
        unit[sl], lib[sl] = to_unit(x[sl], enc)
    return unit, lib


class EncodedRows:
    """Rows of an input matrix encoded to the unit scale on demand, a block at a time.

    Stands in for the (cells x genes) unit matrix in :func:`find_neighbours`, so that the
    encoded sample never has to be held in memory whole.
    """

    def __init__(self, x: np.ndarray | sp.spmatrix, enc: Encoding) -> None:
        self.x, self.enc = x, enc
        self.shape = x.shape

    def __getitem__(self, sl: slice | np.ndarray) -> np.ndarray:
        return to_unit(self.x[sl], self.enc)[0]


#: Cells x genes the principal components of the neighbour space are fitted on (at most).
_PCA_ENTRIES = 20_000_000


@dataclass(frozen=True)
class PCASpace:
    """A linear map of unit-scale gene vectors to their first principal components.

    Attributes
    ----------
    mean
        (n_genes,) float32 centre (the mean cell of the sample).
    components
        (n_genes, n_pcs) float32 orthonormal loadings.
    """

    mean: np.ndarray
    components: np.ndarray

    def __call__(self, unit: np.ndarray) -> np.ndarray:
        """(n, n_pcs) scores of (n, n_genes) unit-scale rows."""
        return (np.asarray(unit, dtype=np.float32) - self.mean) @ self.components


def fit_pca_space(cells: np.ndarray | EncodedRows, n_pcs: int, seed: int) -> PCASpace:
    """Principal components of a sample's encoded cells (a seeded subsample of at most 20 M entries).

    Distances between a cell and the candidates in this space average out the sampling
    noise of single genes, as kNN smoothing and MAGIC do; candidates are projected with
    the real cells' components, so the space is the data's, not the generator's.
    """
    from sklearn.decomposition import PCA

    n, g = cells.shape
    n_fit = min(n, max(n_pcs + 1, _PCA_ENTRIES // max(g, 1)))
    rows = np.sort(np.random.default_rng(seed).choice(n, size=n_fit, replace=False))
    sample = np.concatenate([cells[sl] for sl in _index_blocks(rows, g)]) if n_fit < n else _all_rows(cells)
    k = max(1, min(n_pcs, n_fit - 1, g))
    pca = PCA(n_components=k, svd_solver="randomized", random_state=seed).fit(sample)
    return PCASpace(pca.mean_.astype(np.float32), np.ascontiguousarray(pca.components_.T, dtype=np.float32))


def _all_rows(cells: np.ndarray | EncodedRows) -> np.ndarray:
    return np.concatenate([cells[sl] for sl in _row_blocks(cells.shape)])


def _index_blocks(rows: np.ndarray, n_genes: int) -> list[np.ndarray]:
    step = max(1, min(_ROW_BLOCK, _ROW_ELEMENTS // max(n_genes, 1)))
    return [rows[start:start + step] for start in range(0, len(rows), step)]


def _label_rows(labels: np.ndarray, label: int) -> slice | np.ndarray:
    """Rows of ``label``: a slice when they are contiguous (no copy when indexing), else indices."""
    rows = np.flatnonzero(labels == label)
    if rows.size and rows[-1] - rows[0] + 1 == rows.size:
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


def find_neighbours(
    cells: np.ndarray | EncodedRows,
    cell_labels: np.ndarray,
    candidates: np.ndarray,
    candidate_labels: np.ndarray,
    k_max: int,
    observed: np.ndarray | None = None,
    space: PCASpace | None = None,
) -> Neighbours:
    """Rank each cell's label candidates by Euclidean distance in the unit space.

    Cells are processed in blocks of rows; memory grows with a block and one label's
    candidates, not with the sample.

    Parameters
    ----------
    cells
        (n, n_genes) encoded cells (unit scale), or :class:`EncodedRows` encoding them
        block by block.
    cell_labels
        (n,) integer labels of the cells.
    candidates
        (m, n_genes) encoded candidates (unit scale), as in ``candidates.filtered.h5``.
    candidate_labels
        (m,) integer labels of the candidates.
    k_max
        Neighbours kept per cell (fewer when a label has fewer candidates).
    observed
        Optional (n, n_genes) bool mask: when given, distances use only the cell's
        observed genes, rescaled to all genes (``sqrt(n_genes / n_observed)``).
        By default all genes are used (the choice measured in ``docs/method.md``).
    space
        Optional :class:`PCASpace`: distances are measured between the principal
        component scores of cells and candidates (not combinable with ``observed``).

    Returns
    -------
    The :class:`Neighbours` of every cell.
    """
    if space is not None and observed is not None:
        raise InputError("find_neighbours: distances on observed genes need neighbour_space='genes'")
    n = cells.shape[0]
    g = cells.shape[1] if space is None else space.components.shape[1]
    index = np.full((n, k_max), -1, dtype=np.int64)
    distance = np.full((n, k_max), np.inf, dtype=np.float32)
    present = np.unique(cell_labels)
    pools: dict[int, tuple[np.ndarray, torch.Tensor, torch.Tensor]] = {}
    for label in present.tolist():
        where = _label_rows(candidate_labels, label)
        cand_rows = np.arange(candidates.shape[0])[where]
        if cand_rows.size == 0:
            raise StepError(f"label {int(label)} has no retained candidates to impute from")
        chosen = candidates[where] if space is None else space(candidates[where])
        cand = torch.from_numpy(np.ascontiguousarray(chosen, dtype=np.float32))
        pools[label] = (cand_rows, cand, (cand * cand).sum(1))
    sums = {label: np.zeros(2) for label in pools}
    for block in _row_blocks(cells.shape):
        rows_block = cells[block] if space is None else space(cells[block])
        x_block = torch.from_numpy(np.ascontiguousarray(rows_block, dtype=np.float32))
        obs_block = None if observed is None else torch.from_numpy(np.asarray(observed[block], dtype=np.float32))
        block_labels = cell_labels[block]
        for label in np.unique(block_labels).tolist():
            local = np.flatnonzero(block_labels == label)
            cand_rows, cand, cand_sq = pools[label]
            kk = min(k_max, cand_rows.size)
            step = max(1, _BLOCK_ELEMENTS // max(1, cand_rows.size * 4))
            for start in range(0, local.size, step):
                part = local[start:start + step]
                x = x_block[part]
                if obs_block is None:
                    d2 = (x * x).sum(1, keepdim=True) - 2.0 * x @ cand.T + cand_sq[None, :]
                else:
                    m = obs_block[part]
                    xm = x * m
                    d2 = (xm * x).sum(1, keepdim=True) - 2.0 * xm @ cand.T + m @ (cand * cand).T
                    d2 = d2 * (g / m.sum(1, keepdim=True).clamp_min(1.0))
                d = d2.clamp_min(0.0).sqrt()
                sums[label] += (float(d.sum(dtype=torch.float64)), float((d.double() ** 2).sum()))
                best, where_k = torch.topk(d, kk, dim=1, largest=False, sorted=True)
                rows = block.start + part
                index[rows, :kk] = cand_rows[where_k.numpy()]
                distance[rows, :kk] = best.numpy()
    mu = np.zeros(n, dtype=np.float64)
    sigma = np.zeros(n, dtype=np.float64)
    for label, (total, total_sq) in sums.items():
        rows = cell_labels == label
        count = rows.sum() * pools[label][0].size
        mean = total / count
        mu[rows] = mean
        sigma[rows] = math.sqrt(max(total_sq / count - mean * mean, 0.0))
    return Neighbours(index, distance, mu, sigma)


def select_neighbours(neigh: Neighbours, k: int, theta_sigma: float) -> np.ndarray:
    """Weights (n, k) of the kept neighbours: the ``k`` nearest closer than theta, at least one.

    Returns
    -------
    float32 weights summing to 1 per cell, aligned with ``neigh.index[:, :k]``.
    """
    dist = neigh.distance[:, :k]
    theta = (neigh.mu + theta_sigma * neigh.sigma)[:, None]
    keep = (dist < theta) & np.isfinite(dist)
    keep[:, 0] = True
    w = keep.astype(np.float32)
    return w / w.sum(1, keepdims=True)


def estimate(
    cells: np.ndarray,
    observed: np.ndarray,
    depth: np.ndarray,
    candidates: np.ndarray,
    neigh: Neighbours,
    weights: np.ndarray,
    scale: float,
    mode: str,
    shrinkage: float = 1.0,
) -> np.ndarray:
    """Neighbour estimates of every entry in the unit scale.

    Parameters
    ----------
    cells, observed
        (n, n_genes) encoded cells and their observed (non-zero) mask.
    depth
        (n,) library size divided by the encoding's ``target_sum``: a unit value ``u``
        means ``expm1(u * scale) * depth`` expected molecules in that cell.
    candidates
        (m, n_genes) encoded candidates.
    neigh, weights
        From :func:`find_neighbours` and :func:`select_neighbours`.
    scale
        The encoding's ``scale``.
    mode
        ``'zeros'``: observed entries keep the cell's value and zero entries get the
        posterior mean given the zero (a mixture over the neighbours, each weighted by
        the chance that it gives a zero at this depth). ``'denoise'``: every entry gets
        the posterior mean of a Gamma-Poisson model whose prior is centred on the
        neighbours: for the cell's count ``x`` and the neighbours' mean ``m`` (their mean
        in the encoded, log scale, with the sample's mean candidate as one more
        neighbour, see :func:`denoise_prior`; as molecules at the cell's depth),
        ``(x + alpha) * m / (m + alpha)``. The cell's own counts
        weigh more where they carry more molecules (deep cells, high genes), so the
        estimate shrinks toward the neighbours without replacing the cell.
    shrinkage
        ``alpha`` of the denoise prior (larger: nearer the neighbours).

    Returns
    -------
    (n, n_genes) float32 unit-scale estimates.
    """
    if mode not in ("zeros", "denoise"):
        raise InputError(f"impute mode {mode!r} is not one of zeros, denoise")
    n, g = cells.shape
    k = weights.shape[1]
    out = np.empty((n, g), dtype=np.float32)
    idx_all = np.where(neigh.index[:, :k] >= 0, neigh.index[:, :k], 0)
    cand = torch.from_numpy(np.ascontiguousarray(candidates, dtype=np.float32))
    background = cand.mean(0) if mode == "denoise" else None
    step = max(1, _BLOCK_ELEMENTS // max(1, k * g))
    for start in range(0, n, step):
        sl = slice(start, start + step)
        c = cand[torch.from_numpy(idx_all[sl])]  # (b, k, g)
        w = torch.from_numpy(weights[sl])
        log_w = torch.log(w)[:, :, None]  # -inf for dropped neighbours
        d = torch.from_numpy(depth[sl].astype(np.float32))[:, None]
        lam = torch.expm1(c * scale) * d[:, :, None]
        own = torch.from_numpy(np.ascontiguousarray(cells[sl], dtype=np.float32))
        if mode == "denoise":
            m = torch.expm1(denoise_prior(w, c, background) * scale) * d
            post = (torch.expm1(own * scale) * d + shrinkage) * m / (m + shrinkage)
            out[sl] = (torch.log1p(post / d.clamp_min(1e-12)) / scale).numpy()
        else:
            post0 = (torch.softmax(log_w - lam, dim=1) * c).sum(1)
            out[sl] = torch.where(torch.from_numpy(observed[sl]), own, post0).numpy()
    return out


def denoise_prior(weights: torch.Tensor, values: torch.Tensor, background: torch.Tensor | None) -> torch.Tensor:
    """Centre of the denoise prior in the unit scale: the kept neighbours' mean with the sample's mean
    candidate as one more neighbour.

    Parameters
    ----------
    weights
        (b, k) neighbour weights (0 for dropped neighbours, rows summing to 1).
    values
        (b, k, g) the neighbours' unit-scale values.
    background
        (g,) mean of every candidate of the sample.

    The pseudo-neighbour keeps the prior above 0 for a gene that none of a cell's
    neighbours expresses, so that the cell's own count of it is shrunk, never erased
    (a Gamma prior with mean 0 would set it to 0 at any ``alpha``).
    """
    mean = torch.einsum("bk,bkg->bg", weights, values)
    if background is None:
        return mean
    kept = (weights > 0).sum(1, keepdim=True).to(mean.dtype)
    return (kept * mean + background) / (kept + 1)


def cell_depth(x: np.ndarray | sp.spmatrix, enc: Encoding) -> np.ndarray:
    """Library size / ``target_sum`` of every cell (the factor from normalised to molecules).

    For log-normalised input the counts are unknown; the depth is the one implied by the
    cell's smallest non-zero value being one molecule, ``1 / expm1(min)`` (the median
    over cells for a cell without any non-zero value).
    """
    if enc.input_scale == "counts":
        return library_sizes(x, "counts") / enc.target_sum
    smallest = np.concatenate([
        np.where(block > 0, block, np.inf).min(axis=1)
        for block in (_dense32(x[sl]) for sl in _row_blocks(x.shape))
    ])
    depth = np.where(np.isfinite(smallest), 1.0 / np.expm1(np.minimum(smallest, 50.0)), np.nan)
    fallback = np.nanmedian(depth) if np.any(np.isfinite(depth)) else 1.0
    return np.where(np.isfinite(depth), depth, fallback)


def _assemble(
    x: np.ndarray, unit_est: np.ndarray, lib: np.ndarray, enc: Encoding, mode: str
) -> tuple[np.ndarray, np.ndarray]:
    """Input-scale values and log-normalised values of the estimates (observed copied in zeros mode)."""
    values = decode(unit_est, lib, enc).astype(np.float32)
    lognorm = (unit_est.astype(np.float64) * enc.scale).astype(np.float32)
    if mode == "zeros":
        observed = x > 0
        values[observed] = x[observed]
    np.clip(values, 0.0, None, out=values)
    return values, lognorm


class _Fold:
    """One validation problem: cells to impute (seen part) and how to score them."""

    def __init__(
        self, x: np.ndarray | sp.spmatrix, labels: np.ndarray, enc: Encoding, fraction: float, seed: int
    ) -> None:
        if enc.input_scale == "counts":
            seen, self.held_out = split_counts(x, 1.0 - fraction, seed)
            held = self.held_out.data
            # the Poisson loss of predicting the held-out counts themselves: its excess over
            # this is a deviance (never negative), so scores can be compared as ratios
            self.poisson_floor = float(np.sum(held - held * np.log(held + 1e-6)) / np.prod(self.held_out.shape))
            self.seen = seen.toarray().astype(np.float32)
            self.kind = "molecules"
        else:
            dense = _dense32(x)
            rng = np.random.default_rng(seed)
            self.hidden = (dense > 0) & (rng.random(dense.shape) < fraction)
            self.truth = dense[self.hidden]
            self.seen = np.where(self.hidden, 0.0, dense).astype(np.float32)
            self.kind = "entries"
        self.labels = labels
        self.unit, self.lib = encode_rows(self.seen, enc)
        self.observed = self.seen > 0
        self.depth = cell_depth(self.seen, enc)

    def scores(self, values: np.ndarray, lognorm: np.ndarray) -> dict[str, float]:
        """``mse`` on the held-out part, and for molecules also the ``poisson`` loss above its floor."""
        if self.kind == "molecules":
            poisson = mcv_poisson(self.seen, self.held_out, values) - self.poisson_floor
            return {"mse": mcv_mse(self.held_out, values), "poisson": poisson}
        return {"mse": float(np.mean((lognorm[self.hidden] - self.truth) ** 2))}

    def signal(self, values: np.ndarray) -> float:
        """Within-label signal of an output against the held-out molecules (``nan`` for entries)."""
        if self.kind != "molecules":
            return math.nan
        return within_label_signal(self.held_out, values, self.labels)


def tune(
    x: np.ndarray | sp.spmatrix,
    labels: np.ndarray,
    candidates: np.ndarray,
    candidate_labels: np.ndarray,
    enc: Encoding,
    params: ImputeParams,
    space: PCASpace | None = None,
) -> tuple[dict[str, float | None], list[dict[str, float]], str]:
    """Choose ``k``, ``theta_sigma`` and (denoise) ``shrinkage`` with Optuna on a held-out validation.

    A seeded random subsample of at most ``params.tune_cells`` cells (and of at most
    4 M cells x genes, but at least 100 cells: every trial imputes it whole) is split:
    for counts, every count binomially (``holdout_fraction`` of the molecules held
    out); for log-normalised input, ``holdout_fraction`` of the observed
    entries are hidden. The seen part is imputed with each trial's values (those not
    fixed in ``params``) and scored against the held-out part: molecules by the sum of
    the log-normalised MSE and the Poisson loss, each relative to the seen counts' own
    score (the MSE alone favours outputs that keep zeros, the Poisson loss alone smooth
    ones; on simulated data the true expression is the best on the Poisson loss and
    worse than raw counts on the MSE); hidden entries by their MSE.

    A trial that keeps less within-label signal (:func:`~scmaskgan.mcv.within_label_signal`)
    than the seen counts themselves is penalised by the shortfall: an imputation must
    not win the MSE by pulling cells onto their label's profile.

    Returns
    -------
    ``(chosen, trials, validation kind)``: ``chosen`` holds ``k``, ``theta_sigma`` and
    ``shrinkage``; every trial's values, ``mse``, ``signal`` and ``objective``.
    """
    import optuna

    rng = np.random.default_rng(params.seed)
    n = x.shape[0]
    n_tune = min(n, params.tune_cells, max(_TUNE_MIN_CELLS, _TUNE_ENTRIES // max(x.shape[1], 1)))
    pick = np.sort(rng.choice(n, size=n_tune, replace=False))
    fold = _Fold(x[pick], labels[pick], enc, params.holdout_fraction, params.seed)
    k_hi = max(1, min(params.k_max, int(np.bincount(candidate_labels).max())))
    neigh = find_neighbours(fold.unit, fold.labels, candidates, candidate_labels, k_hi, space=space)
    raw_signal = fold.signal(fold.seen)
    raw_scores = fold.scores(fold.seen, fold.unit * np.float32(enc.scale))
    denoise = params.mode == "denoise"

    def objective(trial: optuna.Trial) -> float:
        k = params.k if params.k is not None else trial.suggest_int("k", 1, k_hi, log=True)
        t = params.theta_sigma if params.theta_sigma is not None else trial.suggest_float("theta_sigma", -3.0, 3.0)
        alpha = params.shrinkage if params.shrinkage is not None or not denoise else trial.suggest_float(
            "shrinkage", 0.05, 50.0, log=True
        )
        w = select_neighbours(neigh, min(k, k_hi), t)
        est = estimate(
            fold.unit, fold.observed, fold.depth, candidates, neigh, w, enc.scale, params.mode, alpha or 1.0
        )
        values, lognorm = _assemble(fold.seen, est, fold.lib, enc, params.mode)
        scores, signal = fold.scores(values, lognorm), fold.signal(values)
        for name, value in {**scores, "signal": signal}.items():
            trial.set_user_attr(name, value)
        relative = sum(scores[name] / raw_scores[name] for name in scores)
        shortfall = raw_signal - signal if math.isfinite(signal) else 0.0
        return relative + max(shortfall, 0.0) * _SIGNAL_PENALTY

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.TPESampler(seed=params.seed)
    study = optuna.create_study(direction="minimize", sampler=sampler)
    study.optimize(objective, n_trials=params.n_trials)
    fixed: dict[str, float | None] = {"k": params.k, "theta_sigma": params.theta_sigma, "shrinkage": params.shrinkage}

    def values(trial: optuna.trial.FrozenTrial) -> dict[str, float]:
        """The trial's parameters, tuned or fixed (unset ones that were not tuned left out)."""
        merged = {**{name: value for name, value in fixed.items() if value is not None}, **trial.params}
        return {name: float(value) for name, value in merged.items()}

    trials = [
        {**values(tr), **{name: float(v) for name, v in tr.user_attrs.items()}, "objective": float(tr.value)}
        for tr in study.trials
        if tr.value is not None
    ]
    chosen: dict[str, float | None] = {**fixed, **values(study.best_trial), "raw_signal": raw_signal}
    chosen["k"] = min(int(chosen["k"] or 1), k_hi)
    return chosen, trials, fold.kind


def _check_params(params: ImputeParams) -> None:
    if params.k is not None and params.k < 1:
        raise InputError(f"impute k must be at least 1, got {params.k}")
    if params.k_max < 1 or params.n_trials < 1 or params.tune_cells < 2:
        raise InputError(
            f"impute needs k_max >= 1, n_trials >= 1 and tune_cells >= 2 "
            f"(got {params.k_max}, {params.n_trials}, {params.tune_cells})"
        )
    if not 0.0 < params.holdout_fraction < 1.0:
        raise InputError(f"impute holdout_fraction must lie in (0, 1), got {params.holdout_fraction}")


def impute_matrix(
    x: np.ndarray | sp.spmatrix,
    labels: np.ndarray,
    candidates: np.ndarray,
    candidate_labels: np.ndarray,
    enc: Encoding,
    params: ImputeParams | None = None,
) -> ImputeResult:
    """Impute one sample.

    Parameters
    ----------
    x
        (n, n_genes) input values (counts, or log-normalised when
        ``enc.input_scale == 'lognorm'``), dense or sparse, non-negative.
    labels
        (n,) integer label of every cell (indices into the candidates' label names).
    candidates, candidate_labels
        The retained candidates (unit scale) and their labels.
    enc
        The sample's encoding (from ``images.h5``).
    params
        Imputation parameters; ``k`` / ``theta_sigma`` left unset are tuned.

    Returns
    -------
    An :class:`ImputeResult`. Observed entries are copied from ``x`` in ``zeros`` mode.
    """
    params = params or ImputeParams()
    x = sp.csr_matrix(x, dtype=np.float32) if sp.issparse(x) else np.asarray(x, dtype=np.float32)
    labels = np.asarray(labels, dtype=np.int64)
    candidate_labels = np.asarray(candidate_labels, dtype=np.int64)
    if x.shape[1] != enc.n_genes or candidates.shape[1] != enc.n_genes:
        raise InputError(
            f"gene counts differ: input {x.shape[1]}, candidates {candidates.shape[1]}, encoding {enc.n_genes}"
        )
    if labels.shape != (x.shape[0],) or candidate_labels.shape != (candidates.shape[0],):
        raise InputError("labels must give one integer per cell and per candidate")
    stored = x.data if sp.issparse(x) else x
    if not np.all(np.isfinite(stored)) or np.any(stored < 0):  # type: ignore[operator]  # scipy stubs
        raise InputError("input values must be finite and non-negative")
    if not np.all(np.isfinite(candidates)):
        raise InputError("candidates contain NaN or inf")
    _check_params(params)

    cells = EncodedRows(x, enc)
    space = fit_pca_space(cells, params.n_pcs, params.seed) if params.neighbour_space == "pca" else None
    trials: list[dict[str, float]] = []
    kind = "none"
    chosen: dict[str, float | None] = {"k": params.k, "theta_sigma": params.theta_sigma, "shrinkage": params.shrinkage}
    denoise = params.mode == "denoise"
    if None in (params.k, params.theta_sigma) or (denoise and params.shrinkage is None):
        chosen, trials, kind = tune(x, labels, candidates, candidate_labels, enc, params, space)
    k, theta_sigma = int(chosen["k"] or 1), float(chosen["theta_sigma"] or 0.0)
    shrinkage = float(chosen["shrinkage"]) if denoise and chosen["shrinkage"] is not None else math.nan

    depth = cell_depth(x, enc)
    neigh = find_neighbours(cells, labels, candidates, candidate_labels, k, space=space)
    w = select_neighbours(neigh, k, theta_sigma)
    values = np.empty(x.shape, dtype=np.float32)
    lognorm = np.empty(x.shape, dtype=np.float32)
    n_zeros = n_filled = n_changed = 0
    for sl in _row_blocks(x.shape):
        rows = x[sl]
        block = _dense32(rows)
        unit, lib = to_unit(rows, enc)
        observed = block > 0
        est = estimate(
            unit, observed, depth[sl], candidates, neigh.rows(sl), w[sl], enc.scale, params.mode,
            shrinkage if denoise else 1.0,
        )
        values[sl], lognorm[sl] = _assemble(block, est, lib, enc, params.mode)
        n_zeros += int((~observed).sum())
        n_filled += int((values[sl][~observed] > 0).sum())
        n_changed += int(np.count_nonzero(values[sl][observed] != block[observed]))
    return ImputeResult(
        values=values,
        lognorm=lognorm,
        k=int(k),
        theta_sigma=float(theta_sigma),
        shrinkage=shrinkage,
        tuning=trials,
        raw_signal=float(chosen.get("raw_signal", math.nan) or math.nan),
        validation=kind,
        fraction_zeros_filled=n_filled / n_zeros if n_zeros else 0.0,
        n_observed_changed=n_changed,
    )
