"""Stochastic depth: drop a residual branch for a random subset of samples."""
from __future__ import annotations

from torch import Tensor, nn


def drop_path(x: Tensor, drop_prob: float, training: bool) -> Tensor:
    """Zero the branch ``x`` for each sample with probability ``drop_prob`` and rescale the rest by
    ``1 / (1 - drop_prob)``. ``x``: ``(N, ...)``."""
    if drop_prob == 0.0 or not training:
        return x
    keep = 1.0 - drop_prob
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    return x * x.new_empty(shape).bernoulli_(keep).div_(keep)


class DropPath(nn.Module):
    """Module form of :func:`drop_path` for ``(N, ...)`` inputs."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: Tensor) -> Tensor:
        return drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob}"
