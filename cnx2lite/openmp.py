"""How long torch's OpenMP threads spin before they sleep: set before torch loads libgomp.

At every parallel region's end an idle OpenMP thread spins, by libgomp's default 300,000 iterations, before it
sleeps. On 2 cores that spinning competes with everything else: the training process's own DataLoader workers, and
any second process, whose threads spin too. Measured on a 2-core EPYC (cpu preset, atto at 96 px, 2026-12-05):
fine-tuning beside one other small cnx2lite process (``bench model`` at 96 px) trained at 9.6 img/s with the default
and at 72.1 img/s with 10,000 iterations, about half its speed alone; alone, 10,000 was as fast or a little faster
(FCMAE 230 and 231 vs 226 and 219 img/s, fine-tuning 149 vs 141).
"""
from __future__ import annotations

import os
import sys

SPIN_COUNT = "10000"


def shorter_spin_wait() -> bool:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` unless the user set it or torch is already loaded (libgomp reads
    it once, when torch loads it). Returns whether it took effect."""
    if "torch" in sys.modules or "GOMP_SPINCOUNT" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True
