"""Global Response Normalization (GRN), ConvNeXt V2 section 3.

GRN runs in three steps on a channels-last feature map ``x`` of shape ``(N, H, W, C)``:

1. *aggregate*: ``G_i = ||X_i||_2`` over the spatial positions of each sample and channel ``i``;
2. *normalize*: ``N_i = G_i / mean_j(G_j)``, a divisive normalization across channels;
3. *calibrate*: ``gamma * (x * N) + beta + x``. With gamma and beta zero-initialized, GRN starts as
   the identity, and the residual keeps it trainable from there.

For masked (sparse) inputs the statistics must come from visible positions only, per sample, or
masked positions leak into the response of visible ones: the sparse backends pass an ``aggregate``
function that counts visible positions only.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn


class GRN(nn.Module):
    """GRN over channels-last maps ``(N, H, W, C)``; parameters are shaped ``(1, 1, 1, C)`` as in the
    official ConvNeXt V2 checkpoints."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: Tensor, aggregate: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        """``x``: channels-last features ``(..., C)``, by default a map ``(N, H, W, C)``.

        ``aggregate(x)`` returns the per-sample, per-channel L2 norms broadcastable to ``x``; the
        default takes them over all spatial positions. Sparse backends pass one that counts only
        visible positions (:func:`masked_l2`, :func:`token_l2`)."""
        gx = spatial_l2(x) if aggregate is None else aggregate(x)
        return self.calibrate(x, self.response(gx))

    def response(self, gx: Tensor) -> Tensor:
        """Step 2: divide the per-channel norms ``gx (..., C)`` by their mean over channels."""
        return gx / (gx.mean(dim=-1, keepdim=True) + self.eps)

    def calibrate(self, x: Tensor, nx: Tensor) -> Tensor:
        """Step 3: ``gamma * (x * nx) + beta + x``, with ``nx`` broadcastable to ``x``."""
        return torch.addcmul(x + self.beta.view(-1), x * nx, self.gamma.view(-1))

    def extra_repr(self) -> str:
        return f"dim={self.gamma.shape[-1]}, eps={self.eps}"


def spatial_l2(x: Tensor) -> Tensor:
    """Per-channel L2 norm over space: ``(N, H, W, C)`` -> ``(N, 1, 1, C)``."""
    return torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)


def masked_l2(visible: Tensor) -> Callable[[Tensor], Tensor]:
    """Aggregation over visible positions of a dense map; ``visible``: ``(N, H, W, 1)``, 1 = visible."""
    return lambda x: spatial_l2(x * visible)


def token_l2(sample_index: Tensor, num_samples: int) -> Callable[[Tensor], Tensor]:
    """Aggregation over a flat set of visible tokens ``(M, C)``; ``sample_index: (M,)`` names each
    token's sample. Returns per-token norms ``(M, C)`` equal to :func:`masked_l2` on the dense map."""

    def aggregate(x: Tensor) -> Tensor:
        sq = x.new_zeros(num_samples, x.shape[-1]).index_add_(0, sample_index, x.square())
        # sqrt'(0) is infinite; clamping gives the zero subgradient that vector_norm uses.
        return sq.clamp_min(torch.finfo(x.dtype).tiny).sqrt()[sample_index]

    return aggregate
