"""FILTER: drop anomalous candidates with an IsolationForest per label.

Every candidate gets the paper's anomaly score ``s(x) = 2^(-E(h(x)) / c(n))`` (scikit-learn's
``-score_samples``) from an IsolationForest of its label, and candidates with ``s(x) > tau``
are dropped. What the forest is fitted on and where ``tau`` lies is ``FilterParams.reference``:

* ``'cells'`` (default): the forest is fitted on a seeded half of the label's real cells
  (``{id}.images.h5``), and ``tau`` is the highest score among the other half, cells the forest
  did not see: a candidate is dropped when it is more anomalous than every one of them. A
  generator that drew cells exactly as the data were drawn loses about ``1 / (n/2 + 1)`` of
  its candidates; one that invents cells off the data loses those.
* ``'candidates'`` (the paper): the forest is fitted on the label's candidates and ``tau`` is the
  Tukey fence ``Q3 + 1.5 IQR`` of their scores. This drops the tails of any candidate set, a
  faithful one too: the trained generator's energy gap to held-out cells rose when its
  candidates were filtered this way (``docs/method.md``).

A given ``tau`` replaces the rule. A label never loses more than half of its candidates: if the
threshold would keep fewer, the best-scoring half is kept and ``tau`` is raised to match. A label
with fewer than 4 real cells falls back to ``'candidates'``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from sklearn.ensemble import IsolationForest

from scmaskgan.core.config import FilterParams
from scmaskgan.core.versions import package_versions
from scmaskgan.errors import InputError
from scmaskgan.method.generate import read_candidates, write_candidates
from scmaskgan.method.images_h5 import ImageStore


@dataclass
class FilterResult:
    """Scores ``(m,)``, kept mask ``(m,)`` and the threshold used per label ``(n_labels,)``."""

    scores: np.ndarray
    kept: np.ndarray
    tau: np.ndarray


#: Fewest real cells of a label that ``reference='cells'`` fits a forest on (two halves of at least 2).
MIN_REFERENCE_CELLS = 4
#: Real cells of a label that ``reference='cells'`` reads (a seeded subsample of larger labels): half fit
#: the forest (each tree draws 256 of them), half set the threshold; memory stays one label's cells.
REFERENCE_CELLS = 1000


def _forest(fit_on: np.ndarray, params: FilterParams) -> IsolationForest:
    if not 0.0 < params.max_features <= 1.0:
        raise InputError(f"max_features={params.max_features} must be in (0, 1]")
    return IsolationForest(
        n_estimators=params.n_estimators, max_features=params.max_features, random_state=params.seed
    ).fit(fit_on)


def anomaly_scores(values: np.ndarray, params: FilterParams) -> np.ndarray:
    """IsolationForest anomaly scores ``s(x)`` in (0, 1] of one label's candidates, from a forest fitted on
    them (higher = more anomalous)."""
    if len(values) < 3:
        return np.full(len(values), 0.5, dtype=np.float32)
    return (-_forest(values, params).score_samples(values)).astype(np.float32)


def reference_scores(values: np.ndarray, cells: np.ndarray, params: FilterParams) -> tuple[np.ndarray, float]:
    """Anomaly scores of one label's candidates from a forest fitted on a seeded half of its real ``cells``,
    and the highest score among the other half (the ``reference='cells'`` threshold)."""
    half = np.random.default_rng(params.seed).permutation(len(cells)) < len(cells) // 2
    forest = _forest(cells[half], params)
    unseen = -forest.score_samples(cells[~half])
    return (-forest.score_samples(values)).astype(np.float32), float(unseen.max())


def threshold(scores: np.ndarray, tau: float | None) -> float:
    """The given ``tau``, or the Tukey fence ``Q3 + 1.5 IQR`` of ``scores``."""
    if tau is not None:
        return float(tau)
    q1, q3 = np.percentile(scores, [25, 75])
    return float(q3 + 1.5 * (q3 - q1))


def filter_labels(
    values: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    params: FilterParams,
    cells: Callable[[int], np.ndarray] | None = None,
) -> FilterResult:
    """Score and threshold the candidates of every label separately.

    Parameters
    ----------
    values
        ``(m, n_genes)`` candidates.
    labels
        ``(m,)`` label of each candidate.
    n_labels
        Number of labels (labels without candidates get ``tau = nan``).
    params
        The reference, forest size, feature fraction, seed and the optional fixed ``tau``.
    cells
        ``cells(label)``: ``(n, n_genes)`` real cells of a label in the candidates' scale (at most
        :data:`REFERENCE_CELLS`, see :func:`image_cells`); needed for ``params.reference == 'cells'``.
    """
    by_cells = params.reference == "cells"
    if by_cells and cells is None:
        raise InputError("FILTER with reference='cells' needs the real cells (the PREPARE step's images.h5)")
    scores = np.zeros(len(values), dtype=np.float32)
    kept = np.zeros(len(values), dtype=bool)
    taus = np.full(n_labels, np.nan, dtype=np.float32)
    for label in range(n_labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) == 0:
            continue
        real = cells(label) if by_cells and cells is not None else None
        if real is not None and len(real) >= MIN_REFERENCE_CELLS:
            s, tau = reference_scores(values[rows], real, params)
            tau = tau if params.tau is None else float(params.tau)
        else:
            s = anomaly_scores(values[rows], params)
            tau = threshold(s, params.tau)
        keep = s <= tau
        half = (len(rows) + 1) // 2
        if keep.sum() < half:  # never drop more than half of a label: keep its best half
            keep = np.zeros(len(rows), dtype=bool)
            keep[np.argsort(s, kind="stable")[:half]] = True
            tau = float(s[keep].max())
        scores[rows], kept[rows], taus[label] = s, keep, tau
    return FilterResult(scores, kept, taus)


def filter_candidates(
    candidates_h5: Path, out_path: Path, params: FilterParams, images_h5: Path | None = None
) -> dict[str, Any]:
    """Read ``{id}.candidates.h5`` (and, for ``reference='cells'``, the real cells of ``{id}.images.h5``),
    score and threshold the candidates, write ``{id}.candidates.filtered.h5``.

    Returns
    -------
    Candidates and kept candidates per label.
    """
    cand = read_candidates(candidates_h5, kept_only=False, expected=False)
    n_labels = len(cand.label_names)
    if params.reference == "cells" and images_h5 is not None:
        with ImageStore(images_h5) as store:
            cand.check_made_from(candidates_h5, images_h5, store.label_names, store.genes)
            result = filter_labels(cand.values, cand.labels, n_labels, params, partial(image_cells, store, seed=params.seed))
    else:
        result = filter_labels(cand.values, cand.labels, n_labels, params)
    record = {
        "params": dataclasses.asdict(params),
        "generate": cand.params,
        "versions": package_versions(),
    }
    with h5py.File(candidates_h5, "r") as source:  # the expected values are copied, not read whole
        write_candidates(
            out_path, cand.values, cand.labels, cand.label_names, cand.genes, cand.encoding, record,
            extra={"scores": result.scores, "kept": result.kept, "tau": result.tau},
            expected=source.get("expected"),
        )
    total = np.bincount(cand.labels, minlength=n_labels)
    kept = np.bincount(cand.labels[result.kept], minlength=n_labels)
    return {name: {"candidates": int(t), "kept": int(k)} for name, t, k in zip(cand.label_names, total, kept, strict=True)}


def image_cells(store: ImageStore, label: int, seed: int) -> np.ndarray:
    """The encoded gene vectors of at most :data:`REFERENCE_CELLS` cells of ``label`` in ``store``
    (a seeded subsample, in file order)."""
    rows = np.flatnonzero(store.labels == label)
    if len(rows) > REFERENCE_CELLS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, REFERENCE_CELLS, replace=False))
    if len(rows) == 0:
        return np.empty((0, store.encoding.n_genes), dtype=np.float32)
    return store.vectors(rows)[0]
