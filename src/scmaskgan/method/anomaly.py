"""FILTER: drop anomalous candidates with an IsolationForest fitted per label.

For every label, an IsolationForest is fitted on that label's candidate set and
every candidate gets the paper's anomaly score ``s(x) = 2^(-E(h(x)) / c(n))``
(scikit-learn's ``-score_samples``). Candidates with ``s(x) > tau`` are dropped; by
default ``tau`` is the label's Tukey fence ``Q3 + 1.5 IQR`` of the scores. A label
never loses more than half of its candidates: if the threshold would keep fewer, the
best-scoring half is kept and ``tau`` is raised to match.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
from sklearn.ensemble import IsolationForest

from scmaskgan.core.config import FilterParams
from scmaskgan.core.versions import package_versions
from scmaskgan.errors import InputError
from scmaskgan.method.generate import read_candidates, write_candidates


@dataclass
class FilterResult:
    """Scores ``(m,)``, kept mask ``(m,)`` and the threshold used per label ``(n_labels,)``."""

    scores: np.ndarray
    kept: np.ndarray
    tau: np.ndarray


def anomaly_scores(values: np.ndarray, params: FilterParams) -> np.ndarray:
    """IsolationForest anomaly scores ``s(x)`` in (0, 1] of one label's candidates (higher = more anomalous)."""
    if len(values) < 3:
        return np.full(len(values), 0.5, dtype=np.float32)
    if not 0.0 < params.max_features <= 1.0:
        raise InputError(f"max_features={params.max_features} must be in (0, 1]")
    forest = IsolationForest(
        n_estimators=params.n_estimators, max_features=params.max_features, random_state=params.seed
    ).fit(values)
    return (-forest.score_samples(values)).astype(np.float32)


def threshold(scores: np.ndarray, tau: float | None) -> float:
    """The given ``tau``, or the Tukey fence ``Q3 + 1.5 IQR`` of ``scores``."""
    if tau is not None:
        return float(tau)
    q1, q3 = np.percentile(scores, [25, 75])
    return float(q3 + 1.5 * (q3 - q1))


def filter_labels(values: np.ndarray, labels: np.ndarray, n_labels: int, params: FilterParams) -> FilterResult:
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
        Forest size, feature fraction, seed and the optional fixed ``tau``.
    """
    scores = np.zeros(len(values), dtype=np.float32)
    kept = np.zeros(len(values), dtype=bool)
    taus = np.full(n_labels, np.nan, dtype=np.float32)
    for label in range(n_labels):
        rows = np.flatnonzero(labels == label)
        if len(rows) == 0:
            continue
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


def filter_candidates(candidates_h5: Path, out_path: Path, params: FilterParams) -> dict[str, Any]:
    """Read ``{id}.candidates.h5``, score and threshold it, write ``{id}.candidates.filtered.h5``.

    Returns
    -------
    Candidates and kept candidates per label.
    """
    cand = read_candidates(candidates_h5, kept_only=False, expected=False)
    n_labels = len(cand.label_names)
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
