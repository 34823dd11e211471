"""The {id}.images.h5 file: chunked writing, exact read-back, batch streaming."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from scmaskgan.errors import InputError
from scmaskgan.method import encode
from scmaskgan.method.images_h5 import CHUNK_CELLS, ImageStore, ImageWriter


@pytest.fixture
def written(simulated, tmp_path):
    """300 simulated cells x 150 genes written in sparse chunks of 64 cells."""
    adata, _ = simulated
    x = sp.csr_matrix(adata.X)
    enc = encode.fit_encoding(x)
    codes = adata.obs["cell_type"].cat.codes.to_numpy().astype(np.int32)
    names = list(adata.obs["cell_type"].cat.categories)
    path = tmp_path / "s.images.h5"
    attrs = {"label_source": "obs:cell_type", "params_json": json.dumps({"chunk_cells": 64})}
    with ImageWriter(path, adata.n_obs, enc, adata.obs_names, adata.var_names, names, attrs) as writer:
        for start in range(0, adata.n_obs, 64):
            writer.append(x[start:start + 64], codes[start:start + 64])
    return path, adata, enc, codes, names


def test_round_trip_of_every_cell(written):
    path, adata, enc, codes, names = written
    with ImageStore(path) as store:
        assert store.encoding == enc and store.n_cells == adata.n_obs
        assert store.cells == list(adata.obs_names) and store.genes == list(adata.var_names)
        assert store.label_names == names
        np.testing.assert_array_equal(store.labels, codes)
        assert store.attrs["label_source"] == "obs:cell_type"
        unit, observed = store.vectors()
        counts = encode.decode(unit, store.library_size, store.encoding)
    dense = adata.X.toarray()
    np.testing.assert_allclose(counts, dense, rtol=1e-5, atol=1e-4)
    np.testing.assert_array_equal(observed, dense > 0)


def test_storage_is_chunked_and_compressed(written):
    path, adata, enc, *_ = written
    with h5py.File(path, "r") as f:
        for name in ("images", "masks"):
            ds = f[name]
            assert ds.shape == (adata.n_obs, enc.side, enc.side)
            assert ds.chunks == (min(CHUNK_CELLS, adata.n_obs), enc.side, enc.side)
            assert ds.compression == "gzip"
        assert f["images"].dtype == np.float32 and f["masks"].dtype == np.uint8
        assert f.attrs["format_version"] == encode.FORMAT_VERSION


def test_batches_stream_all_cells_once(written):
    path, adata, _, codes, _ = written
    with ImageStore(path) as store:
        sizes, seen = [], []
        for images, masks, labels in store.batches(128):
            assert images.shape[1:] == masks.shape[1:]
            sizes.append(len(images))
            seen.append(labels)
        assert sizes == [128, 128, 44]
        np.testing.assert_array_equal(np.concatenate(seen), codes)
        pick = np.random.default_rng(0).choice(adata.n_obs, 50, replace=False)
        got = np.concatenate([lab for _, _, lab in store.batches(16, pick)])
        assert sorted(got.tolist()) == sorted(codes[pick].tolist())
        first, _, _ = store.read(slice(0, 3))
        np.testing.assert_array_equal(
            encode.from_images(first, store.encoding.n_genes), store.vectors(slice(0, 3))[0]
        )


@pytest.mark.parametrize("reach_cells", [1, 7, 1000])
def test_an_index_array_reads_exactly_those_cells_in_runs_of_any_length(written, monkeypatch, reach_cells):
    """Runs of one cell, of a few (several per run and runs that skip cells) and the whole span at once."""
    path, adata, enc, codes, _ = written
    monkeypatch.setattr("scmaskgan.method.images_h5.SPAN_PIXELS", reach_cells * enc.side**2)
    rng = np.random.default_rng(1)
    with ImageStore(path) as store:
        every_image, every_mask, _ = store.read(slice(None))
        for index in (np.sort(rng.choice(adata.n_obs, 40, replace=False)), np.arange(5, 290), np.array([299]),
                      np.array([], dtype=np.int64)):
            images, masks, labels = store.read(index)
            np.testing.assert_array_equal(images, every_image[index])
            np.testing.assert_array_equal(masks, every_mask[index])
            np.testing.assert_array_equal(labels, codes[index])
        with pytest.raises(ValueError, match="strictly increasing"):
            store.read(np.array([5, 3]))


def test_incomplete_writes_and_foreign_files_are_rejected(simulated, tmp_path):
    adata, _ = simulated
    enc = encode.fit_encoding(adata.X)
    path = tmp_path / "short.images.h5"
    writer = ImageWriter(path, 10, enc, adata.obs_names[:10], adata.var_names, ["a"])
    writer.append(adata.X[:5], np.zeros(5, np.int32))
    with pytest.raises(RuntimeError, match="5 of 10 cells"):
        writer.close()
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = np.arange(3)
    with pytest.raises(InputError, match="not a scmaskgan images file"):
        ImageStore(foreign)
