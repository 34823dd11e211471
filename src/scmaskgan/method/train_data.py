"""TRAIN's data: the cells as tensors (:class:`CellTensors`), held in memory as one contiguous
tensor when they fit, otherwise streamed in blocks from the HDF5 file (:class:`TrainingCells`);
the stratified validation split and the per-label statistics (:class:`LabelStats`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from scmaskgan.errors import InputError
from scmaskgan.method.depth import log_depth, moments
from scmaskgan.method.device import to_device
from scmaskgan.method.images_h5 import ImageStore
from scmaskgan.method.model import gene_mask

#: Training data larger than this is streamed from the HDF5 file instead of held in memory.
IN_MEMORY_BYTES = 4 * 2**30


@dataclass
class CellTensors:
    """Cells as tensors: ``values`` and ``masks`` ``(n, N, N)`` float32, ``labels`` ``(n,)`` int64,
    ``depth`` ``(n,)`` float32 log depth (:func:`~scmaskgan.method.depth.log_depth`).

    ``values`` is zero wherever ``masks`` is (dropouts and padding).
    """

    values: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor
    depth: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> CellTensors:
        """The cells at ``index``."""
        return CellTensors(self.values[index], self.masks[index], self.labels[index], self.depth[index])

    def to(self, device: torch.device) -> CellTensors:
        """The cells on ``device`` (through pinned memory on CUDA, see :func:`~scmaskgan.method.device.to_device`)."""
        return CellTensors(*(to_device(t, device) for t in (self.values, self.masks, self.labels, self.depth)))

    def as_float(self) -> CellTensors:
        """float32 values and masks (of compact cells, see :func:`read_cells`; no copy when already float32)."""
        return CellTensors(self.values.float(), self.masks.float(), self.labels, self.depth)


def clean_cells(
    images: np.ndarray, masks: np.ndarray, labels: np.ndarray, library_size: np.ndarray, n_genes: int
) -> CellTensors:
    """Tensors from an images file's arrays, with dropouts and padding set to zero in both."""
    side = images.shape[-1]
    genes = gene_mask(side, n_genes)
    m = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32)) * genes
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)) * m
    depth = torch.from_numpy(log_depth(library_size))
    return CellTensors(x, m, torch.from_numpy(np.asarray(labels, dtype=np.int64)), depth)


def read_cells(
    store: ImageStore, index: np.ndarray | None = None, block: int = 1024, compact: bool = False
) -> CellTensors:
    """Read cells (all, or the sorted ``index``) into one contiguous set of tensors, block by block.

    ``compact=True`` stores 3 bytes per pixel instead of 8: float16 values (unit scale,
    about 3 significant digits) and bool masks; :meth:`CellTensors.as_float` converts a batch back.
    """
    index = np.arange(store.n_cells) if index is None else np.asarray(index)
    side, n_genes = store.encoding.side, store.encoding.n_genes
    shape = (len(index), side, side)
    out = CellTensors(
        torch.empty(shape, dtype=torch.float16 if compact else torch.float32),
        torch.empty(shape, dtype=torch.bool if compact else torch.float32),
        torch.empty(len(index), dtype=torch.long),
        torch.empty(len(index), dtype=torch.float32),
    )
    for start in range(0, len(index), block):
        part = index[start:start + block]
        images, masks, labels = store.read(part)  # contiguous runs, whatever the index (ImageStore.read)
        cells = clean_cells(images, masks, labels, store.library_size[part], n_genes)
        out.values[start:start + len(part)] = cells.values
        out.masks[start:start + len(part)] = cells.masks
        out.labels[start:start + len(part)] = cells.labels
        out.depth[start:start + len(part)] = cells.depth
    return out


def split_validation(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of validation cells, stratified by label.

    Each label with at least two cells gives ``round(fraction * n)`` cells (at least
    one, never all of them); labels with a single cell stay in training.
    """
    if not 0.0 <= fraction < 1.0:
        raise InputError(f"val_fraction={fraction} must be in [0, 1)")
    rng = np.random.default_rng(seed)
    val = np.zeros(len(labels), dtype=bool)
    if fraction == 0:
        return val
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        if len(idx) < 2:
            continue
        k = min(max(int(round(fraction * len(idx))), 1), len(idx) - 1)
        val[rng.choice(idx, size=k, replace=False)] = True
    return val


class TrainingCells:
    """The training cells, yielding shuffled batches each epoch.

    Held in memory as one contiguous compact tensor (float16 values, bool masks; batches
    come out as float32) when they fit in :data:`IN_MEMORY_BYTES`;
    otherwise every epoch reads contiguous blocks of the file in random order and
    shuffles within each block (memory grows with the block, not the sample).
    """

    def __init__(self, store: ImageStore, train_index: np.ndarray, block_cells: int = 8192) -> None:
        self.store = store
        self.index = np.sort(train_index)
        side = store.encoding.side
        self.in_memory = len(self.index) * side * side * 3 <= IN_MEMORY_BYTES
        self.block_cells = block_cells
        self.cells = read_cells(store, self.index, compact=True) if self.in_memory else None

    def __len__(self) -> int:
        return len(self.index)

    def subset(self, rows: np.ndarray) -> CellTensors:
        """The training cells at positions ``rows`` (sorted) as float32 tensors, from memory or the file."""
        if self.cells is not None:
            return self.cells.subset(torch.from_numpy(rows)).as_float()
        return read_cells(self.store, self.index[rows])

    def blocks(self, gen: torch.Generator | None = None) -> Iterator[CellTensors]:
        """All training cells in blocks (one block when in memory); random block order with ``gen``."""
        if self.cells is not None:
            yield self.cells
            return
        starts = torch.arange(0, len(self.index), self.block_cells)
        if gen is not None:
            starts = starts[torch.randperm(len(starts), generator=gen)]
        for start in starts.tolist():
            yield read_cells(self.store, self.index[start:start + self.block_cells])

    def batches(self, batch_size: int, gen: torch.Generator, limit: int | None = None) -> Iterator[CellTensors]:
        """Shuffled mini-batches of ``limit`` cells (every training cell once when unset).

        With fewer training cells than ``limit``, shuffled passes over all of them are
        repeated until ``limit`` cells were drawn, so that an epoch holds the same number
        of adversarial steps whatever the sample's size (a GAN learns by steps, and 300
        cells would otherwise give 5 steps an epoch). A last batch of a single cell is
        dropped (batch normalisation needs two).
        """
        remaining = len(self) if limit is None else limit
        while remaining > 0:
            for block in self.blocks(gen):
                order = torch.randperm(len(block), generator=gen)[:remaining]
                remaining -= len(order)
                for start in range(0, len(order), batch_size):
                    idx = order[start:start + batch_size]
                    if len(idx) > 1:
                        yield block.subset(idx).as_float()
                if remaining <= 0:
                    return


@dataclass
class LabelStats:
    """Per-label statistics of the training cells (the generator's starting point and the
    targets of ``rec_loss='moments'``).

    Attributes
    ----------
    detection
        ``(L, N, N)`` fraction of the label's cells in which each gene is observed.
    level
        ``(L, N, N)`` mean encoded value over the cells that observe the gene (0 if none).
    counts
        ``(L,)`` training cells per label.
    second
        ``(L, N, N)`` mean squared encoded value (zeros included).
    spread
        ``(L, N, N)`` SD of ``logit(value)`` over the cells that observe the gene (0 if fewer than two).
    depth_moments
        ``(2,)`` mean and SD of the cells' log depths (:func:`~scmaskgan.method.depth.moments`).
    """

    detection: torch.Tensor
    level: torch.Tensor
    counts: torch.Tensor
    second: torch.Tensor
    spread: torch.Tensor
    depth_moments: torch.Tensor

    def to(self, device: torch.device) -> LabelStats:
        """A copy on ``device``."""
        return LabelStats(*(t.to(device) for t in (
            self.detection, self.level, self.counts, self.second, self.spread, self.depth_moments
        )))

    def gene_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, sd)`` ``(N, N)`` of every pixel's encoded value over all training cells (zeros included)."""
        n = self.counts[:, None, None]
        total = n.sum()
        mean = (self.detection * self.level * n).sum(0) / total
        var = (self.second * n).sum(0) / total - mean**2
        return mean, var.clamp_min(0).sqrt()

    def initial_profiles(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(level, detection, spread)`` for :meth:`Generator.init_label_bias`.

        Detection rates are smoothed as ``(k + 0.5) / (n + 1)``; a gene never observed in
        a label starts at its level in the other labels (or the lowest observed level).
        The level noise is the whole spread of the label's observed values, clipped to
        [0.02, 3] (the median of the measured genes where a gene was observed in fewer than
        two cells): the generator starts as if a label's cells differed only by independent
        noise, and its latent code has to earn any variation they share.
        """
        n = self.counts[:, None, None]
        detection = (self.detection * n + 0.5) / (n + 1)
        seen = self.detection * n
        pooled = (self.level * seen).sum(0) / seen.sum(0).clamp_min(1e-8)
        floor = self.level[self.level > 0].min() if bool((self.level > 0).any()) else torch.tensor(0.1)
        pooled = torch.where(seen.sum(0) > 0, pooled, floor)
        level = torch.where(seen > 0, self.level, pooled.expand_as(self.level))
        measured = self.spread[self.spread > 0]
        typical = measured.median() if len(measured) else torch.tensor(0.3)
        spread = torch.where(self.spread > 0, self.spread, typical).clamp(0.02, 3.0)
        return level.clamp(0.01, 0.99), detection, spread


#: Cells whose float64 statistics :func:`label_stats` computes at once (1,024 cells of 45 x 45: 17 MB an array).
_STATS_CELLS = 1024


def label_stats(cells: TrainingCells, n_labels: int, side: int) -> LabelStats:
    """Detection rates, observed mean levels and spreads per label, and the cells' depth moments,
    accumulated block by block."""
    count = torch.zeros(n_labels)
    observed = torch.zeros(n_labels, side, side, dtype=torch.float64)
    total = torch.zeros(n_labels, side, side, dtype=torch.float64)
    squares = torch.zeros(n_labels, side, side, dtype=torch.float64)
    logits = torch.zeros(2, n_labels, side, side, dtype=torch.float64)  # sums of logit and logit^2 where observed
    depths = []
    for block in cells.blocks():
        depths.append(block.depth.numpy())
        count += torch.bincount(block.labels, minlength=n_labels).float()
        for start in range(0, len(block), _STATS_CELLS):  # float64 temporaries of a few MB, not of all cells
            part = slice(start, start + _STATS_CELLS)
            labels, masks, values = block.labels[part], block.masks[part].double(), block.values[part].double()
            observed.index_add_(0, labels, masks)
            total.index_add_(0, labels, values)
            squares.index_add_(0, labels, values * values)
            logit = torch.logit(values.clamp(1e-4, 1 - 1e-4)) * masks
            logits[0].index_add_(0, labels, logit)
            logits[1].index_add_(0, labels, logit * logit)
    per_cell = count.clamp_min(1).double()[:, None, None]
    detection = observed / per_cell
    level = torch.where(observed > 0, total / observed.clamp_min(1), torch.zeros_like(total))
    mean_logit = logits[0] / observed.clamp_min(1)
    var = (logits[1] - observed * mean_logit**2) / (observed - 1).clamp_min(1)
    spread = torch.where(observed >= 2, var.clamp_min(0).sqrt(), torch.zeros_like(var))
    depth_moments = torch.tensor(moments(np.concatenate(depths) if depths else np.zeros(0)), dtype=torch.float32)
    return LabelStats(
        detection.float(), level.float(), count, (squares / per_cell).float(), spread.float(), depth_moments
    )
