"""Automatic Leiden labels and merging of small labels."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from scmaskgan.method.labels import auto_labels, merge_small_labels, resolve_labels

LEIDEN = {"resolution": 0.8, "n_pcs": 30, "seed": 0}


def test_auto_labels_recover_the_pbmc_cell_types(pbmc_counts):
    """Measured ARI vs bulk_labels: 0.50 (scanpy's own louvain in pbmc68k_reduced: 0.41)."""
    before = pbmc_counts.X.copy()
    labels, features = auto_labels(pbmc_counts, **LEIDEN)
    assert (pbmc_counts.X != before).nnz == 0  # input untouched
    assert features.shape == (pbmc_counts.n_obs, 30)
    assert 5 <= len(set(labels)) <= 15
    assert adjusted_rand_score(pbmc_counts.obs["cell_type"], labels) > 0.4
    again, _ = auto_labels(pbmc_counts, **LEIDEN)
    np.testing.assert_array_equal(labels, again)  # seeded


def _blobs():
    rng = np.random.default_rng(0)
    centres = {"A": [0, 0], "B": [10, 0], "C": [0, 10]}
    labels = np.repeat(["A", "B", "C"], 20)
    features = np.concatenate([rng.normal(centres[k], 1.0, size=(20, 2)) for k in "ABC"])
    return labels, features


def test_one_cell_label_merges_into_the_nearest_centroid():
    labels, features = _blobs()
    labels = np.append(labels, "lonely")
    features = np.vstack([features, [9.0, 1.0]])  # next to B
    merged, merges = merge_small_labels(labels, features, min_cells=5)
    assert merges == [{"label": "lonely", "n_cells": 1, "into": "B"}]
    assert merged[-1] == "B" and (merged[:-1] == labels[:-1]).all()
    assert labels[-1] == "lonely"  # the input is not modified


def test_merging_can_collapse_to_a_single_label():
    labels, features = _blobs()
    merged, merges = merge_small_labels(labels, features, min_cells=50)
    assert len(set(merged)) == 1 and len(merges) == 2
    assert [m["n_cells"] for m in merges] == [20, 20]  # smallest first: A joins B or C, then the other 20
    untouched, none = merge_small_labels(labels, features, min_cells=20)
    assert none == [] and (untouched == labels).all()


def test_resolve_labels_loads_counts_only_when_needed(pbmc_counts):
    def no_load():
        raise AssertionError("counts must not be loaded")

    given = pbmc_counts.obs["cell_type"].astype(str).to_numpy()
    result = resolve_labels(given, no_load, source="obs:cell_type", min_cells=5, **LEIDEN)
    assert result.source == "obs:cell_type" and result.merges == []
    assert result.names == sorted(set(given))
    assert [result.names[c] for c in result.codes] == list(given)
    with pytest.raises(AssertionError):
        resolve_labels(given, no_load, source="obs:cell_type", min_cells=10, **LEIDEN)  # 'CD4+/CD45RA+...' has 8
    merged = resolve_labels(given, lambda: pbmc_counts, source="obs:cell_type", min_cells=10, **LEIDEN)
    assert [m["label"] for m in merged.merges] == ["CD4+/CD45RA+/CD25- Naive T"]
    assert "CD4+/CD45RA+/CD25- Naive T" not in merged.names and len(merged.names) == 9
    auto = resolve_labels(None, lambda: pbmc_counts, source="", min_cells=5, **LEIDEN)
    assert auto.source == "leiden"
    assert auto.names == sorted(auto.names, key=int)  # '2' before '10'
    assert np.bincount(auto.codes).min() >= 5
