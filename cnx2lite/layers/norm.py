"""LayerNorm over the channel dimension of a channels-first map ``(N, C, H, W)``."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn


class LayerNorm2d(nn.LayerNorm):
    """``nn.LayerNorm`` over ``C`` for ``(N, C, H, W)`` inputs (the official repo's "channels_first"
    LayerNorm). The permutes are free views when the input is in ``channels_last`` memory format."""

    def forward(self, x: Tensor) -> Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)
