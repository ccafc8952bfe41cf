"""Global Response Normalization (GRN), from the ConvNeXt V2 paper's section of that name.

GRN runs in three steps on a channels-last feature map ``x`` of shape ``(N, H, W, C)``:

1. *aggregate*: ``G_i = ||X_i||_2`` over the spatial positions of each sample and channel ``i``;
2. *normalize*: ``N_i = G_i / mean_j(G_j)``, a divisive normalization across channels;
3. *calibrate*: ``gamma * (x * N) + beta + x``. With gamma and beta zero-initialized, GRN starts as
   the identity, and the residual keeps it trainable from there.

For masked (sparse) inputs the statistics must come from visible positions only, per sample, or
masked positions leak into the response of visible ones: the sparse backends pass an aggregation
that counts visible positions only (:class:`MaskedL2`, :class:`TokenL2`).
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

    def forward(self, x: Tensor, aggregation: Aggregation | None = None) -> Tensor:
        """``x``: channels-last features ``(..., C)``, by default a map ``(N, H, W, C)``.

        ``aggregation`` says over which positions of each sample the L2 norms are taken; the default
        takes all spatial positions. Sparse backends pass :class:`MaskedL2` or :class:`TokenL2`."""
        aggregation = aggregation or SpatialL2()
        return self.calibrate(x, self.response(aggregation.norms(x)), aggregation.expand)

    def response(self, gx: Tensor) -> Tensor:
        """Step 2: divide the per-channel norms ``gx (..., C)`` by their mean over channels."""
        return gx / (gx.mean(dim=-1, keepdim=True) + self.eps)

    def calibrate(self, x: Tensor, nx: Tensor, expand: Callable[[Tensor], Tensor] = lambda t: t) -> Tensor:
        """Step 3: ``gamma * (x * nx) + beta + x`` for ``nx`` broadcastable to ``x`` (after ``expand``).

        Computed as ``x * (1 + gamma * nx) + beta``: the gain is per sample and channel, so the
        full-size work is a single fused multiply-add instead of three passes."""
        return torch.addcmul(self.beta.view(-1), x, expand(1 + self.gamma.view(-1) * nx))

    def extra_repr(self) -> str:
        return f"dim={self.gamma.shape[-1]}, eps={self.eps}"


class SpatialL2:
    """Dense maps ``(N, H, W, C)``: norms over all positions, ``(N, 1, 1, C)``, which broadcast."""

    def norms(self, x: Tensor) -> Tensor:
        return torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)

    def expand(self, values: Tensor) -> Tensor:
        return values


class MaskedL2(SpatialL2):
    """Dense maps whose masked positions hold garbage: norms over positions where ``visible``
    ``(N, H, W, 1)`` is 1."""

    def __init__(self, visible: Tensor) -> None:
        self.visible = visible

    def norms(self, x: Tensor) -> Tensor:
        return super().norms(x * self.visible)


class TokenL2:
    """A flat set of visible tokens ``(M, C)`` sorted by sample, ``lengths[n]`` of them for sample
    ``n``: norms ``(N, C)``, expanded back to ``(M, C)`` by :meth:`expand`. Equal lengths (the
    usual case: every FCMAE mask keeps the same number of cells) take a faster reshape path."""

    def __init__(self, lengths: Tensor) -> None:
        self.lengths = lengths
        self.uniform = bool((lengths == lengths[0]).all())

    def norms(self, x: Tensor) -> Tensor:
        if self.uniform:
            return torch.linalg.vector_norm(x.view(len(self.lengths), -1, x.shape[-1]), dim=1)
        sq = torch.segment_reduce(x.square(), "sum", lengths=self.lengths, axis=0)
        # sqrt'(0) is infinite; clamping gives the zero subgradient that vector_norm uses.
        return sq.clamp_min(torch.finfo(x.dtype).tiny).sqrt()

    def expand(self, values: Tensor) -> Tensor:
        """Per-sample ``(N, C)`` -> per-token ``(M, C)``."""
        if self.uniform:
            n, c = values.shape
            return values.unsqueeze(1).expand(n, int(self.lengths[0]), c).reshape(-1, c)
        return values.repeat_interleave(self.lengths, dim=0)


Aggregation = SpatialL2 | TokenL2
