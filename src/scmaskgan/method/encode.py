"""Cells as N x N images with masks, and the exact way back.

A cell's gene vector is library-size normalised to ``target_sum``, log1p-transformed
and divided by one global ``scale`` (the largest log-normalised value of the sample),
so every pixel lies in [0, 1] and the generator's sigmoid can reach it. The vector is
zero-padded to N*N (N = ceil(sqrt(n_genes))) and laid out row-wise. The mask is 1
where the gene was observed (count > 0) and 0 for dropouts and for padding.

The inverse :func:`decode` restores the input scale: counts are
``expm1(unit * scale) * library_size / target_sum``; log-normalised input
(``input_scale='lognorm'``) is returned as ``unit * scale``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import scipy.sparse as sp

from scmaskgan.core.matrix import library_sizes, lognormalise
from scmaskgan.errors import InputError

FORMAT_VERSION = 1


def image_side(n_genes: int) -> int:
    """Side N of the square image that holds ``n_genes`` pixels (N*N >= n_genes)."""
    if n_genes < 1:
        raise InputError(f"cannot encode {n_genes} genes into an image")
    return math.isqrt(n_genes - 1) + 1


@dataclass(frozen=True)
class Encoding:
    """Everything needed to map gene vectors to images and back.

    Attributes
    ----------
    n_genes
        Genes per cell (the image holds ``side**2 - n_genes`` padding pixels).
    side
        Image side N.
    target_sum
        Library size each cell is normalised to before log1p.
    scale
        Global divisor that maps log-normalised values into [0, 1].
    input_scale
        ``'counts'`` or ``'lognorm'``: the scale :func:`decode` returns.
    """

    n_genes: int
    side: int
    target_sum: float
    scale: float
    input_scale: str = "counts"

    def to_dict(self) -> dict[str, object]:
        """Plain-types dict (for HDF5 attributes, JSON and model configs)."""
        return asdict(self)


def fit_encoding(
    x: np.ndarray | sp.spmatrix, target_sum: float = 1e4, input_scale: str = "counts"
) -> Encoding:
    """Choose the encoding of a sample from its counts (only ``scale`` is learned)."""
    n_genes = x.shape[1]
    scale = max_lognorm(x, target_sum, input_scale)
    return Encoding(n_genes, image_side(n_genes), float(target_sum), scale, input_scale)


def max_lognorm(x: np.ndarray | sp.spmatrix, target_sum: float, input_scale: str = "counts") -> float:
    """Largest log-normalised value of ``x`` (1.0 for an all-zero matrix), sparse-friendly."""
    lib = library_sizes(x, input_scale)
    if sp.issparse(x):
        csr = sp.csr_matrix(x)
        if csr.nnz == 0:
            return 1.0
        row_max = np.asarray(csr.max(axis=1).toarray()).ravel()
    else:
        row_max = np.asarray(x, dtype=np.float64).max(axis=1) if x.shape[0] else np.zeros(0)
    if input_scale == "lognorm":
        top = float(row_max.max()) if row_max.size else 0.0
    else:
        safe = np.where(lib > 0, lib, 1.0)
        top = float(np.log1p(row_max / safe * target_sum).max()) if row_max.size else 0.0
    return top if top > 0 else 1.0


def to_unit(x: np.ndarray | sp.spmatrix, enc: Encoding) -> tuple[np.ndarray, np.ndarray]:
    """Encode rows of input values into [0, 1] gene vectors.

    Sparse input is transformed on its non-zero values only (log1p(0) = 0), so a chunk
    costs its non-zeros, not cells x genes.

    Returns
    -------
    ``(unit, library_size)``: float32 array (cells x genes) and float64 library sizes.
    """
    if not sp.issparse(x):
        lognorm, lib = lognormalise(x, enc.target_sum, enc.input_scale)
        return (lognorm / enc.scale).astype(np.float32), lib
    csr = sp.csr_matrix(x)
    lib = library_sizes(csr, enc.input_scale)
    values = csr.data.astype(np.float64)
    if enc.input_scale != "lognorm":
        rows = np.repeat(np.arange(csr.shape[0]), np.diff(csr.indptr))
        safe = np.where(lib > 0, lib, 1.0)
        values = np.log1p(values / safe[rows] * enc.target_sum)
    unit = sp.csr_matrix(((values / enc.scale).astype(np.float32), csr.indices, csr.indptr), shape=csr.shape)
    return unit.toarray(), lib


def decode(unit: np.ndarray, library_size: np.ndarray, enc: Encoding) -> np.ndarray:
    """Map [0, 1] gene vectors back to the input scale (exact inverse of :func:`to_unit`).

    Parameters
    ----------
    unit
        Cells x genes in the encoded scale (padding already stripped).
    library_size
        The cells' library sizes as returned by :func:`to_unit`.
    enc
        The sample's encoding.
    """
    lognorm = np.asarray(unit, dtype=np.float64) * enc.scale
    if enc.input_scale == "lognorm":
        return lognorm
    return np.expm1(lognorm) * (np.asarray(library_size, dtype=np.float64)[:, None] / enc.target_sum)


def to_images(vectors: np.ndarray, side: int) -> np.ndarray:
    """Zero-pad gene vectors to ``side**2`` and reshape them row-wise to (n, side, side)."""
    n, g = vectors.shape
    if g > side * side:
        raise InputError(f"{g} genes do not fit an image of side {side}")
    out = np.zeros((n, side * side), dtype=vectors.dtype)
    out[:, :g] = vectors
    return out.reshape(n, side, side)


def from_images(images: np.ndarray, n_genes: int) -> np.ndarray:
    """Flatten (n, N, N) images row-wise and strip the padding: (n, n_genes)."""
    n = images.shape[0]
    return images.reshape(n, -1)[:, :n_genes]


def observed_mask(x: np.ndarray | sp.spmatrix, side: int) -> np.ndarray:
    """Mask images (uint8): 1 where the input value is > 0, 0 for dropouts and padding."""
    if sp.issparse(x):
        csr = sp.csr_matrix(x)
        observed = sp.csr_matrix((csr.data > 0, csr.indices, csr.indptr), shape=csr.shape).toarray()
    else:
        observed = np.asarray(x) > 0
    return to_images(observed.astype(np.uint8), side)
