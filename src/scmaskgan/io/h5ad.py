"""``.h5ad`` files: read whole or backed, read in row chunks, written atomically.

A missing or unreadable file is an :class:`~scmaskgan.errors.InputError` that names it
(the one rule for every step, the evaluation and the report).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import pandas as pd
import scipy.sparse as sp

from scmaskgan.errors import InputError
from scmaskgan.io.atomic import atomic_path


def read_h5ad(path: str | Path, *, backed: bool = False) -> ad.AnnData:
    """Read an ``.h5ad`` file (read-only backed with ``backed=True``: X stays on disk).

    Raises
    ------
    InputError
        ``<path>: no such file`` or ``<path>: not a readable h5ad file (...)``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        return ad.read_h5ad(path, backed="r" if backed else None)
    except Exception as exc:  # noqa: BLE001 - h5py and anndata raise many types for a bad file
        raise InputError(f"{path}: not a readable h5ad file ({type(exc).__name__}: {exc})") from exc


@contextlib.contextmanager
def open_backed(path: str | Path) -> Iterator[ad.AnnData]:
    """Open an h5ad read-only in backed mode (X stays on disk; obs, var and uns are loaded); closed on exit."""
    adata = read_h5ad(path, backed=True)
    try:
        yield adata
    finally:
        adata.file.close()


def iter_row_chunks(adata: ad.AnnData, chunk_cells: int) -> Iterator[sp.csr_matrix]:
    """Consecutive blocks of at most ``chunk_cells`` rows of X as CSR (works in backed mode)."""
    for start in range(0, adata.n_obs, max(1, chunk_cells)):
        block = adata.X[start:start + chunk_cells]
        yield block if sp.isspmatrix_csr(block) else sp.csr_matrix(block)


def load_sparse(adata: ad.AnnData, chunk_cells: int) -> ad.AnnData:
    """The counts of a (backed) AnnData in memory as CSR, read chunk by chunk (never dense)."""
    x = sp.vstack(list(iter_row_chunks(adata, chunk_cells)), format="csr")
    return ad.AnnData(X=x, obs=pd.DataFrame(index=adata.obs_names), var=pd.DataFrame(index=adata.var_names))


def write_h5ad(adata: ad.AnnData, path: str | Path) -> Path:
    """Write ``adata`` to ``path`` atomically (a temporary file renamed on success)."""
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return Path(path)
