"""Seeds derived from the run position, so an exact resume needs only (epoch, step).

Every source of randomness is re-seeded from ``(seed, *position)``: each sample's augmentation and
FCMAE mask from ``(seed, epoch, index)``, each training step's drop path and Mixup from
``(seed, step, rank)``. Nothing depends on how many random numbers were drawn before, so a resumed
run, a run with more DataLoader workers, or the same global batch split over more processes sees
the same randomness.
"""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch

SALTS = {"sample": 1, "step": 2, "mask": 3, "init": 4, "figure": 5, "composites": 6}


def derive_seed(seed: int, kind: str, *position: int) -> int:
    """A 63-bit seed for ``kind`` (one of ``SALTS``) at ``position`` (non-negative ints)."""
    if kind not in SALTS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, SALTS))}; got {kind!r}")
    state = np.random.SeedSequence([seed, SALTS[kind], *position]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and python ``random`` in this process."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextmanager
def seeded(seed: int, restore: bool = True) -> Iterator[None]:
    """Run a block with torch's CPU generator, numpy and ``random`` seeded by ``seed``; with ``restore``, put their
    states back afterwards (so a sample's augmentation in the main process leaves the run's own streams alone).

    For the per-sample augmentations, which draw on the CPU only: ``torch.manual_seed`` would also queue a CUDA
    seed with a formatted stack trace while CUDA is not initialized, about 1 ms per call, as long as the
    augmentation of a 96 px image."""
    states = (torch.get_rng_state(), np.random.get_state(), random.getstate()) if restore else None
    torch.default_generator.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)
    try:
        yield
    finally:
        if states is not None:
            torch.set_rng_state(states[0])
            np.random.set_state(states[1])
            random.setstate(states[2])
