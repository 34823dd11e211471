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
* an observed entry is kept exactly (``mode='zeros'``, the paper) or, in
  ``mode='denoise'``, every entry gets a Gamma-Poisson posterior mean centred on the
  neighbours (see :func:`estimate`).

Neighbours are always found among the sampled candidates, which have dropouts like the
real cells; when the candidates' expected values are given (GENERATE stores them), the
denoise estimates are computed from those instead, so that a neighbour's sampled zeros
do not count as evidence of low expression (measured in ``docs/method.md``).

``k`` and ``theta_sigma`` are tuned with Optuna on a real validation: a binomial
molecule split of a subsample of cells (train part imputed, held-out part scored
with the log-normalised MSE and the Poisson loss of :mod:`scmaskgan.method.mcv`), or, for
log-normalised input, a fraction of observed entries hidden before imputation; in
``mode='denoise'`` the prior's shape ``alpha`` is tuned with them. ``mode='posterior'``
computes the same posterior mean with a prior unbiased for the counts (the expected values
rescaled to each label's mean rate, :func:`rate_recentre`) and an ``alpha`` estimated for
every gene from the data (:func:`moment_shrinkage`). The reasoning and the
measured alternatives are in ``docs/method.md`` ("Imputation"). The neighbour search is
in :mod:`scmaskgan.method.neighbours`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field, fields

import numpy as np
import scipy.sparse as sp
import torch

from scmaskgan.core.config import IMPUTE_MODES, ImputeParams
from scmaskgan.core.matrix import dense, library_sizes
from scmaskgan.errors import InputError, StepError
from scmaskgan.method.encode import Encoding, decode, to_unit
from scmaskgan.method.mcv import mcv_mse, mcv_poisson, split_counts, within_label_signal
from scmaskgan.method.neighbours import (
    BLOCK_ELEMENTS,
    EncodedRows,
    Neighbours,
    PCASpace,
    encode_rows,
    find_neighbours,
    fit_pca_space,
    row_blocks,
    select_neighbours,
)

#: Cells x genes imputed by every tuning trial (at most; 1,000 cells at 2,000 genes and
#: 119 at 33,514, where 1,000 cells took 20 s per trial), and the fewest cells tuned on.
_TUNE_ENTRIES, _TUNE_MIN_CELLS = 4_000_000, 100
#: Objective penalty per unit of within-label signal lost against the seen counts.
_SIGNAL_PENALTY = 10.0


@dataclass(kw_only=True)
class ImputeSummary:
    """What an imputation chose and what it did, without the imputed matrices.

    Attributes
    ----------
    k, theta_sigma
        The neighbourhood used (tuned or given).
    shrinkage
        The denoise prior's ``alpha``: given, or the median over genes of :attr:`shrinkage_per_gene`
        (``nan`` in zeros mode).
    shrinkage_per_gene
        (n_genes,) the ``alpha`` every gene was denoised with (empty in zeros mode).
    tuning
        One dict per Optuna trial (``k``, ``theta_sigma``, ``shrinkage``, ``mse``, ``poisson`` (molecules
        only), ``signal``, ``objective``); empty when not tuned.
    raw_signal
        Within-label signal of the seen counts in the tuning fold (the level a trial must keep).
    validation
        How the tuning score was obtained (``'molecules'``, ``'entries'`` or ``'none'``).
    fraction_zeros_filled
        Fraction of the input's zero entries that received a positive value.
    n_observed_changed
        Observed (non-zero) input entries whose value changed (0 in ``zeros`` mode).
    neighbours_per_label
        ``(n_labels,)`` mean number of candidates a cell of each label was estimated from
        (``k`` or fewer: the threshold ``theta`` drops far ones); ``nan`` for a label without cells.
    """

    k: int
    theta_sigma: float
    shrinkage: float = math.nan
    shrinkage_per_gene: np.ndarray = field(default_factory=lambda: np.empty(0))
    tuning: list[dict[str, float]] = field(default_factory=list)
    raw_signal: float = math.nan
    validation: str = "none"
    fraction_zeros_filled: float = 0.0
    n_observed_changed: int = 0
    neighbours_per_label: np.ndarray = field(default_factory=lambda: np.empty(0))


@dataclass(kw_only=True)
class ImputeResult(ImputeSummary):
    """What :func:`impute_matrix` computed: the :class:`ImputeSummary` and the imputed matrices.

    Attributes
    ----------
    values
        (n, n_genes) float32 imputed values on the input scale.
    lognorm
        (n, n_genes) float32 imputed values log-normalised with the input's library sizes.
    """

    values: np.ndarray
    lognorm: np.ndarray


def estimate(
    cells: np.ndarray,
    observed: np.ndarray,
    depth: np.ndarray,
    candidates: np.ndarray,
    neigh: Neighbours,
    weights: np.ndarray,
    scale: float,
    mode: str,
    shrinkage: float | np.ndarray = 1.0,
    background: np.ndarray | None = None,
    prior: np.ndarray | None = None,
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
        the chance that it gives a zero at this depth). ``'denoise'`` and ``'posterior'``: every entry gets
        the posterior mean of a Gamma-Poisson model whose prior is centred on the
        neighbours: for the cell's count ``x`` and the neighbours' mean ``m`` (their mean
        normalised expression, with the sample's mean candidate as one more neighbour,
        see :func:`denoise_prior`; as molecules at the cell's depth),
        ``(x + alpha) * m / (m + alpha)``. The cell's own counts
        weigh more where they carry more molecules (deep cells, high genes), so the
        estimate shrinks toward the neighbours without replacing the cell.
    shrinkage
        ``alpha`` of the denoise prior (larger: nearer the neighbours), one for every gene
        (``(n_genes,)``, see :func:`moment_shrinkage`) or one for all.
    background
        (n_genes,) :func:`mean_rate` of all ``candidates`` (denoise), computed here when not
        given; callers that estimate block by block compute it once.
    prior
        (n, n_genes) the prior's centres (:func:`prior_molecules`), when the caller has them
        already (the denoise modes compute them here otherwise).

    Returns
    -------
    (n, n_genes) float32 unit-scale estimates.
    """
    if mode not in IMPUTE_MODES:
        raise InputError(f"impute mode {mode!r} is not one of {', '.join(IMPUTE_MODES)}")
    if uses_expected_values(mode):
        if prior is None:
            if background is None:
                background = mean_rate(candidates, scale)
            prior = prior_molecules(depth, candidates, neigh, weights, scale, background)
        m = torch.from_numpy(prior)
        alpha = torch.as_tensor(np.asarray(shrinkage, dtype=np.float32))
        d = torch.from_numpy(depth.astype(np.float32))[:, None]
        own = torch.expm1(torch.from_numpy(np.ascontiguousarray(cells, dtype=np.float32)) * scale) * d
        post = (own + alpha) * m / (m + alpha)
        return (torch.log1p(post / d.clamp_min(1e-12)) / scale).numpy()
    n, g = cells.shape
    out = np.empty((n, g), dtype=np.float32)
    for sl, c, w, d in _neighbour_blocks(depth, candidates, neigh, weights):
        # log w - lambda: lambda = (exp(c * scale) - 1) * depth, each neighbour's expected molecules at the
        # cell's depth (exp - 1, in place: 2.5x cheaper than expm1, whose extra precision near 0 changes
        # exp(-lambda) by < 1e-7); log w is -inf for dropped neighbours
        logits = torch.exp(c * scale).sub_(1).mul_(-d[:, :, None]).add_(torch.log(w)[:, :, None])
        post0 = torch.softmax(logits, dim=1).mul_(c).sum(1)
        own = torch.from_numpy(np.ascontiguousarray(cells[sl], dtype=np.float32))
        out[sl] = torch.where(torch.from_numpy(observed[sl]), own, post0).numpy()
    return out


def denoise_prior(weights: torch.Tensor, rates: torch.Tensor, background: torch.Tensor | None) -> torch.Tensor:
    """Centre of the denoise prior: the kept neighbours' mean normalised expression with the sample's
    mean rate as one more neighbour.

    Parameters
    ----------
    weights
        (b, k) neighbour weights (0 for dropped neighbours, rows summing to 1).
    rates
        (b, k, g) the neighbours' normalised expression, ``expm1(unit * scale)`` (molecules
        per ``target_sum``).
    background
        (g,) :func:`mean_rate` of every candidate of the sample.

    The mean is taken on the normalised scale, where it estimates the expected count,
    not on the log scale, whose mean lies below it by an amount that depends on how
    noisy the neighbours are (Jensen's inequality). Measured (``docs/method.md``): on null
    data (independent genes) with real cells as the candidates the log-scale centre raised
    the 95th percentile of the gene-gene ``|r|`` by 68-90 %, this one not at all (candidates
    of a generator that invented correlations still pass them on); on the ablation the
    trained generator's denoise Poisson loss fell on all three data sets.

    The pseudo-neighbour keeps the prior above 0 for a gene that none of a cell's
    neighbours expresses, so that the cell's own count of it is shrunk, never erased
    (a Gamma prior with mean 0 would set it to 0 at any ``alpha``).
    """
    mean = torch.einsum("bk,bkg->bg", weights, rates)
    if background is None:
        return mean
    kept = (weights > 0).sum(1, keepdim=True).to(mean.dtype)
    return (kept * mean + background) / (kept + 1)


#: Range of the moment estimate of ``alpha`` (a gene whose counts vary no more than Poisson noise
#: around their prior means gets the upper bound: its estimate is the prior's centre).
SHRINKAGE_RANGE = (0.05, 1e4)


def moment_shrinkage(counts: np.ndarray, prior: np.ndarray) -> np.ndarray:
    """Per-gene ``alpha`` of the denoise prior, estimated from the cells themselves (empirical Bayes).

    Under the denoise model a count is Poisson with a Gamma-distributed mean whose centre is the
    prior mean ``m`` and whose shape is ``alpha``: marginally negative binomial, with variance
    ``m + m^2 / alpha``. The method-of-moments estimate over the cells is
    ``1 / alpha = sum((x - m)^2 - m) / sum(m^2)``, clipped to :data:`SHRINKAGE_RANGE`. A gene whose
    counts scatter around their neighbours' mean by more than counting noise (cell-to-cell
    variation the neighbours do not explain) gets a small ``alpha`` and keeps more of each
    cell's own counts; one that scatters by counting noise only is shrunk to the neighbours.

    Parameters
    ----------
    counts
        (n, n_genes) the cells' molecules.
    prior
        (n, n_genes) their prior means (:func:`prior_molecules`).

    Returns
    -------
    (n_genes,) float32 ``alpha``.
    """
    counts, prior = np.asarray(counts, dtype=np.float64), np.asarray(prior, dtype=np.float64)
    excess = ((counts - prior) ** 2 - prior).sum(0)
    inverse = excess / np.maximum((prior**2).sum(0), 1e-12)
    low, high = SHRINKAGE_RANGE
    return np.clip(1.0 / np.maximum(inverse, 1.0 / high), low, high).astype(np.float32)


def prior_molecules(
    depth: np.ndarray, candidates: np.ndarray, neigh: Neighbours, weights: np.ndarray, scale: float,
    background: np.ndarray,
) -> np.ndarray:
    """(n, n_genes) float32 centre of every cell's denoise prior (:func:`denoise_prior`) in molecules at
    its depth, a row block at a time (arguments as for :func:`estimate`)."""
    out = np.empty((len(depth), candidates.shape[1]), dtype=np.float32)
    for sl, c, w, d in _neighbour_blocks(depth, candidates, neigh, weights):
        out[sl] = (denoise_prior(w, torch.expm1(c * scale), torch.from_numpy(background)) * d).numpy()
    return out


def _neighbour_blocks(
    depth: np.ndarray, candidates: np.ndarray, neigh: Neighbours, weights: np.ndarray
) -> Iterator[tuple[slice, torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(rows, neighbours' unit values (b, k, g), weights (b, k), depths (b, 1))`` of consecutive row
    blocks of at most :data:`BLOCK_ELEMENTS` neighbour values."""
    k, g = weights.shape[1], candidates.shape[1]
    index = np.where(neigh.index[:, :k] >= 0, neigh.index[:, :k], 0)
    cand = torch.from_numpy(np.ascontiguousarray(candidates, dtype=np.float32))
    step = max(1, BLOCK_ELEMENTS // max(1, k * g))
    for start in range(0, len(depth), step):
        sl = slice(start, start + step)
        d = torch.from_numpy(depth[sl].astype(np.float32))[:, None]
        yield sl, cand[torch.from_numpy(index[sl])], torch.from_numpy(weights[sl]), d


def label_mean_rates(x: np.ndarray | sp.spmatrix, labels: np.ndarray, enc: Encoding) -> dict[int, np.ndarray]:
    """Each label's mean normalised expression (molecules per ``target_sum``, ``expm1`` of the unit
    scale) over its cells in ``x``, a row block at a time: ``{label: (n_genes,) float64}``."""
    totals: dict[int, np.ndarray] = {}
    for sl in row_blocks(x.shape):
        unit, _ = to_unit(x[sl], enc)
        rates = np.expm1(unit.astype(np.float64) * enc.scale)
        for label in np.unique(labels[sl]):
            rows = labels[sl] == label
            totals[int(label)] = totals.get(int(label), 0.0) + rates[rows].sum(0)
    counts = np.bincount(labels)
    return {label: total / counts[label] for label, total in totals.items()}


#: Pseudo-rate added to both means of :func:`rate_recentre` (molecules per ``target_sum``): a gene
#: that neither the cells nor the candidates of a label express keeps a ratio near 1.
_RATE_FLOOR = 1e-3


def rate_recentre(
    values: np.ndarray, labels: np.ndarray, targets: dict[int, np.ndarray], scale: float
) -> np.ndarray:
    """Unit-scale candidates rescaled, gene by gene within each label, so that their mean *rate*
    (``expm1(unit * scale)``, normalised expression) equals ``targets[label]``; a float32 copy.

    Matching means on the log (unit) scale, as GENERATE does, leaves the mean rate of a gene
    detected in a fraction of the cells far below the cells' (Jensen's inequality: 0.2-0.3 of
    the molecules for the median gene, measured in ``docs/method.md``), and a prior centred
    there is biased low. Every candidate's rate is multiplied by the same factor, so their
    differences keep their relative size. Labels without a target keep their values.
    """
    out = np.array(values, dtype=np.float32)
    for label, target in targets.items():
        rows = labels == label
        if not rows.any():
            continue
        rates = np.expm1(out[rows].astype(np.float64) * scale)
        ratio = (target + _RATE_FLOOR) / (rates.mean(0) + _RATE_FLOOR)
        out[rows] = np.log1p(rates * ratio) / scale
    return out


def mean_rate(values: np.ndarray, scale: float) -> np.ndarray:
    """(n_genes,) float32 mean normalised expression ``expm1(values * scale)`` of unit-scale rows, a row block at a time."""
    total = np.zeros(values.shape[1], dtype=np.float64)
    for sl in row_blocks(values.shape):
        total += np.expm1(np.asarray(values[sl], dtype=np.float32) * np.float32(scale)).sum(0, dtype=np.float64)
    return (total / max(values.shape[0], 1)).astype(np.float32)


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
        for block in (dense(x[sl], np.float32) for sl in row_blocks(x.shape))
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
            values = dense(x, np.float32)
            rng = np.random.default_rng(seed)
            self.hidden = (values > 0) & (rng.random(values.shape) < fraction)
            self.truth = values[self.hidden]
            self.seen = np.where(self.hidden, 0.0, values).astype(np.float32)
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
    source: np.ndarray | None = None,
    background: np.ndarray | None = None,
) -> tuple[dict[str, float | None], list[dict[str, float]], str, np.ndarray]:
    """Choose ``k``, ``theta_sigma`` and (``denoise``) ``shrinkage`` with Optuna on a held-out validation;
    (``posterior``) estimate the ``shrinkage`` of every gene.

    Neighbours are found among ``candidates``; estimates are computed from ``source``
    (:func:`estimation_values`; ``candidates`` when not given) with the denoise prior's
    ``background`` (:func:`mean_rate` of ``source``; computed here when not given), as
    :class:`Imputation` computes them.

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

    A trial that keeps less within-label signal (:func:`~scmaskgan.method.mcv.within_label_signal`)
    than the seen counts themselves is penalised by the shortfall: an imputation must
    not win the MSE by pulling cells onto their label's profile.

    Without a given ``shrinkage``, ``mode='denoise'`` tunes one ``alpha`` with ``k`` and ``theta_sigma``;
    ``mode='posterior'`` estimates every gene's ``alpha`` in each trial from the seen counts around
    their prior means (:func:`moment_shrinkage`, empirical Bayes), and runs one trial when ``k`` and
    ``theta_sigma`` are both given.

    Returns
    -------
    ``(chosen, trials, validation kind, shrinkage per gene)``: ``chosen`` holds ``k``, ``theta_sigma``
    and ``shrinkage`` (given, or the median over genes of the chosen trial's estimates); every
    trial's values, ``mse``, ``poisson`` (molecules only), ``signal`` and ``objective``; the chosen trial's ``alpha`` of every
    gene (empty in zeros mode).
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
    denoise = uses_expected_values(params.mode)
    source = candidates if source is None else source
    if denoise and background is None:
        background = mean_rate(source, enc.scale)

    per_gene: dict[int, np.ndarray] = {}
    estimated = params.mode == "posterior" and params.shrinkage is None
    if estimated:  # the fold's molecules, which the moment estimate of alpha needs
        counts = np.expm1(fold.unit * np.float32(enc.scale)) * fold.depth[:, None].astype(np.float32)

    def objective(trial: optuna.Trial) -> float:
        k = params.k if params.k is not None else trial.suggest_int("k", 1, k_hi, log=True)
        t = params.theta_sigma if params.theta_sigma is not None else trial.suggest_float("theta_sigma", -3.0, 3.0)
        w = select_neighbours(neigh, min(k, k_hi), t)
        alpha: float | np.ndarray = 1.0
        prior = None
        if estimated:
            assert background is not None
            prior = prior_molecules(fold.depth, source, neigh, w, enc.scale, background)
            alpha = per_gene[trial.number] = moment_shrinkage(counts, prior)
            trial.set_user_attr("shrinkage", float(np.median(alpha)))
        elif denoise:
            alpha = params.shrinkage if params.shrinkage is not None else trial.suggest_float(
                "shrinkage", 0.05, 50.0, log=True
            )
        est = estimate(
            fold.unit, fold.observed, fold.depth, source, neigh, w, enc.scale, params.mode, alpha, background, prior
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
    tuned = None in (params.k, params.theta_sigma) or (params.mode == "denoise" and params.shrinkage is None)
    study.optimize(objective, n_trials=params.n_trials if tuned else 1)
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
    alpha = per_gene.get(study.best_trial.number, np.empty(0, dtype=np.float32))
    if alpha.size:
        chosen["shrinkage"] = float(np.median(alpha))
    return chosen, trials, fold.kind, alpha


def uses_expected_values(mode: str) -> bool:
    """Whether an imputation in ``mode`` estimates from the candidates' expected values (only
    ``denoise`` and ``posterior``: ``zeros`` mode fills from the sampled candidates, see ``docs/method.md``)."""
    return mode in ("denoise", "posterior")


def estimation_values(candidates: np.ndarray, expected: np.ndarray | None, mode: str) -> np.ndarray:
    """The candidate values the estimates are computed from: the expected values when the mode
    uses them (:func:`uses_expected_values`) and they are given, else the sampled candidates."""
    if uses_expected_values(mode) and expected is not None:
        if expected.shape != candidates.shape:
            raise InputError(f"expected values {expected.shape} do not match the candidates {candidates.shape}")
        return expected
    return candidates


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


class Imputation:
    """One sample's imputation, tuned and with its neighbours found, computed a row block at a time.

    The constructor checks the input, tunes ``k``, ``theta_sigma`` and (denoise)
    ``shrinkage`` when they are not given and finds every cell's neighbours;
    :meth:`blocks` then yields the imputed rows block by block, so that a caller can
    write them out without ever holding the imputed matrices whole, and :meth:`summary`
    tells what was done once every block has been computed. :func:`impute_matrix`
    collects the blocks in memory.

    Parameters
    ----------
    x, labels, candidates, candidate_labels, enc, params, expected
        As for :func:`impute_matrix`.
    """

    def __init__(
        self,
        x: np.ndarray | sp.spmatrix,
        labels: np.ndarray,
        candidates: np.ndarray,
        candidate_labels: np.ndarray,
        enc: Encoding,
        params: ImputeParams | None = None,
        expected: np.ndarray | None = None,
    ) -> None:
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
        if not np.all(np.isfinite(candidates)) or (expected is not None and not np.all(np.isfinite(expected))):
            raise InputError("candidates contain NaN or inf")
        _check_params(params)
        self.source = estimation_values(candidates, expected, params.mode)  # checks expected's shape
        denoise = uses_expected_values(params.mode)
        if params.mode == "posterior":
            self.source = rate_recentre(self.source, candidate_labels, label_mean_rates(x, labels, enc), enc.scale)
        self.background = mean_rate(self.source, enc.scale) if denoise else None

        cells = EncodedRows(x, enc)
        space = fit_pca_space(cells, params.n_pcs, params.seed) if params.neighbour_space == "pca" else None
        trials: list[dict[str, float]] = []
        kind = "none"
        chosen: dict[str, float | None] = {
            "k": params.k, "theta_sigma": params.theta_sigma, "shrinkage": params.shrinkage,
        }
        per_gene = np.empty(0, dtype=np.float32)
        if None in (params.k, params.theta_sigma) or (denoise and params.shrinkage is None):
            chosen, trials, kind, per_gene = tune(
                x, labels, candidates, candidate_labels, enc, params, space, self.source, self.background
            )
        k, theta_sigma = int(chosen["k"] or 1), float(chosen["theta_sigma"] or 0.0)
        shrinkage = float(chosen["shrinkage"]) if denoise and chosen["shrinkage"] is not None else math.nan
        if denoise and not per_gene.size:
            per_gene = np.full(enc.n_genes, shrinkage, dtype=np.float32)

        self.x, self.enc, self.mode = x, enc, params.mode
        self.depth = cell_depth(x, enc)
        self.neigh = find_neighbours(cells, labels, candidates, candidate_labels, k, space=space)
        self.weights = select_neighbours(self.neigh, k, theta_sigma)
        n_labels = int(max(labels.max(initial=-1), candidate_labels.max(initial=-1))) + 1
        cells_per_label = np.bincount(labels, minlength=n_labels)
        used = np.bincount(labels, weights=(self.weights > 0).sum(1), minlength=n_labels)
        self._summary = ImputeSummary(
            k=int(k),
            theta_sigma=float(theta_sigma),
            shrinkage=shrinkage,
            shrinkage_per_gene=per_gene,
            tuning=trials,
            raw_signal=float(chosen.get("raw_signal", math.nan) or math.nan),
            validation=kind,
            neighbours_per_label=np.where(cells_per_label > 0, used / np.maximum(cells_per_label, 1), np.nan),
        )
        self._done = False

    @property
    def shape(self) -> tuple[int, int]:
        """(cells, genes) of the input and of the imputed matrices."""
        return (int(self.x.shape[0]), int(self.x.shape[1]))

    def blocks(self) -> Iterator[tuple[slice, np.ndarray, np.ndarray]]:
        """``(rows, values, lognorm)`` of consecutive row blocks: the imputed rows ``rows`` (float32, input
        scale) and their log-normalised values. Counts what :meth:`summary` reports; runs once."""
        if self._done:
            raise StepError("an Imputation's blocks are computed once")
        mode, shrinkage = self.mode, self._summary.shrinkage_per_gene
        n_zeros = n_filled = n_changed = 0
        for sl in row_blocks(self.shape):
            rows = self.x[sl]
            block = dense(rows, np.float32)
            unit, lib = to_unit(rows, self.enc)
            observed = block > 0
            est = estimate(
                unit, observed, self.depth[sl], self.source, self.neigh.rows(sl), self.weights[sl],
                self.enc.scale, mode, shrinkage if uses_expected_values(mode) else 1.0, self.background,
            )
            values, lognorm = _assemble(block, est, lib, self.enc, mode)
            n_zeros += int((~observed).sum())
            n_filled += int((values[~observed] > 0).sum())
            n_changed += int(np.count_nonzero(values[observed] != block[observed]))
            yield sl, values, lognorm
        self._summary.fraction_zeros_filled = n_filled / n_zeros if n_zeros else 0.0
        self._summary.n_observed_changed = n_changed
        self._done = True

    def summary(self) -> ImputeSummary:
        """What was chosen and done (after :meth:`blocks` has run to the end)."""
        if not self._done:
            raise StepError("an Imputation's summary needs all its blocks computed first")
        return self._summary


def impute_matrix(
    x: np.ndarray | sp.spmatrix,
    labels: np.ndarray,
    candidates: np.ndarray,
    candidate_labels: np.ndarray,
    enc: Encoding,
    params: ImputeParams | None = None,
    expected: np.ndarray | None = None,
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
    expected
        The candidates' expected values (same shape; ``Candidates.expected``): ``denoise``
        estimates are computed from them, neighbours are still found on ``candidates``.

    Returns
    -------
    An :class:`ImputeResult`. Observed entries are copied from ``x`` in ``zeros`` mode.
    """
    imputation = Imputation(x, labels, candidates, candidate_labels, enc, params, expected)
    values = np.empty(imputation.shape, dtype=np.float32)
    lognorm = np.empty(imputation.shape, dtype=np.float32)
    for sl, block_values, block_lognorm in imputation.blocks():
        values[sl], lognorm[sl] = block_values, block_lognorm
    summary = imputation.summary()
    return ImputeResult(values=values, lognorm=lognorm, **{f.name: getattr(summary, f.name) for f in fields(summary)})
