"""What can sit in GRN's place in a block's MLP, after the GELU on the ``4C`` expanded channels: the paper's GRN
ablation (Table 2: GRN against local response norm, BatchNorm and LayerNorm, and against SE and CBAM gating).

Every module takes channels-last features ``x (..., C)`` (a map ``(N, H, W, C)``, or visible tokens ``(M, C)``) and
the :mod:`~cnx2lite.layers.positions` they sit at, and is exact in every sparse backend: a statistic comes from the
visible positions only (per sample for GRN, SE and CBAM; over the whole batch's visible positions for BatchNorm, which
is the paper's argument against it: under FCMAE its statistics are of what the mask left), and CBAM's spatial conv
sees zeros at masked positions, as a submanifold sparse conv does.

- ``grn``: :class:`~cnx2lite.layers.grn.GRN` (the paper's); ``none``: nothing (the V1 MLP);
- ``lrn``: local response normalization across neighbouring channels at each position (AlexNet's settings);
- ``bn``: BatchNorm over the visible positions of the batch (running statistics at evaluation);
- ``ln``: LayerNorm over the channels at each position;
- ``se``: squeeze-and-excitation (Hu et al. 2018): a per-sample channel gate from the visible positions' mean;
- ``cbam``: CBAM (Woo et al. 2018): a channel gate from the mean and max over visible positions, then a spatial gate
  from a 7x7 conv over each position's channel mean and max.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .grn import GRN
from .positions import AllPositions, Positions

BLOCK_NORMS = ("grn", "none", "lrn", "bn", "ln", "se", "cbam")


def _wide(x: Tensor) -> Tensor:
    """``x`` in float32 or wider: sums over thousands of positions lose too much in bfloat16 (as GRN's)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _count(x: Tensor, positions: Positions) -> Tensor:
    """Positions per sample, shaped like ``positions.sum``'s output with one channel."""
    return positions.sum(torch.ones_like(x[..., :1]))


class LocalResponseNorm(nn.LocalResponseNorm):
    """Across the channels of each position: ``x_c / (k + alpha/size * sum of x^2 over size neighbours) ** beta``."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 2.0) -> None:
        super().__init__(size, alpha, beta, k)

    def forward(self, x: Tensor, positions: Positions | None = None) -> Tensor:
        return super().forward(x.reshape(-1, x.shape[-1], 1)).view(x.shape)


class LayerNorm(nn.LayerNorm):
    """LayerNorm over the channels of each position."""

    def forward(self, x: Tensor, positions: Positions | None = None) -> Tensor:
        return super().forward(x)


class VisibleBatchNorm(nn.BatchNorm1d):
    """BatchNorm whose training statistics are over the visible positions of the whole batch; running statistics
    (unbiased variance, as :class:`torch.nn.BatchNorm1d`) at evaluation."""

    def forward(self, x: Tensor, positions: Positions | None = None) -> Tensor:
        positions = positions or AllPositions()
        channels = x.shape[-1]
        if self.training:
            wide = _wide(x)
            count = _count(wide, positions).sum()
            mean = positions.sum(wide).reshape(-1, channels).sum(dim=0) / count
            var = positions.sum((wide - mean).square()).reshape(-1, channels).sum(dim=0) / count
            with torch.no_grad():
                self.num_batches_tracked += 1
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), self.momentum)
                unbiased = var * count / (count - 1).clamp_min(1)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight * torch.rsqrt(var + self.eps)
        return (x * scale.to(x.dtype) + (self.bias - mean * scale).to(x.dtype))


class SqueezeExcite(nn.Module):
    """A per-sample channel gate: ``x * sigmoid(fc2(relu(fc1(mean of x over visible positions))))``."""

    def __init__(self, dim: int, reduction: int = 16) -> None:
        super().__init__()
        hidden = max(8, dim // reduction)
        self.fc1, self.fc2 = nn.Linear(dim, hidden), nn.Linear(hidden, dim)

    def forward(self, x: Tensor, positions: Positions | None = None) -> Tensor:
        positions = positions or AllPositions()
        wide = _wide(x)
        mean = (positions.sum(wide) / _count(wide, positions)).to(x.dtype)
        return x * positions.expand(torch.sigmoid(self.fc2(F.relu(self.fc1(mean)))))


class CBAM(nn.Module):
    """Channel gate ``sigmoid(mlp(mean) + mlp(max))`` over visible positions, then a spatial gate
    ``sigmoid(conv7x7([channel mean, channel max]))`` at each position."""

    def __init__(self, dim: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(8, dim // reduction)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, x: Tensor, positions: Positions | None = None) -> Tensor:
        positions = positions or AllPositions()
        wide = _wide(x)
        pooled_mean, pooled_max = (positions.sum(wide) / _count(wide, positions)).to(x.dtype), positions.amax(x)
        x = x * positions.expand(torch.sigmoid(self.mlp(pooled_mean) + self.mlp(pooled_max)))
        grid = positions.to_map(x)  # (N, H, W, C), zeros at masked positions
        described = torch.stack([grid.mean(dim=-1), grid.amax(dim=-1)], dim=1)  # (N, 2, H, W)
        gate = torch.sigmoid(self.spatial(described)).permute(0, 2, 3, 1)  # (N, H, W, 1)
        return x * positions.from_map(gate)


def create_block_norm(name: str, dim: int, grn_aggregation: str = "l2") -> nn.Module | None:
    """The module ``name`` (one of :data:`BLOCK_NORMS`) for ``dim`` channels; ``None`` for ``"none"``."""
    if name not in BLOCK_NORMS:
        raise ValueError(f"block_norm must be one of {', '.join(BLOCK_NORMS)}; got {name!r}")
    return {"grn": lambda: GRN(dim, aggregation=grn_aggregation), "none": lambda: None, "lrn": LocalResponseNorm,
            "bn": lambda: VisibleBatchNorm(dim), "ln": lambda: LayerNorm(dim, eps=1e-6),
            "se": lambda: SqueezeExcite(dim), "cbam": lambda: CBAM(dim)}[name]()
