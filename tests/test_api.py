"""The public API (scmaskgan.impute, ScMaskGAN) and the one-file CLI command ``scmaskgan impute``.

The GAN is trained for one epoch on a tiny seeded simulation so that the whole chain
(PREPARE, TRAIN, GENERATE, FILTER, IMPUTE) runs in seconds; accuracy is tested on
arrays in ``test_impute.py`` and on real data in ``benchmarks/bench_mcv.py``.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch
from conftest import simulate_counts
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import scmaskgan
from scmaskgan.cli import main
from scmaskgan.errors import InputError

TINY = {"epochs": 1, "min_epochs": 1, "base_channels": 8, "cells_per_epoch": 256, "device": "cpu",
        "impute_n_trials": 4}


@pytest.fixture(scope="module")
def sample() -> ad.AnnData:
    """90 simulated cells x 48 genes, plus one all-zero gene and one all-zero cell."""
    adata, _ = simulate_counts(n_cells=90, n_genes=48, seed=4)
    x = adata.X.toarray()
    x = np.vstack([np.hstack([x, np.zeros((x.shape[0], 1))]), np.zeros((1, x.shape[1] + 1))])
    out = ad.AnnData(
        X=sp.csr_matrix(x.astype(np.float32)),
        obs={"cell_type": list(adata.obs["cell_type"].astype(str)) + [adata.obs["cell_type"].iloc[0]]},
    )
    out.obs_names = list(adata.obs_names) + ["empty_cell"]
    out.var_names = list(adata.var_names) + ["EMPTY_GENE"]
    return out


@pytest.fixture(scope="module")
def fitted(sample: ad.AnnData) -> scmaskgan.ScMaskGAN:
    return scmaskgan.ScMaskGAN(0, label_key="cell_type", **TINY).fit(sample)


@pytest.fixture(scope="module")
def imputed(fitted: scmaskgan.ScMaskGAN, sample: ad.AnnData) -> ad.AnnData:
    return fitted.transform(sample)


def test_transform_keeps_the_input_layout_and_every_observed_count(sample, imputed) -> None:  # noqa: ANN001
    assert imputed.shape == sample.shape
    assert list(imputed.obs_names) == list(sample.obs_names)
    assert list(imputed.var_names) == list(sample.var_names)
    x = sample.X.toarray()
    observed = x > 0
    assert imputed.X.dtype == np.float32 and np.all(np.isfinite(imputed.X))
    assert np.array_equal(imputed.X[observed], x[observed])
    assert (imputed.X[~observed] > 0).mean() > 0.5  # zeros were filled
    assert np.array_equal(imputed.layers["counts"].toarray(), x)
    assert np.all(np.isfinite(imputed.layers["imputed_lognorm"]))
    assert np.all(imputed.X[:, -1] == 0) and np.all(imputed.X[-1] == 0)  # all-zero gene and cell stay 0
    labels = imputed.obs["scmaskgan_label"]
    assert list(labels[:-1].astype(str)) == list(sample.obs["cell_type"][:-1])


def test_the_record_says_what_was_done(imputed) -> None:  # noqa: ANN001
    rec = imputed.uns["scmaskgan"]
    assert rec["mode"] == "zeros" and rec["n_observed_changed"] == 0
    assert rec["label_source"] == "obs:cell_type" and rec["seed"] == 0
    assert len(rec["tuning"]["k"]) == 4 and rec["k"] in rec["tuning"]["k"]
    assert rec["validation"] == "molecules"
    assert 0.5 < rec["fraction_zeros_filled"] <= 1.0
    assert rec["n_empty_cells"] == 1 and rec["n_unused_genes"] == 1
    assert rec["fit_params"]["train"]["epochs"] == 1
    assert set(rec["fit_seconds"]) == {"prepare", "train", "generate", "filter"}
    assert all(seconds > 0 for seconds in rec["fit_seconds"].values())
    assert "torch" in rec["versions"]


def test_save_and_load_give_the_same_imputation(fitted, sample, imputed, tmp_path: Path) -> None:  # noqa: ANN001
    path = fitted.save(tmp_path / "model.scmaskgan.pt")
    assert torch.load(path, weights_only=True)["kind"] == "scmaskgan-estimator"
    again = scmaskgan.ScMaskGAN.load(path).transform(sample)
    assert np.array_equal(again.X, imputed.X)
    (tmp_path / "truncated.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(InputError, match="not a readable scmaskgan estimator"):
        scmaskgan.ScMaskGAN.load(tmp_path / "truncated.pt")
    with pytest.raises(InputError, match="not fitted"):
        scmaskgan.ScMaskGAN().transform(sample)


def test_denoise_keeps_the_candidates_expected_values_through_save_and_load(fitted, sample, tmp_path: Path) -> None:  # noqa: ANN001
    assert fitted.expected_candidates_ is None  # zeros mode never reads them
    denoiser = scmaskgan.ScMaskGAN(0, label_key="cell_type", mode="denoise", **TINY).fit(sample)
    expected = denoiser.expected_candidates_
    assert expected is not None and expected.shape == denoiser.candidates_.shape
    assert expected.min() >= 0 and expected.max() <= 1  # the unit scale, recentred (GENERATE)
    assert np.mean(expected == 0) < 0.01  # no sampled zeros
    again = scmaskgan.ScMaskGAN.load(denoiser.save(tmp_path / "denoise.pt"))
    assert again.expected_candidates_ is not None and np.array_equal(again.expected_candidates_, expected)
    assert np.array_equal(again.transform(sample).X, denoiser.transform(sample).X)


def test_new_cells_are_labelled_by_the_nearest_candidates_and_genes_must_match(fitted, sample) -> None:  # noqa: ANN001
    new = sample[:30].copy()
    new.obs_names = [f"new{i}" for i in range(30)]
    del new.obs["cell_type"]
    out = fitted.transform(new)
    observed = new.X.toarray() > 0
    assert np.array_equal(out.X[observed], new.X.toarray()[observed])
    agree = (out.obs["scmaskgan_label"].astype(str).to_numpy() == sample.obs["cell_type"][:30].to_numpy()).mean()
    assert agree > 0.8  # simulated types are well separated
    with pytest.raises(InputError, match="gene 0 is 'GENE1'"):
        fitted.transform(sample[:, [1, 0] + list(range(2, sample.n_vars))].copy())


def test_impute_in_place_is_reproducible_with_the_same_seed(sample, imputed) -> None:  # noqa: ANN001
    data = sample.copy()
    assert scmaskgan.impute(data, label_key="cell_type", random_state=0, **TINY) is None
    assert np.array_equal(data.X, imputed.X)
    assert np.array_equal(data.layers["counts"].toarray(), sample.X.toarray())
    assert data.uns["scmaskgan"]["k"] == imputed.uns["scmaskgan"]["k"]
    per_label = data.uns["scmaskgan"]["neighbours_per_label"]  # by label name
    assert set(per_label["label"]) == set(sample.obs["cell_type"])
    assert all(1 <= n <= data.uns["scmaskgan"]["k"] for n in per_label["mean_neighbours"])


def test_bad_arguments_are_refused_before_any_training(sample) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match="unknown parameter"):
        scmaskgan.impute(sample, epochz=3)
    with pytest.raises(InputError, match="input_scale"):
        scmaskgan.impute(sample, input_scale="tpm")
    with pytest.raises(InputError, match="neither an obs column"):
        scmaskgan.impute(sample, label_key="no_such_column", copy=True)
    negative = sample.copy()
    negative.X = -negative.X
    with pytest.raises(InputError, match="negative"):
        scmaskgan.impute(negative, copy=True)


def test_cli_impute_writes_the_imputed_h5ad(sample, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    src = tmp_path / "in.h5ad"
    sample.write_h5ad(src)
    out = tmp_path / "out.h5ad"
    argv = ["impute", str(src), "-o", str(out), "--label-key", "cell_type", "--impute-mode", "denoise"]
    argv += ["--epochs", "1", "--min-epochs", "1", "--base-channels", "8", "--device", "cpu", "--impute-n-trials", "3",
             "--threads", str(torch.get_num_threads())]  # the children train with this process's torch threads
    assert main(argv) == 0
    result = ad.read_h5ad(out)
    assert result.shape == sample.shape
    assert result.uns["scmaskgan"]["mode"] == "denoise" and result.uns["scmaskgan"]["n_observed_changed"] > 0
    # fitted in three processes (scmaskgan.fit_process), handing over files: the API's one-process result
    # (to float rounding: BLAS may run other thread counts in the children than in this process)
    in_process = scmaskgan.ScMaskGAN(0, label_key="cell_type", mode="denoise", epochs=1, min_epochs=1,
                                     base_channels=8, device="cpu", impute_n_trials=3).fit_transform(sample)
    assert list(result.obs["scmaskgan_label"]) == list(in_process.obs["scmaskgan_label"])
    assert result.uns["scmaskgan"]["n_candidates"] == in_process.uns["scmaskgan"]["n_candidates"]
    np.testing.assert_allclose(np.asarray(result.X), np.asarray(in_process.X), rtol=1e-2, atol=1e-2)
    assert main(["impute", str(src), "-o", str(out), "--label-key", "nope"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("scmaskgan: error:") and "nope" in err[0]


def test_cli_impute_reports_a_killed_fitting_process_as_the_shell_would(
    sample, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    """The kernel's OOM killer ends the fitting process with SIGKILL: one line and status 137
    (128 + 9), as the same run in one process would end."""
    import subprocess

    src = tmp_path / "in.h5ad"
    sample.write_h5ad(src)
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a, -9))
    assert main(["impute", str(src), "-o", str(tmp_path / "out.h5ad"), "--label-key", "cell_type"]) == 137
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["scmaskgan: error: the fitting process was killed by signal 9"]


def test_the_estimator_follows_sklearn_conventions(fitted, sample) -> None:  # noqa: ANN001
    params = fitted.get_params()
    assert params["epochs"] == 1 and params["label_key"] == "cell_type" and params["impute_k"] is None
    twin = clone(fitted)
    assert twin.get_params() == params and not hasattr(twin, "candidates_")
    assert twin.set_params(epochs=3, impute_k=7).epochs == 3 and twin.impute_k == 7
    assert "epochs=1" in repr(fitted) and "impute_k" not in repr(fitted)  # only what differs from the defaults
    with pytest.raises(NotFittedError, match="not fitted"):
        twin.transform(sample)
    with pytest.raises(ValueError, match="Invalid parameter"):
        twin.set_params(epochz=3)


@pytest.mark.parametrize(("name", "value", "message"), [
    ("epochs", -1, "parameter epochs=-1 must be >= 0"),
    ("holdout_fraction", 1.0, "parameter holdout_fraction=1.0 must be < 1"),
    ("max_features", "all", "parameter max_features='all' must be a number"),
])
def test_out_of_range_parameters_are_refused_at_fit_in_one_line(sample, name, value, message) -> None:  # noqa: ANN001
    with pytest.raises(InputError, match=f"^{message}$"):
        scmaskgan.ScMaskGAN(**{name: value}).fit(sample)


def test_release_input_empties_the_counts_and_fits_the_same_model(fitted, sample) -> None:  # noqa: ANN001
    data = sample.copy()
    released = scmaskgan.ScMaskGAN(0, label_key="cell_type", **TINY).fit(data, release_input=True)
    assert data.shape == sample.shape and data.X.nnz == 0  # the counts are gone, the names and labels kept
    assert list(data.obs["cell_type"]) == list(sample.obs["cell_type"])
    np.testing.assert_array_equal(released.candidates_, fitted.candidates_)
    np.testing.assert_array_equal(released.labels_, fitted.labels_)
    layered = sample.copy()
    layered.layers["counts"] = layered.X.copy()
    scmaskgan.ScMaskGAN(0, label_key="cell_type", layer="counts", **TINY).fit(layered, release_input=True)
    assert layered.layers["counts"].nnz == 0 and layered.X.nnz == sample.X.nnz  # only the layer read is released


def test_a_layer_is_read_instead_of_x_and_sparse_input_stays_sparse(fitted, sample, imputed) -> None:  # noqa: ANN001
    scanpy_like = sample.copy()
    scanpy_like.layers["counts"] = scanpy_like.X.copy()
    scanpy_like.X = sp.csr_matrix(np.log1p(scanpy_like.X.toarray()))
    from_layer = copy.deepcopy(fitted).set_params(layer="counts")
    out = from_layer.transform(scanpy_like, copy=False)
    assert out is scanpy_like
    assert np.array_equal(out.layers["imputed"], imputed.X)  # the same imputation as from X
    assert np.array_equal(out.X.toarray(), np.log1p(sample.X.toarray()))  # X and the layer are kept
    assert np.array_equal(out.layers["counts"].toarray(), sample.X.toarray())
    assert sp.issparse(imputed.layers["counts"])  # sparse input is kept sparse beside the dense imputation
    assert out.uns["scmaskgan"]["layer"] == "counts"
    with pytest.raises(InputError, match="layer='raw' is not in adata.layers"):
        from_layer.set_params(layer="raw").transform(sample)


def _same_anndata(written: ad.AnnData, expected: ad.AnnData) -> None:
    """Every element the two AnnData hold is equal, values, dtypes and sparsity."""
    assert sorted(written.layers) == sorted(expected.layers)
    for name, got, want in [("X", written.X, expected.X), *((k, written.layers[k], expected.layers[k])
                                                            for k in expected.layers)]:
        assert sp.issparse(got) == sp.issparse(want) and got.dtype == want.dtype, name
        np.testing.assert_array_equal(got.toarray() if sp.issparse(got) else got,
                                      want.toarray() if sp.issparse(want) else want, err_msg=name)
    pd.testing.assert_frame_equal(written.obs, expected.obs)
    pd.testing.assert_frame_equal(written.var, expected.var)
    assert json.dumps(written.uns["scmaskgan"], sort_keys=True, default=str) == json.dumps(
        expected.uns["scmaskgan"], sort_keys=True, default=str)


@pytest.mark.parametrize("layer", [None, "counts"])
def test_the_file_written_block_by_block_is_the_transformed_anndata(
    fitted, sample, tmp_path: Path, monkeypatch, layer  # noqa: ANN001
) -> None:
    """``write_transformed`` (what ``scmaskgan impute`` writes, block by block) == ``transform`` then ``write_h5ad``,
    with an all-zero cell and gene in the sample, in blocks of 16 of its 91 cells."""
    from scmaskgan.method import neighbours

    data = sample.copy()
    if layer is not None:
        data.layers[layer] = data.X.copy()
        data.X = sp.csr_matrix(np.log1p(data.X.toarray()))
    model = copy.deepcopy(fitted).set_params(layer=layer)
    monkeypatch.setattr(neighbours, "_ROW_BLOCK", 16)
    written = ad.read_h5ad(model.write_transformed(data, tmp_path / "blocks.h5ad"))
    model.transform(data).write_h5ad(tmp_path / "whole.h5ad")
    _same_anndata(written, ad.read_h5ad(tmp_path / "whole.h5ad"))
    assert "scmaskgan_label" not in data.obs and "scmaskgan" not in data.uns  # the input is left alone


def test_the_api_leaves_the_callers_process_alone(fitted, sample, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """No matplotlib backend switch, no glibc allocator setting (only the step processes tune it)."""
    import matplotlib

    from scmaskgan.method import train
    from scmaskgan.pipeline import memory

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("matplotlib.use called by the library")

    asked: list[str] = []
    monkeypatch.setattr(matplotlib, "use", refuse)
    monkeypatch.setattr(memory, "_glibc", lambda symbol: asked.append(symbol))
    fitted.transform(sample)
    train._plot_log(tmp_path / "loss.png", [{"epoch": 1, "loss_d": 1.0, "val_energy": 0.5}], "s")
    assert (tmp_path / "loss.png").stat().st_size > 0
    assert "mallopt" not in asked


def test_the_fitting_processes_run_every_fit_step_once_in_order() -> None:
    from scmaskgan.api import FIT_STEPS
    from scmaskgan.fit_process import PROCESS_PHASES

    assert [phase for group in PROCESS_PHASES for phase in group] == ["start", *FIT_STEPS, "finish"]
