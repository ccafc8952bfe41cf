"""The optimizer and its schedule: AdamW parameter groups (no weight decay on 1-D-like parameters, layer-wise lr
decay) and the per-step learning rate (linear warmup, then half-cosine).

Layer ids follow the official ConvNeXt V2 ``optim_factory.py``
(``scale = layer_decay ** (num_layers + 1 - layer_id)``, so the head trains at full lr):

* ``"single"`` (``get_num_layer_for_convnext_single``): one id per block, ``num_layers = sum(depths)``.
  Block ``b`` of stage ``s`` is ``sum(depths[:s]) + b + 1``; ``downsample_layers.s`` shares the id of
  the first block it feeds, ``sum(depths[:s]) + 1``, so the stem is 1; nothing gets id 0. The final
  norm and head are ``num_layers + 1``.
* ``"group"`` (``get_num_layer_for_convnext``, the paper's base/large recipe): ``num_layers = 12``;
  stem 0, stages 0-1 (and the downsampling before them) ``s + 1``, stage 2 block ``b`` ``3 + b // 3``,
  stage 3 (and its downsampling) 12, head 13.

FCMAE names (``encoder.*``) get the encoder's ids; the decoder and mask token count as head.

Weight decay: biases and 1-D parameters (norm weights, LayerScale) never decay. GRN gamma/beta and the
mask token (shaped ``(1, 1, 1, C)`` / ``(1, D, 1, 1)``) decay only with ``decay_grn_and_mask_token``:
the official pretraining (``main_pretrain.py``, timm's ``add_weight_decay``) decays them, the official
fine-tuning (``get_parameter_groups``, which skips names ending in ``.gamma``/``.beta``) does not.
"""
from __future__ import annotations

import math
import re

import torch
from torch import nn

from ..models import ConvNeXtV2

LAYER_DECAY_MODES = ("single", "group")
GRN_AND_MASK_TOKEN = ("grn.gamma", "grn.beta", "mask_token")
GROUP_LAYERS = 12


def no_weight_decay(name: str, param: torch.Tensor, decay_grn_and_mask_token: bool = False) -> bool:
    """Whether parameter ``name`` is exempt from weight decay (see the module docstring)."""
    if param.ndim <= 1 or name.endswith(".bias"):
        return True
    return not decay_grn_and_mask_token and name.endswith(GRN_AND_MASK_TOKEN)


def num_layers(depths: tuple[int, ...], mode: str) -> int:
    _check_mode(mode)
    return sum(depths) if mode == "single" else GROUP_LAYERS


def layer_id(name: str, depths: tuple[int, ...], mode: str) -> int:
    """The layer id of parameter ``name`` of a :class:`ConvNeXtV2` under ``mode``, also inside another module
    (``encoder.stages...`` of FCMAE, ``backbone.body.stages...`` of a detector): whatever is not the ConvNeXt's
    (decoder, FPN, heads) counts as head. A stage norm shares the id of its stage's last block."""
    top = num_layers(depths, mode) + 1
    match = re.search(r"(?:^|\.)(downsample_layers|stages|stage_norms)\.(\d+)(?:\.(\d+))?", name)
    if match is None:
        return top
    kind, stage = match.group(1), int(match.group(2))
    block = {"stages": int(match.group(3) or 0), "stage_norms": depths[stage] - 1}.get(kind, 0)
    if mode == "single":
        return sum(depths[:stage]) + block + 1
    if kind == "downsample_layers" and stage == 0:
        return 0
    return {0: 1, 1: 2, 2: 3 + block // 3}.get(stage, GROUP_LAYERS)


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0, mode: str = "single",
                 decay_grn_and_mask_token: bool = False) -> list[dict]:
    """Parameter groups with ``weight_decay`` and ``lr_scale`` set; the schedule sets
    ``lr = lr_scale * scheduled lr``. ``layer_decay=1`` gives one scale for all.
    ``decay_grn_and_mask_token``: True for the official pretraining's weight decay, False for its
    fine-tuning's."""
    _check_mode(mode)
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay!r}")
    convnext = next((m for m in model.modules() if isinstance(m, ConvNeXtV2)), None)
    if convnext is None:
        raise ValueError(f"param_groups needs a model holding a ConvNeXtV2, got {type(model).__name__}")
    depths = tuple(convnext.depths)
    top = num_layers(depths, mode) + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lid = layer_id(name, depths, mode) if layer_decay < 1.0 else top
        decay = not no_weight_decay(name, param, decay_grn_and_mask_token)
        group = groups.setdefault((lid, decay), {
            "params": [], "names": [], "weight_decay": weight_decay if decay else 0.0,
            "lr_scale": layer_decay ** (top - lid),
        })
        group["params"].append(param)
        group["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                    layer_decay: float = 1.0, mode: str = "single",
                    decay_grn_and_mask_token: bool = False, fused: bool = False) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; each group's ``lr`` starts at ``lr * lr_scale``. ``fused``: torch's fused
    kernel (one pass over each parameter; the same update within float32 rounding), else its default loop."""
    groups = param_groups(model, weight_decay, layer_decay, mode, decay_grn_and_mask_token)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), fused=fused or None)


def _check_mode(mode: str) -> None:
    if mode not in LAYER_DECAY_MODES:
        raise ValueError(f"layer_decay_mode must be one of {', '.join(map(repr, LAYER_DECAY_MODES))}; got {mode!r}")


def cosine_lr(step: int, total_steps: int, peak_lr: float, warmup_steps: int = 0, min_lr: float = 0.0) -> float:
    """The learning rate at optimizer step ``step`` (0-based) of ``total_steps``: linear warmup from 0 over
    ``warmup_steps``, then half-cosine down to ``min_lr``."""
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    decay_steps = max(total_steps - warmup_steps, 1)
    progress = min((step - warmup_steps) / decay_steps, 1.0)
    return min_lr + (peak_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))
