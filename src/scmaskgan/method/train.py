"""TRAIN: fit the conditional masked GAN on an images file.

The epoch loop with validation, early stopping and checkpoints (:func:`fit`), and the
log, quality table and loss curve it writes. Its pieces live beside it: the cells
(:mod:`~scmaskgan.method.train_data`), the losses (:mod:`~scmaskgan.method.losses`), one adversarial
step (:mod:`~scmaskgan.method.trainer`), the validation signal (:mod:`~scmaskgan.method.validation`)
and the model file and checkpoint (:mod:`~scmaskgan.method.checkpoint`).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from scmaskgan.core.config import TrainParams
from scmaskgan.core.versions import package_versions
from scmaskgan.errors import InputError, StepError
from scmaskgan.io.atomic import atomic_path
from scmaskgan.method.checkpoint import (
    BestEpoch,
    TrainState,
    checkpoint_path,
    cpu_weights,
    resume_state,
    resumes,
    save_checkpoint,
    save_model,
)
from scmaskgan.method.device import select_device, set_threads
from scmaskgan.method.factors import label_factors
from scmaskgan.method.images_h5 import ImageStore
from scmaskgan.method.model import count_parameters, pixel_scaled
from scmaskgan.method.train_data import TrainingCells, label_stats, read_cells, split_validation
from scmaskgan.method.trainer import GanTrainer, model_config
from scmaskgan.method.validation import Validator

#: Weight of the newest epoch in the exponentially smoothed validation signal.
SMOOTHING = 0.3


# ---------------------------------------------------------------- the loop
def _epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch * 7_919) % (2**63 - 1)


#: Columns of ``{id}.train_log.csv``: losses, the quality of the validation candidates (each
#: quality score beside the level of real training cells, ``*_real``), the early-stopping
#: score and its smoothed value, the discriminator's held-out accuracy and AUC, seconds.
LOG_COLUMNS = (
    "epoch", "loss_d", "loss_g_adv", "loss_rec",
    "energy", "energy_real", "energy_gap", "precision", "recall", "recall_real", "coverage", "coverage_real",
    "c2st_auc", "c2st_auc_real", "gene_var_log2", "corr_agreement", "corr_agreement_real",
    "val_score", "val_smoothed", "d_accuracy", "d_auc", "d_sign_real", "augment_p", "seconds",
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
        # a resumed run's loadings come from the checkpoint, which overwrites the generator's
        factors = None
        if cfg.factor_rank and not resumes(paths, sample_id, params):
            factors = label_factors(cells, cfg.n_labels, cfg.factor_rank, params.seed, cfg.depth_input)
        torch.manual_seed(params.seed)
        trainer = GanTrainer(cfg, params, enc.n_genes, stats, device, factors)
        validator = None
        if val_mask.any():
            pool = cells.cells if cfg.inpaint and cells.cells is not None else None
            if cfg.inpaint and pool is None:
                pool = read_cells(store, np.sort(np.flatnonzero(~val_mask))[:20000])
            reference = cells.cells if cells.cells is not None else read_cells(store, train_index[:4000])
            validator = Validator(read_cells(store, np.flatnonzero(val_mask)), reference, pool, enc.n_genes, params)
        state = resume_state(paths, sample_id, params, cfg, trainer)
        if factors is not None:
            state.factor_ranks = factors.ranks
        if validator is not None and not state.initial:
            state.initial = _overall(validator(trainer.candidate_generator, trainer.discriminator, trainer.device, trainer.augment_p))
        _run_epochs(trainer, cells, validator, state, paths, sample_id, params, progress)
    meta = _train_meta(params, state, trainer, len(cells), int(val_mask.sum()))
    if state.factor_ranks:
        meta["factor_ranks"] = dict(zip(label_names, state.factor_ranks, strict=True))
    rows: list[dict[str, Any]] = []
    if validator is not None:
        trainer.generator.load_state_dict(state.best.weights["generator"])
        rows = quality_rows(validator(trainer.generator, trainer.discriminator, trainer.device, trainer.augment_p), state.initial,
                            label_names)
        meta["quality"] = rows[0]
    save_model(paths["model"], trainer, enc, label_names, meta, state.best.weights)
    _write_log(paths["log"], state.history)
    _write_csv(paths["quality"], rows, QUALITY_COLUMNS)
    _plot_log(paths["png"], state.history, sample_id)
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
    (:func:`~scmaskgan.method.quality.gap_closed`), the initial gap being the generator's
    before the first epoch.
    """
    from scmaskgan.method.quality import gap_closed

    overall = {"label": "all", **_overall(scores), "energy_gap_initial": initial["energy_gap"]}
    overall["gap_closed"] = gap_closed(overall["energy_gap"], initial["energy_gap"])
    per_label = [
        {"label": label_names[int(label)], **values} for label, values in scores.get("per_label", {}).items()
    ]
    return [overall, *per_label]


def _run_epochs(
    trainer: GanTrainer,
    cells: TrainingCells,
    validator: Validator | None,
    state: TrainState,
    paths: dict[str, Path],
    sample_id: str,
    params: TrainParams,
    progress: bool | None,
) -> None:
    from tqdm.auto import tqdm

    ckpt = checkpoint_path(paths["model"].parent, sample_id)
    batch_size, per_epoch = batch_sizes(params, trainer.cfg.side)
    show = sys.stderr.isatty() if progress is None else progress
    bar = tqdm(total=params.epochs, initial=state.epoch, desc=f"train {sample_id}", disable=not show, leave=False)
    while state.epoch < params.epochs and not state.stopped:
        epoch = state.epoch + 1
        started = time.perf_counter()
        gen = torch.Generator().manual_seed(_epoch_seed(params.seed, epoch))
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        for batch in cells.batches(batch_size, gen, per_epoch):
            for key, value in trainer.step(batch.to(trainer.device), gen).items():
                sums[key] = sums.get(key, 0.0) + value
                counts[key] = counts.get(key, 0) + 1
        row: dict[str, float] = {"epoch": epoch, **{k: v / counts[k] for k, v in sums.items()}}
        row["augment_p"] = trainer.augment_p
        improved = _early_stopping(trainer, validator, state, row, epoch, params)
        row["seconds"] = time.perf_counter() - started
        state.history.append(row)
        state.epoch = epoch
        if improved or epoch % max(params.checkpoint_every, 1) == 0 or state.stopped:
            save_checkpoint(trainer, state, params, ckpt)
        bar.set_postfix({k: f"{row[k]:.3g}" for k in ("loss_d", "loss_g_adv", "loss_rec", "val_smoothed") if k in row})
        bar.update(1)
    bar.close()
    if not state.best.weights:  # no validation cells: the last epoch is the model
        state.best = BestEpoch(state.epoch, math.nan, cpu_weights(trainer))


def batch_sizes(params: TrainParams, side: int) -> tuple[int, int | None]:
    """Cells per batch and per epoch used for images of ``side``: the parameters, shrunk by
    :func:`~scmaskgan.method.model.pixel_scaled` above 64 x 64 (same steps per epoch, same pixels per batch)."""
    batch = pixel_scaled(params.batch_size, side)
    per_epoch = None if params.cells_per_epoch is None else pixel_scaled(params.cells_per_epoch, side, floor=2 * batch)
    return batch, per_epoch


def _early_stopping(
    trainer: GanTrainer,
    validator: Validator | None,
    state: TrainState,
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
    scores = validator(trainer.candidate_generator, trainer.discriminator, trainer.device, trainer.augment_p)
    value = scores["val_score"]
    smoothed = value if state.smoothed is None else SMOOTHING * value + (1 - SMOOTHING) * state.smoothed
    state.smoothed = smoothed
    row.update({key: scores[key] for key in LOG_COLUMNS if key in scores})
    row["val_smoothed"] = smoothed
    if epoch < min(params.min_epochs, params.epochs):
        return False
    if smoothed < state.best.score:
        state.best = BestEpoch(epoch, smoothed, cpu_weights(trainer))
        state.bad_epochs = 0
        return True
    state.bad_epochs += 1
    if epoch >= params.min_epochs and state.bad_epochs >= params.patience:
        state.stopped = True
    return False


def _train_meta(
    params: TrainParams, state: TrainState, trainer: GanTrainer, n_train: int, n_val: int
) -> dict[str, Any]:
    history = state.history
    batch_size, per_epoch = batch_sizes(params, trainer.cfg.side)
    return {
        "params": dataclasses.asdict(params),
        "seed": params.seed,
        "epochs_run": state.epoch,
        "best_epoch": state.best.epoch,
        "best_val_score": float(state.best.score),
        "early_stopped": bool(state.stopped),
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
