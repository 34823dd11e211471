"""Real demo data: counts recovered from scanpy's bundled ``pbmc68k_reduced``."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

from scmaskgan.errors import StepError


def pbmc_counts() -> ad.AnnData:
    """700 real PBMCs x 765 genes as integer counts, ``obs['cell_type']`` from ``bulk_labels``.

    scanpy ships the data log-normalised; the counts are recovered as
    ``round(expm1(raw.X) * n_counts / 1e4)`` and checked to be integral (to float32 precision).
    """
    import scanpy as sc

    ref = sc.datasets.pbmc68k_reduced()
    raw = ref.raw.to_adata()
    lognorm = raw.X.toarray() if sp.issparse(raw.X) else np.asarray(raw.X)
    scaled = np.expm1(lognorm.astype(np.float64)) * ref.obs["n_counts"].to_numpy()[:, None] / 1e4
    counts = np.round(scaled)
    # raw.X is float32: allow its relative rounding error on large counts
    if np.any(np.abs(scaled - counts) > 0.05 + 1e-3 * counts):
        raise StepError("pbmc68k_reduced: recovered counts are not integral; scanpy's data changed")
    adata = ad.AnnData(
        X=sp.csr_matrix(counts.astype(np.float32)),
        obs=ref.obs[["bulk_labels"]].rename(columns={"bulk_labels": "cell_type"}).copy(),
        var=raw.var[[]].copy(),
    )
    adata.obs["cell_type"] = adata.obs["cell_type"].astype(str).astype("category")
    return adata
