"""QC filters against a hand-computed case, the StepError floor, and the QC step's outputs."""

from __future__ import annotations

import json
import logging

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from scmaskgan.analysis.qc import detect_mito_prefix, run_qc
from scmaskgan.core.config import QCParams
from scmaskgan.errors import StepError
from scmaskgan.pipeline import steps

# cells x genes; per cell: n_genes, total, % mito (MT-CO1)
TINY = np.array([
    [5, 3, 0, 2, 0],   # c1: 3 genes, 10 counts, 20 % mito   -> fails max_mito_pct
    [1, 1, 1, 0, 0],   # c2: 3 genes,  3 counts,  0 %        -> kept
    [0, 0, 0, 1, 0],   # c3: 1 gene,   1 count, 100 %        -> fails min_genes and max_mito_pct
    [2, 2, 2, 0, 4],   # c4: 4 genes, 10 counts              -> fails max_genes
    [10, 0, 4, 1, 0],  # c5: 3 genes, 15 counts, 6.7 %       -> fails max_counts
    [3, 0, 0, 0, 0],   # c6: 1 gene,   3 counts              -> fails min_genes
    [4, 4, 0, 0, 1],   # c7: 3 genes,  9 counts              -> kept
    [0, 2, 3, 0, 1],   # c8: 3 genes,  6 counts              -> kept
])
GENES = ["G1", "G2", "G3", "MT-CO1", "G5"]
PARAMS = QCParams(min_genes=2, min_cells=2, max_mito_pct=10, max_genes=3, max_counts=12, min_cells_after=1)


def _tiny(genes=GENES) -> ad.AnnData:
    adata = ad.AnnData(X=sp.csr_matrix(TINY.astype(np.float32)))
    adata.obs_names = [f"c{i + 1}" for i in range(TINY.shape[0])]
    adata.var_names = genes
    return adata


def test_hand_computed_case():
    adata = _tiny()
    filtered, summary = run_qc(adata, PARAMS)
    # genes in the kept cells c2, c7, c8: G1 in 2, G2 in 3, G3 in 2, MT-CO1 in 0, G5 in 2
    assert list(filtered.obs_names) == ["c2", "c7", "c8"]
    assert list(filtered.var_names) == ["G1", "G2", "G3", "G5"]
    assert summary == {
        "cells_before": 8, "genes_before": 5, "cells_after": 3, "genes_after": 4,
        "cells_failing": {"min_genes": 2, "max_genes": 1, "max_counts": 1, "max_mito_pct": 2},
        "cells_removed": 5, "genes_removed_min_cells": 1, "mito_prefix": "MT-", "n_mito_genes": 1,
        "median_genes_per_cell_after": 3.0, "median_counts_per_cell_after": 6.0,
    }
    np.testing.assert_allclose(adata.obs["pct_counts_mt"], [20, 0, 100, 0, 100 / 15, 0, 0, 0])
    np.testing.assert_array_equal(adata.obs["n_genes_by_counts"], [3, 3, 1, 4, 3, 1, 3, 3])
    assert sp.isspmatrix_csr(filtered.X) and filtered.X.dtype == np.float32
    np.testing.assert_array_equal(filtered.X.toarray(), TINY[[1, 6, 7]][:, [0, 1, 2, 4]])
    np.testing.assert_array_equal(filtered.obs["total_counts"], [3, 9, 6])
    np.testing.assert_array_equal(filtered.var["n_cells_by_counts"], [2, 3, 2, 2])


def test_optional_filters_off_and_mito_prefix_detection(caplog):
    _, summary = run_qc(_tiny(), QCParams(min_genes=2, min_cells=1, max_mito_pct=10, min_cells_after=1))
    assert set(summary["cells_failing"]) == {"min_genes", "max_mito_pct"}
    assert summary["cells_after"] == 5  # c1, c3, c6 removed; c4 and c5 stay without max_genes/max_counts
    mouse = ["G1", "G2", "G3", "mt-Co1", "G5"]
    assert detect_mito_prefix(mouse) == "mt-"
    assert detect_mito_prefix(["MT-A", "MT-B", "mt-c"]) == "MT-"
    assert detect_mito_prefix(["A", "B"]) is None
    assert detect_mito_prefix(["A"], "MITO_") == "MITO_"
    with caplog.at_level(logging.WARNING, logger="scmaskgan.analysis.qc"):
        _, summary = run_qc(_tiny(["G1", "G2", "G3", "G4", "G5"]), PARAMS)
    assert summary["mito_prefix"] is None and "max_mito_pct" not in summary["cells_failing"]
    assert "no mitochondrial genes" in caplog.text


def test_too_few_cells_or_genes_is_a_step_error():
    with pytest.raises(StepError, match=r"QC left 3 cells and 4 genes of 8 x 5 \(need >= 4 cells"):
        run_qc(_tiny(), QCParams(**{**PARAMS.__dict__, "min_cells_after": 4}))
    with pytest.raises(StepError, match="left 3 cells and 1 genes"):
        run_qc(_tiny(), QCParams(**{**PARAMS.__dict__, "min_cells": 3}))


def test_qc_step_writes_h5ad_json_png(pbmc_counts, tmp_path):
    src = tmp_path / "pbmc.h5ad"
    pbmc_counts[:200].copy().write_h5ad(src)
    out = steps.qc(src, tmp_path / "qc", "pb", QCParams(min_genes=220, label_key="cell_type"))
    assert out == steps.output_paths("qc", tmp_path / "qc", "pb")
    summary = json.loads(out["json"].read_text())
    qc = ad.read_h5ad(out["h5ad"])
    n_genes = np.asarray((pbmc_counts[:200].X > 0).sum(axis=1)).ravel()
    assert summary["cells_after"] == qc.n_obs == int((n_genes >= 220).sum())
    assert summary["sample"] == "pb" and summary["label_source"] == "obs:cell_type"
    assert summary["params"]["min_genes"] == 220
    assert qc.uns["scmaskgan_qc"]["input_scale"] == "counts"
    assert "scanpy" in qc.uns["scmaskgan_qc"]["versions"]
    assert list(qc.obs["scmaskgan_label"]) == list(pbmc_counts.obs.loc[qc.obs_names, "cell_type"])
    np.testing.assert_array_equal(qc.X.toarray(), pbmc_counts[qc.obs_names, qc.var_names].X.toarray())
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [p for p in (tmp_path / "qc").iterdir() if ".tmp-" in p.name]
