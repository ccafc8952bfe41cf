"""Global Response Normalization (GRN), from the ConvNeXt V2 paper's section of that name.

GRN runs in three steps on a channels-last feature map ``x`` of shape ``(N, H, W, C)``:

1. *aggregate* (:func:`grn_aggregate`): one statistic ``G_i`` per sample and channel ``i`` over the
   spatial positions. The paper's is the L2 norm ``||X_i||_2``; its ablation (Table 2, ConvNeXt V2-B
   fine-tuned top-1) also tries the L1 norm ``sum |X_i|`` and global average pooling ``mean X_i``:
   ``"l2"`` 84.6, ``"l1"`` 84.3, ``"mean"`` 83.7;
2. *normalize* (:func:`grn_normalize`): ``N_i = G_i / mean_j(G_j)``, a divisive normalization across
   channels; the ablation's alternative standardizes, ``(G_i - mean_j G_j) / std_j G_j``;
3. *calibrate* (:func:`grn_calibrate`): ``gamma * (x * N) + beta + x``. With gamma and beta
   zero-initialized, GRN starts as the identity, and the residual keeps it trainable from there.

:func:`global_response_norm` chains the three with every choice exposed; the :class:`GRN` module is
it with the paper's choices (any aggregation, divisive normalization, the residual) and learned
``gamma`` and ``beta``.

Steps 1-2 run in (at least) float32, also under autocast: squares and sums over thousands of
positions lose too much in bfloat16. Step 3 runs in the input's dtype.

Which positions count is the caller's: for masked (sparse) inputs the statistics must come from
visible positions only, per sample, or masked positions leak into the response of visible ones.
The sparse backends pass :class:`MaskedPositions` (dense maps) or :class:`TokenPositions` (visible
tokens); every aggregation works with each, since all three are sums over the positions.

Training speed: in training mode with gradients on, the :class:`GRN` module runs the paper's GRN (L2, divisive,
residual) over all positions or equal-length token sets as one autograd function, :class:`FusedGRN`, whose
hand-written backward makes four passes over the activations where autograd's chain of the three steps makes about
eight. It computes what :func:`global_response_norm` computes (tests compare values and gradients);
``GRN.fused = False`` (:func:`set_fused` for a whole model) runs the three steps instead.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor, nn

from .positions import AllPositions, Positions, TokenPositions

GRN_AGGREGATIONS = ("l2", "l1", "mean")
GRN_NORMALIZATIONS = ("divisive", "standardize", "none")


def global_response_norm(x: Tensor, gamma: Tensor | float, beta: Tensor | float, aggregation: str = "l2",
                         normalization: str = "divisive", residual: bool = True, eps: float = 1e-6,
                         positions: Positions | None = None) -> Tensor:
    """GRN of channels-last features ``x (..., C)``, by default a map ``(N, H, W, C)``:
    ``gamma * (x * N) + beta (+ x)`` with ``N = grn_normalize(grn_aggregate(x))``.

    ``gamma`` and ``beta``: one value per channel ``(C,)``, or one float for every channel.
    ``aggregation`` is one of :data:`GRN_AGGREGATIONS`, ``normalization`` one of
    :data:`GRN_NORMALIZATIONS`; ``residual=False`` drops the ``+ x``. The defaults are the paper's
    GRN. ``positions`` says which positions of each sample the statistics sum over (default: all)."""
    positions = positions or AllPositions()
    nx = grn_normalize(grn_aggregate(x, aggregation, positions), normalization, eps)
    return grn_calibrate(x, nx.to(x.dtype), gamma, beta, residual, positions.expand)


def grn_aggregate(x: Tensor, aggregation: str = "l2", positions: Positions | None = None) -> Tensor:
    """Step 1: per-sample, per-channel statistics of ``x`` over ``positions`` (default: all spatial
    positions of a map ``(N, H, W, C)`` -> ``(N, 1, 1, C)``), in float32 or wider."""
    positions = positions or AllPositions()
    x = x.to(torch.promote_types(x.dtype, torch.float32))
    if aggregation == "l2":  # the clamp gives sqrt the zero subgradient at 0 that torch.linalg.vector_norm uses
        return positions.sum(x.square()).clamp_min(torch.finfo(x.dtype).tiny).sqrt()
    if aggregation == "l1":
        return positions.sum(x.abs())
    if aggregation == "mean":
        count = positions.sum(torch.ones_like(x[..., :1]))  # positions per sample
        return positions.sum(x) / count.clamp_min(1)
    raise _unknown("aggregation", aggregation, GRN_AGGREGATIONS)


def grn_normalize(gx: Tensor, normalization: str = "divisive", eps: float = 1e-6) -> Tensor:
    """Step 2, across the channels of the statistics ``gx (..., C)``: ``divisive`` (GRN: divide by
    their mean), ``standardize`` (subtract the mean, divide by the standard deviation) or ``none``."""
    if normalization == "divisive":
        return gx / (gx.mean(dim=-1, keepdim=True) + eps)
    if normalization == "standardize":
        return (gx - gx.mean(dim=-1, keepdim=True)) / (gx.std(dim=-1, keepdim=True) + eps)
    if normalization == "none":
        return gx
    raise _unknown("normalization", normalization, GRN_NORMALIZATIONS)


def grn_calibrate(x: Tensor, nx: Tensor, gamma: Tensor | float, beta: Tensor | float, residual: bool = True,
                  expand: Callable[[Tensor], Tensor] = lambda t: t) -> Tensor:
    """Step 3: ``gamma * (x * nx) + beta (+ x)`` for ``nx`` broadcastable to ``x`` (after ``expand``);
    ``gamma`` and ``beta`` as in :func:`global_response_norm`.

    Computed as ``x * (1 + gamma * nx) + beta``: the gain is per sample and channel, so the
    full-size work is a single fused multiply-add instead of three passes."""
    gain = (1 + gamma * nx if residual else gamma * nx).to(x.dtype)
    return torch.addcmul(torch.as_tensor(beta, dtype=x.dtype, device=x.device), x, expand(gain))


def _unknown(name: str, value: str, choices: tuple[str, ...]) -> ValueError:
    return ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")


class GRN(nn.Module):
    """GRN over channels-last maps ``(N, H, W, C)``; parameters are shaped ``(1, 1, 1, C)`` as in the
    official ConvNeXt V2 checkpoints. ``aggregation`` is one of :data:`GRN_AGGREGATIONS`."""

    def __init__(self, dim: int, eps: float = 1e-6, aggregation: str = "l2") -> None:
        super().__init__()
        if aggregation not in GRN_AGGREGATIONS:
            raise _unknown("aggregation", aggregation, GRN_AGGREGATIONS)
        self.eps = eps
        self.aggregation = aggregation
        self.fused = True  # FusedGRN when it applies (training mode, grads on, L2); False: the three steps
        self.gamma = nn.Parameter(torch.zeros(1, 1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, 1, dim))

    def forward(self, x: Tensor, positions: Positions | None = None) -> Tensor:
        """``x``: channels-last features ``(..., C)``, by default a map ``(N, H, W, C)``.

        ``positions`` says which positions of each sample the statistics sum over; the default
        takes all spatial positions. Sparse backends pass :class:`MaskedPositions` or
        :class:`TokenPositions`."""
        gamma, beta = self.gamma.view(-1), self.beta.view(-1)
        if self.fused and self.training and self.aggregation == "l2" and torch.is_grad_enabled():
            per_sample = _per_sample_view(x, positions or AllPositions())
            if per_sample is not None:
                return FusedGRN.apply(per_sample, gamma, beta, self.eps).view(x.shape)
        return global_response_norm(x, gamma, beta, self.aggregation, eps=self.eps, positions=positions)

    def extra_repr(self) -> str:
        return f"dim={self.gamma.shape[-1]}, eps={self.eps}, aggregation={self.aggregation!r}"


def set_fused(model: nn.Module, enabled: bool) -> None:
    """Turn :class:`FusedGRN` on or off in every GRN of ``model`` (off: the three reference steps, for debugging)."""
    for module in model.modules():
        if isinstance(module, GRN):
            module.fused = enabled


def _per_sample_view(x: Tensor, positions: Positions) -> Tensor | None:
    """``x`` as ``(N, positions per sample, C)`` when every position of every sample counts and samples hold
    equally many (a dense map, or equal-length token sets), else None."""
    if type(positions) is AllPositions and x.dim() == 4:
        return x.reshape(x.shape[0], -1, x.shape[-1])
    if isinstance(positions, TokenPositions) and positions.uniform:
        return x.reshape(len(positions.lengths), -1, x.shape[-1])
    return None


class FusedGRN(torch.autograd.Function):
    """The paper's GRN on ``x (N, S, C)`` (S positions per sample) with a hand-written backward.

    Forward: ``G = ||x||_S`` (float32 or wider), ``Nx = G / (mean_C G + eps)``, ``y = x * (1 + gamma * Nx) + beta``.
    Backward, with ``P = sum_S(dy * x)`` and ``D = mean_C G + eps``: ``dbeta = sum(dy)``, ``dgamma = sum_N(P * Nx)``;
    through ``Nx = G / D``: ``dG = gamma * P / D - sum_C(gamma * P * G) / (C * D**2)``; and
    ``dx = dy * (1 + gamma * Nx) + x * dG / G`` (0 where ``G = 0``, as vector_norm's subgradient)."""

    @staticmethod
    def forward(ctx, x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> Tensor:
        stats = x.to(torch.promote_types(x.dtype, torch.float32))
        norm = torch.linalg.vecdot(stats, stats, dim=1).sqrt_()  # (N, C)
        denominator = norm.mean(dim=-1, keepdim=True) + eps  # (N, 1)
        relative = norm / denominator  # Nx
        gain = 1 + gamma * relative  # (N, C)
        ctx.save_for_backward(x, gamma, norm, denominator, relative, gain)
        return torch.addcmul(beta.to(x.dtype), x, gain.to(x.dtype).unsqueeze(1))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        x, gamma, norm, denominator, relative, gain = ctx.saved_tensors
        wide = norm.dtype
        grad_beta = grad.sum(dim=(0, 1), dtype=wide)
        projection = torch.linalg.vecdot(grad.to(wide), x.to(wide), dim=1)  # P: (N, C)
        grad_gamma = (projection * relative).sum(dim=0)
        grad_relative = projection * gamma
        grad_norm = (grad_relative - (grad_relative * relative).mean(dim=-1, keepdim=True)) / denominator
        scale = torch.where(norm > 0, grad_norm / norm, 0.0)  # dG / G
        grad_x = grad * gain.to(grad.dtype).unsqueeze(1)
        grad_x.addcmul_(x, scale.to(x.dtype).unsqueeze(1))
        return grad_x, grad_gamma.to(gamma.dtype), grad_beta.to(gamma.dtype), None
