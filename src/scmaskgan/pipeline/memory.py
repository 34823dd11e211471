"""Giving freed memory back to the operating system between the steps of one process."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache

#: glibc's ``mallopt`` parameter number of the mmap threshold.
_M_MMAP_THRESHOLD = -3
#: Allocations from this size on get their own pages, returned to the system when freed.
MMAP_THRESHOLD_BYTES = 8 << 20


@cache
def _glibc(symbol: str) -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), symbol) if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return None


def return_large_blocks_to_the_system() -> None:
    """Serve allocations of 8 MiB and more from their own pages (glibc; a no-op elsewhere).

    glibc raises its mmap threshold up to 32 MiB as large blocks are freed; from then on
    large arrays are carved from the heap, which fragments and never shrinks. Fixing it
    lowers IMPUTE's peak memory by about a third at the same speed (measurements in
    ``docs/measurements.md``). Called when the imputation starts, not before: training's
    ~10 MB activations would pay page faults on every step.

    It changes the allocator of the whole process, so only the processes that run a
    pipeline step call it (:func:`scmaskgan.pipeline.steps.impute`, ``scmaskgan impute``), never
    the Python API.
    """
    mallopt = _glibc("mallopt")
    if mallopt is not None:
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)


def release_memory() -> None:
    """Collect reference cycles (AnnData and scanpy objects hold some) and return free heap pages.

    Steps run one after another in one process (``scmaskgan impute``, the Python API)
    would otherwise keep each step's garbage and glibc's freed-but-kept pages, and the
    process's peak memory would be the sum of the steps instead of the largest.
    """
    gc.collect()
    trim = _glibc("malloc_trim")
    if trim is not None:
        trim(0)
