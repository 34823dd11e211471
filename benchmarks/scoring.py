"""Scores of a method's output: MCV (MSE, Poisson) and ARI/NMI of its Leiden clusters."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from scmaskgan.method import mcv

N_PCS = 50
N_NEIGHBORS = 15
LEIDEN_RESOLUTION = 1.0


def leiden_labels(denoised: np.ndarray, seed: int = 0) -> np.ndarray:
    """Leiden clusters of an output: clip at 0, normalise to 1e4, log1p, PCA-50, 15 neighbours.

    Parameters
    ----------
    denoised
        Cells x genes, count scale.
    seed
        Seed of PCA and Leiden.
    """
    import scanpy as sc

    x = np.clip(np.nan_to_num(np.asarray(denoised, dtype=np.float32)), 0.0, None)
    adata = ad.AnnData(X=x)
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.pca(adata, n_comps=min(N_PCS, min(adata.shape) - 1), random_state=seed)
    sc.pp.neighbors(adata, n_neighbors=N_NEIGHBORS, random_state=seed)
    sc.tl.leiden(adata, resolution=LEIDEN_RESOLUTION, random_state=seed, flavor="igraph",
                 n_iterations=2, directed=False)
    return adata.obs["leiden"].to_numpy()


def score_output(
    train: sp.csr_matrix, test: sp.csr_matrix, denoised: np.ndarray, labels: np.ndarray | None
) -> dict[str, float]:
    """MCV MSE and Poisson against the held-out test counts; ARI and NMI against ``labels``.

    Returns
    -------
    ``{"mcv_mse", "mcv_poisson", "ari", "nmi", "n_clusters"}`` (NaN where not computable).
    """
    s = mcv.score(train, test, denoised)
    row = {"mcv_mse": s.mse, "mcv_poisson": s.poisson, "ari": float("nan"), "nmi": float("nan"),
           "n_clusters": float("nan")}
    if labels is not None:
        clusters = leiden_labels(denoised)
        row.update(ari=adjusted_rand_score(labels, clusters), nmi=normalized_mutual_info_score(labels, clusters),
                   n_clusters=float(len(set(clusters))))
    return row
