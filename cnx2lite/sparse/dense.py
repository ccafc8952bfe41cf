"""Exact sparse emulation with dense tensors: the ``dense`` backend.

Features live on full-resolution maps with zeros at masked positions. A plain dense ConvNet on a
masked image is not sparse: convolutions copy visible content into masked regions, and biases
(conv bias, LayerNorm beta, GRN beta, GELU of a bias) make masked positions nonzero, which then
flows back into visible outputs through the next conv and GRN's statistics. Re-masking after each
place where that happens and taking GRN statistics over visible positions only (for every GRN
aggregation: sums over, and counts of, visible positions) makes every visible output equal to what
a submanifold sparse ConvNet computes.
"""
from __future__ import annotations

from torch import Tensor

from ..layers import MaskedPositions
from ..masking import stage_masks
from ..models import ConvNeXtV2


def forward_features(model: ConvNeXtV2, x: Tensor, mask: Tensor) -> Tensor:
    """``x (N, C_in, H, W)``, ``mask (N, H/32, W/32)`` bool (True = masked) -> ``(N, C4, H/32, W/32)``,
    zero at masked cells."""
    visible = [(~m).unsqueeze(1).to(x.dtype) for m in stage_masks(mask)]  # (N, 1, H_i, W_i) per stage
    for i, (downsample, stage) in enumerate(zip(model.downsample_layers, model.stages)):
        if i == 0:
            x = downsample(x) * visible[0]  # the stem runs on the full image; its patches lie inside cells
        else:
            norm, conv = downsample
            x = conv(norm(x) * visible[i - 1]) * visible[i]
        positions = MaskedPositions(visible[i].permute(0, 2, 3, 1))
        for block in stage:
            y = block.mlp(block.dwconv(x).permute(0, 2, 3, 1), positions)
            x = (x + block.drop_path(y.permute(0, 3, 1, 2))) * visible[i]
    return x
