"""The encoding: gene vectors <-> N x N images with masks, and its exact inverse."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from scmaskgan.errors import InputError
from scmaskgan.method import encode


@st.composite
def count_matrices(draw) -> np.ndarray:
    """Seeded sparse-ish counts: 1-12 cells, 1-70 genes (mostly not perfect squares)."""
    n_cells = draw(st.integers(1, 12))
    n_genes = draw(st.integers(1, 70))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    counts = rng.negative_binomial(2, 0.3, size=(n_cells, n_genes)) * (rng.random((n_cells, n_genes)) < 0.6)
    counts[:, 0] += 1  # every cell has a library
    return counts.astype(np.float64)


def _round_trip(counts: np.ndarray, enc: encode.Encoding, x) -> np.ndarray:
    unit, lib = encode.to_unit(x, enc)
    images = encode.to_images(unit, enc.side)
    return encode.decode(encode.from_images(images, enc.n_genes), lib, enc)


@settings(max_examples=60, deadline=None)
@given(count_matrices(), st.booleans())
def test_round_trip_is_exact_padding_stripped_and_in_unit_range(counts, sparse):
    x = sp.csr_matrix(counts) if sparse else counts
    enc = encode.fit_encoding(x, target_sum=1e4)
    n_genes = counts.shape[1]
    assert enc.side == math.ceil(math.sqrt(n_genes)) and enc.side**2 >= n_genes > (enc.side - 1) ** 2
    unit, _ = encode.to_unit(x, enc)
    assert unit.dtype == np.float32 and unit.min() >= 0 and unit.max() <= 1 + 1e-6
    images = encode.to_images(unit, enc.side)
    assert images.shape == (counts.shape[0], enc.side, enc.side)
    assert not images.reshape(len(images), -1)[:, n_genes:].any()  # padding is zero
    np.testing.assert_allclose(_round_trip(counts, enc, x), counts, rtol=1e-5, atol=1e-4)


@settings(max_examples=30, deadline=None)
@given(count_matrices(), st.integers(0, 2**32 - 1))
def test_gene_order_is_kept_row_wise(counts, seed):
    perm = np.random.default_rng(seed).permutation(counts.shape[1])
    enc = encode.fit_encoding(counts)
    unit, _ = encode.to_unit(counts, enc)
    unit_perm, _ = encode.to_unit(counts[:, perm], enc)
    np.testing.assert_array_equal(unit_perm, unit[:, perm])
    images = encode.to_images(unit, enc.side)
    gene = counts.shape[1] - 1  # the last gene sits at row (g // N), column (g % N)
    np.testing.assert_array_equal(images[:, gene // enc.side, gene % enc.side], unit[:, gene])


@settings(max_examples=30, deadline=None)
@given(count_matrices())
def test_mask_marks_observed_entries_only(counts):
    enc = encode.fit_encoding(counts)
    mask = encode.observed_mask(sp.csr_matrix(counts), enc.side)
    assert mask.dtype == np.uint8
    flat = mask.reshape(len(mask), -1)
    np.testing.assert_array_equal(flat[:, : counts.shape[1]], (counts > 0).astype(np.uint8))
    assert not flat[:, counts.shape[1]:].any()


def test_lognorm_input_round_trip_returns_the_input_scale():
    rng = np.random.default_rng(3)
    lognorm = np.log1p(rng.gamma(1.0, 2.0, size=(20, 37)) * (rng.random((20, 37)) < 0.5))
    enc = encode.fit_encoding(lognorm, input_scale="lognorm")
    assert enc.scale == pytest.approx(lognorm.max())
    np.testing.assert_allclose(_round_trip(lognorm, enc, lognorm), lognorm, rtol=1e-6, atol=1e-6)


def test_scale_is_the_largest_lognormalised_value():
    counts = np.array([[1.0, 0, 3], [0, 10, 0]])
    expected = max(np.log1p(3 / 4 * 1e4), np.log1p(10 / 10 * 1e4))
    assert encode.max_lognorm(counts, 1e4) == pytest.approx(expected)
    assert encode.max_lognorm(sp.csr_matrix(counts), 1e4) == pytest.approx(expected)
    assert encode.max_lognorm(np.zeros((2, 3)), 1e4) == 1.0
    assert encode.Encoding(**encode.fit_encoding(counts).to_dict()) == encode.fit_encoding(counts)


def test_image_side_and_bad_sizes():
    assert [encode.image_side(g) for g in (1, 2, 4, 5, 765, 30000)] == [1, 2, 2, 3, 28, 174]
    with pytest.raises(InputError):
        encode.image_side(0)
    with pytest.raises(InputError):
        encode.to_images(np.zeros((1, 10)), 3)
