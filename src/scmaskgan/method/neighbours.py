"""IMPUTE's neighbour search: for every real cell, its label's candidates ranked by Euclidean
distance in the encoded (log-normalised, unit) space or in a PCA of it (:func:`find_neighbours`),
and the paper's ``theta = mu + theta_sigma * sigma`` cut with the ``k`` nearest kept
(:func:`select_neighbours`). Cells are encoded and compared in row blocks (:class:`EncodedRows`),
so memory grows with a block, not with the sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from scmaskgan.errors import InputError, StepError
from scmaskgan.method.encode import Encoding, to_unit

#: Elements of the (cells, neighbours, genes) block processed at once (bounds memory).
BLOCK_ELEMENTS = 1_000_000
#: Cells encoded, estimated and decoded at once (at most; fewer for wide samples, see
#: :data:`_ROW_ELEMENTS`): bounds the float64 temporaries.
_ROW_BLOCK = 1024
#: Cells x genes of one row block: 1,024 cells at 2,000 genes, 119 cells at 33,514.
_ROW_ELEMENTS = 4_000_000


@dataclass(frozen=True)
class Neighbours:
    """The ``k_max`` nearest candidates of every cell and its label's distance statistics.

    Attributes
    ----------
    index
        (n, k_max) int64 rows of the candidate matrix, nearest first; -1 when the label
        has fewer candidates than ``k_max``.
    distance
        (n, k_max) float32 Euclidean distances; ``inf`` where ``index`` is -1.
    mu, sigma
        (n,) mean and standard deviation of all cell-candidate distances of the cell's
        label (the paper's ``theta = mu + k sigma`` statistics).
    """

    index: np.ndarray
    distance: np.ndarray
    mu: np.ndarray
    sigma: np.ndarray

    def rows(self, sl: slice) -> Neighbours:
        """The neighbours of the cells in ``sl``."""
        return Neighbours(self.index[sl], self.distance[sl], self.mu[sl], self.sigma[sl])


def row_blocks(shape: tuple[int, int]) -> list[slice]:
    """Row slices of a (cells, genes) matrix, each at most ``_ROW_BLOCK`` rows and about ``_ROW_ELEMENTS`` entries."""
    n, g = shape
    step = max(1, min(_ROW_BLOCK, _ROW_ELEMENTS // max(g, 1)))
    return [slice(start, start + step) for start in range(0, n, step)]


def encode_rows(x: np.ndarray | sp.spmatrix, enc: Encoding) -> tuple[np.ndarray, np.ndarray]:
    """:func:`scmaskgan.method.encode.to_unit` in row blocks: float32 unit vectors and library sizes."""
    unit = np.empty(x.shape, dtype=np.float32)
    lib = np.empty(x.shape[0], dtype=np.float64)
    for sl in row_blocks(x.shape):
        unit[sl], lib[sl] = to_unit(x[sl], enc)
    return unit, lib


class EncodedRows:
    """Rows of an input matrix encoded to the unit scale on demand, a block at a time.

    Stands in for the (cells x genes) unit matrix in :func:`find_neighbours`, so that the
    encoded sample never has to be held in memory whole.
    """

    def __init__(self, x: np.ndarray | sp.spmatrix, enc: Encoding) -> None:
        self.x, self.enc = x, enc
        self.shape = x.shape

    def __getitem__(self, sl: slice | np.ndarray) -> np.ndarray:
        return to_unit(self.x[sl], self.enc)[0]


#: Cells x genes the principal components of the neighbour space are fitted on (at most).
_PCA_ENTRIES = 20_000_000


@dataclass(frozen=True)
class PCASpace:
    """A linear map of unit-scale gene vectors to their first principal components.

    Attributes
    ----------
    mean
        (n_genes,) float32 centre (the mean cell of the sample).
    components
        (n_genes, n_pcs) float32 orthonormal loadings.
    """

    mean: np.ndarray
    components: np.ndarray

    def __call__(self, unit: np.ndarray) -> np.ndarray:
        """(n, n_pcs) scores of (n, n_genes) unit-scale rows."""
        return (np.asarray(unit, dtype=np.float32) - self.mean) @ self.components


def fit_pca_space(cells: np.ndarray | EncodedRows, n_pcs: int, seed: int) -> PCASpace:
    """Principal components of a sample's encoded cells (a seeded subsample of at most 20 M entries).

    Distances between a cell and the candidates in this space average out the sampling
    noise of single genes, as kNN smoothing and MAGIC do; candidates are projected with
    the real cells' components, so the space is the data's, not the generator's.
    """
    from sklearn.decomposition import PCA

    n, g = cells.shape
    n_fit = min(n, max(n_pcs + 1, _PCA_ENTRIES // max(g, 1)))
    rows = np.sort(np.random.default_rng(seed).choice(n, size=n_fit, replace=False))
    blocks = (cells[index] if n_fit < n else cells[slice(index[0], index[-1] + 1)] for index in _index_blocks(rows, g))
    first = next(blocks)
    sample = np.empty((n_fit, g), dtype=first.dtype)  # filled block by block: no list of blocks and its concatenation
    sample[:len(first)] = first
    filled = len(first)
    for block in blocks:
        sample[filled:filled + len(block)] = block
        filled += len(block)
    k = max(1, min(n_pcs, n_fit - 1, g))
    # copy=False: the sample is ours, PCA centres it in place instead of in a copy
    pca = PCA(n_components=k, svd_solver="randomized", random_state=seed, copy=False).fit(sample)
    return PCASpace(pca.mean_.astype(np.float32), np.ascontiguousarray(pca.components_.T, dtype=np.float32))


def _index_blocks(rows: np.ndarray, n_genes: int) -> list[np.ndarray]:
    step = max(1, min(_ROW_BLOCK, _ROW_ELEMENTS // max(n_genes, 1)))
    return [rows[start:start + step] for start in range(0, len(rows), step)]


def _label_rows(labels: np.ndarray, label: int) -> slice | np.ndarray:
    """Rows of ``label``: a slice when they are contiguous (no copy when indexing), else indices."""
    rows = np.flatnonzero(labels == label)
    if rows.size and rows[-1] - rows[0] + 1 == rows.size:
        return slice(int(rows[0]), int(rows[-1]) + 1)
    return rows


def find_neighbours(
    cells: np.ndarray | EncodedRows,
    cell_labels: np.ndarray,
    candidates: np.ndarray,
    candidate_labels: np.ndarray,
    k_max: int,
    observed: np.ndarray | None = None,
    space: PCASpace | None = None,
) -> Neighbours:
    """Rank each cell's label candidates by Euclidean distance in the unit space.

    Cells are processed in blocks of rows; memory grows with a block and one label's
    candidates, not with the sample.

    Parameters
    ----------
    cells
        (n, n_genes) encoded cells (unit scale), or :class:`EncodedRows` encoding them
        block by block.
    cell_labels
        (n,) integer labels of the cells.
    candidates
        (m, n_genes) encoded candidates (unit scale), as in ``candidates.filtered.h5``.
    candidate_labels
        (m,) integer labels of the candidates.
    k_max
        Neighbours kept per cell (fewer when a label has fewer candidates).
    observed
        Optional (n, n_genes) bool mask: when given, distances use only the cell's
        observed genes, rescaled to all genes (``sqrt(n_genes / n_observed)``).
        By default all genes are used (the choice measured in ``docs/method.md``).
    space
        Optional :class:`PCASpace`: distances are measured between the principal
        component scores of cells and candidates (not combinable with ``observed``).

    Returns
    -------
    The :class:`Neighbours` of every cell.
    """
    if space is not None and observed is not None:
        raise InputError("find_neighbours: distances on observed genes need neighbour_space='genes'")
    n = cells.shape[0]
    g = cells.shape[1] if space is None else space.components.shape[1]
    index = np.full((n, k_max), -1, dtype=np.int64)
    distance = np.full((n, k_max), np.inf, dtype=np.float32)
    present = np.unique(cell_labels)
    pools: dict[int, tuple[np.ndarray, torch.Tensor, torch.Tensor]] = {}
    for label in present.tolist():
        where = _label_rows(candidate_labels, label)
        cand_rows = np.arange(candidates.shape[0])[where]
        if cand_rows.size == 0:
            raise StepError(f"label {int(label)} has no retained candidates to impute from")
        chosen = candidates[where] if space is None else space(candidates[where])
        cand = torch.from_numpy(np.ascontiguousarray(chosen, dtype=np.float32))
        pools[label] = (cand_rows, cand, (cand * cand).sum(1))
    sums = {label: np.zeros(2) for label in pools}
    for block in row_blocks(cells.shape):
        rows_block = cells[block] if space is None else space(cells[block])
        x_block = torch.from_numpy(np.ascontiguousarray(rows_block, dtype=np.float32))
        obs_block = None if observed is None else torch.from_numpy(np.asarray(observed[block], dtype=np.float32))
        block_labels = cell_labels[block]
        for label in np.unique(block_labels).tolist():
            local = np.flatnonzero(block_labels == label)
            cand_rows, cand, cand_sq = pools[label]
            kk = min(k_max, cand_rows.size)
            step = max(1, BLOCK_ELEMENTS // max(1, cand_rows.size * 4))
            for start in range(0, local.size, step):
                part = local[start:start + step]
                x = x_block[part]
                if obs_block is None:
                    d2 = (x * x).sum(1, keepdim=True) - 2.0 * x @ cand.T + cand_sq[None, :]
                else:
                    m = obs_block[part]
                    xm = x * m
                    d2 = (xm * x).sum(1, keepdim=True) - 2.0 * xm @ cand.T + m @ (cand * cand).T
                    d2 = d2 * (g / m.sum(1, keepdim=True).clamp_min(1.0))
                d = d2.clamp_min(0.0).sqrt()
                sums[label] += (float(d.sum(dtype=torch.float64)), float((d.double() ** 2).sum()))
                best, where_k = torch.topk(d, kk, dim=1, largest=False, sorted=True)
                rows = block.start + part
                index[rows, :kk] = cand_rows[where_k.numpy()]
                distance[rows, :kk] = best.numpy()
    mu = np.zeros(n, dtype=np.float64)
    sigma = np.zeros(n, dtype=np.float64)
    for label, (total, total_sq) in sums.items():
        rows = cell_labels == label
        count = rows.sum() * pools[label][0].size
        mean = total / count
        mu[rows] = mean
        sigma[rows] = math.sqrt(max(total_sq / count - mean * mean, 0.0))
    return Neighbours(index, distance, mu, sigma)


def select_neighbours(neigh: Neighbours, k: int, theta_sigma: float) -> np.ndarray:
    """Weights (n, k) of the kept neighbours: the ``k`` nearest closer than theta, at least one.

    Returns
    -------
    float32 weights summing to 1 per cell, aligned with ``neigh.index[:, :k]``.
    """
    dist = neigh.distance[:, :k]
    theta = (neigh.mu + theta_sigma * neigh.sigma)[:, None]
    keep = (dist < theta) & np.isfinite(dist)
    keep[:, 0] = True
    w = keep.astype(np.float32)
    return w / w.sum(1, keepdims=True)

