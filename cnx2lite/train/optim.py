"""AdamW parameter groups: no weight decay on 1-D-like parameters, layer-wise lr decay.

Layer ids (``scale = layer_decay ** (num_layers + 1 - layer_id)``, so the head trains at full lr):

* ``"single"``: one id per block, ``num_layers = sum(depths)``. The stem (``downsample_layers.0``)
  is 0, block ``b`` of stage ``s`` is ``sum(depths[:s]) + b + 1``, ``downsample_layers.s`` shares the
  id of the first block it feeds, the final norm and head are ``num_layers + 1``.
* ``"group"`` (the paper's base/large recipe): ``num_layers = 12``; stem 0, stages 0-1 (and the
  downsampling before them) ``s + 1``, stage 2 block ``b`` ``3 + b // 3``, stage 3 12, head 13.

FCMAE names (``encoder.*``) get the encoder's ids; the decoder and mask token count as head.
"""
from __future__ import annotations

import torch
from torch import nn

LAYER_DECAY_MODES = ("single", "group")
NO_DECAY_NAMES = ("grn.gamma", "grn.beta", "mask_token")  # shaped (1, 1, 1, C) / (1, D, 1, 1)
GROUP_LAYERS = 12


def no_weight_decay(name: str, param: torch.Tensor) -> bool:
    """Biases, norm weights, GRN gamma/beta, LayerScale and the mask token take no weight decay."""
    return param.ndim <= 1 or name.endswith(".bias") or name.endswith(NO_DECAY_NAMES)


def num_layers(depths: tuple[int, ...], mode: str) -> int:
    _check_mode(mode)
    return sum(depths) if mode == "single" else GROUP_LAYERS


def layer_id(name: str, depths: tuple[int, ...], mode: str) -> int:
    """The layer id of parameter ``name`` of a :class:`ConvNeXtV2` (or FCMAE) under ``mode``."""
    top = num_layers(depths, mode) + 1
    parts = name.removeprefix("encoder.").split(".")
    if parts[0] not in ("downsample_layers", "stages"):
        return top
    stage = int(parts[1])
    if parts[0] == "downsample_layers" and stage == 0:
        return 0
    block = int(parts[2]) if parts[0] == "stages" else 0
    if mode == "single":
        return sum(depths[:stage]) + block + 1
    return {0: 1, 1: 2, 2: 3 + block // 3}.get(stage, GROUP_LAYERS)


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float = 1.0,
                 mode: str = "single") -> list[dict]:
    """Parameter groups with ``weight_decay`` and ``lr_scale`` set; the schedule sets
    ``lr = lr_scale * scheduled lr``. ``layer_decay=1`` gives one scale for all."""
    _check_mode(mode)
    if not 0.0 < layer_decay <= 1.0:
        raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay!r}")
    encoder = getattr(model, "encoder", model)
    depths = tuple(encoder.depths)
    top = num_layers(depths, mode) + 1
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        lid = layer_id(name, depths, mode) if layer_decay < 1.0 else top
        decay = not no_weight_decay(name, param)
        group = groups.setdefault((lid, decay), {
            "params": [], "names": [], "weight_decay": weight_decay if decay else 0.0,
            "lr_scale": layer_decay ** (top - lid),
        })
        group["params"].append(param)
        group["names"].append(name)
    return [groups[k] for k in sorted(groups)]


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float],
                    layer_decay: float = 1.0, mode: str = "single") -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; each group's ``lr`` starts at ``lr * lr_scale``."""
    groups = param_groups(model, weight_decay, layer_decay, mode)
    for group in groups:
        group["lr"] = lr * group["lr_scale"]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))


def _check_mode(mode: str) -> None:
    if mode not in LAYER_DECAY_MODES:
        raise ValueError(f"layer_decay_mode must be one of {', '.join(map(repr, LAYER_DECAY_MODES))}; got {mode!r}")
