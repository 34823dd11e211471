"""TRAIN's files read back: the model file ``{id}.model.pt`` (:func:`save_model`,
:func:`load_model`, :func:`check_compatible`) and the training checkpoint kept beside it
for ``--resume``, with the training state it keeps (:class:`TrainState`). Both are
``torch.save`` dicts of plain types and tensors, loadable with ``weights_only=True``.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from scmaskgan.core.config import TrainParams
from scmaskgan.errors import InputError
from scmaskgan.io.atomic import atomic_path
from scmaskgan.method.encode import Encoding
from scmaskgan.method.images_h5 import ImageStore
from scmaskgan.method.model import Generator, ModelConfig
from scmaskgan.method.trainer import GanTrainer

MODEL_FORMAT = 3


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
    weights = weights or cpu_weights(trainer)
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
    if not isinstance(payload, dict) or "format_version" not in payload:
        raise InputError(f"{path}: not a scmaskgan {what} (format_version {MODEL_FORMAT} expected)")
    if payload["format_version"] != MODEL_FORMAT:
        raise InputError(
            f"{path}: a {what} of format_version {payload['format_version']}, this scmaskgan reads "
            f"{MODEL_FORMAT} (the networks changed): train again with this version"
        )
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


# ---------------------------------------------------------------- training checkpoint
def checkpoint_path(outdir: Path, sample_id: str) -> Path:
    """The training checkpoint of a sample, kept beside its model file."""
    return Path(outdir) / f"{sample_id}.train_checkpoint.pt"


@dataclass
class BestEpoch:
    """The best epoch so far: its number, its smoothed validation score and its weights
    (CPU copies, :func:`cpu_weights`; empty until an epoch is chosen)."""

    epoch: int = 0
    score: float = math.inf
    weights: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainState:
    """Where training stands after ``epoch`` epochs; what the checkpoint keeps for ``--resume``.

    Attributes
    ----------
    epoch
        Epochs run.
    history
        One row of ``{id}.train_log.csv`` per epoch run.
    smoothed
        The exponentially smoothed validation score (``None`` before the first).
    bad_epochs
        Epochs since the best one (for the patience rule).
    stopped
        Early stopping has ended training.
    best
        The best epoch so far.
    initial
        The untrained generator's overall quality on the held-out cells (empty until measured,
        or without held-out cells).
    factor_ranks
        Factors of each label its generator started from (:func:`~scmaskgan.method.factors.label_factors`;
        empty without them): a resumed run takes them from here instead of measuring them again.
    """

    epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    smoothed: float | None = None
    bad_epochs: int = 0
    stopped: bool = False
    best: BestEpoch = field(default_factory=BestEpoch)
    initial: dict[str, Any] = field(default_factory=dict)
    factor_ranks: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain types and tensors, as the checkpoint stores them (``weights_only`` loadable)."""
        best = {"epoch": self.best.epoch, "score": self.best.score, "weights": self.best.weights or None}
        state = {"epoch": self.epoch, "history": self.history, "smoothed": self.smoothed,
                 "bad_epochs": self.bad_epochs, "stopped": self.stopped, "best": best,
                 "factor_ranks": self.factor_ranks}
        return {**state, "initial": self.initial} if self.initial else state

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> TrainState:
        """The inverse of :meth:`to_dict`."""
        best = state["best"]
        return cls(
            epoch=state["epoch"], history=list(state["history"]), smoothed=state["smoothed"],
            bad_epochs=state["bad_epochs"], stopped=state["stopped"],
            best=BestEpoch(best["epoch"], best["score"], best["weights"] or {}),
            initial=dict(state.get("initial", {})), factor_ranks=list(state.get("factor_ranks", [])),
        )


def resumes(paths: dict[str, Path], sample_id: str, params: TrainParams) -> bool:
    """Whether training starts from a checkpoint (``params.resume`` and one exists beside the model)."""
    return params.resume and checkpoint_path(paths["model"].parent, sample_id).exists()


def resume_state(
    paths: dict[str, Path], sample_id: str, params: TrainParams, cfg: ModelConfig, trainer: GanTrainer
) -> TrainState:
    """The training state to start from: a fresh one, or with ``params.resume`` the checkpoint's
    (whose weights and optimiser states are loaded into ``trainer``).

    Raises
    ------
    InputError
        The checkpoint was made with other data, model settings or training parameters.
    """
    if not resumes(paths, sample_id, params):
        return TrainState()
    ckpt = checkpoint_path(paths["model"].parent, sample_id)
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
    return TrainState.from_dict(payload["state"])


def save_checkpoint(trainer: GanTrainer, state: TrainState, params: TrainParams, path: Path) -> None:
    """Write the training checkpoint atomically: the trainer's weights and optimisers, the state, the parameters."""
    payload = {
        "format_version": MODEL_FORMAT,
        "kind": "scmaskgan-checkpoint",
        "config": trainer.cfg.to_dict(),
        "params": dataclasses.asdict(params),
        "trainer": trainer.state_dict(),
        "state": state.to_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def cpu_weights(trainer: GanTrainer) -> dict[str, Any]:
    """Copies of the weights of the generator whose candidates count (its weight average, when
    training keeps one) and of the discriminator, on the CPU."""
    return {"generator": _cpu(trainer.candidate_generator.state_dict()), "discriminator": _cpu(trainer.discriminator.state_dict())}
