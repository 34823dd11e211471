"""INTEGRATE: real PBMC cells split into samples with a seeded batch effect, integrated with Harmony."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from sklearn.decomposition import PCA
from sklearn.neighbors import NearestNeighbors

from scmaskgan.analysis.integration_inputs import read_imputed, read_sample_metadata, sample_id_from_imputed
from scmaskgan.core.config import IntegrateParams
from scmaskgan.errors import InputError
from scmaskgan.pipeline import steps

#: Small, fast analysis settings (765 genes, ~230 cells per sample).
FAST = {"n_hvg": 400, "n_pcs": 15, "n_neighbors": 15, "leiden_resolution": 0.8, "seed": 0}
#: Margins the Harmony-corrected embedding must meet against the uncorrected PCA.
MIN_ILISI_GAIN = 0.5  # median iLISI (effective number of samples around a cell, 1..3)
MIN_BATCH_ASW_GAIN = 0.02
MAX_LABEL_ASW_DROP = 0.05
MAX_ARI_DROP = 0.1


def knn_fill_zeros(counts: np.ndarray, k: int = 10, seed: int = 0) -> np.ndarray:
    """Stand-in imputation: zeros get the mean of the k nearest cells (PCA of log-normalised counts).

    Observed counts are kept, as in scMASKGAN's zeros mode.
    """
    lib = counts.sum(axis=1, keepdims=True)
    logn = np.log1p(counts / np.maximum(lib, 1) * 1e4)
    emb = PCA(n_components=min(20, counts.shape[0] - 1), random_state=seed).fit_transform(logn)
    _, idx = NearestNeighbors(n_neighbors=k + 1).fit(emb).kneighbors(emb)
    smooth = counts[idx[:, 1:]].mean(axis=1)
    return np.where(counts > 0, counts, smooth).astype(np.float32)


def write_imputed_samples(
    pbmc: ad.AnnData, folder: Path, n_samples: int = 3, effect: float = 0.7, seed: int = 0
) -> list[Path]:
    """Split real PBMCs into ``n_samples`` IMPUTE-like files with a seeded batch effect.

    Every sample's counts are multiplied by its own gene-wise factors ``lognormal(0, effect)``
    and rounded (the batch effect), then "imputed" with :func:`knn_fill_zeros`. Files follow
    the IMPUTE contract: X imputed (float32), ``layers['counts']``, ``layers['imputed_lognorm']``,
    ``obs['scmaskgan_label']``, ``uns['scmaskgan']``.
    """
    rng = np.random.default_rng(seed)
    assignment = rng.permutation(pbmc.n_obs) % n_samples
    dense = pbmc.X.toarray()
    paths = []
    for s in range(n_samples):
        rows = assignment == s
        counts = np.round(dense[rows] * rng.lognormal(0.0, effect, size=pbmc.n_vars)).astype(np.float32)
        imputed = knn_fill_zeros(counts, seed=seed)
        lib = counts.sum(axis=1, keepdims=True)  # IMPUTE normalises by the observed library size
        sample = ad.AnnData(
            X=imputed,
            obs=pd.DataFrame({"scmaskgan_label": pbmc.obs["cell_type"].to_numpy()[rows]},
                             index=pbmc.obs_names[rows]),
            var=pd.DataFrame(index=pbmc.var_names),
            layers={"counts": sp.csr_matrix(counts),
                    "imputed_lognorm": np.log1p(imputed / np.maximum(lib, 1) * 1e4)},
            uns={"scmaskgan": {"label_source": "obs:cell_type", "mode": "zeros", "seed": seed}},
        )
        sample.obs["scmaskgan_label"] = sample.obs["scmaskgan_label"].astype("category")
        path = folder / f"P{s + 1}.imputed.h5ad"
        sample.write_h5ad(path)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def integrated(tmp_path_factory, pbmc_counts_session) -> tuple[dict[str, Path], list[Path]]:
    folder = tmp_path_factory.mktemp("integrate")
    files = write_imputed_samples(pbmc_counts_session, folder)
    sheet = folder / "samplesheet.csv"
    sheet.write_text("sample,path,batch,risk\nP1,x.h5ad,run1,high\nP2,x.h5ad,run0,low\nP3,x.h5ad,run1,low\n")
    params = IntegrateParams(markers="LYZ,MS4A1,NKG7,NOT_A_GENE", **FAST)
    return steps.integrate(files, folder / "out", params, sheet), files


def _metric(metrics: pd.DataFrame, data: str, stage: str, column: str) -> float:
    row = metrics[(metrics["data"] == data) & (metrics["stage"] == stage)]
    assert len(row) == 1, (data, stage)
    return float(row[column].iloc[0])


def test_harmony_mixes_batches_and_keeps_cell_types(integrated):
    outputs, _ = integrated
    metrics = pd.read_csv(outputs["metrics"])
    assert set(zip(metrics["data"], metrics["stage"], strict=True)) == {
        (d, s) for d in ("original", "imputed") for s in ("uncorrected", "corrected")
    }
    for data in ("original", "imputed"):
        get = lambda stage, col, d=data: _metric(metrics, d, stage, col)  # noqa: E731
        assert get("uncorrected", "ilisi") < 2.0  # the simulated batch effect separates the samples
        assert get("corrected", "ilisi") >= get("uncorrected", "ilisi") + MIN_ILISI_GAIN
        assert get("corrected", "batch_asw") >= get("uncorrected", "batch_asw") + MIN_BATCH_ASW_GAIN
        assert get("corrected", "label_asw") >= get("uncorrected", "label_asw") - MAX_LABEL_ASW_DROP
        assert get("corrected", "ari") >= get("uncorrected", "ari") - MAX_ARI_DROP
    assert set(metrics["space"]) == {"X_pca", "X_pca_harmony"}


@pytest.mark.parametrize(
    "method", ["combat", pytest.param("scanorama", marks=pytest.mark.slow), pytest.param("bbknn", marks=pytest.mark.slow)]
)
def test_alternative_corrections_mix_batches(integrated, method):
    if method != "combat":
        pytest.importorskip(method)
    from scmaskgan.analysis.integrate import analyse, lognormalised_layer
    from scmaskgan.analysis.integration_inputs import concat_samples

    combined = concat_samples(read_imputed(integrated[1]))
    labels = combined.obs["scmaskgan_label"].astype(str).to_numpy()
    result = analyse(lognormalised_layer(combined, "counts"), IntegrateParams(method=method, **FAST), labels=labels,
                     data="original")
    uncorrected, corrected = result.metrics
    assert corrected["method"] == method
    if method == "bbknn":  # a corrected graph, not an embedding: both are scored on their UMAPs
        assert uncorrected["space"] == corrected["space"] == "X_umap"
    assert corrected["ilisi"] >= uncorrected["ilisi"] + MIN_ILISI_GAIN
    assert corrected["label_asw"] >= uncorrected["label_asw"] - MAX_LABEL_ASW_DROP
    assert corrected["ari"] >= uncorrected["ari"] - MAX_ARI_DROP


def test_missing_optional_method_names_the_extra(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "bbknn", None)  # makes `import bbknn` fail
    a = _tiny(tmp_path / "A.imputed.h5ad", ["CD3E", "LYZ", "NKG7"], [f"c{i}" for i in range(6)])
    b = _tiny(tmp_path / "B.imputed.h5ad", ["CD3E", "LYZ", "NKG7"], [f"c{i}" for i in range(6)])
    with pytest.raises(InputError, match=r"pip install 'scmaskgan\[integration\]'"):
        steps.integrate([a, b], tmp_path / "out", IntegrateParams(method="bbknn", n_pcs=2, n_neighbors=3))


def test_integrated_h5ad_holds_both_analyses(integrated, pbmc_counts_session):
    outputs, files = integrated
    adata = ad.read_h5ad(outputs["h5ad"])
    assert adata.n_obs == pbmc_counts_session.n_obs and adata.n_vars == pbmc_counts_session.n_vars
    assert list(adata.obs["sample"].cat.categories) == ["P1", "P2", "P3"]
    risk = adata.obs.groupby("sample", observed=True)["risk"].first().to_dict()
    assert risk == {"P1": "high", "P2": "low", "P3": "low"}
    assert set(adata.obs["batch"]) == {"run0", "run1"}
    for key in ("X_pca", "X_pca_harmony", "X_umap", "X_pca_original", "X_pca_harmony_original", "X_umap_original"):
        assert adata.obsm[key].shape[0] == adata.n_obs and np.isfinite(adata.obsm[key]).all(), key
    assert adata.obs["leiden"].nunique() >= 3 and adata.obs["leiden_original"].nunique() >= 3
    first = ad.read_h5ad(files[0])
    cells = [f"{c}-P1" for c in first.obs_names]
    np.testing.assert_array_equal(adata[cells].layers["counts"].toarray(), first.layers["counts"].toarray())
    np.testing.assert_allclose(np.asarray(adata[cells].layers["imputed"]), first.X)
    # both analyses normalise by the observed library size: for one sample, IMPUTE's own layer
    np.testing.assert_allclose(adata[cells].X.toarray() if sp.issparse(adata.X) else adata[cells].X,
                               first.layers["imputed_lognorm"], rtol=1e-5, atol=1e-5)
    info = adata.uns["scmaskgan_integrate"]
    assert info["labels_shared"] and info["corrected_key"] == "X_pca_harmony"
    assert "marker genes not found: NOT_A_GENE" in info["notes"]


def test_markers_and_gene_changes(integrated):
    outputs, _ = integrated
    markers = pd.read_csv(outputs["markers"])
    assert set(markers["data"]) == {"imputed", "original"}
    assert (markers.groupby(["data", "cluster"])["rank"].max() <= 25).all()
    # monocyte markers must rank first in some imputed cluster
    top = markers[(markers["data"] == "imputed") & (markers["rank"] <= 5)]
    assert {"LYZ", "CST3", "S100A9", "FCER1G"} & set(top["gene"])
    changes = pd.read_csv(outputs["genes"])
    assert list(dict.fromkeys(changes["gene"])) == ["LYZ", "MS4A1", "NKG7"]
    assert set(changes["sample"]) == {"all", "P1", "P2", "P3"}
    # the stand-in keeps observed counts: only zeros change, so detection can only rise
    assert (changes["observed_changed"] == 0).all()
    assert (changes["detected_imputed"] >= changes["detected_original"]).all()
    assert (changes["mean_imputed"] >= changes["mean_original"] - 1e-9).all()
    lyz = changes[(changes["gene"] == "LYZ") & (changes["sample"] == "all")].iloc[0]
    assert lyz["original_mean_quantile"] > 0.95
    figures = outputs["figures"]
    for name in ("umap.png", "marker_dotplot.png", "marker_violin.png", "marker_umap.png"):
        assert (figures / name).stat().st_size > 10_000, name


def test_single_sample_is_analysed_without_integration(tmp_path, pbmc_counts_session):
    files = write_imputed_samples(pbmc_counts_session[:300].copy(), tmp_path, n_samples=1)
    outputs = steps.integrate(files, tmp_path / "out", IntegrateParams(**FAST))
    metrics = pd.read_csv(outputs["metrics"])
    assert list(metrics["stage"]) == ["uncorrected", "uncorrected"]
    assert metrics["note"].str.contains("integration skipped").all()
    assert metrics["ilisi"].isna().all() and metrics["ari"].notna().all()
    adata = ad.read_h5ad(outputs["h5ad"])
    assert "X_pca_harmony" not in adata.obsm and adata.obs["leiden"].nunique() >= 3
    assert len(pd.read_csv(outputs["markers"])) > 0
    assert (outputs["figures"] / "umap.png").exists()


def _tiny(path: Path, genes: list[str], cells: list[str]) -> Path:
    counts = sp.csr_matrix(np.ones((len(cells), len(genes)), dtype=np.float32))
    ad.AnnData(X=counts.toarray(), obs=pd.DataFrame(index=cells), var=pd.DataFrame(index=genes),
               layers={"counts": counts}).write_h5ad(path)
    return path


def test_samples_without_shared_genes_are_named(tmp_path):
    a = _tiny(tmp_path / "A.imputed.h5ad", ["CD3E", "LYZ"], ["c1", "c2"])
    b = _tiny(tmp_path / "B.imputed.h5ad", ["ENSG01", "ENSG02"], ["c1", "c2"])
    for join in ("inner", "outer"):
        with pytest.raises(InputError, match="samples 'A' and 'B' share no gene"):
            steps.integrate([a, b], tmp_path / "out", IntegrateParams(gene_join=join))


def test_repeated_sample_id_is_an_error(tmp_path):
    a = _tiny(tmp_path / "A.imputed.h5ad", ["CD3E", "LYZ"], ["c1", "c2"])
    (tmp_path / "other").mkdir()
    b = _tiny(tmp_path / "other" / "A.imputed.h5ad", ["CD3E", "LYZ"], ["c1", "c2"])
    with pytest.raises(InputError, match="sample id 'A' is repeated"):
        read_imputed([a, b])


def test_not_an_imputed_file_is_an_error(tmp_path):
    path = tmp_path / "A.imputed.h5ad"
    ad.AnnData(X=np.ones((2, 2), dtype=np.float32)).write_h5ad(path)
    with pytest.raises(InputError, match="no layers\\['counts'\\]"):
        read_imputed([path])
    with pytest.raises(InputError, match="no such file"):
        read_imputed([tmp_path / "missing.imputed.h5ad"])


def test_outer_join_records_missing_genes(tmp_path):
    from scmaskgan.analysis.integration_inputs import concat_samples

    a = _tiny(tmp_path / "A.imputed.h5ad", ["CD3E", "LYZ", "MS4A1"], ["c1", "c2"])
    b = _tiny(tmp_path / "B.imputed.h5ad", ["CD3E", "LYZ", "NKG7"], ["c1", "c2"])
    samples = read_imputed([a, b])
    inner = concat_samples(samples, gene_join="inner")
    assert list(inner.var_names) == ["CD3E", "LYZ"]
    outer = concat_samples(samples, gene_join="outer")
    assert outer.var.loc["MS4A1", "missing_in"] == "B" and outer.var.loc["NKG7", "missing_in"] == "A"
    assert outer.var.loc["CD3E", "missing_in"] == "" and outer.n_obs == 4
    assert outer[outer.obs["sample"] == "B", "MS4A1"].layers["counts"].sum() == 0


def test_samplesheet_metadata_and_unknown_sample(tmp_path):
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sample,path,risk\nA,a.h5ad,high\nB,b.h5ad,low\n")
    meta = read_sample_metadata(sheet)
    assert meta.loc["A", "batch"] == "A" and meta.loc["B", "risk"] == "low"
    from scmaskgan.analysis.integration_inputs import concat_samples

    c = _tiny(tmp_path / "C.imputed.h5ad", ["CD3E"], ["c1"])
    with pytest.raises(InputError, match="sample 'C' is not in the samplesheet"):
        concat_samples(read_imputed([c]), metadata=meta)
    assert sample_id_from_imputed("GSM5768752.imputed.h5ad") == "GSM5768752"


def test_per_sample_cluster_labels_are_kept_apart(tmp_path):
    from scmaskgan.analysis.integration_inputs import concat_samples

    paths = []
    for sid, source in (("A", "leiden"), ("B", "obs:cell_type")):
        path = _tiny(tmp_path / f"{sid}.imputed.h5ad", ["CD3E", "LYZ"], ["c1", "c2"])
        adata = ad.read_h5ad(path)
        adata.obs["scmaskgan_label"] = pd.Categorical(["0", "1"])
        adata.uns["scmaskgan"] = {"label_source": source}
        adata.write_h5ad(path)
        paths.append(path)
    combined = concat_samples(read_imputed(paths))
    assert list(combined.obs["scmaskgan_label"]) == ["A:0", "A:1", "B:0", "B:1"]
    assert not combined.uns["scmaskgan_integrate_input"]["labels_shared"]
