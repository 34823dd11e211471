"""FILTER: IsolationForest per label drops injected outliers, keeps normal candidates, writes the file."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from scmaskgan.core.config import FilterParams
from scmaskgan.errors import InputError
from scmaskgan.method.anomaly import anomaly_scores, filter_labels, threshold
from scmaskgan.method.encode import Encoding
from scmaskgan.method.generate import read_candidates, write_candidates
from scmaskgan.pipeline import steps

ENC = Encoding(n_genes=30, side=6, target_sum=1e4, scale=8.0)


def _candidates(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two labels of realistic-looking candidates (sparse, label-specific) plus 10 outliers each."""
    rng = np.random.default_rng(seed)
    values, labels, outlier = [], [], []
    for label in range(2):
        profile = rng.uniform(0.2, 0.6, ENC.n_genes)
        detect = rng.uniform(0.3, 0.9, ENC.n_genes)
        normal = (profile + rng.normal(0, 0.05, (300, ENC.n_genes))) * (rng.random((300, ENC.n_genes)) < detect)
        odd = rng.uniform(0.9, 1.0, (10, ENC.n_genes))  # every gene detected and near the maximum
        values += [normal, odd]
        labels += [np.full(310, label)]
        outlier += [np.zeros(300, bool), np.ones(10, bool)]
    return np.clip(np.vstack(values), 0, 1).astype(np.float32), np.concatenate(labels), np.concatenate(outlier)


def test_injected_outliers_are_dropped_and_normal_candidates_kept():
    values, labels, outlier = _candidates()
    result = filter_labels(values, labels, 2, FilterParams())
    assert not result.kept[outlier].any()
    assert result.kept[~outlier].mean() >= 0.9
    assert np.all(result.scores[outlier].min() > np.median(result.scores[~outlier]))
    assert result.tau.shape == (2,) and np.all(np.isfinite(result.tau))


def test_scores_are_the_papers_s_of_x_and_the_tukey_fence():
    values, labels, _ = _candidates()
    s = anomaly_scores(values[labels == 0], FilterParams(n_estimators=50))
    assert np.all((s > 0) & (s <= 1))
    scores = np.array([0.40, 0.42, 0.44, 0.46, 0.48, 0.90])
    q1, q3 = np.percentile(scores, [25, 75])
    assert threshold(scores, None) == pytest.approx(q3 + 1.5 * (q3 - q1))
    assert threshold(scores, 0.7) == 0.7


def test_a_threshold_never_drops_more_than_half_of_a_label():
    values, labels, _ = _candidates()
    result = filter_labels(values, labels, 3, FilterParams(tau=0.0))  # the rule alone would drop everything
    for label in range(2):
        rows = labels == label
        assert result.kept[rows].sum() == 155
        kept_scores, dropped = result.scores[rows][result.kept[rows]], result.scores[rows][~result.kept[rows]]
        assert kept_scores.max() <= dropped.min()
        assert result.tau[label] == pytest.approx(kept_scores.max())
    assert np.isnan(result.tau[2])  # a label without candidates


def test_filter_step_writes_the_contract(tmp_path: Path):
    values, labels, outlier = _candidates()
    src = tmp_path / "s.candidates.h5"
    write_candidates(src, values, labels, ["a", "b"], [f"g{i}" for i in range(30)], ENC, {"seed": 0})
    out = steps.filter_candidates(src, tmp_path / "filter", "s", FilterParams())
    with h5py.File(out["filtered"], "r") as f:
        assert f["candidates"].dtype == np.float32 and f["candidates"].shape == values.shape
        assert f["labels"].dtype == np.int32 and f["kept"].dtype == bool
        assert f["scores"].dtype == np.float32 and f["tau"].shape == (2,)
        assert {"format_version", "params_json", "encoding_json"} <= set(f.attrs)
    kept = read_candidates(out["filtered"])
    everything = read_candidates(out["filtered"], kept_only=False)
    assert len(everything.values) == len(values) and len(kept.values) < len(values)
    assert kept.encoding == ENC and kept.label_names == ["a", "b"] and len(kept.genes) == 30
    assert kept.scores is not None and np.all(kept.scores <= kept.tau[kept.labels] + 1e-6)
    again = steps.filter_candidates(src, tmp_path / "again", "s", FilterParams())
    assert np.array_equal(read_candidates(again["filtered"]).values, kept.values)  # seeded


def test_filter_step_copies_the_expected_values_of_every_candidate(tmp_path: Path):
    values, labels, _ = _candidates()
    values, labels = np.vstack([values] * 2), np.concatenate([labels] * 2)  # 1,240 rows: two read blocks
    expected = np.random.default_rng(1).random(values.shape, dtype=np.float32)
    src = tmp_path / "s.candidates.h5"
    write_candidates(src, values, labels, ["a", "b"], [f"g{i}" for i in range(30)], ENC, {}, expected=expected)
    out = steps.filter_candidates(src, tmp_path / "filter", "s", FilterParams())
    everything = read_candidates(out["filtered"], kept_only=False)
    kept = read_candidates(out["filtered"])
    assert everything.expected is not None and np.array_equal(everything.expected, expected)
    with h5py.File(out["filtered"], "r") as f:
        rows = f["kept"][:].astype(bool)
    assert kept.expected is not None and np.array_equal(kept.expected, expected[rows])
    assert read_candidates(out["filtered"], expected=False).expected is None


def test_truncated_candidates_file_is_an_input_error(tmp_path: Path):
    values, labels, _ = _candidates()
    src = tmp_path / "s.candidates.h5"
    write_candidates(src, values, labels, ["a", "b"], [f"g{i}" for i in range(30)], ENC, {})
    cut = tmp_path / "cut.candidates.h5"
    cut.write_bytes(src.read_bytes()[:3000])
    with pytest.raises(InputError, match="cut.candidates.h5"):
        steps.filter_candidates(cut, tmp_path / "out", "s", FilterParams())
