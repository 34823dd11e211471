"""Cells x genes matrices, dense or sparse: dense copies, library sizes and log-normalisation.

The one definition of each, shared by the encoding, the evaluation, molecular
cross-validation, labelling and integration. Log-normalisation is
``log1p(x / library_size * target_sum)`` per cell; cells without counts stay 0.
"""

from __future__ import annotations

from typing import Any

import anndata as ad
import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

#: IMPUTE's layer of the imputed values log-normalised by each cell's *observed* library size,
#: the depth the estimates were made for. Normalising the imputed values by their own totals
#: instead divides every gene of a cell by one noisy sum (its few genes that keep their counts
#: dominate it), which makes the shrunk genes co-vary (null data in ``docs/method.md``).
IMPUTED_LOGNORM = "imputed_lognorm"


def dense(x: Any, dtype: npt.DTypeLike = np.float64) -> np.ndarray:
    """A dense ``dtype`` array of a dense or sparse matrix (no copy when it already is one)."""
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=dtype)


def library_sizes(x: np.ndarray | sp.spmatrix, input_scale: str = "counts") -> np.ndarray:
    """Per-cell library sizes (row sums); ``target_sum`` placeholder 1 for lognorm input."""
    if input_scale == "lognorm":
        return np.ones(x.shape[0], dtype=np.float64)
    return np.asarray(x.sum(axis=1), dtype=np.float64).ravel()


def lognormalise(
    x: np.ndarray | sp.spmatrix, target_sum: float = 1e4, input_scale: str = "counts"
) -> tuple[np.ndarray, np.ndarray]:
    """Log-normalise rows of counts (cells x genes).

    Parameters
    ----------
    x
        Counts (or log-normalised values when ``input_scale='lognorm'``).
    target_sum
        Library size to normalise to.
    input_scale
        ``'counts'`` or ``'lognorm'`` (values are returned unchanged).

    Returns
    -------
    ``(lognorm, library_size)``: dense float64 array and per-cell library sizes.
    """
    values = dense(x)
    lib = library_sizes(x, input_scale)
    if input_scale == "lognorm":
        return values, lib
    safe = np.where(lib > 0, lib, 1.0)
    return np.log1p(values / safe[:, None] * target_sum), lib


def lognormalise_nonnegative(x: Any, target_sum: float = 1e4) -> np.ndarray:
    """Log-normalised dense float64 copy of any non-negative scale; negative values are clipped to 0.

    For outputs of other methods (which may hold small negative values) and counts alike.
    """
    return lognormalise(np.clip(dense(x), 0.0, None), target_sum)[0]


def lognormalise_in_place(
    adata: ad.AnnData, target_sum: float, input_scale: str = "counts", library: np.ndarray | None = None
) -> None:
    """scanpy's ``normalize_total`` and ``log1p`` on ``adata.X`` (skipped for ``input_scale='lognorm'``).

    ``library``: each cell's library size to normalise by (default: the row sums of ``X``);
    cells with 0 keep their values unscaled.
    """
    import scanpy as sc

    if input_scale == "lognorm":
        return
    if library is None:
        sc.pp.normalize_total(adata, target_sum=target_sum)
    else:
        factors = (target_sum / np.where(library > 0, library, target_sum)).astype(np.float32)
        adata.X = sp.csr_matrix(sp.diags(factors) @ adata.X) if sp.issparse(adata.X) else adata.X * factors[:, None]
    sc.pp.log1p(adata)
