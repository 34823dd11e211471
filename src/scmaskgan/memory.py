"""Giving freed memory back to the operating system between the steps of one process."""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
from functools import cache

#: glibc's ``mallopt`` parameter number of the mmap threshold.
_M_MMAP_THRESHOLD = -3
#: Allocations from this size on get their own pages, returned to the system when freed.
MMAP_THRESHOLD_BYTES = 1 << 20


@cache
def _glibc(symbol: str) -> ctypes._CFuncPtr | None:  # type: ignore[name-defined]
    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), symbol) if name else None
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to tune
        return None


def return_large_blocks_to_the_system() -> None:
    """Serve allocations of 1 MiB and more from their own pages (glibc; a no-op elsewhere).

    glibc raises its mmap threshold up to 32 MiB as large blocks are freed; from then on
    the many same-sized temporaries of the imputation's blocks (tens of MB each) are
    carved from the heap, which fragments and never shrinks. Measured on 10,000 cells
    x 2,000 genes: the IMPUTE step's peak RSS fell from 1.31 GB to 0.97 GB. Called when
    the imputation starts, not before: for the training's many ~10 MB activations, own
    pages cost page faults on every step (the whole run took 1.7x as long).
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
