"""Keep freed CPU memory for reuse: the page-fault cost of large activations, paid once instead of every step.

glibc's malloc serves blocks above a dynamic threshold (32 MiB at most) with fresh ``mmap`` pages and unmaps
them when they are freed, so a forward pass whose activations exceed it (atto at 224 px, batch 32: the stage-0
MLP holds 64 MiB) faults in every page again on every call. Measured on the 2-core AVX512-BF16 CPU of our
reports (convnextv2_atto inference, batch 32, 224 px, fp32, 2 threads, a fresh process): 73.6 img/s by default,
101.0 img/s with the thresholds raised; timm's model gains alike. The price: the process keeps its peak memory
instead of returning it to the system, which suits a training or evaluation process. ``cnx2lite`` commands call
:func:`keep_freed_memory` at start; scripts and notebooks may call it themselves. A process that runs one job after
another (``reproduce``'s grid) calls :func:`release_freed_memory` between them: what one run freed (its decoded-image
cache, 1.5 GB at the cpu scale) is otherwise kept, and a 2-hour piece of the grid was killed by the kernel at 24 GB.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
KEEP_BYTES = 1 << 30  # blocks up to 1 GiB come from the heap and stay there when freed


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds to :data:`KEEP_BYTES` for this process. Returns whether it did:
    False off Linux/glibc, or when ``MALLOC_MMAP_THRESHOLD_`` is set (the user's own choice stands)."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or (mallopt := _glibc("mallopt")) is None:
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))


def release_freed_memory() -> bool:
    """Return the memory this process has freed to the system (glibc's ``malloc_trim``); between jobs of a process
    that :func:`keep_freed_memory` made keep it. Returns whether it could (False off Linux/glibc)."""
    if (malloc_trim := _glibc("malloc_trim")) is None:
        return False
    malloc_trim(0)
    return True


def _glibc(name: str):
    """The C library's function ``name``, or None off Linux or where the library lacks it (e.g. musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return getattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), name)
    except (OSError, AttributeError):
        return None
