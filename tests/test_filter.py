"""FILTER: IsolationForest per label drops injected outliers, keeps normal candidates (judged against the real
cells by default, against the candidates themselves as in the paper), writes the file."""

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
#: The paper's rule: a forest on the candidates, the Tukey fence of their scores.
PAPER = FilterParams(reference="candidates")


def _label_cells(label: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` realistic-looking cells of ``label`` (sparse, label-specific; the label's profile is fixed)."""
    shape = np.random.default_rng(100 + label)
    profile, detect = shape.uniform(0.2, 0.6, ENC.n_genes), shape.uniform(0.3, 0.9, ENC.n_genes)
    cells = (profile + rng.normal(0, 0.05, (n, ENC.n_genes))) * (rng.random((n, ENC.n_genes)) < detect)
    return np.clip(cells, 0, 1).astype(np.float32)


def _candidates(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Two labels of candidates drawn like :func:`_label_cells` plus 10 outliers each."""
    rng = np.random.default_rng(seed)
    values, labels, outlier = [], [], []
    for label in range(2):
        odd = rng.uniform(0.9, 1.0, (10, ENC.n_genes)).astype(np.float32)  # every gene detected and near the maximum
        values += [_label_cells(label, 300, rng), odd]
        labels += [np.full(310, label)]
        outlier += [np.zeros(300, bool), np.ones(10, bool)]
    return np.vstack(values), np.concatenate(labels), np.concatenate(outlier)


def _real(n_per_label: int = 400, seed: int = 7):
    """Real cells of both labels, drawn as the normal candidates are: ``cells(label)`` for FILTER."""
    rng = np.random.default_rng(seed)
    cells = {label: _label_cells(label, n_per_label, rng) for label in range(2)}
    return lambda label: cells.get(label, np.empty((0, ENC.n_genes), np.float32))


def _with_substate(label: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` cells of ``label``, 8 % of them in a minority sub-state (six genes higher), and which ones."""
    shape = np.random.default_rng(100 + label)
    profile, detect = shape.uniform(0.2, 0.6, ENC.n_genes), shape.uniform(0.3, 0.9, ENC.n_genes)
    sub = profile.copy()
    sub[:6] += 0.35
    state = rng.random(n) < 0.08
    cells = (np.where(state[:, None], sub, profile) + rng.normal(0, 0.05, (n, ENC.n_genes)))
    cells *= rng.random((n, ENC.n_genes)) < detect
    return np.clip(cells, 0, 1).astype(np.float32), state


@pytest.mark.parametrize("seed", [0, 1])
def test_against_the_real_cells_a_faithful_generator_keeps_a_minority_substate(seed: int):
    """Candidates drawn exactly as the real cells, a minority sub-state included: judged against the real
    cells (which have it too) almost all stay; the paper's fence on the candidates' own scores drops a
    fifth of the sub-state (measured, seeds 0-3: 1-5 % against 20-28 %)."""
    rng = np.random.default_rng(seed)
    parts = [_with_substate(label, 1000, rng) for label in range(2)]
    values, substate = np.vstack([v for v, _ in parts]), np.concatenate([s for _, s in parts])
    labels = np.repeat([0, 1], 1000)
    real_rng = np.random.default_rng(50 + seed)
    real = {label: _with_substate(label, 400, real_rng)[0] for label in range(2)}
    by_cells = filter_labels(values, labels, 2, FilterParams(seed=seed), real.__getitem__).kept
    paper = filter_labels(values, labels, 2, FilterParams(reference="candidates", seed=seed)).kept
    assert by_cells.mean() >= 0.99 and by_cells[substate].mean() >= 0.93
    assert paper[substate].mean() <= 0.85


def test_against_the_real_cells_outliers_still_go():
    values, labels, outlier = _candidates()
    result = filter_labels(values, labels, 2, FilterParams(), _real())
    assert not result.kept[outlier].any() and result.kept[~outlier].mean() >= 0.98


def test_a_reference_filter_needs_the_real_cells_and_falls_back_for_tiny_labels():
    values, labels, outlier = _candidates()
    with pytest.raises(InputError, match="needs the real cells"):
        filter_labels(values, labels, 2, FilterParams())
    few = _real(n_per_label=3)  # too few to split in a half to fit and a half to judge: the paper's rule
    result = filter_labels(values, labels, 2, FilterParams(), few)
    np.testing.assert_array_equal(result.kept, filter_labels(values, labels, 2, PAPER).kept)


def test_injected_outliers_are_dropped_and_normal_candidates_kept():
    values, labels, outlier = _candidates()
    result = filter_labels(values, labels, 2, PAPER)
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
    result = filter_labels(values, labels, 3, FilterParams(tau=0.0, reference="candidates"))  # the rule alone would drop everything
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
    out = steps.filter_candidates(src, None, tmp_path / "filter", "s", PAPER)
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
    again = steps.filter_candidates(src, None, tmp_path / "again", "s", PAPER)
    assert np.array_equal(read_candidates(again["filtered"]).values, kept.values)  # seeded


def test_filter_step_copies_the_expected_values_of_every_candidate(tmp_path: Path):
    values, labels, _ = _candidates()
    values, labels = np.vstack([values] * 2), np.concatenate([labels] * 2)  # 1,240 rows: two read blocks
    expected = np.random.default_rng(1).random(values.shape, dtype=np.float32)
    src = tmp_path / "s.candidates.h5"
    write_candidates(src, values, labels, ["a", "b"], [f"g{i}" for i in range(30)], ENC, {}, expected=expected)
    out = steps.filter_candidates(src, None, tmp_path / "filter", "s", PAPER)
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
        steps.filter_candidates(cut, None, tmp_path / "out", "s", PAPER)
