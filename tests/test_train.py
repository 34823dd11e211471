"""TRAIN: masked losses, determinism, checkpoints and resume, the model file and its errors."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import simulate_counts, write_images

from scmaskgan.core.config import TrainParams
from scmaskgan.errors import InputError, StepError
from scmaskgan.method import train_data
from scmaskgan.method import trainer as trainer_module
from scmaskgan.method.checkpoint import TrainState, check_compatible, load_model
from scmaskgan.method.images_h5 import ImageStore
from scmaskgan.method.losses import moment_loss, r1_penalty, thin
from scmaskgan.method.model import gene_mask
from scmaskgan.method.train import _early_stopping
from scmaskgan.method.train_data import (
    CellTensors,
    LabelStats,
    TrainingCells,
    label_stats,
    read_cells,
    split_validation,
)
from scmaskgan.method.trainer import GanTrainer, model_config
from scmaskgan.method.validation import stratified_subset
from scmaskgan.pipeline import steps

#: A small model and three batches per epoch: the tests check behaviour, not what training reaches.
TINY = {"base_channels": 8, "batch_size": 32, "cells_per_epoch": 96, "device": "cpu", "threads": 1}


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 simulated cells x 46 genes (N = 7, three padding pixels per image), three types."""
    adata, _ = simulate_counts(n_cells=120, n_genes=46, n_types=3, seed=5)
    return write_images(tmp_path_factory.mktemp("img") / "sim.images.h5", adata)


def _trainer(images: Path, rec_loss: str, seed: int = 0, **kw: object) -> tuple[GanTrainer, CellTensors]:
    params = TrainParams(rec_loss=rec_loss, **TINY, **kw)  # type: ignore[arg-type]
    with ImageStore(images) as store:
        cells = TrainingCells(store, np.arange(store.n_cells))
        cfg = model_config(params, store.encoding, len(store.label_names))
        stats = label_stats(cells, cfg.n_labels, cfg.side)
        torch.manual_seed(seed)
        return GanTrainer(cfg, params, store.encoding.n_genes, stats, torch.device("cpu")), cells.cells.as_float()


def _losses(trainer: GanTrainer, batch: CellTensors) -> list[float]:
    out = trainer.losses(batch, torch.Generator().manual_seed(3))
    adv = trainer.generator_adversarial(out.fake)
    return [float(out.loss_d.detach()), float(out.rec.detach()), float(adv.detach())]


def _augmented(images: Path, rec_loss: str, augment_p: float) -> tuple[GanTrainer, CellTensors]:
    trainer, cells = _trainer(images, rec_loss)
    trainer.augment_p = augment_p
    return trainer, cells


@pytest.mark.parametrize("augment_p", [0.0, 0.5])
@pytest.mark.parametrize("rec_loss", ["moments", "inpaint"])
def test_padding_and_dropout_pixels_never_change_a_loss(images: Path, rec_loss: str, augment_p: float):
    trainer, cells = _augmented(images, rec_loss, augment_p)
    batch = cells.subset(torch.arange(40))
    genes = gene_mask(trainer.cfg.side, 46)
    assert float(genes.sum()) == 46 and trainer.cfg.side == 7
    reference = _losses(trainer, batch)
    noise = torch.rand_like(batch.values)
    unobserved = (1 - batch.masks) * noise  # new values on dropouts and padding
    padding_on = (1 - genes).expand_as(batch.masks)  # padding claimed observed
    perturbed = CellTensors(batch.values + unobserved, torch.clamp(batch.masks + padding_on, max=1), batch.labels, batch.depth)
    fresh, _ = _augmented(images, rec_loss, augment_p)
    assert _losses(fresh, perturbed) == pytest.approx(reference, rel=1e-6, abs=1e-7)
    # an observed gene pixel does change the losses (the test can fail)
    changed = CellTensors(batch.values.clone(), batch.masks, batch.labels, batch.depth)
    observed = torch.nonzero(batch.masks[0] * genes)
    changed.values[0, observed[:, 0], observed[:, 1]] = 1.0
    other, _ = _augmented(images, rec_loss, augment_p)
    assert _losses(other, changed)[0] != pytest.approx(reference[0], rel=1e-6)


def test_moment_loss_targets_the_label_statistics():
    genes = torch.ones(2, 2)
    stats = LabelStats(detection=torch.full((1, 2, 2), 0.5), level=torch.full((1, 2, 2), 0.4), counts=torch.ones(1),
                       second=torch.full((1, 2, 2), 0.1), spread=torch.zeros(1, 2, 2),
                       depth_moments=torch.tensor([0.0, 1.0]))
    labels = torch.zeros(4, dtype=torch.long)
    level = torch.tensor([0.2, 0.6, 0.6, 0.2]).view(4, 1, 1).expand(4, 2, 2).clone().requires_grad_()
    logits = torch.zeros(4, 2, 2, requires_grad=True)  # p = 0.5 everywhere: detection on target
    loss = moment_loss(level, logits, labels, stats, genes)
    loss.backward()
    assert abs(float(loss.detach())) < 1e-7  # cells differ, but each half averages to the targets: no penalty
    assert float(level.grad.abs().max()) < 1e-7
    off = moment_loss(torch.full((4, 2, 2), 0.8), torch.full((4, 2, 2), 2.0), labels, stats, genes)
    assert float(off) > 0.1
    # same mean level and detection, twice the spread: the second-moment term penalises it
    wide = torch.tensor([0.0, 0.8, 0.8, 0.0]).view(4, 1, 1).expand(4, 2, 2).clone().requires_grad_()
    spread = moment_loss(wide, logits, labels, stats, genes)
    spread.backward()
    assert float(spread.detach()) > 1e-3
    assert float(wide.grad[1].min()) > 0  # the high cells are pulled down


def test_r1_penalty_is_half_the_squared_gradient_on_observed_values():
    weight = torch.tensor([[1.0, 2.0], [3.0, 4.0]], requires_grad=True)
    values = torch.rand(3, 2, 2, requires_grad=True)
    masks = torch.tensor([[1.0, 1.0], [0.0, 1.0]]).expand(3, 2, 2)
    scores = (values * weight).sum((1, 2))  # a linear discriminator: its gradient is the weight
    penalty = r1_penalty(scores, values, masks)
    assert float(penalty) == pytest.approx(0.5 * (1 + 4 + 16))
    penalty.backward()  # differentiable in the discriminator's weights (create_graph): its update sees it
    assert torch.equal(weight.grad, torch.tensor([[1.0, 2.0], [0.0, 4.0]]))


def test_moment_loss_halves_alternate_within_each_label_in_batch_order():
    # label 0: cells 0, 2, 3, 5 -> halves (0, 3) and (2, 5); label 1: cells 1, 4; label 2: a single cell (ignored)
    labels = torch.tensor([0, 1, 0, 0, 1, 0, 2])
    stats = LabelStats(detection=torch.full((3, 1, 2), 0.5), level=torch.full((3, 1, 2), 0.4), counts=torch.ones(3),
                       second=torch.full((3, 1, 2), 0.1), spread=torch.zeros(3, 1, 2),
                       depth_moments=torch.tensor([0.0, 1.0]))
    genes = torch.ones(1, 2)
    level = torch.rand(7, 1, 2, generator=torch.Generator().manual_seed(0))
    logits = torch.zeros(7, 1, 2)
    single = moment_loss(level[[0, 2, 3, 5]], logits[:4], torch.zeros(4, dtype=torch.long), stats, genes)
    pair = moment_loss(level[[1, 4]], logits[:2], torch.ones(2, dtype=torch.long), stats, genes)
    assert float(moment_loss(level, logits, labels, stats, genes)) == pytest.approx(float(4 * single + 2 * pair) / 6)
    swapped = level.clone()
    swapped[[2, 3]] = level[[3, 2]]  # other halves: the cross term changes
    assert float(moment_loss(swapped, logits, labels, stats, genes)) != pytest.approx(float(moment_loss(level, logits, labels, stats, genes)))


def test_lazy_r1_every_fourth_discriminator_step_and_generator_step_leaves_d_gradients_alone(images: Path):
    trainer, cells = _trainer(images, "moments", r1_interval=4)
    batch = cells.subset(torch.arange(16))
    calls = []
    real_penalty = trainer_module.r1_penalty
    trainer_module.r1_penalty = lambda *a: calls.append(trainer.d_steps) or real_penalty(*a)
    try:
        for _ in range(6):
            trainer.step(batch, torch.Generator().manual_seed(1))
            # frozen only during the generator's update
            assert all(p.requires_grad for p in trainer.discriminator.parameters())
    finally:
        trainer_module.r1_penalty = real_penalty
    assert calls == [0, 4] and trainer.d_steps == 6
    assert trainer.state_dict()["d_steps"] == 6
    with_r1 = trainer.losses(batch, torch.Generator().manual_seed(2), r1=True).loss_d
    without = trainer.losses(batch, torch.Generator().manual_seed(2), r1=False).loss_d
    assert float(with_r1.detach()) > float(without.detach())


def test_thinning_hides_the_asked_share_of_genes_and_lets_gradients_through():
    values = torch.rand(4, 30, 30, requires_grad=True)
    mask = torch.ones(4, 30, 30)
    uniform = torch.rand(4, 30, 30, generator=torch.Generator().manual_seed(0))
    assert thin(values, mask, 0.0, uniform) == (values, mask)
    seen, seen_mask = thin(values, mask, 0.6, uniform)
    assert float(seen_mask.mean()) == pytest.approx(0.4, abs=0.03)
    assert torch.equal(seen[seen_mask == 0], torch.zeros(int((seen_mask == 0).sum())))
    assert torch.equal(seen[seen_mask == 1], values[seen_mask == 1])
    seen.sum().backward()
    assert torch.equal(values.grad, seen_mask)  # the generator learns through the kept genes


def test_augmentation_rises_while_the_discriminator_is_sure_of_real_cells_and_falls_below_target(images: Path):
    trainer, _ = _trainer(images, "moments", augment_cells=1000)
    trainer.load_state_dict({**trainer.state_dict(), "signs": [0.9 * 200, 200]})  # r_t 0.9 over 200 cells
    assert trainer._adapt_augmentation() == pytest.approx(0.9)
    assert trainer.augment_p == pytest.approx(0.2)  # 200 of the 1,000 cells it takes to move by 1
    trainer.load_state_dict({**trainer.state_dict(), "signs": [0.1 * 100, 100]})
    trainer._adapt_augmentation()
    assert trainer.augment_p == pytest.approx(0.1)
    for _ in range(10):  # never below 0, never above MAX_AUGMENT
        trainer.load_state_dict({**trainer.state_dict(), "signs": [-100.0, 100]})
        trainer._adapt_augmentation()
    assert trainer.augment_p == 0.0
    for _ in range(20):
        trainer.load_state_dict({**trainer.state_dict(), "signs": [100.0, 100]})
        trainer._adapt_augmentation()
    assert trainer.augment_p == trainer_module.MAX_AUGMENT
    off, _ = _trainer(images, "moments", augment_target=0.0)
    off.load_state_dict({**off.state_dict(), "signs": [100.0, 100]})
    off._adapt_augmentation()
    assert off.augment_p == 0.0


def test_validation_subset_is_stratified_seeded_and_keeps_every_label():
    labels = np.array([0] * 900 + [1] * 95 + [2] * 5)
    pick = stratified_subset(labels, 100, seed=0)
    assert np.bincount(labels[pick]).tolist() == [90, 10, 1] and np.all(np.diff(pick) > 0)
    assert np.array_equal(pick, stratified_subset(labels, 100, seed=0))
    assert np.array_equal(stratified_subset(labels[:50], 100, seed=0), np.arange(50))


def test_validation_split_is_stratified_and_keeps_single_cells_in_training():
    labels = np.array([0] * 50 + [1] * 10 + [2])
    val = split_validation(labels, 0.1, seed=0)
    assert val[labels == 0].sum() == 5 and val[labels == 1].sum() == 1 and not val[labels == 2].any()
    assert np.array_equal(val, split_validation(labels, 0.1, seed=0))
    with pytest.raises(InputError, match="val_fraction"):
        split_validation(labels, 1.0, seed=0)


def test_epoch_batches_cover_all_cells_or_a_random_subset(images: Path):
    with ImageStore(images) as store:
        cells = TrainingCells(store, np.arange(store.n_cells))
        gen = torch.Generator().manual_seed(0)
        batches = list(cells.batches(32, gen))
        part = [len(b) for b in cells.batches(32, gen, limit=50)]
        exact = read_cells(store)
    full = [len(b) for b in batches]
    assert sum(full) == store.n_cells and max(full) == 32
    assert part == [32, 18]
    # held in 3 bytes per pixel, served as float32 within float16 precision of the file's values
    assert cells.cells.values.dtype == torch.float16 and cells.cells.masks.dtype == torch.bool
    batch = batches[0]
    assert batch.values.dtype == torch.float32 and batch.masks.dtype == torch.float32
    values = torch.cat([b.values for b in batches]).sum()
    assert float(values) == pytest.approx(float(exact.values.sum()), rel=1e-3)
    assert float(torch.cat([b.masks for b in batches]).sum()) == float(exact.masks.sum())


def _train(images: Path, outdir: Path, **kw) -> dict[str, Path]:
    params = TrainParams(**{**TINY, "epochs": 3, "min_epochs": 1, **kw})
    return steps.train(images, outdir, "sim", params)


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["generator"]


def test_same_seed_same_model_and_outputs_written(images: Path, tmp_path: Path):
    a = _train(images, tmp_path / "a", seed=1)
    b = _train(images, tmp_path / "b", seed=1)
    c = _train(images, tmp_path / "c", seed=2)
    sa, sb, sc = _state(a["model"]), _state(b["model"]), _state(c["model"])
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)
    rows = list(csv.DictReader(a["log"].open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3]
    assert {"loss_d", "loss_g_adv", "loss_rec", "energy", "coverage", "c2st_auc", "val_score", "val_smoothed",
            "d_accuracy", "d_auc", "d_sign_real", "augment_p", "seconds"} <= set(rows[0])
    assert a["png"].stat().st_size > 1000


def test_resume_continues_from_the_checkpoint(images: Path, tmp_path: Path):
    # fast augmentation: its strength and the signs counted since its last update (3 steps an
    # epoch, an update every 4) must come back from the checkpoint too
    fast = {"checkpoint_every": 1, "augment_target": 0.1, "augment_cells": 1000}
    straight = _train(images, tmp_path / "straight", epochs=4, **fast)
    _train(images, tmp_path / "resumed", epochs=2, **fast)
    resumed = _train(images, tmp_path / "resumed", epochs=4, resume=True, **fast)
    s1, s2 = _state(straight["model"]), _state(resumed["model"])
    assert all(torch.equal(s1[k], s2[k]) for k in s1)
    # the factor loadings came from the checkpoint, not measured again; their ranks are still recorded
    ranks = [torch.load(p["model"], weights_only=True)["train"].get("factor_ranks") for p in (straight, resumed)]
    assert ranks[0] and ranks[0] == ranks[1]
    log1, log2 = (list(csv.DictReader(p["log"].open())) for p in (straight, resumed))
    assert [r["loss_d"] for r in log1] == [r["loss_d"] for r in log2]
    assert [r["augment_p"] for r in log1] == [r["augment_p"] for r in log2]
    assert float(log1[-1]["augment_p"]) > 0
    with pytest.raises(InputError, match="other training parameters"):
        _train(images, tmp_path / "resumed", epochs=5, lr_g=0.5, resume=True)


def test_early_stopping_follows_the_smoothed_signal_with_patience(images: Path):
    trainer, _ = _trainer(images, "moments")
    signal = iter([1.0, 0.5, 0.4, 0.9, 0.9, 0.9, 0.9])
    state = TrainState()
    params = TrainParams(patience=2, min_epochs=1)
    improved = []
    for epoch in range(1, 8):
        if state.stopped:
            break
        improved.append(_early_stopping(trainer, lambda *_: {"val_score": next(signal)}, state, {}, epoch, params))
    # smoothed: 1, 0.85, 0.715, 0.7705, 0.809...: best at epoch 3, two worse epochs -> stop after epoch 5
    assert improved == [True, True, True, False, False]
    assert state.stopped and state.best.epoch == 3
    assert state.best.weights["generator"].keys() == trainer.generator.state_dict().keys()


def test_model_file_loads_weights_only_and_checks_its_images(images: Path, tmp_path: Path):
    out = _train(images, tmp_path, epochs=1)
    payload = torch.load(out["model"], weights_only=True)
    assert {"config", "generator", "discriminator", "label_names", "train"} <= set(payload)
    assert payload["train"]["params"] == dataclasses.asdict(TrainParams(**{**TINY, "epochs": 1, "min_epochs": 1}))
    model = load_model(out["model"])
    assert model.config.side == 7 and model.label_names == ["type0", "type1", "type2"]
    with ImageStore(images) as store:
        check_compatible(model, out["model"], store)
    bigger, _ = simulate_counts(n_cells=60, n_genes=70, n_types=3, seed=1)
    other = write_images(tmp_path / "other.images.h5", bigger)
    with ImageStore(other) as store, pytest.raises(InputError, match="side N=7 .* N=9"):
        check_compatible(model, out["model"], store)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "pickle"])
def test_corrupt_model_file_is_an_input_error(images: Path, tmp_path: Path, damage: str):
    out = _train(images, tmp_path, epochs=1)
    data = out["model"].read_bytes()
    bad = tmp_path / "bad.model.pt"
    if damage == "truncate":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        bad.write_bytes(b"not a model at all")
    else:  # an arbitrary pickled object must never be unpickled
        torch.save({"format_version": 1, "obj": Path("x")}, bad)
    with pytest.raises(InputError, match="bad.model.pt"):
        load_model(bad)


def test_model_file_of_another_format_version_says_to_train_again(images: Path, tmp_path: Path):
    out = _train(images, tmp_path, epochs=1)
    payload = torch.load(out["model"], weights_only=True)
    old = tmp_path / "old.model.pt"
    older = payload["format_version"] - 1
    torch.save({**payload, "format_version": older}, old)
    with pytest.raises(InputError, match=rf"old.model.pt: .*format_version {older}, .*train again"):
        load_model(old)


def test_truncated_images_file_is_an_input_error(images: Path, tmp_path: Path):
    bad = tmp_path / "cut.images.h5"
    bad.write_bytes(images.read_bytes()[:2000])
    with pytest.raises(InputError, match="cut.images.h5"):
        _train(bad, tmp_path / "out", epochs=1)


def test_device_choice_and_amp_off_the_gpu():
    from scmaskgan.method.device import amp_enabled, autocast, grad_scaler, select_device, to_device

    cpu = torch.device("cpu")
    assert select_device("cpu") == cpu
    available = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    assert select_device("auto").type == available
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            select_device("cuda:0")
    with pytest.raises(InputError, match="not a torch device"):
        select_device("gpu-please")
    assert not amp_enabled(cpu, requested=True)
    with autocast(cpu, enabled=True):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32
    assert not grad_scaler(cpu, enabled=True).is_enabled()  # a pass-through off CUDA
    batch = torch.ones(3)
    assert to_device(batch, cpu) is batch  # no pinned copy off CUDA


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_batches_arrive_through_pinned_memory():
    from scmaskgan.method.device import to_device

    moved = to_device(torch.arange(6.0), torch.device("cuda"))
    assert moved.is_cuda and float(moved.sum()) == 15.0


def test_one_label_trains_and_too_few_cells_is_a_step_error(tmp_path: Path):
    single, _ = simulate_counts(n_cells=40, n_genes=20, n_types=1, seed=2)
    out = _train(write_images(tmp_path / "one.images.h5", single), tmp_path / "one", epochs=1)
    assert load_model(out["model"]).label_names == ["type0"]
    pair = write_images(tmp_path / "pair.images.h5", single[:2].copy())
    with pytest.raises(StepError, match="1 training cell"):
        _train(pair, tmp_path / "pair", epochs=1)


def test_label_stats_spread_is_the_sd_of_observed_logits(images: Path, monkeypatch: pytest.MonkeyPatch):
    with ImageStore(images) as store:
        cells = TrainingCells(store, np.arange(store.n_cells))
        stats = label_stats(cells, len(store.label_names), store.encoding.side)
        monkeypatch.setattr(train_data, "_STATS_CELLS", 7)  # accumulated a few cells at a time: the same statistics
        chunked = label_stats(cells, len(store.label_names), store.encoding.side)
        assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(stats.initial_profiles(), chunked.initial_profiles(), strict=True))
        real = read_cells(store).as_float()
        values, masks = real.values.numpy(), real.masks.numpy()
        labels = store.labels
    label, (row, col) = 1, np.argwhere(masks[labels == 1].sum(0) >= 5)[0]
    seen = masks[labels == label, row, col] > 0
    logits = np.log(values[labels == label, row, col][seen]) - np.log1p(-values[labels == label, row, col][seen])
    assert float(stats.spread[label, row, col]) == pytest.approx(float(logits.std(ddof=1)), rel=1e-3)
    never = (masks[labels == label].sum(0) < 2) & (gene_mask(store.encoding.side, store.encoding.n_genes).numpy() > 0)
    assert np.all(stats.spread[label].numpy()[never] == 0)
    assert torch.all(stats.initial_profiles()[2] > 0)  # the generator's noise is never 0, even where unmeasured
