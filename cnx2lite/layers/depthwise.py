"""The blocks' 7x7 depthwise convolution: the same parameters and outputs as ``nn.Conv2d(dim, dim, 7, padding=3,
groups=dim)``, computed the way that is fastest on a CPU for each map size."""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class DepthwiseConv2d(nn.Conv2d):
    """``nn.Conv2d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)`` on ``(N, C, H, W)`` maps, with two
    changes of how, not what, it computes (measured fwd+bwd at batch 64 on 2 CPU cores):

    - the bias is added after the convolution: oneDNN's CPU backward of a depthwise conv spends about a third as long
      on the bias gradient as on the weight gradient (1.7 vs 5.6 ms for ``(64, 40, 24, 24)``), where a broadcast
      add's is a sum;
    - a map smaller than the kernel (stages 3 and 4 at 96 px: 6x6 and 3x3) is convolved as a matrix product
      (:func:`small_map_depthwise_conv`): oneDNN's kernels slow down there (a 6x6 map took twice as long as a 7x7
      one), the product took 2.2-2.7x less time than them on an AVX2 EPYC. ``small_map_matmul`` False: the conv
      everywhere (:func:`set_small_map_matmul`, for debugging).
    """

    def __init__(self, dim: int, kernel_size: int = 7) -> None:
        super().__init__(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.small_map_matmul = True

    def forward(self, x: Tensor) -> Tensor:
        if self.small_map_matmul and max(x.shape[-2:]) < self.kernel_size[0]:
            y = small_map_depthwise_conv(x, self.weight)
        else:
            y = self._conv_forward(x, self.weight, None)
        return y + self.bias.view(1, -1, 1, 1)


def set_small_map_matmul(model: nn.Module, enabled: bool) -> None:
    """Convolve maps smaller than the kernel as a matrix product in every :class:`DepthwiseConv2d` of ``model``, or
    (off) by the conv, as everywhere else."""
    for module in model.modules():
        if isinstance(module, DepthwiseConv2d):
            module.small_map_matmul = enabled


def small_map_depthwise_conv(x: Tensor, weight: Tensor) -> Tensor:
    """A depthwise convolution with 'same' zero padding and no bias, ``x (N, C, H, W)`` by ``weight (C, 1, k, k)``
    (``k`` odd), as a matrix product: on a map smaller than the kernel every output position sees the whole map, so
    each channel's convolution is one ``(HW, HW)`` matrix whose entries are the kernel's taps (or zero), applied to
    the ``N`` images at once. Returns ``(N, C, H, W)`` in channels-last memory format (the block's permute to
    ``(N, H, W, C)`` is then a free view). Exact in arithmetic; the sums' order, so the float rounding, differs
    from a conv's."""
    n, c, h, w = x.shape
    k = weight.shape[-1]
    taps = _tap_matrix(h, w, k, x.device).to(weight.dtype)  # (k*k, HW*HW)
    matrices = (weight.reshape(c, k * k) @ taps).reshape(c, h * w, h * w)  # (C, P, Q): output p, input q
    columns = x.permute(1, 0, 2, 3).reshape(c, n, h * w).contiguous()  # (C, N, Q): CPU bmm clones each strided matrix
    y = torch.bmm(columns, matrices.transpose(1, 2))  # (C, N, P)
    if y.requires_grad:  # its gradient arrives as a strided view of a channels-last map: made contiguous for bmm
        y.register_hook(_contiguous)
    return y.permute(1, 2, 0).contiguous().view(n, h, w, c).permute(0, 3, 1, 2)


@functools.lru_cache(maxsize=32)
def _tap_matrix(h: int, w: int, k: int, device: torch.device) -> Tensor:
    """``(k*k, HW*HW)`` zeros and ones: column ``p * HW + q`` has a one at the kernel tap that joins output position
    ``p`` to input position ``q`` of an ``h x w`` map (row-major positions), none where ``q`` is outside ``p``'s
    window. Cached: made outside inference mode, so that a first call under it leaves one training can use."""
    with torch.inference_mode(False):
        rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        rows, cols = rows.reshape(-1), cols.reshape(-1)
        dy = rows[None, :] - rows[:, None] + k // 2  # [p, q]: the tap's row
        dx = cols[None, :] - cols[:, None] + k // 2
        inside = (dy >= 0) & (dy < k) & (dx >= 0) & (dx < k)
        tap = torch.where(inside, dy * k + dx, k * k)  # k*k: no tap (dropped below)
        return F.one_hot(tap.reshape(-1), k * k + 1)[:, :k * k].T.float()


def _contiguous(grad: Tensor | None) -> Tensor | None:
    return None if grad is None else grad.contiguous()
