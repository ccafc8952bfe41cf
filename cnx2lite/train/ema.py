"""Exponential moving average of a model's weights, kept in fp32 (like timm's ModelEmaV3)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma:
    """``ema = decay * ema + (1 - decay) * weights`` after every optimizer step, for every float
    parameter and buffer; integer buffers are copied. ``device`` may differ from the model's (e.g.
    ``"cpu"`` to spare accelerator memory). Evaluate ``ema.module``."""

    def __init__(self, model: nn.Module, decay: float = 0.9999, device: torch.device | str | None = None) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay!r}")
        self.decay = decay
        self.module = copy.deepcopy(model).float().eval().requires_grad_(False)
        if device is not None:
            self.module.to(device)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema, new = self.module.state_dict(), model.state_dict()
        floats = [k for k, v in ema.items() if v.is_floating_point()]
        device = next(iter(ema.values())).device
        targets = [new[k].to(device=device, dtype=torch.float32) for k in floats]
        torch._foreach_lerp_([ema[k] for k in floats], targets, 1.0 - self.decay)
        for k, v in ema.items():
            if not v.is_floating_point():
                v.copy_(new[k])
