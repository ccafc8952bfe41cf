"""Visible-token sparse encoder: the ``gather`` backend, the fast path.

Only visible positions are stored, as a token matrix ``(M, C)``. Per-position ops (LayerNorm,
Linear, GELU, GRN, Linear) run on the tokens alone: at a 60% mask ratio that is 40% of the dense
work. The 7x7 depthwise conv scatters the tokens into a zero-filled channels-last map, runs the
dense conv and gathers the visible positions back, which is exactly submanifold convolution.

Tokens are ordered by visible mask cell, then by position inside the cell. A cell covers
``s x s`` positions at a stage (s = 8, 4, 2, 1), so the 2x2/2 downsampling conv is a reshape of
each cell's tokens into ``(s/2)^2`` groups of 2x2 neighbours followed by one matrix product.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..layers import drop_path, token_l2
from ..models import ConvNeXtV2


def forward_features(model: ConvNeXtV2, x: Tensor, mask: Tensor) -> Tensor:
    """``x (N, C_in, H, W)``, ``mask (N, H/32, W/32)`` bool (True = masked) -> ``(N, C4, H/32, W/32)``,
    zero at masked cells."""
    n, (h, w) = x.shape[0], mask.shape[1:]
    cells = (~mask).nonzero()  # (V, 3): sample, row, column of each visible cell
    num_stages = len(model.stages)
    tokens = None
    for i, (downsample, stage) in enumerate(zip(model.downsample_layers, model.stages)):
        s = 2 ** (num_stages - 1 - i)  # positions per cell side at this stage
        positions, sample_index = _token_positions(cells, s, h * s, w * s)
        if i == 0:
            stem = downsample(x).permute(0, 2, 3, 1)
            tokens = stem.reshape(-1, stem.shape[-1])[positions]
        else:
            tokens = _downsample(tokens, *downsample, s)
        aggregate = token_l2(sample_index, n)
        for block in stage:
            dense = _scatter(tokens, positions, (n, h * s, w * s))
            y = block.mlp(_gather(block.dwconv(dense), positions), aggregate)
            if block.drop_path.drop_prob > 0 and block.training:
                y = y * drop_path(y.new_ones(n, 1), block.drop_path.drop_prob, True)[sample_index]
            tokens = tokens + y
    return _scatter(tokens, positions, (n, h, w))


def _token_positions(cells: Tensor, s: int, height: int, width: int) -> tuple[Tensor, Tensor]:
    """Flat positions ``(M,)`` in an ``(N, height, width)`` map of the tokens of visible ``cells``,
    cell-major then row-major inside the cell, and each token's sample index ``(M,)``."""
    offsets = torch.arange(s, device=cells.device)
    sample, row, col = cells.unbind(1)
    rows = (row * s)[:, None, None] + offsets[None, :, None]
    cols = (col * s)[:, None, None] + offsets[None, None, :]
    positions = (sample[:, None, None] * height + rows) * width + cols
    return positions.reshape(-1), sample.repeat_interleave(s * s)


def _scatter(tokens: Tensor, positions: Tensor, size: tuple[int, int, int]) -> Tensor:
    """Tokens ``(M, C)`` -> zero-filled map ``(N, C, H, W)`` in channels-last memory format."""
    n, height, width = size
    dense = tokens.new_zeros(n * height * width, tokens.shape[1]).index_copy(0, positions, tokens)
    return dense.view(n, height, width, -1).permute(0, 3, 1, 2)


def _gather(dense: Tensor, positions: Tensor) -> Tensor:
    """Map ``(N, C, H, W)`` -> tokens ``(M, C)`` at ``positions``."""
    return dense.permute(0, 2, 3, 1).reshape(-1, dense.shape[1])[positions]


def _downsample(tokens: Tensor, norm: torch.nn.LayerNorm, conv: torch.nn.Conv2d, s: int) -> Tensor:
    """LayerNorm then 2x2/2 conv on tokens of cells with ``2s x 2s`` positions -> ``s x s`` positions."""
    c = tokens.shape[1]
    tokens = F.layer_norm(tokens, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    groups = tokens.view(-1, s, 2, s, 2, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, 4 * c)  # (dy, dx, c)
    weight = conv.weight.permute(0, 2, 3, 1).reshape(conv.out_channels, 4 * c)
    return F.linear(groups, weight, conv.bias)
