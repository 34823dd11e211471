"""Evaluation metrics against hand-computed cases, one imputation pair end to end, and MCV."""

from __future__ import annotations

import json
import math

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scmaskgan import api
from scmaskgan.analysis import evaluate as ev
from scmaskgan.analysis import imputation_metrics as im
from scmaskgan.analysis.false_signal import correlation_inflation
from scmaskgan.api import impute_copy
from scmaskgan.cli import main
from scmaskgan.core.matrix import IMPUTED_LOGNORM, lognormalise_nonnegative
from scmaskgan.errors import InputError, StepError
from scmaskgan.method import mcv
from scmaskgan.method.quality import correlation_similarity


# ------------------------------------------------------------------ each metric, by hand
def test_lognormalise_scales_each_cell_to_target_sum_and_clips_negatives():
    out = lognormalise_nonnegative(sp.csr_matrix([[1.0, 3.0, -2.0], [0.0, 0.0, 0.0]]), target_sum=4)
    np.testing.assert_allclose(out, [[math.log(2), math.log(4), 0], [0, 0, 0]])


def test_zscores_and_outlier_fraction():
    x = np.array([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]])
    z = im.zscores(x)
    np.testing.assert_allclose(z[:, 0], [-math.sqrt(1.5), 0, math.sqrt(1.5)])
    np.testing.assert_array_equal(z[:, 1], 0)  # constant gene
    # one spike among 11 cells has z = sqrt(10) > 3, everything else |z| < 1
    spike = np.zeros((11, 1))
    spike[0] = 100
    assert im.zscores(spike)[0, 0] == pytest.approx(math.sqrt(10))
    assert im.zscore_outlier_fraction(spike) == pytest.approx(1 / 11)


def test_coefficient_of_variation():
    cv = im.coefficient_of_variation(np.array([[1.0, 0.0, 2.0], [3.0, 0.0, 2.0]]))
    assert cv[0] == pytest.approx(0.5)  # mean 2, std 1
    assert math.isnan(cv[1])  # mean 0
    assert cv[2] == 0


def test_wasserstein_is_the_mean_over_genes():
    original = np.array([[0.0, 1.0], [0.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    imputed = np.array([[0.0, 1.0], [1.0, 2.0], [1.0, 3.0], [1.0, 4.0]])
    # gene 0: a quarter of the mass moves by 1; gene 1 unchanged
    assert im.wasserstein(original, imputed) == pytest.approx(0.125)
    assert im.wasserstein(original, original) == 0


def test_jensen_shannon_against_the_definition():
    original = np.array([[0.0], [0.0], [1.0], [1.0]])
    imputed = np.zeros((4, 1))
    # two bins over [0, 1]: p = (1/2, 1/2), q = (1, 0), m = (3/4, 1/4)
    kl_pm = 0.5 * math.log2(0.5 / 0.75) + 0.5 * math.log2(0.5 / 0.25)
    kl_qm = math.log2(1 / 0.75)
    expected = math.sqrt(0.5 * kl_pm + 0.5 * kl_qm)
    assert im.jensen_shannon(original, imputed, bins=2) == pytest.approx(expected)
    assert im.jensen_shannon(original, original, bins=2) == 0
    with pytest.raises(InputError, match="shapes differ"):
        im.jensen_shannon(original, np.zeros((3, 1)))


def test_pearson_per_cell():
    original = np.array([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 1.0, 1.0]])
    imputed = np.array([[2.0, 4.0, 6.0], [3.0, 2.0, 1.0], [1.0, 2.0, 3.0]])
    r = im.pearson_per_cell(original, imputed)
    np.testing.assert_allclose(r[:2], [1.0, -1.0])
    assert math.isnan(r[2])  # a constant profile has no correlation


def test_gene_correlation_and_its_similarity():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(200, 1))
    x = np.hstack([base, base * 2 + 0.1 * rng.normal(size=(200, 1)), rng.normal(size=(200, 1))])
    corr = im.gene_correlation(x, [0, 1, 2])
    assert corr.shape == (3, 3)
    assert corr[0, 1] > 0.99 and abs(corr[0, 2]) < 0.2
    assert correlation_similarity(corr, corr) == pytest.approx(1.0)
    shuffled = np.column_stack([x[:, 0], rng.permutation(x[:, 1]), x[:, 2]])
    assert correlation_similarity(corr, im.gene_correlation(shuffled, [0, 1, 2])) < 0.9
    np.testing.assert_array_equal(im.top_variable_genes(x, 2), [1, 2])


def test_clustering_scores_by_hand():
    labels = ["a", "a", "b", "b", "c", "c"]
    clusters = [1, 1, 0, 0, 0, 2]
    np.testing.assert_array_equal(im.match_clusters(labels, clusters), ["a", "a", "b", "b", "b", "c"])
    scores = im.clustering_scores(labels, clusters)
    assert scores["acc"] == pytest.approx(5 / 6)
    # F1 per label: a 1, b (P 2/3, R 1) 0.8, c (P 1, R 1/2) 2/3
    assert scores["f1"] == pytest.approx((1 + 0.8 + 2 / 3) / 3)
    # binary one-vs-rest AUC = (TPR + TNR) / 2: a 1, b (1 + 3/4) / 2, c (1/2 + 1) / 2
    assert scores["auc"] == pytest.approx((1 + 0.875 + 0.75) / 3)
    assert scores["n_clusters"] == 3
    assert 0 < scores["ari"] < 1 and 0 < scores["nmi"] < 1


def test_clustering_scores_perfect_and_over_split():
    perfect = im.clustering_scores(["x", "x", "y", "y"], ["7", "7", "3", "3"])
    assert perfect == {"acc": 1.0, "auc": 1.0, "f1": 1.0, "ari": 1.0, "nmi": 1.0, "n_clusters": 2.0}
    # four singleton clusters for two labels: only two clusters can be matched
    assert im.clustering_scores(["x", "x", "y", "y"], [0, 1, 2, 3])["acc"] == 0.5


def test_knn_overlap_and_silhouette():
    rng = np.random.default_rng(0)
    emb = rng.normal(size=(60, 2))
    assert im.knn_overlap(emb, emb * 3 + 1, k=5) == 1.0
    assert im.knn_overlap(emb, rng.normal(size=(60, 2)), k=5) < 0.3
    labels = np.repeat(["a", "b"], 30)
    separated = emb + np.where(labels == "a", 0, 20)[:, None]
    assert im.label_silhouette(separated, labels) > 0.8
    assert math.isnan(im.label_silhouette(emb, np.repeat("a", 60)))


def test_imputation_changes():
    original = sp.csr_matrix([[0.0, 2.0], [3.0, 0.0]])
    changes = im.imputation_changes(original, np.array([[0.5, 2.0], [3.0, 0.0]]))
    assert changes == {
        "fraction_zeros_original": 0.5, "fraction_zeros_filled": 0.5,
        "n_observed_changed": 0.0, "max_observed_change": 0.0,
    }
    denoised = im.imputation_changes(original, np.array([[0.5, 2.5], [3.0, 0.0]]))
    assert denoised["n_observed_changed"] == 1 and denoised["max_observed_change"] == 0.5


# ------------------------------------------------------------------ one pair, end to end
def _noisy_fill(adata: ad.AnnData, seed: int = 0) -> ad.AnnData:
    """A crude 'imputation': zeros filled with small random values, observed counts kept."""
    out = adata.copy()
    x = out.X.toarray()
    zero = x == 0
    x[zero] = np.random.default_rng(seed).random(zero.sum()) * 0.3
    out.X = sp.csr_matrix(x)
    return out


def _self_labelled(imputed: ad.AnnData) -> ad.AnnData:
    """Record that the method computed its own labels (as ``scmaskgan impute`` without a label key)."""
    imputed.uns["scmaskgan"] = {"label_source": "leiden"}
    return imputed


def test_evaluate_identity_is_perfect(simulated):
    adata, _ = simulated
    result = ev.evaluate_imputation(adata, _self_labelled(adata.copy()), label_key="cell_type")
    m = result.metrics
    assert m["wasserstein"] == 0 and m["jensen_shannon"] == 0
    assert m["pearson_cell_median"] == pytest.approx(1.0)
    assert m["gene_correlation_similarity"] == pytest.approx(1.0)
    assert m["fraction_zeros_filled"] == 0 and m["n_observed_changed"] == 0
    assert m["abs_corr_p95_inflation"] == 0 and m["abs_corr_p95_original"] > 0
    assert m["acc_original"] == m["acc_imputed"]
    # three well-separated simulated types: Leiden recovers them
    assert m["ari_original"] > 0.8


def test_evaluate_ranks_a_scrambled_imputation_below_a_mild_one(simulated):
    adata, _ = simulated
    mild = ev.evaluate_imputation(adata, _self_labelled(_noisy_fill(adata)), label_key="cell_type").metrics
    scrambled = adata.copy()
    rng = np.random.default_rng(1)
    scrambled.X = sp.csr_matrix(np.apply_along_axis(rng.permutation, 1, adata.X.toarray()))
    bad = ev.evaluate_imputation(adata, _self_labelled(scrambled), label_key="cell_type").metrics
    assert mild["fraction_zeros_filled"] == 1.0 and mild["n_observed_changed"] == 0
    assert bad["pearson_cell_median"] < mild["pearson_cell_median"]
    assert bad["gene_correlation_similarity"] < mild["gene_correlation_similarity"]
    assert bad["umap_knn_overlap"] < mild["umap_knn_overlap"]
    assert bad["ari_imputed"] < mild["ari_imputed"]


def test_clustering_status_is_accuracy_only_for_labels_kept_from_the_method():
    assert im.clustering_status("cell_type", "leiden")["status"] == "accuracy"
    given = im.clustering_status("cell_type", "obs:cell_type")
    assert given["status"] == "circular" and given["suffix"] == "_circular"
    assert given["reason"].startswith("circular: labels were given to the method")
    assert im.clustering_status("cell_type", "csv:labels.csv")["status"] == "circular"
    assert im.clustering_status("scmaskgan_label", "leiden")["status"] == "circular"  # its own Leiden labels
    assert im.clustering_status("cell_type", None)["status"] == "unverified"


@pytest.mark.parametrize("source, status", [("obs:cell_type", "circular"), ("leiden", "accuracy"), (None, "unverified")])
def test_evaluate_reports_clustering_as_accuracy_only_without_given_labels(simulated, tmp_path, source, status):
    adata, _ = simulated
    imputed = _noisy_fill(adata)
    if source is not None:
        imputed.uns["scmaskgan"] = {"label_source": source}
    result = ev.evaluate_imputation(adata, imputed, label_key="cell_type")
    assert result.info["clustering"]["status"] == status
    suffix = "" if status == "accuracy" else f"_{status}"
    for score in im.LABEL_SCORES:
        for side in ("original", "imputed"):
            assert f"{score}_{side}{suffix}" in result.metrics
            assert (f"{score}_{side}" in result.metrics) == (status == "accuracy")
    assert "n_clusters_imputed" in result.metrics  # a count, not a score against the labels
    paths = ev.write_evaluation(result, tmp_path, "s")
    names = [row.split(",")[0] for row in paths["csv"].read_text().splitlines()]
    assert f"ari_imputed{suffix}" in names
    assert json.loads(paths["json"].read_text())["clustering"]["status"] == status


def test_evaluate_reads_a_scmaskgan_output_through_its_own_log_normalised_layer(simulated):
    """A scmaskgan output is log-normalised by each cell's observed library size (its
    ``imputed_lognorm`` layer), any other output by its own totals."""
    adata, _ = simulated
    imputed = _noisy_fill(adata)
    observed_lib = np.asarray(adata.X.sum(1)).ravel()
    by_observed = np.log1p(imputed.X.toarray() / observed_lib[:, None] * 1e4)
    genes = ["GENE5", "GENE6", "GENE7"]
    plain = ev.evaluate_imputation(adata, imputed, genes=genes).metrics
    imputed.layers[IMPUTED_LOGNORM] = by_observed
    layered = ev.evaluate_imputation(adata, imputed, genes=genes).metrics
    original = lognormalise_nonnegative(adata.X)
    assert layered["abs_corr_p95_imputed"] == pytest.approx(correlation_inflation(original, by_observed)["abs_corr_p95_imputed"])
    own_totals = correlation_inflation(original, lognormalise_nonnegative(imputed.X))["abs_corr_p95_imputed"]
    assert plain["abs_corr_p95_imputed"] == pytest.approx(own_totals)
    assert layered["abs_corr_p95_imputed"] != pytest.approx(own_totals)  # the fill changed the totals


def test_evaluate_aligns_by_names_and_checks_inputs(simulated):
    adata, _ = simulated
    subset = adata[10:, 5:].copy()  # as after QC: fewer cells and genes
    result = ev.evaluate_imputation(adata, subset, genes=["GENE5", "GENE6", "GENE7"])
    assert (result.info["n_cells"], result.info["n_genes"]) == (subset.n_obs, subset.n_vars)
    assert result.info["label_key"] is None and "acc_imputed" not in result.metrics
    with pytest.raises(InputError, match="GENE0"):
        ev.evaluate_imputation(adata, subset, genes=["GENE0"])
    with pytest.raises(InputError, match="'nope'"):
        ev.evaluate_imputation(adata, subset, label_key="nope")
    renamed = subset.copy()
    renamed.obs_names = [f"x{i}" for i in range(renamed.n_obs)]
    with pytest.raises(InputError, match="share 0 cells"):
        ev.evaluate_imputation(adata, renamed)


def test_cli_evaluate_writes_metrics_and_figures(pbmc_counts, tmp_path):
    original = pbmc_counts[:250].copy()
    imputed = _noisy_fill(original)
    imputed.obs["scmaskgan_label"] = imputed.obs["cell_type"]
    original.write_h5ad(tmp_path / "pbmc.h5ad")
    imputed.write_h5ad(tmp_path / "pbmc.imputed.h5ad")
    out = tmp_path / "eval"
    assert main(["evaluate", str(tmp_path / "pbmc.h5ad"), str(tmp_path / "pbmc.imputed.h5ad"), "--outdir", str(out)]) == 0
    record = json.loads((out / "pbmc.evaluation.json").read_text())
    assert record["label_key"] == "scmaskgan_label" and record["n_cells"] == 250
    assert record["metrics"]["n_observed_changed"] == 0
    assert 0.5 < record["metrics"]["pearson_cell_median"] < 1
    csv_rows = (out / "pbmc.evaluation.csv").read_text().splitlines()
    assert csv_rows[0] == "metric,value" and len(csv_rows) == len(record["metrics"]) + 1
    for fig in ("eval_umap", "eval_zscore", "eval_cv", "eval_gene_correlation"):
        assert (out / f"pbmc.{fig}.png").read_bytes()[:4] == b"\x89PNG"


def test_cli_evaluate_errors_are_one_line(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "missing.h5ad"), str(tmp_path / "x.h5ad")]) == 2
    assert main(["evaluate", str(tmp_path / "missing.h5ad")]) == 2
    err = capsys.readouterr().err
    assert "scmaskgan: error:" in err and "Traceback" not in err


# ------------------------------------------------------------------ molecular cross-validation
def test_mcv_split_keeps_every_count(pbmc_counts):
    train, test = mcv.split_counts(pbmc_counts.X, seed=0)
    assert (train + test != pbmc_counts.X).nnz == 0
    assert train.sum() / pbmc_counts.X.sum() == pytest.approx(0.9, abs=0.005)


def _knn_smooth(adata: ad.AnnData, *, mode: str, label_key: str | None, seed: int, k: int = 15) -> ad.AnnData:
    """kNN smoothing of log-normalised counts (docs/evaluation.md's peer), as a stand-in imputer."""
    from sklearn.decomposition import PCA
    from sklearn.neighbors import NearestNeighbors

    x = adata.X.toarray()
    pcs = PCA(30, random_state=seed).fit_transform(lognormalise_nonnegative(x))
    idx = NearestNeighbors(n_neighbors=k).fit(pcs).kneighbors(pcs, return_distance=False)
    smooth = x[idx].mean(axis=1)
    return ad.AnnData(X=smooth if mode == "denoise" else np.where(x > 0, x, smooth))


def test_mcv_controls_rank_and_reference_numbers(pbmc_counts):
    rows = {r["method"]: r for r in ev.run_mcv(pbmc_counts, imputer=_knn_smooth)}
    assert list(rows) == ["no denoising", "scMASKGAN (zeros)", "scMASKGAN (denoise)", "perfect (test counts)"]
    none, perfect = rows["no denoising"], rows["perfect (test counts)"]
    assert perfect["mse"] == 0 and perfect["mse"] < none["mse"]
    assert perfect["poisson"] < none["poisson"]
    # docs/evaluation.md's reference numbers on the same data and split
    assert none["mse"] == pytest.approx(3.408, abs=1e-3) and none["poisson"] == pytest.approx(0.379, abs=1e-3)
    # kNN smoothing beats no denoising on Poisson (0.197 in docs/evaluation.md's table)
    assert rows["scMASKGAN (denoise)"]["poisson"] < none["poisson"]
    assert rows["scMASKGAN (denoise)"]["seconds"] > 0


def test_mcv_rejects_bad_modes_and_dropped_cells(pbmc_counts):
    small = pbmc_counts[:50].copy()
    with pytest.raises(InputError, match="'best'"):
        ev.run_mcv(small, modes=["best"], imputer=_knn_smooth)

    def drops_a_cell(adata, **_):
        return adata[1:].copy()

    with pytest.raises(StepError, match="every cell and gene"):
        ev.run_mcv(small, modes=["zeros"], imputer=drops_a_cell)


@pytest.mark.slow
def test_mcv_with_scmaskgan_impute(pbmc_counts):
    """The real public API in every mode (a tiny, briefly trained model)."""
    quick = {"epochs": 2, "min_epochs": 1, "cells_per_epoch": 256, "impute_n_trials": 3, "min_candidates": 30, "device": "cpu",
             "threads": 1, "impute_mode": "ignored", "seed": 5}
    rows = {r["method"]: r for r in ev.run_mcv(
        pbmc_counts[:200].copy(), modes=ev.IMPUTE_MODES, label_key="cell_type", imputer=impute_copy,
        impute_kwargs=quick)}
    none = rows["no denoising"]
    for mode in ev.IMPUTE_MODES:
        # filling zeros with neighbour estimates already beats the raw train counts on Poisson
        assert rows[f"scMASKGAN ({mode})"]["poisson"] < none["poisson"]
    assert rows["scMASKGAN (denoise)"]["mse"] < none["mse"]
    assert rows["perfect (test counts)"]["mse"] == 0


def test_cli_mcv_writes_json_and_csv(pbmc_counts, tmp_path, monkeypatch):
    pbmc_counts.write_h5ad(tmp_path / "pbmc.h5ad")
    monkeypatch.setattr(api, "impute_copy", _knn_smooth)
    out = tmp_path / "mcv"
    assert main(["evaluate", "--mcv", str(tmp_path / "pbmc.h5ad"), "--modes", "zeros", "--outdir", str(out)]) == 0
    record = json.loads((out / "pbmc.mcv.json").read_text())
    assert [r["method"] for r in record["mcv"]] == ["no denoising", "scMASKGAN (zeros)", "perfect (test counts)"]
    assert record["p_train"] == 0.9
    assert (out / "pbmc.mcv.csv").read_text().startswith("method,mse,poisson,seconds\n")
    # with labels, the csv carries the within-label signal the json has (the label-mean baseline: 0)
    labelled = tmp_path / "labelled"
    assert main(["evaluate", "--mcv", str(tmp_path / "pbmc.h5ad"), "--modes", "zeros", "--label-key", "cell_type",
                 "--outdir", str(labelled)]) == 0
    table = pd.read_csv(labelled / "pbmc.mcv.csv").set_index("method")
    assert list(table.columns) == ["mse", "poisson", "seconds", "within_label_signal"]
    assert table.loc["label-mean baseline", "within_label_signal"] == pytest.approx(0.0, abs=1e-6)
    assert table.loc["no denoising", "within_label_signal"] > 0.05
