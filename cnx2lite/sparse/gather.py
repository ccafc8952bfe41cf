"""Visible-token sparse encoder: the ``gather`` backend, the fast path.

Only visible positions are stored, as a token matrix ``(M, C)`` in row-major order (sample, row,
column), so each sample's tokens are contiguous. Per-position ops (LayerNorm, Linear, GELU, GRN,
Linear) run on the tokens alone: at a 60% mask ratio that is 40% of the dense work. The 7x7
depthwise conv scatters the tokens into a zero-filled channels-last map, runs the dense conv and
gathers the visible positions back, which is exactly submanifold convolution. The 2x2/2
downsampling conv does the same; with cell-aligned masks every window is all visible or all masked.
"""
from __future__ import annotations

import torch
from torch import Tensor

from ..layers import TokenPositions
from ..masking import stage_masks
from ..models import ConvNeXtV2
from .tokens import drop_path, layer_norm


def forward_features(model: ConvNeXtV2, x: Tensor, mask: Tensor) -> Tensor:
    """``x (N, C_in, H, W)``, ``mask (N, H/32, W/32)`` bool (True = masked) -> ``(N, C4, H/32, W/32)``,
    zero at masked cells."""
    visible = [~m for m in stage_masks(mask)]  # (N, H_i, W_i), finest first
    cells = visible[-1].flatten(1).sum(1)  # visible cells per sample
    for i, (downsample, stage) in enumerate(zip(model.downsample_layers, model.stages)):
        if i == 0:
            tokens = gather(downsample(x), visible[0])  # the stem runs on the full image
        else:
            norm, conv = downsample
            tokens = gather(conv(scatter(layer_norm(tokens, norm), visible[i - 1])), visible[i])
        positions = TokenPositions(cells * (visible[i].shape[1] // mask.shape[1]) ** 2,  # tokens per sample
                                   visible=visible[i])  # row-major, as gather()
        for block in stage:
            y = block.mlp(gather(block.dwconv(scatter(tokens, visible[i])), visible[i]), positions)
            tokens = tokens + drop_path(y, block.drop_path, positions)
    return scatter(tokens, visible[-1])


class _Gather(torch.autograd.Function):
    """Map ``(N, C, H, W)`` -> tokens ``(M, C)`` at ``visible (N, H, W)``. Positions are unique, so the
    backward is a plain scatter (autograd's default for indexing accumulates, which is much slower)."""

    @staticmethod
    def forward(ctx, dense: Tensor, visible: Tensor) -> Tensor:
        ctx.save_for_backward(visible)
        return dense.permute(0, 2, 3, 1)[visible]

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (visible,) = ctx.saved_tensors
        return scatter(grad, visible), None


class _Scatter(torch.autograd.Function):
    """Tokens ``(M, C)`` -> zero-filled map ``(N, C, H, W)`` in channels-last memory format; the
    adjoint of :class:`_Gather`."""

    @staticmethod
    def forward(ctx, tokens: Tensor, visible: Tensor) -> Tensor:
        ctx.save_for_backward(visible)
        dense = tokens.new_zeros(*visible.shape, tokens.shape[1])
        dense[visible] = tokens
        return dense.permute(0, 3, 1, 2)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:
        (visible,) = ctx.saved_tensors
        return gather(grad, visible), None


def gather(dense: Tensor, visible: Tensor) -> Tensor:
    """Map ``(N, C, H, W)`` -> visible tokens ``(M, C)``, row-major."""
    return _Gather.apply(dense, visible)


def scatter(tokens: Tensor, visible: Tensor) -> Tensor:
    """Visible tokens ``(M, C)`` -> map ``(N, C, H, W)``, zero at masked positions."""
    return _Scatter.apply(tokens, visible)
