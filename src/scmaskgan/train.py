"""TRAIN: fit the conditional masked GAN on an images file.

Pieces, each usable alone: the cells as tensors (:class:`CellTensors`, held in memory
as one contiguous tensor when they fit, otherwise streamed in blocks from the HDF5
file), the masked losses, one adversarial step (:class:`GanTrainer`), the epoch loop
with validation, early stopping and checkpoints (:func:`fit`), and the model file
(:func:`save_model`, :func:`load_model`).

Losses never see padding pixels: real cells are multiplied by their observed mask and
the gene mask, generated cells by the gene mask, and the discriminator's patch logits
are averaged only over patches that contain genes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import pickle
import sys
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from scmaskgan.atomic import atomic_path
from scmaskgan.config import TrainParams
from scmaskgan.device import amp_enabled, autocast, grad_scaler, select_device, set_threads, to_device
from scmaskgan.encode import Encoding
from scmaskgan.errors import InputError, StepError
from scmaskgan.generate import sample_images
from scmaskgan.images_h5 import ImageStore
from scmaskgan.model import Discriminator, Generator, ModelConfig, count_parameters, gene_mask, pixel_scaled
from scmaskgan.versions import package_versions

MODEL_FORMAT = 1
#: Training data larger than this is streamed from the HDF5 file instead of held in memory.
IN_MEMORY_BYTES = 4 * 2**30
#: Candidates generated per validation (spread over the labels).
VALIDATION_CANDIDATES = 2000
#: Weight of the newest epoch in the exponentially smoothed validation signal.
SMOOTHING = 0.3


# ---------------------------------------------------------------- data
@dataclass
class CellTensors:
    """Cells as tensors: ``values`` and ``masks`` ``(n, N, N)`` float32, ``labels`` ``(n,)`` int64.

    ``values`` is zero wherever ``masks`` is (dropouts and padding).
    """

    values: torch.Tensor
    masks: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def subset(self, index: torch.Tensor) -> CellTensors:
        """The cells at ``index``."""
        return CellTensors(self.values[index], self.masks[index], self.labels[index])

    def to(self, device: torch.device) -> CellTensors:
        """The cells on ``device`` (through pinned memory on CUDA, see :func:`~scmaskgan.device.to_device`)."""
        return CellTensors(*(to_device(t, device) for t in (self.values, self.masks, self.labels)))

    def as_float(self) -> CellTensors:
        """float32 values and masks (of compact cells, see :func:`read_cells`; no copy when already float32)."""
        return CellTensors(self.values.float(), self.masks.float(), self.labels)


def clean_cells(images: np.ndarray, masks: np.ndarray, labels: np.ndarray, n_genes: int) -> CellTensors:
    """Tensors from an images file's arrays, with dropouts and padding set to zero in both."""
    side = images.shape[-1]
    genes = gene_mask(side, n_genes)
    m = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.float32)) * genes
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)) * m
    return CellTensors(x, m, torch.from_numpy(np.asarray(labels, dtype=np.int64)))


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
    )
    for start in range(0, len(index), block):
        part = index[start:start + block]
        sl = slice(int(part[0]), int(part[-1]) + 1)
        if np.array_equal(part, np.arange(sl.start, sl.stop)):
            images, masks, labels = store.read(sl)
        else:
            images, masks, labels = store.read(part)
        cells = clean_cells(images, masks, labels, n_genes)
        out.values[start:start + len(part)] = cells.values
        out.masks[start:start + len(part)] = cells.masks
        out.labels[start:start + len(part)] = cells.labels
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
    """

    detection: torch.Tensor
    level: torch.Tensor
    counts: torch.Tensor
    second: torch.Tensor

    def to(self, device: torch.device) -> LabelStats:
        """A copy on ``device``."""
        return LabelStats(*(t.to(device) for t in (self.detection, self.level, self.counts, self.second)))

    def gene_moments(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, sd)`` ``(N, N)`` of every pixel's encoded value over all training cells (zeros included)."""
        n = self.counts[:, None, None]
        total = n.sum()
        mean = (self.detection * self.level * n).sum(0) / total
        var = (self.second * n).sum(0) / total - mean**2
        return mean, var.clamp_min(0).sqrt()

    def initial_profiles(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(level, detection)`` strictly inside (0, 1), for :meth:`Generator.init_label_bias`.

        Detection rates are smoothed as ``(k + 0.5) / (n + 1)``; a gene never observed in
        a label starts at its level in the other labels (or the lowest observed level).
        """
        n = self.counts[:, None, None]
        detection = (self.detection * n + 0.5) / (n + 1)
        seen = self.detection * n
        pooled = (self.level * seen).sum(0) / seen.sum(0).clamp_min(1e-8)
        floor = self.level[self.level > 0].min() if bool((self.level > 0).any()) else torch.tensor(0.1)
        pooled = torch.where(seen.sum(0) > 0, pooled, floor)
        level = torch.where(seen > 0, self.level, pooled.expand_as(self.level))
        return level.clamp(0.01, 0.99), detection


def label_stats(cells: TrainingCells, n_labels: int, side: int) -> LabelStats:
    """Detection rates and observed mean levels per label, accumulated block by block."""
    count = torch.zeros(n_labels)
    observed = torch.zeros(n_labels, side, side, dtype=torch.float64)
    total = torch.zeros(n_labels, side, side, dtype=torch.float64)
    squares = torch.zeros(n_labels, side, side, dtype=torch.float64)
    for block in cells.blocks():
        count += torch.bincount(block.labels, minlength=n_labels).float()
        observed.index_add_(0, block.labels, block.masks.double())
        values = block.values.double()
        total.index_add_(0, block.labels, values)
        squares.index_add_(0, block.labels, values * values)
    per_cell = count.clamp_min(1).double()[:, None, None]
    detection = observed / per_cell
    level = torch.where(observed > 0, total / observed.clamp_min(1), torch.zeros_like(total))
    return LabelStats(detection.float(), level.float(), count, (squares / per_cell).float())


# ---------------------------------------------------------------- losses
def sample_cells(
    level: torch.Tensor, logits: torch.Tensor, uniform: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sampled cells from level and detection maps, differentiable by straight-through.

    The forward pass draws a binary detection mask ``uniform < sigmoid(logits)``;
    gradients reach the detection logits as if the mask were its probability.

    Returns
    -------
    ``(values, mask)``, both ``(B, N, N)``.
    """
    prob = torch.sigmoid(logits)
    hard = (uniform < prob).to(prob.dtype)
    mask = hard + prob - prob.detach()
    return level * mask, mask


def bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Mean binary cross-entropy of per-cell logits ``(B,)`` against a constant target."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _cross_term(a: torch.Tensor, b: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Unbiased estimate of ``sum(weight * (E[a] - target)^2) / sum(weight)`` from two independent halves.

    Squaring one batch mean would also penalise the spread of the generated cells (its
    variance), pushing the generator towards one mean cell; multiplying the errors of
    two independent halves keeps the gradient of the squared bias only.
    """
    ea, eb = a - target, b - target
    cross = 0.5 * (ea.detach() * eb + eb.detach() * ea)
    return (weight * cross).sum() / weight.sum().clamp_min(1e-8)


def moment_loss(
    level: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor, stats: LabelStats, genes: torch.Tensor
) -> torch.Tensor:
    """``rec_loss='moments'``: match each label's detection rates and observed mean levels.

    For every label with at least two generated cells in the batch, the cells are split
    into two halves; the detection term compares the mean detection probability with
    the label's detection rate on gene pixels, the level term compares the
    detection-weighted mean level with the label's mean over observed pixels, weighted
    by the detection rate (genes never observed in the label do not count). Labels are
    averaged weighted by their number of cells.
    """
    prob = torch.sigmoid(logits)
    total = level.new_zeros(())
    n_used = 0
    for label in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == label).flatten()
        if len(idx) < 2:
            continue
        halves = (idx[0::2], idx[1::2])
        p = [prob[h].mean(0) for h in halves]
        lev = [(level[h] * prob[h]).sum(0) / prob[h].sum(0).clamp_min(1e-6) for h in halves]
        det_rate = stats.detection[label]
        det = _cross_term(p[0], p[1], det_rate, genes)
        lvl = _cross_term(lev[0], lev[1], stats.level[label], det_rate * genes)
        total = total + len(idx) * (det + lvl)
        n_used += len(idx)
    return total / max(n_used, 1)


def inpaint_split(masks: torch.Tensor, fraction: float, uniform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Hide ``fraction`` of the observed pixels: returns ``(kept, held_out)`` masks."""
    kept = masks * (uniform >= fraction).to(masks.dtype)
    return kept, masks - kept


def inpaint_loss(
    level: torch.Tensor,
    logits: torch.Tensor,
    cells: CellTensors,
    kept: torch.Tensor,
    held: torch.Tensor,
    genes: torch.Tensor,
) -> torch.Tensor:
    """``rec_loss='inpaint'``: predict the held-out observed pixels of the conditioning cell.

    Squared error of the level on held-out observed pixels, plus the cross-entropy of the
    detection logits against the observed mask on every gene pixel the generator did
    not see (held-out observed = 1, dropouts = 0).
    """
    value_err = (held * (level - cells.values) ** 2).sum() / held.sum().clamp_min(1.0)
    unseen = genes * (1.0 - kept)
    det_err = F.binary_cross_entropy_with_logits(logits, cells.masks, weight=unseen, reduction="sum")
    return value_err + det_err / unseen.sum().clamp_min(1.0)


# ---------------------------------------------------------------- one adversarial step
def model_config(params: TrainParams, encoding: Encoding, n_labels: int) -> ModelConfig:
    """The network shapes for a sample and the training parameters."""
    return ModelConfig(
        side=encoding.side,
        n_labels=n_labels,
        latent_dim=params.latent_dim or encoding.side,
        base_channels=params.base_channels,
        inpaint=params.rec_loss == "inpaint",
    )


@dataclass
class BatchLosses:
    """One batch's discriminator and reconstruction losses, and the generated cells for the adversarial term."""

    loss_d: torch.Tensor
    rec: torch.Tensor
    fake: tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class GanTrainer:
    """Generator, discriminator, optimisers and the masked losses of one training step.

    Parameters
    ----------
    cfg
        Network shapes.
    params
        Training parameters (learning rates, betas, lambda, reconstruction choice, clipping).
    n_genes
        Genes of the sample (pixels beyond are padding).
    stats
        Per-label statistics of the training cells: the generator's initial per-label
        bias and the targets of ``rec_loss='moments'``.
    device
        Where to compute.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        params: TrainParams,
        n_genes: int,
        stats: LabelStats,
        device: torch.device,
    ) -> None:
        self.cfg, self.params, self.device = cfg, params, device
        self.generator = Generator(cfg)
        self.generator.init_label_bias(*stats.initial_profiles())
        self.generator.to(device)
        self.discriminator = Discriminator(cfg).to(device)
        self.discriminator.set_genes(n_genes, *stats.gene_moments())
        betas = (params.beta1, params.beta2)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=params.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=params.lr_d, betas=betas)
        self.amp = amp_enabled(device, params.amp)
        self.scaler_g, self.scaler_d = grad_scaler(device, self.amp), grad_scaler(device, self.amp)
        self.genes = gene_mask(cfg.side, n_genes, device)
        self.stats = stats.to(device)

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers and loss scalers (plain types and tensors)."""
        return {
            "generator": self.generator.state_dict(),
            "discriminator": self.discriminator.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler_g": self.scaler_g.state_dict(),
            "scaler_d": self.scaler_d.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        self.generator.load_state_dict(state["generator"])
        self.discriminator.load_state_dict(state["discriminator"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        if state["scaler_g"]:
            self.scaler_g.load_state_dict(state["scaler_g"])
            self.scaler_d.load_state_dict(state["scaler_d"])

    def _noise(self, cells: CellTensors, gen: torch.Generator) -> dict[str, torch.Tensor]:
        b, side = len(cells), self.cfg.side
        draws = {
            "z": torch.randn(b, self.cfg.latent_dim, generator=gen),
            "detect": torch.rand(b, side, side, generator=gen),
        }
        if self.cfg.inpaint:
            draws["hide"] = torch.rand(b, side, side, generator=gen)
        return {k: v.to(self.device) for k, v in draws.items()}

    def losses(self, cells: CellTensors, gen: torch.Generator) -> BatchLosses:
        """Discriminator loss and the generator's adversarial and reconstruction losses of one batch.

        ``cells`` is on the training device; padding and dropout pixels of its values
        are ignored. Random draws come from ``gen`` (CPU), so a seed fixes the result.
        """
        real = CellTensors(cells.values * cells.masks * self.genes, cells.masks * self.genes, cells.labels)
        onehot = F.one_hot(real.labels, self.cfg.n_labels).float()
        noise = self._noise(real, gen)
        cond, kept, held = None, None, None
        if self.cfg.inpaint:
            kept, held = inpaint_split(real.masks, self.params.inpaint_fraction, noise["hide"])
            cond = (real.values * kept, kept)
        with autocast(self.device, self.amp):
            level, logits = self.generator(noise["z"], onehot, cond)
            level, logits = level.float(), logits.float()
            fake_values, fake_mask = sample_cells(level, logits, noise["detect"])
            fake_values, fake_mask = fake_values * self.genes, fake_mask * self.genes
            d_real = self.discriminator(real.values, real.masks, onehot).float()
            d_fake = self.discriminator(fake_values.detach(), fake_mask.detach(), onehot).float()
            loss_d = bce(d_real, 1.0) + bce(d_fake, 0.0)
        return BatchLosses(loss_d, self._rec(level, logits, real, kept, held), (fake_values, fake_mask, onehot))

    def _rec(
        self,
        level: torch.Tensor,
        logits: torch.Tensor,
        real: CellTensors,
        kept: torch.Tensor | None,
        held: torch.Tensor | None,
    ) -> torch.Tensor:
        if self.params.rec_loss == "moments":
            return moment_loss(level, logits, real.labels, self.stats, self.genes)
        if self.params.rec_loss == "inpaint":
            assert kept is not None and held is not None
            return inpaint_loss(level, logits, real, kept, held, self.genes)
        return level.new_zeros(())

    def generator_adversarial(self, fake: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Non-saturating generator loss: generated cells should be judged real."""
        with autocast(self.device, self.amp):
            return bce(self.discriminator(*fake).float(), 1.0)

    def step(self, cells: CellTensors, gen: torch.Generator) -> dict[str, float]:
        """One discriminator update then one generator update; returns the losses."""
        self.generator.train()
        self.discriminator.train()
        out = self.losses(cells, gen)
        self._update(out.loss_d, self.opt_d, self.scaler_d, self.discriminator)
        adv = self.generator_adversarial(out.fake)
        loss_g = adv + self.params.lambda_rec * out.rec
        self._update(loss_g, self.opt_g, self.scaler_g, self.generator)
        return {"loss_d": float(out.loss_d.detach()), "loss_g_adv": float(adv.detach()), "loss_rec": float(out.rec.detach())}

    def _update(self, loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: Any, net: nn.Module) -> None:
        if not torch.isfinite(loss):
            raise StepError(f"training diverged (loss {float(loss)}); try a smaller --lr-g/--lr-d")
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.params.grad_clip > 0:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(net.parameters(), self.params.grad_clip)
        scaler.step(opt)
        scaler.update()


# ---------------------------------------------------------------- model file
@dataclass
class LoadedModel:
    """A trained generator with everything needed to use it."""

    generator: Generator
    config: ModelConfig
    encoding: Encoding
    label_names: list[str]
    train: dict[str, Any]


def save_model(
    path: Path,
    trainer: GanTrainer,
    encoding: Encoding,
    label_names: list[str],
    train_meta: dict[str, Any],
    weights: dict[str, Any] | None = None,
) -> None:
    """Write ``{id}.model.pt`` atomically (state_dicts + plain-type config; ``weights_only`` loadable).

    ``weights`` (``generator``/``discriminator`` state_dicts) replaces the trainer's
    current weights, e.g. with the best epoch's.
    """
    weights = weights or {"generator": trainer.generator.state_dict(), "discriminator": trainer.discriminator.state_dict()}
    payload = {
        "format_version": MODEL_FORMAT,
        "kind": "scmaskgan-model",
        "config": {"model": trainer.cfg.to_dict(), "encoding": encoding.to_dict()},
        "generator": _cpu(weights["generator"]),
        "discriminator": _cpu(weights["discriminator"]),
        "label_names": list(label_names),
        "train": train_meta,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in state.items()}


def _torch_load(path: Path, what: str) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{path}: not a readable {what} (truncated or corrupt? {first})") from exc
    if not isinstance(payload, dict) or payload.get("format_version") != MODEL_FORMAT:
        raise InputError(f"{path}: not a scmaskgan {what} (format_version {MODEL_FORMAT} expected)")
    return payload


def load_model(path: Path, device: torch.device | str = "cpu") -> LoadedModel:
    """Read ``{id}.model.pt`` with ``torch.load(..., weights_only=True)``; the generator is in eval mode.

    Raises
    ------
    InputError
        The file is missing, truncated, corrupt or not a scmaskgan model.
    """
    payload = _torch_load(path, "model file")
    if payload.get("kind") != "scmaskgan-model":
        raise InputError(f"{path}: not a scmaskgan model file (kind={payload.get('kind')!r})")
    try:
        cfg = ModelConfig.from_dict(dict(payload["config"]["model"]))
        encoding = Encoding(**payload["config"]["encoding"])
        generator = Generator(cfg)
        generator.load_state_dict(payload["generator"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise InputError(f"{path}: model file is inconsistent ({str(exc).splitlines()[0]})") from exc
    generator.to(device).eval()
    return LoadedModel(generator, cfg, encoding, list(payload["label_names"]), dict(payload["train"]))


def check_compatible(model: LoadedModel, model_path: Path, store: ImageStore) -> None:
    """Raise :class:`InputError` when a model does not belong to an images file (side, genes, labels)."""
    enc = store.encoding
    if (model.encoding.side, model.encoding.n_genes) != (enc.side, enc.n_genes):
        raise InputError(
            f"{model_path} was trained on images of side N={model.encoding.side} ({model.encoding.n_genes} genes) "
            f"but {store.path} has N={enc.side} ({enc.n_genes} genes)"
        )
    if model.label_names != list(store.label_names):
        raise InputError(f"{model_path} was trained on other labels than those of {store.path}")


# ---------------------------------------------------------------- validation
class Validator:
    """Candidate quality on held-out cells: the validation signal for early stopping.

    Generates a fixed set of candidates per label (fixed noise; ``per_label``, fewer when
    there are many labels so that an epoch's validation generates at most
    :data:`VALIDATION_CANDIDATES`, scaled by :func:`~scmaskgan.model.pixel_scaled` for
    large images, but never fewer than 10) as GENERATE would, and scores them against
    the held-out real cells with :class:`~scmaskgan.quality.QualityReference` (energy
    distance, precision/recall/density/coverage, classifier two-sample AUC, ...), each
    beside the level that real training cells reach.

    The early-stopping score (lower is better) is :func:`validation_score`: it punishes
    candidates a classifier tells apart from real cells *and* candidates that cover too
    little of the real cells' variety, so label prototypes cannot win it.
    """

    def __init__(
        self,
        val: CellTensors,
        reference: CellTensors,
        pool: CellTensors | None,
        n_genes: int,
        params: TrainParams,
        per_label: int = 100,
    ) -> None:
        from scmaskgan.quality import QualityReference

        self.labels = val.labels.numpy()
        self.real_values = val.values.reshape(len(val), -1)[:, :n_genes].float()
        ref_values = reference.values.reshape(len(reference), -1)[:, :n_genes].float()
        self.quality = QualityReference(
            self.real_values.numpy(), self.labels, ref_values.numpy(), reference.labels.numpy(), seed=params.seed
        )
        self.pool, self.n_genes, self.params = pool, n_genes, params
        present = np.unique(self.labels)
        side = val.values.shape[-1]
        budget = pixel_scaled(VALIDATION_CANDIDATES, side, floor=10 * len(present))
        per_label = max(10, min(per_label, budget // len(present)))
        self.cand_labels = np.repeat(present, per_label)
        self.batch_size = pixel_scaled(256, side)

    def candidates(self, generator: Generator, device: torch.device) -> np.ndarray:
        """The fixed-noise validation candidates of the generator as it is now."""
        return sample_images(
            generator, self.cand_labels, batch_size=self.batch_size, seed=self.params.seed + 1, device=device,
            pool=self.pool, inpaint_fraction=self.params.inpaint_fraction, n_genes=self.n_genes,
        )

    def __call__(self, generator: Generator, discriminator: Discriminator, device: torch.device) -> dict[str, Any]:
        """Quality scores of this epoch's candidates, ``val_score`` and ``d_accuracy``: the
        discriminator's accuracy at telling held-out real cells from the candidates (0.5 = chance)."""
        vectors = self.candidates(generator, device)
        scores = self.quality.score(vectors, self.cand_labels)
        real_ok = self._judged(discriminator, self.real_values, self.labels, device) > 0
        fake_ok = self._judged(discriminator, torch.from_numpy(vectors), self.cand_labels, device) < 0
        scores["d_accuracy"] = 0.5 * (float(real_ok.float().mean()) + float(fake_ok.float().mean()))
        scores["val_score"] = validation_score(scores)
        return scores

    @torch.no_grad()
    def _judged(
        self, discriminator: Discriminator, vectors: torch.Tensor, labels: np.ndarray, device: torch.device
    ) -> torch.Tensor:
        """Discriminator logits of gene vectors (observed = positive), in batches, in eval mode."""
        discriminator.eval()
        side, n_labels = discriminator.cfg.side, discriminator.cfg.n_labels
        out = []
        for start in range(0, len(vectors), self.batch_size):
            part = vectors[start:start + self.batch_size]
            images = F.pad(part, (0, side * side - part.shape[1])).view(-1, side, side).to(device)
            onehot = F.one_hot(torch.as_tensor(labels[start:start + self.batch_size]), n_labels).float().to(device)
            out.append(discriminator(images, (images > 0).float(), onehot).float().cpu())
        discriminator.train()
        return torch.cat(out)


def validation_score(scores: dict[str, Any]) -> float:
    """Early-stopping score of candidate quality, 0 when candidates are as good as real cells.

    ``2 * (c2st_auc - c2st_auc_real)`` (how much better than for real cells a classifier
    tells candidates from held-out cells: location and spread) plus
    ``1 - coverage / coverage_real`` (the share of the real cells' variety that real
    cells cover and the candidates miss: high for prototypes), each floored at 0.
    """
    auc = max(scores["c2st_auc"] - scores["c2st_auc_real"], 0.0)
    coverage = 1.0 - scores["coverage"] / max(scores["coverage_real"], 1e-6)
    return 2.0 * auc + max(coverage, 0.0)


# ---------------------------------------------------------------- the loop
def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % (2**63 - 1)


def _checkpoint_path(outdir: Path, sample_id: str) -> Path:
    return Path(outdir) / f"{sample_id}.train_checkpoint.pt"


#: Columns of ``{id}.train_log.csv``: losses, the quality of the validation candidates (each
#: quality score beside the level of real training cells, ``*_real``), the early-stopping
#: score and its smoothed value, the discriminator's held-out accuracy, seconds.
LOG_COLUMNS = (
    "epoch", "loss_d", "loss_g_adv", "loss_rec",
    "energy", "energy_real", "energy_gap", "precision", "recall", "recall_real", "coverage", "coverage_real",
    "c2st_auc", "c2st_auc_real", "gene_var_log2", "corr_agreement", "corr_agreement_real",
    "val_score", "val_smoothed", "d_accuracy", "seconds",
)


def fit(
    images_h5: Path,
    paths: dict[str, Path],
    sample_id: str,
    params: TrainParams,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train on an images file and write the model, the log CSV and the loss curve.

    Parameters
    ----------
    images_h5
        The PREPARE step's ``{id}.images.h5``.
    paths
        Output paths: ``model``, ``log``, ``png`` (the checkpoint goes beside the model).
    sample_id
        Used in the checkpoint name and the progress bar.
    params
        Training parameters.
    progress
        Show a progress bar; default: when stderr is a terminal.

    Returns
    -------
    The training summary stored in the model file (epochs run, best epoch, ...).
    """
    set_threads(params.threads)
    device = select_device(params.device)
    if params.batch_size < 2 or (params.cells_per_epoch is not None and params.cells_per_epoch < 2):
        raise InputError(
            f"batch_size={params.batch_size} and cells_per_epoch={params.cells_per_epoch} must be at least 2"
        )
    with ImageStore(images_h5) as store:
        enc, label_names = store.encoding, list(store.label_names)
        if store.n_cells < 2:
            raise StepError(f"{images_h5}: {store.n_cells} cell(s); training needs at least 2")
        val_mask = split_validation(store.labels, params.val_fraction, params.seed)
        train_index = np.flatnonzero(~val_mask)
        cells = TrainingCells(store, train_index)
        if len(cells) < 2:
            raise StepError(f"{images_h5}: {len(cells)} training cell(s) after the validation split; need 2 or more")
        cfg = model_config(params, enc, len(label_names))
        stats = label_stats(cells, cfg.n_labels, enc.side)
        torch.manual_seed(params.seed)
        trainer = GanTrainer(cfg, params, enc.n_genes, stats, device)
        validator = None
        if val_mask.any():
            pool = cells.cells if cfg.inpaint and cells.cells is not None else None
            if cfg.inpaint and pool is None:
                pool = read_cells(store, np.sort(np.flatnonzero(~val_mask))[:20000])
            reference = cells.cells if cells.cells is not None else read_cells(store, train_index[:4000])
            validator = Validator(read_cells(store, np.flatnonzero(val_mask)), reference, pool, enc.n_genes, params)
        state = _resume_state(paths, sample_id, params, cfg, trainer)
        if validator is not None and "initial" not in state:
            state["initial"] = _overall(validator(trainer.generator, trainer.discriminator, trainer.device))
        _run_epochs(trainer, cells, validator, state, paths, sample_id, params, progress)
    meta = _train_meta(params, state, trainer, len(cells), int(val_mask.sum()))
    rows: list[dict[str, Any]] = []
    if validator is not None:
        trainer.generator.load_state_dict(state["best"]["weights"]["generator"])
        rows = quality_rows(validator(trainer.generator, trainer.discriminator, trainer.device), state["initial"],
                            label_names)
        meta["quality"] = rows[0]
    save_model(paths["model"], trainer, enc, label_names, meta, state["best"]["weights"])
    _write_log(paths["log"], state["history"])
    _write_csv(paths["quality"], rows, QUALITY_COLUMNS)
    _plot_log(paths["png"], state["history"], sample_id)
    return meta


#: Columns of ``{id}.train_quality.csv``: the model's candidates (best epoch) against the held-out
#: cells, overall (label ``all``) and per label, each beside the level of real training cells
#: (``*_real``), and how much of the energy distance above that level training removed.
QUALITY_COLUMNS = (
    "label", "energy", "energy_real", "energy_gap", "energy_gap_initial", "gap_closed",
    "precision", "precision_real", "recall", "recall_real", "density", "density_real", "coverage", "coverage_real",
    "c2st_auc", "c2st_auc_real", "gene_mean_abs_log2", "gene_var_log2", "corr_agreement", "corr_agreement_real",
)


def _overall(scores: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in scores.items() if key != "per_label"}


def quality_rows(scores: dict[str, Any], initial: dict[str, Any], label_names: list[str]) -> list[dict[str, Any]]:
    """Rows of ``{id}.train_quality.csv``: overall first, then every label with held-out cells.

    ``gap_closed`` is ``1 - energy_gap / energy_gap_initial`` for the overall row
    (:func:`~scmaskgan.quality.gap_closed`), the initial gap being the generator's
    before the first epoch.
    """
    from scmaskgan.quality import gap_closed

    overall = {"label": "all", **_overall(scores), "energy_gap_initial": initial["energy_gap"]}
    overall["gap_closed"] = gap_closed(overall["energy_gap"], initial["energy_gap"])
    per_label = [
        {"label": label_names[int(label)], **values} for label, values in scores.get("per_label", {}).items()
    ]
    return [overall, *per_label]


def _fresh_state() -> dict[str, Any]:
    return {
        "epoch": 0, "history": [], "smoothed": None, "bad_epochs": 0, "stopped": False,
        "best": {"epoch": 0, "score": math.inf, "weights": None},
    }


def _resume_state(
    paths: dict[str, Path], sample_id: str, params: TrainParams, cfg: ModelConfig, trainer: GanTrainer
) -> dict[str, Any]:
    ckpt = _checkpoint_path(paths["model"].parent, sample_id)
    if not (params.resume and ckpt.exists()):
        return _fresh_state()
    payload = _torch_load(ckpt, "training checkpoint")
    if payload.get("kind") != "scmaskgan-checkpoint" or payload.get("config") != cfg.to_dict():
        raise InputError(f"{ckpt} was made with other data or model settings; delete it or drop --resume")
    saved = {k: v for k, v in payload["params"].items() if k not in {"epochs", "resume", "patience", "min_epochs",
                                                                     "checkpoint_every", "device", "threads"}}
    current = {k: v for k, v in dataclasses.asdict(params).items() if k in saved}
    if saved != current:
        changed = sorted(k for k in saved if saved[k] != current.get(k))
        raise InputError(f"{ckpt} was made with other training parameters ({', '.join(changed)}); drop --resume")
    trainer.load_state_dict(payload["trainer"])
    return payload["state"]


def _save_checkpoint(trainer: GanTrainer, state: dict[str, Any], params: TrainParams, path: Path) -> None:
    payload = {
        "format_version": MODEL_FORMAT,
        "kind": "scmaskgan-checkpoint",
        "config": trainer.cfg.to_dict(),
        "params": dataclasses.asdict(params),
        "trainer": trainer.state_dict(),
        "state": state,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _run_epochs(
    trainer: GanTrainer,
    cells: TrainingCells,
    validator: Validator | None,
    state: dict[str, Any],
    paths: dict[str, Path],
    sample_id: str,
    params: TrainParams,
    progress: bool | None,
) -> None:
    from tqdm.auto import tqdm

    ckpt = _checkpoint_path(paths["model"].parent, sample_id)
    batch_size, per_epoch = batch_sizes(params, trainer.cfg.side)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=params.epochs, initial=state["epoch"], desc=f"train {sample_id}", disable=not show, leave=False)
    while state["epoch"] < params.epochs and not state["stopped"]:
        epoch = state["epoch"] + 1
        started = time.perf_counter()
        gen = torch.Generator().manual_seed(_epoch_seed(params.seed, epoch))
        sums: dict[str, float] = {}
        n_batches = 0
        for batch in cells.batches(batch_size, gen, per_epoch):
            for key, value in trainer.step(batch.to(trainer.device), gen).items():
                sums[key] = sums.get(key, 0.0) + value
            n_batches += 1
        row: dict[str, float] = {"epoch": epoch, **{k: v / max(n_batches, 1) for k, v in sums.items()}}
        improved = _early_stopping(trainer, validator, state, row, epoch, params)
        row["seconds"] = time.perf_counter() - started
        state["history"].append(row)
        state["epoch"] = epoch
        if improved or epoch % max(params.checkpoint_every, 1) == 0 or state["stopped"]:
            _save_checkpoint(trainer, state, params, ckpt)
        bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss_d", "loss_g_adv", "loss_rec", "val_smoothed") if k in row})
        bar.update(1)
    bar.close()
    if state["best"]["weights"] is None:  # no validation cells: the last epoch is the model
        state["best"] = {"epoch": state["epoch"], "score": math.nan, "weights": _weights(trainer)}


def batch_sizes(params: TrainParams, side: int) -> tuple[int, int | None]:
    """Cells per batch and per epoch used for images of ``side``: the parameters, shrunk by
    :func:`~scmaskgan.model.pixel_scaled` above 64 x 64 (same steps per epoch, same pixels per batch)."""
    batch = pixel_scaled(params.batch_size, side)
    per_epoch = None if params.cells_per_epoch is None else pixel_scaled(params.cells_per_epoch, side, floor=2 * batch)
    return batch, per_epoch


def _weights(trainer: GanTrainer) -> dict[str, Any]:
    return {"generator": _cpu(trainer.generator.state_dict()), "discriminator": _cpu(trainer.discriminator.state_dict())}


def _early_stopping(
    trainer: GanTrainer,
    validator: Validator | None,
    state: dict[str, Any],
    row: dict[str, float],
    epoch: int,
    params: TrainParams,
) -> bool:
    """Update the smoothed validation signal, the best weights and the stop flag; True on a new best.

    The best epoch is chosen among epochs from ``min_epochs`` on (or the last, when fewer
    are run): the first epochs are the initialised generator's, and with a few held-out
    cells per label the noise of the score would otherwise often pick them.
    """
    if validator is None:
        return False
    scores = validator(trainer.generator, trainer.discriminator, trainer.device)
    value = scores["val_score"]
    smoothed = value if state["smoothed"] is None else SMOOTHING * value + (1 - SMOOTHING) * state["smoothed"]
    state["smoothed"] = smoothed
    row.update({key: scores[key] for key in LOG_COLUMNS if key in scores})
    row["val_smoothed"] = smoothed
    if epoch < min(params.min_epochs, params.epochs):
        return False
    if smoothed < state["best"]["score"]:
        state["best"] = {"epoch": epoch, "score": smoothed, "weights": _weights(trainer)}
        state["bad_epochs"] = 0
        return True
    state["bad_epochs"] += 1
    if epoch >= params.min_epochs and state["bad_epochs"] >= params.patience:
        state["stopped"] = True
    return False


def _train_meta(
    params: TrainParams, state: dict[str, Any], trainer: GanTrainer, n_train: int, n_val: int
) -> dict[str, Any]:
    history = state["history"]
    batch_size, per_epoch = batch_sizes(params, trainer.cfg.side)
    return {
        "params": dataclasses.asdict(params),
        "seed": params.seed,
        "epochs_run": state["epoch"],
        "best_epoch": state["best"]["epoch"],
        "best_val_score": float(state["best"]["score"]),
        "early_stopped": bool(state["stopped"]),
        "n_train_cells": n_train,
        "batch_size_used": batch_size,
        "cells_per_epoch_used": per_epoch,
        "n_val_cells": n_val,
        "seconds_per_epoch": float(np.mean([r["seconds"] for r in history])) if history else 0.0,
        "parameters_generator": count_parameters(trainer.generator),
        "parameters_discriminator": count_parameters(trainer.discriminator),
        "device": str(trainer.device),
        "versions": package_versions(),
    }


def _write_log(path: Path, history: list[dict[str, float]]) -> None:
    _write_csv(path, history, LOG_COLUMNS)


def _write_csv(path: Path, rows: list[dict[str, Any]], columns: tuple[str, ...]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, restval="", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(path) as tmp:
        tmp.write_text(buf.getvalue())


def _plot_log(path: Path, history: list[dict[str, float]], sample_id: str) -> None:
    from matplotlib.figure import Figure  # no pyplot: the caller's backend is left alone

    epochs = [r["epoch"] for r in history]
    fig = Figure(figsize=(9, 3.5))
    ax_loss, ax_val = fig.subplots(1, 2)
    for key, name in (("loss_d", "discriminator"), ("loss_g_adv", "generator (adversarial)"), ("loss_rec", "reconstruction")):
        ax_loss.plot(epochs, [r.get(key, math.nan) for r in history], label=name)
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("loss")
    ax_loss.legend(fontsize=8)
    ax_val.plot(epochs, [r.get("val_score", math.nan) for r in history], label="held-out quality score", alpha=0.5)
    ax_val.plot(epochs, [r.get("val_smoothed", math.nan) for r in history], label="smoothed")
    ax_val.set_xlabel("epoch")
    ax_val.legend(fontsize=8)
    fig.suptitle(f"{sample_id}: training")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100)
