"""The IMPUTE algorithm on arrays: accuracy against known truth, invariants, tuning, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from conftest import simulate_counts

import scmaskgan.method.imputation as imputation_module
from scmaskgan.core.config import ImputeParams
from scmaskgan.errors import InputError, StepError
from scmaskgan.method.encode import fit_encoding, to_unit
from scmaskgan.method.imputation import ImputeResult, estimate, impute_matrix
from scmaskgan.method.mcv import mcv_mse, mcv_poisson, split_counts
from scmaskgan.method.neighbours import (
    EncodedRows,
    Neighbours,
    encode_rows,
    find_neighbours,
    select_neighbours,
)


def _stand_in(x: np.ndarray, labels: np.ndarray, enc):  # noqa: ANN001, ANN202
    """Split cells in two: the even cells are imputed, the odd cells (encoded) stand in for candidates."""
    unit, _ = to_unit(x, enc)
    cells = np.arange(x.shape[0]) % 2 == 0
    return cells, unit[~cells], labels[~cells]


@pytest.fixture(scope="module")
def structured() -> dict[str, np.ndarray]:
    """Six simulated cell types given to the imputer as three coarse labels (structure within labels)."""
    adata, truth = simulate_counts(n_cells=800, n_types=6, dropout_mid=0.0, seed=0)
    x = adata.X.toarray()
    labels = adata.obs["cell_type"].cat.codes.to_numpy() // 2
    enc = fit_encoding(x)
    cells, cand, cand_labels = _stand_in(x, labels, enc)
    result = impute_matrix(x[cells], labels[cells], cand, cand_labels, enc, ImputeParams(n_trials=12))
    return {"x": x[cells], "truth": truth[cells], "labels": labels[cells], "result": result}


def _log_error_at_zeros(pred: np.ndarray, x: np.ndarray, truth: np.ndarray) -> float:
    zeros = x == 0
    return float(np.mean((np.log1p(pred[zeros]) - np.log1p(truth[zeros])) ** 2))


def _label_mean(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    lib = x.sum(1, keepdims=True)
    out = np.zeros_like(x)
    for label in np.unique(labels):
        rows = labels == label
        out[rows] = (x[rows] / lib[rows]).mean(0) * lib[rows]
    return out


def test_imputed_zeros_are_closer_to_the_truth_than_zeros_and_the_label_mean(structured) -> None:  # noqa: ANN001
    x, truth, result = structured["x"], structured["truth"], structured["result"]
    ours = _log_error_at_zeros(result.values, x, truth)
    leave = _log_error_at_zeros(np.zeros_like(x), x, truth)
    label_mean = _log_error_at_zeros(_label_mean(x, structured["labels"]), x, truth)
    # measured: 0.204 vs 0.235 (zeros left) and 0.515 (label mean)
    assert ours < 0.92 * leave
    assert ours < 0.6 * label_mean


def test_zeros_mode_keeps_observed_values_and_output_is_finite(structured) -> None:  # noqa: ANN001
    x, result = structured["x"], structured["result"]
    observed = x > 0
    assert result.values.shape == x.shape and result.values.dtype == np.float32
    assert np.array_equal(result.values[observed], x[observed].astype(np.float32))
    assert result.n_observed_changed == 0
    assert np.all(np.isfinite(result.values)) and np.all(np.isfinite(result.lognorm))
    assert result.values.min() >= 0
    assert 0.5 < result.fraction_zeros_filled <= 1.0
    # the log-normalised layer holds the input's own log-normalised values where observed
    lib = x.sum(1, keepdims=True)
    np.testing.assert_allclose(result.lognorm[observed], np.log1p(x / lib * 1e4)[observed], rtol=1e-5)


def test_tuning_is_a_seeded_validation_and_reproducible(structured) -> None:  # noqa: ANN001
    result = structured["result"]
    assert result.validation == "molecules"
    assert len(result.tuning) == 12
    # the chosen trial is the validation's best: MSE and Poisson loss with the signal guard, not the MSE alone
    assert min(t["objective"] for t in result.tuning) == pytest.approx(
        next(t["objective"] for t in result.tuning if t["k"] == result.k and t["theta_sigma"] == result.theta_sigma)
    )
    assert len({t["k"] for t in result.tuning}) > 3  # the search explores k


def test_same_seed_same_output_and_fixed_parameters_skip_tuning() -> None:
    adata, _ = simulate_counts(n_cells=200, n_genes=60, seed=3)
    x = adata.X.toarray()
    labels = adata.obs["cell_type"].cat.codes.to_numpy()
    enc = fit_encoding(x)
    cells, cand, cand_labels = _stand_in(x, labels, enc)
    params = ImputeParams(n_trials=5, seed=7)
    a = impute_matrix(x[cells], labels[cells], cand, cand_labels, enc, params)
    b = impute_matrix(x[cells], labels[cells], cand, cand_labels, enc, params)
    assert np.array_equal(a.values, b.values) and a.tuning == b.tuning
    sparse = impute_matrix(sp.csr_matrix(x[cells]), labels[cells], cand, cand_labels, enc, params)
    assert np.array_equal(sparse.values, a.values)
    # the same seed: it also fixes the principal components of the neighbour space
    fixed = impute_matrix(
        x[cells], labels[cells], cand, cand_labels, enc, ImputeParams(k=a.k, theta_sigma=a.theta_sigma, seed=7)
    )
    assert fixed.tuning == [] and fixed.validation == "none"
    assert np.array_equal(fixed.values, a.values)


def test_both_modes_predict_a_same_depth_replicate_better_than_the_counts() -> None:
    # molecular cross-validation with a 50/50 split: the held-out half is a replicate of
    # the seen half at the same depth, the quantity the imputation estimates
    adata, _ = simulate_counts(n_cells=400, n_genes=150, dropout_mid=0.0, seed=1)
    train, test = split_counts(adata.X, 0.5, seed=0)
    x = train.toarray()
    labels = adata.obs["cell_type"].cat.codes.to_numpy()
    enc = fit_encoding(x)
    cells, cand, cand_labels = _stand_in(x, labels, enc)
    results = {
        mode: impute_matrix(x[cells], labels[cells], cand, cand_labels, enc, ImputeParams(mode=mode, n_trials=6))
        for mode in ("zeros", "denoise", "posterior")
    }
    assert results["denoise"].n_observed_changed > 0.9 * np.count_nonzero(x[cells])
    held_out = test[np.flatnonzero(cells)]
    outputs = (x[cells], results["zeros"].values, results["denoise"].values)
    none, zeros, denoise = (mcv_mse(held_out, v) for v in outputs)
    # measured: 4.38 (no denoising), 3.91 (zeros), 3.75 (denoise: shrinks each cell toward its
    # neighbours, shrinkage 0.08 tuned, rather than replacing it by their mean, which scored 2.99;
    # 3.36 with the prior's centre a log-scale mean: these stand-in candidates are noisy real
    # cells, whose mean rate is pulled up by shallow cells' single molecules)
    assert zeros < 0.93 * none
    assert denoise < 0.9 * none
    poisson = [mcv_poisson(x[cells], held_out, v) for v in outputs]
    # measured: 1.477, -0.226, -0.550 (log-scale centre: -0.458)
    assert poisson[2] < poisson[1] < poisson[0]
    # posterior: an unbiased prior with the shrinkage estimated per gene has the lowest Poisson loss
    # (measured -0.824; its log-scale MSE, 4.53, is above the counts', as the truth's would be)
    assert mcv_poisson(x[cells], held_out, results["posterior"].values) < poisson[2]


def _one_cell_neighbours(k: int) -> Neighbours:
    return Neighbours(
        index=np.arange(k)[None, :], distance=np.linspace(1.0, 2.0, k, dtype=np.float32)[None, :],
        mu=np.array([1.5]), sigma=np.array([0.3]),
    )


def test_a_zero_is_evidence_of_low_expression() -> None:
    # four neighbours; gene 0: half of them express it highly, half not at all;
    # gene 1: all express it lowly. The cell shows zeros for both.
    cand = np.array([[0.8, 0.1], [0.8, 0.1], [0.0, 0.1], [0.0, 0.1]], dtype=np.float32)
    neigh = _one_cell_neighbours(4)
    w = select_neighbours(neigh, 4, 10.0)
    cell = np.zeros((1, 2), dtype=np.float32)
    est = estimate(cell, cell > 0, np.array([1.0]), cand, neigh, w, scale=8.0, mode="zeros")
    assert est[0, 0] < 0.01 * cand[:, 0].mean()  # exp(-lambda) makes the high neighbours implausible
    assert est[0, 1] == pytest.approx(0.1, rel=1e-5)  # equal weights when the levels are equal


def test_theta_drops_far_candidates_but_keeps_the_nearest() -> None:
    neigh = _one_cell_neighbours(5)  # distances 1.0, 1.25, ... 2.0; theta = 1.5 + t * 0.3
    assert np.count_nonzero(select_neighbours(neigh, 5, 0.0)) == 2
    assert np.count_nonzero(select_neighbours(neigh, 5, 1.0)) == 4
    assert np.count_nonzero(select_neighbours(neigh, 5, -10.0)) == 1
    w = select_neighbours(neigh, 2, 10.0)
    np.testing.assert_allclose(w, [[0.5, 0.5]])


def test_neighbours_are_found_within_the_label_only() -> None:
    rng = np.random.default_rng(0)
    cells = rng.random((6, 10), dtype=np.float32)
    cand = np.concatenate([cells + 0.01, cells + 0.02]).astype(np.float32)
    cand_labels = np.array([0, 0, 0, 1, 1, 1] * 2)
    neigh = find_neighbours(cells, np.array([0, 0, 0, 1, 1, 1]), cand, cand_labels, k_max=3)
    assert np.all(cand_labels[neigh.index] == np.array([0, 0, 0, 1, 1, 1])[:, None])
    assert np.array_equal(neigh.index[:, 0], np.arange(6))  # its own shifted copy is nearest
    assert np.all(np.diff(neigh.distance, axis=1) >= 0)
    # k_max beyond the label's candidates: missing neighbours are marked
    wide = find_neighbours(cells, np.zeros(6, int), cand[:4], np.zeros(4, int), k_max=6)
    assert np.all(wide.index[:, 4:] == -1) and np.all(np.isinf(wide.distance[:, 4:]))


def test_neighbours_by_row_blocks_match_the_whole_encoded_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Encoding block by block (``EncodedRows``), with labels interleaved across blocks and
    candidates not sorted by label, gives the same neighbours and label statistics."""
    import scmaskgan.method.neighbours as neighbours

    adata, _ = simulate_counts(n_cells=300, n_genes=50, seed=4)
    x = sp.csr_matrix(adata.X)
    labels = adata.obs["cell_type"].cat.codes.to_numpy()
    enc = fit_encoding(x)
    unit, _ = encode_rows(x, enc)
    order = np.random.default_rng(0).permutation(150)  # candidates in no label order
    cand, cand_labels = unit[150:][order], labels[150:][order]
    whole = find_neighbours(unit[:150], labels[:150], cand, cand_labels, k_max=7)
    monkeypatch.setattr(neighbours, "_ROW_BLOCK", 32)
    blocks = find_neighbours(EncodedRows(x[:150], enc), labels[:150], cand, cand_labels, k_max=7)
    np.testing.assert_array_equal(blocks.index, whole.index)
    np.testing.assert_allclose(blocks.distance, whole.distance, rtol=1e-6)
    np.testing.assert_allclose(blocks.mu, whole.mu, rtol=1e-6)
    np.testing.assert_allclose(blocks.sigma, whole.sigma, rtol=1e-6)


def _lognorm_impute(**params: object) -> tuple[np.ndarray, ImputeResult]:
    """200 simulated cells x 60 genes given log-normalised: the imputed cells' input and the result."""
    adata, _ = simulate_counts(n_cells=200, n_genes=60, seed=2)
    counts = adata.X.toarray()
    lognorm = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4).astype(np.float32)
    labels = adata.obs["cell_type"].cat.codes.to_numpy()
    enc = fit_encoding(lognorm, input_scale="lognorm")
    cells, cand, cand_labels = _stand_in(lognorm, labels, enc)
    result = impute_matrix(lognorm[cells], labels[cells], cand, cand_labels, enc, ImputeParams(n_trials=4, **params))
    return lognorm[cells], result


def test_lognorm_input_is_tuned_on_hidden_entries_and_returned_on_its_scale() -> None:
    x, result = _lognorm_impute()
    assert result.validation == "entries"
    observed = x > 0
    assert np.array_equal(result.values[observed], x[observed])
    np.testing.assert_allclose(result.values, result.lognorm, rtol=1e-5, atol=1e-6)
    assert result.values[~observed].max() > 0


def test_posterior_mode_on_lognorm_input_denoises_on_the_input_scale_with_an_alpha_per_gene() -> None:
    x, result = _lognorm_impute(mode="posterior")
    assert result.validation == "entries" and np.all(np.isfinite(result.values))
    np.testing.assert_allclose(result.values, result.lognorm, rtol=1e-5, atol=1e-6)
    assert result.n_observed_changed > 0.9 * np.count_nonzero(x)
    alpha = result.shrinkage_per_gene
    assert alpha.shape == (60,) and result.shrinkage == pytest.approx(float(np.median(alpha)))
    assert np.all((alpha >= imputation_module.SHRINKAGE_RANGE[0]) & (alpha <= imputation_module.SHRINKAGE_RANGE[1]))
    assert alpha.min() < alpha.max()  # estimated gene by gene, not one value


def test_denoise_estimates_from_expected_values_on_neighbours_found_among_the_samples(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import scmaskgan.method.imputation as imputation

    adata, _ = simulate_counts(n_cells=200, n_genes=60, seed=3)
    x = adata.X.toarray()
    labels = adata.obs["cell_type"].cat.codes.to_numpy()
    enc = fit_encoding(x)
    cells, cand, cand_labels = _stand_in(x, labels, enc)
    # a stand-in for the generator's expected values: no sampled zeros, every level raised
    expected = np.clip(cand + 0.05, 0.0, 1.0).astype(np.float32)
    searched, estimated = [], []
    find, est = imputation.find_neighbours, imputation.estimate
    monkeypatch.setattr(imputation, "find_neighbours", lambda *a, **k: searched.append(a[2]) or find(*a, **k))
    monkeypatch.setattr(imputation, "estimate", lambda *a, **k: estimated.append(a[3]) or est(*a, **k))
    fixed = {"k": 5, "theta_sigma": 3.0, "shrinkage": 1.0, "seed": 0}
    out = {
        (mode, given): impute_matrix(
            x[cells], labels[cells], cand, cand_labels, enc, ImputeParams(mode=mode, **fixed),
            expected if given else None,
        ).values
        for mode in ("zeros", "denoise") for given in (False, True)
    }
    assert searched and all(found is cand for found in searched)  # neighbours: always among the sampled candidates
    assert estimated and any(used is expected for used in estimated)
    assert np.array_equal(out["zeros", True], out["zeros", False])  # zeros mode fills from the samples
    assert out["denoise", True].mean() > 1.02 * out["denoise", False].mean()
    with pytest.raises(InputError, match="expected values"):
        impute_matrix(x[cells], labels[cells], cand, cand_labels, enc, ImputeParams(mode="denoise", **fixed),
                      expected[:, :10])


def test_bad_input_is_refused_with_a_clear_message() -> None:
    x = np.array([[1.0, 0.0], [0.0, 2.0]], dtype=np.float32)
    enc = fit_encoding(x)
    cand = np.full((2, 2), 0.5, dtype=np.float32)
    fixed = ImputeParams(k=1, theta_sigma=1.0)
    with pytest.raises(StepError, match="label 1 has no retained candidates"):
        impute_matrix(x, np.array([0, 1]), cand, np.array([0, 0]), enc, fixed)
    with pytest.raises(InputError, match="gene counts differ"):
        impute_matrix(x, np.array([0, 0]), cand[:, :1], np.array([0, 0]), enc, fixed)
    with pytest.raises(InputError, match="non-negative"):
        impute_matrix(-x, np.array([0, 0]), cand, np.array([0, 0]), enc, fixed)
    with pytest.raises(InputError, match="parameter k=0 must be >= 1"):  # ImputeParams checks its range
        impute_matrix(x, np.array([0, 0]), cand, np.array([0, 0]), enc, ImputeParams(k=0, theta_sigma=1.0))
    with pytest.raises(InputError, match="holdout_fraction"):
        impute_matrix(x, np.array([0, 0]), cand, np.array([0, 0]), enc, ImputeParams(holdout_fraction=1.0))


def test_impute_step_writes_the_contract_files(tmp_path) -> None:  # noqa: ANN001
    import json

    import anndata as ad
    import pandas as pd

    from scmaskgan.core.config import FilterParams
    from scmaskgan.io.counts import LABEL_COLUMN
    from scmaskgan.io.h5ad import write_h5ad
    from scmaskgan.method.generate import write_candidates
    from scmaskgan.method.images_h5 import ImageStore
    from scmaskgan.pipeline import steps

    adata, _ = simulate_counts(n_cells=160, n_genes=40, seed=5)
    qc = ad.AnnData(X=adata.X, obs=pd.DataFrame(index=adata.obs_names), var=pd.DataFrame(index=adata.var_names))
    qc.obs[LABEL_COLUMN] = adata.obs["cell_type"].to_numpy()
    qc.uns["scmaskgan_qc"] = {"input_scale": "counts", "label_source": "obs:cell_type"}
    qc_path = write_h5ad(qc, tmp_path / "s.qc.h5ad")
    images = steps.prepare(qc_path, tmp_path, "s")["images"]
    with ImageStore(images) as store:  # stand-in candidates: the encoded cells, shifted a little
        unit, _ = store.vectors()
        enc, names, genes, labels = store.encoding, store.label_names, store.genes, store.labels
    cand = np.clip(unit + 0.02, 0, 1).astype(np.float32)
    write_candidates(tmp_path / "s.candidates.h5", cand, labels, names, genes, enc, {})
    filtered = steps.filter_candidates(tmp_path / "s.candidates.h5", images, tmp_path, "s", FilterParams(n_estimators=20))
    out = steps.impute(qc_path, images, filtered["filtered"], tmp_path, "s", ImputeParams(n_trials=3))

    result = ad.read_h5ad(out["h5ad"])
    x = adata.X.toarray()
    assert result.shape == adata.shape and list(result.var_names) == list(adata.var_names)
    assert result.X.dtype == np.float32 and np.array_equal(result.X[x > 0], x[x > 0])
    assert np.array_equal(result.layers["counts"].toarray(), x)
    assert result.layers["imputed_lognorm"].shape == x.shape
    assert list(result.obs[LABEL_COLUMN].astype(str)) == list(adata.obs["cell_type"].astype(str))
    record = json.loads(out["json"].read_text())
    assert record["label_source"] == "obs:cell_type" and record["n_observed_changed"] == 0
    assert record["k"] == result.uns["scmaskgan"]["k"] and len(record["tuning"]["mse"]) == 3

    other_genes = [f"OTHER{j}" for j in range(len(genes))]
    write_candidates(tmp_path / "t.candidates.h5", cand, labels, names, other_genes, enc, {})
    with pytest.raises(InputError, match="was not made from"):  # FILTER checks the images are the candidates'
        steps.filter_candidates(tmp_path / "t.candidates.h5", images, tmp_path, "t", FilterParams(n_estimators=20))
    wrong = steps.filter_candidates(
        tmp_path / "t.candidates.h5", None, tmp_path, "t", FilterParams(n_estimators=20, reference="candidates")
    )
    with pytest.raises(InputError, match="was not made from"):
        steps.impute(qc_path, images, wrong["filtered"], tmp_path, "s", ImputeParams(n_trials=3))
