"""Where torch runs: device choice, mixed precision and CPU threads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch

from scmaskgan.errors import InputError


def select_device(name: str = "auto") -> torch.device:
    """Resolve a device name.

    Parameters
    ----------
    name
        ``'auto'`` (CUDA, then Apple MPS, then CPU), ``'cpu'``, ``'cuda'``, ``'cuda:N'`` or ``'mps'``.

    Returns
    -------
    The torch device. An unavailable explicit choice raises :class:`InputError`.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise InputError(f"device {name!r} is not a torch device (use auto, cpu, cuda, cuda:N or mps)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"device {name!r} requested but CUDA is not available (use --device auto or cpu)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise InputError(f"device {name!r}: only {torch.cuda.device_count()} CUDA device(s) present")
    if device.type == "mps" and not _mps_available():
        raise InputError(f"device {name!r} requested but Apple MPS is not available")
    if device.type not in {"cpu", "cuda", "mps"}:
        raise InputError(f"device {name!r} is not supported (use auto, cpu, cuda, cuda:N or mps)")
    return device


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def amp_enabled(device: torch.device, requested: bool = True) -> bool:
    """Mixed precision is used on CUDA only (and only when requested)."""
    return requested and device.type == "cuda"


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool) -> Iterator[None]:
    """``torch.autocast`` (float16) on CUDA when ``enabled``; a no-op context elsewhere."""
    if enabled and device.type == "cuda":
        with torch.autocast(device_type="cuda", dtype=torch.float16):
            yield
    else:
        yield


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """Loss scaler for float16 training; disabled (a pass-through) off CUDA."""
    return torch.amp.GradScaler("cuda", enabled=enabled and device.type == "cuda")


def adam(
    params: Iterable[torch.nn.Parameter], lr: float, betas: tuple[float, float], device: torch.device
) -> torch.optim.Adam:
    """Adam, with its fused kernel where torch has one for ``device`` (CUDA; CPU from torch 2.4).

    The fused kernel updates all parameters in one pass instead of one foreach pass per
    operation; with the 20-odd million weights of a 33,514-gene sample it makes a CPU
    training step about 7 % faster (the same update, up to float rounding).
    """
    fused = device.type == "cuda" or (device.type == "cpu" and torch.__version__ >= "2.4")  # TorchVersion: compared as a version
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused or None)


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Move a batch to ``device``: through pinned memory, asynchronously, on CUDA; as is elsewhere.

    On the CPU the tensor itself is returned (no copy).
    """
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def set_threads(threads: int | None) -> None:
    """Limit torch's CPU threads (``None`` keeps torch's default)."""
    if threads is not None:
        if threads < 1:
            raise InputError(f"threads={threads} must be at least 1")
        torch.set_num_threads(threads)
