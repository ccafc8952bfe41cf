"""Per-iteration learning rate: linear warmup from 0, then half-cosine down to ``min_lr``."""
from __future__ import annotations

import math


def cosine_lr(step: int, total_steps: int, peak_lr: float, warmup_steps: int = 0, min_lr: float = 0.0) -> float:
    """The learning rate at optimizer step ``step`` (0-based) of ``total_steps``."""
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
