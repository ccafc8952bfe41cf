"""The stage-loop steps that the ``gather`` and ``minkowski`` backends share, on visible tokens.

Both hold a stage's features as a token matrix ``(M, C)``, one row per visible position, sorted by
sample, with :class:`TokenPositions` saying how many tokens each sample has. The per-position steps
of the dense model then apply to the tokens directly, except two that assume ``(N, C, H, W)`` maps:
the downsampling layers' channels-first LayerNorm and the per-sample drop path.
"""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..layers import DropPath, TokenPositions


def layer_norm(tokens: Tensor, norm: nn.LayerNorm) -> Tensor:
    """A downsampling layer's LayerNorm (a :class:`LayerNorm2d` on maps) on tokens ``(M, C)``."""
    return F.layer_norm(tokens, norm.normalized_shape, norm.weight, norm.bias, norm.eps)


def drop_path(branch: Tensor, module: DropPath, positions: TokenPositions) -> Tensor:
    """Stochastic depth on a residual branch of tokens ``(M, C)``: all of a sample's tokens are
    dropped or kept together. Draws the same random numbers as ``module`` on ``(N, ...)`` maps, so a
    seeded run drops the same samples in every backend."""
    if module.drop_prob == 0.0 or not module.training:
        return branch
    keep = module(branch.new_ones(len(positions.lengths), 1))  # (N, 1): 0 or 1 / (1 - drop_prob)
    return branch * positions.expand(keep)
