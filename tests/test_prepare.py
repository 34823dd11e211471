"""The PREPARE step: labels, streamed encoding and the images file, on real PBMCs."""

from __future__ import annotations

import json

import anndata as ad
import h5py
import numpy as np
import pytest
import scipy.sparse as sp

from scmaskgan.core.config import PrepareParams, QCParams
from scmaskgan.errors import InputError
from scmaskgan.method import encode
from scmaskgan.method.images_h5 import ImageStore
from scmaskgan.pipeline import steps


@pytest.fixture
def qc_h5ad(pbmc_counts, tmp_path):
    """QC output of 300 real PBMCs with their cell types as labels."""
    src = tmp_path / "pb.h5ad"
    pbmc_counts[:300].copy().write_h5ad(src)
    return steps.qc(src, tmp_path / "qc", "pb", QCParams(min_genes=150, label_key="cell_type"))["h5ad"]


def test_images_hold_the_qc_counts_and_labels(qc_h5ad, tmp_path):
    out = steps.prepare(qc_h5ad, tmp_path / "prep", "pb", PrepareParams(chunk_cells=64, min_label_cells=5))
    assert out == steps.output_paths("prepare", tmp_path / "prep", "pb")
    qc = ad.read_h5ad(qc_h5ad)
    with ImageStore(out["images"]) as store:
        assert store.cells == list(qc.obs_names) and store.genes == list(qc.var_names)
        assert store.encoding == encode.fit_encoding(qc.X, 1e4)  # streamed scale == global scale
        unit, observed = store.vectors()
        np.testing.assert_allclose(encode.decode(unit, store.library_size, store.encoding),
                                   qc.X.toarray(), rtol=1e-5, atol=1e-4)
        np.testing.assert_array_equal(observed, qc.X.toarray() > 0)
        merges = json.loads(store.attrs["label_merges_json"])
        renamed = {m["label"]: m["into"] for m in merges}
        given = [renamed.get(v, v) for v in qc.obs["scmaskgan_label"].astype(str)]
        assert [store.label_names[c] for c in store.labels] == given
        sizes = qc.obs["scmaskgan_label"].value_counts()
        assert {m["label"] for m in merges} == set(sizes[sizes < 5].index)  # exactly the small labels
        assert np.bincount(store.labels).min() >= 5
        assert store.attrs["label_source"] == "obs:cell_type"
        assert json.loads(store.attrs["params_json"])["chunk_cells"] == 64


def test_chunk_size_does_not_change_the_file(qc_h5ad, tmp_path):
    a = steps.prepare(qc_h5ad, tmp_path / "a", "pb", PrepareParams(chunk_cells=37))["images"]
    b = steps.prepare(qc_h5ad, tmp_path / "b", "pb", PrepareParams(chunk_cells=5000))["images"]
    with h5py.File(a) as fa, h5py.File(b) as fb:
        for name in ("images", "masks", "labels", "library_size"):
            np.testing.assert_array_equal(fa[name][:], fb[name][:])


def test_automatic_labels_when_none_given(pbmc_counts, tmp_path):
    src = tmp_path / "pb.h5ad"
    pbmc_counts[:300].copy().write_h5ad(src)
    qc = steps.qc(src, tmp_path / "qc", "pb", QCParams(min_genes=150))["h5ad"]
    images = steps.prepare(qc, tmp_path / "prep", "pb", PrepareParams(min_label_cells=10))["images"]
    with ImageStore(images) as store:
        assert store.attrs["label_source"] == "leiden"
        assert len(store.label_names) >= 2
        assert np.bincount(store.labels).min() >= 10


def test_lognorm_input_is_encoded_and_decoded_on_its_own_scale(pbmc_counts, tmp_path):
    import scanpy as sc

    lognorm = pbmc_counts[:120].copy()
    sc.pp.normalize_total(lognorm, target_sum=1e4)
    sc.pp.log1p(lognorm)
    src = tmp_path / "ln.h5ad"
    lognorm.write_h5ad(src)
    qc = steps.qc(src, tmp_path / "qc", "ln", QCParams(min_genes=150, input_scale="lognorm",
                                                         label_key="cell_type"))["h5ad"]
    images = steps.prepare(qc, tmp_path / "prep", "ln", PrepareParams(chunk_cells=50))["images"]
    kept = ad.read_h5ad(qc)
    with ImageStore(images) as store:
        assert store.encoding.input_scale == "lognorm"
        values = encode.decode(store.vectors()[0], store.library_size, store.encoding)
    np.testing.assert_allclose(values, sp.csr_matrix(kept.X).toarray(), rtol=1e-5, atol=1e-5)


def test_prepare_rejects_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        steps.prepare(tmp_path / "none.qc.h5ad", tmp_path, "x")
    foreign = tmp_path / "foreign.qc.h5ad"
    foreign.write_text("not hdf5")
    with pytest.raises(InputError, match="not a readable h5ad"):
        steps.prepare(foreign, tmp_path, "x")
    assert not list(tmp_path.glob("*.images.h5"))
