"""The whole pipeline through the embedded runner on real PBMC data (two small samples).

Tiny training budgets keep it to about a minute; what is asserted is the contract a
user relies on: every output exists, observed counts are untouched, nothing is NaN,
cells and genes match QC, the report shows every section, and a rerun reuses all steps.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from scmaskgan.io.h5ad import write_h5ad
from scmaskgan.pipeline import runner

TINY = {
    "min_genes": 150, "epochs": 3, "min_epochs": 1, "cells_per_epoch": 128, "impute_n_trials": 3,
    "min_candidates": 50, "n_estimators": 50, "n_hvg": 300, "integrate_n_pcs": 10, "seed": 0, "threads": 1,
}


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, pbmc_counts_session):
    folder = tmp_path_factory.mktemp("e2e")
    rng = np.random.default_rng(0)
    order = rng.permutation(pbmc_counts_session.n_obs)
    rows = ["sample,path,label_key,batch"]
    for sid, cells in (("s1", order[:130]), ("s2", order[130:250])):
        write_h5ad(pbmc_counts_session[np.sort(cells)].copy(), folder / f"{sid}.h5ad")
        rows.append(f"{sid},{sid}.h5ad,{'cell_type' if sid == 's1' else ''},b{sid}")
    sheet = folder / "samplesheet.csv"
    sheet.write_text("\n".join(rows) + "\n")
    records = runner.run_pipeline(sheet, folder / "results", TINY)
    return folder, sheet, records


def test_every_step_ran_and_published_its_outputs(finished_run):
    folder, _, records = finished_run
    assert {r.status for r in records} == {"done"}
    assert [r.step for r in records][-2:] == ["integrate", "report"]
    results = folder / "results"
    for sid in ("s1", "s2"):
        for step in runner.SAMPLE_STEPS:
            from scmaskgan.pipeline.steps import output_paths

            for path in output_paths(step, results / step, sid).values():
                assert path.exists(), path
    assert (results / "integrate" / "integrated.h5ad").exists()
    assert (results / "pipeline_info" / "trace.tsv").exists()


@pytest.mark.parametrize("sid", ["s1", "s2"])
def test_imputed_sample_keeps_observed_counts_and_matches_qc(finished_run, sid):
    folder, _, _ = finished_run
    qc = ad.read_h5ad(folder / "results" / "qc" / f"{sid}.qc.h5ad")
    imputed = ad.read_h5ad(folder / "results" / "impute" / f"{sid}.imputed.h5ad")
    assert list(imputed.obs_names) == list(qc.obs_names)
    assert list(imputed.var_names) == list(qc.var_names)
    x = imputed.X.toarray() if sp.issparse(imputed.X) else np.asarray(imputed.X)
    counts = qc.X.toarray()
    assert np.isfinite(x).all() and (x >= 0).all()
    observed = counts > 0
    np.testing.assert_array_equal(x[observed], counts[observed])
    original = imputed.layers["counts"]
    np.testing.assert_array_equal(original.toarray() if sp.issparse(original) else original, counts)
    assert (x[~observed] > 0).mean() > 0.05, "no dropout was filled"
    info = imputed.uns["scmaskgan"]
    assert info["params"]["seed"] == 0 and "versions" in info
    # label names such as 'CD4+/CD25 T Reg' survive the h5ad round trip (a '/' in a key would nest groups)
    assert set(info["neighbours_per_label"]["label"]) == set(imputed.obs["scmaskgan_label"].astype(str))


def test_report_has_every_section(finished_run):
    folder, _, _ = finished_run
    html = (folder / "results" / "report" / "report.html").read_text()
    for section in ("summary", "qc", "training", "filtering", "tuning", "imputation", "integration", "parameters"):
        assert f'id="{section}"' in html, section
    assert "https://" not in html and "http://" not in html


def test_rerun_reuses_every_sample_step(finished_run):
    folder, sheet, _ = finished_run
    records = runner.run_pipeline(sheet, folder / "results", TINY)
    sample_records = [r for r in records if r.sample != "all"]
    assert {r.status for r in sample_records} == {"cached"}
