"""Shared fixtures: real PBMC counts and a seeded negative-binomial simulation with known truth."""

from __future__ import annotations

import os

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

# one thread per pytest-xdist worker (`make test` runs two), two when run alone
os.environ.setdefault("OMP_NUM_THREADS", "1" if os.environ.get("PYTEST_XDIST_WORKER") else "2")


@pytest.fixture(scope="session")
def pbmc_counts_session() -> ad.AnnData:
    from scmaskgan.io.demo_data import pbmc_counts

    return pbmc_counts()


@pytest.fixture
def pbmc_counts(pbmc_counts_session: ad.AnnData) -> ad.AnnData:
    """700 real PBMCs x 765 genes, integer counts in CSR X, obs['cell_type'] (a fresh copy)."""
    return pbmc_counts_session.copy()


def simulate_counts(
    n_cells: int = 300, n_genes: int = 150, n_types: int = 3, dropout_mid: float = 1.0, seed: int = 0
) -> tuple[ad.AnnData, np.ndarray]:
    """Seeded NB counts with cell types, then expression-dependent dropouts.

    Returns
    -------
    ``(adata, truth)``: the observed counts (``obs['cell_type']``) and the counts before
    dropout (dense), so imputed dropouts can be scored against the truth.
    """
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    base = rng.lognormal(mean=0.5, sigma=1.0, size=n_genes)
    profile = base * rng.lognormal(0.0, 0.8, size=(n_types, n_genes))
    lib = rng.lognormal(0.0, 0.25, size=n_cells)
    mu = profile[types] * lib[:, None]
    r = 5.0
    truth = rng.negative_binomial(r, r / (r + mu)).astype(np.float64)
    # dropout probability falls with expression (logistic in log mean), as in droplet data
    p_drop = 1.0 / (1.0 + np.exp(2.0 * (np.log1p(mu) - dropout_mid)))
    observed = np.where(rng.random(truth.shape) < p_drop, 0.0, truth)
    keep = observed.sum(axis=1) > 0
    adata = ad.AnnData(
        X=sp.csr_matrix(observed[keep].astype(np.float32)),
        obs={"cell_type": [f"type{t}" for t in types[keep]]},
    )
    adata.obs_names = [f"cell{i}" for i in range(adata.n_obs)]
    adata.var_names = [f"GENE{j}" for j in range(n_genes)]
    adata.obs["cell_type"] = adata.obs["cell_type"].astype("category")
    return adata, truth[keep]


@pytest.fixture
def simulated() -> tuple[ad.AnnData, np.ndarray]:
    """A seeded simulation: (observed AnnData, true counts before dropout)."""
    return simulate_counts()


def write_images(path, adata: ad.AnnData, label_key: str = "cell_type", input_scale: str = "counts"):
    """Write ``{id}.images.h5`` straight from ``adata.X`` (counts, or log-normalised values with
    ``input_scale='lognorm'``) and an obs label column (no QC/PREPARE run)."""
    from scmaskgan.method.encode import fit_encoding
    from scmaskgan.method.images_h5 import ImageWriter

    enc = fit_encoding(adata.X, input_scale=input_scale)
    labels = adata.obs[label_key].astype("category")
    with ImageWriter(path, adata.n_obs, enc, adata.obs_names, adata.var_names, list(labels.cat.categories),
                     {"label_source": f"obs:{label_key}", "params_json": "{}"}) as writer:
        writer.append(adata.X, labels.cat.codes.to_numpy())
    return path


def calibrate_in_memory(
    expected: np.ndarray, sampled: np.ndarray, labels: np.ndarray, real_blocks, depth=None, unseen=None
):
    """What GENERATE does to candidates, on arrays: every label through a
    :class:`~scmaskgan.method.calibrate.Calibrator` (``unseen``: the real cells held out of
    training); ``expected`` is changed in place. Returns the calibrator."""
    from scmaskgan.method.calibrate import Calibrator

    calibrator = Calibrator()
    for label in np.unique(labels).tolist():
        rows = labels == label
        calibrator.add_label(label, expected[rows], sampled[rows], None if depth is None else depth[rows])
    calibrator.measure(real_blocks, unseen)
    for label in np.unique(labels).tolist():
        expected[labels == label] = calibrator.apply(label, expected[labels == label])
    return calibrator
