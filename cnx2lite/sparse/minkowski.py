"""Sparse encoder on MinkowskiEngine 0.5.4 sparse tensors: the ``minkowski`` backend.

The reference engine: only visible positions exist, as int32 coordinates ``(sample, row, column)``
held by an ME ``CoordinateManager``; stage ``i`` lives at tensor stride ``2 ** i`` in stem-output
units. Features are a token matrix ``(M, C)`` sorted by sample (as :class:`TokenPositions` needs),
and ME's rows are mapped to tokens once per stage. The 7x7 depthwise conv is a submanifold channelwise
conv over ME's kernel maps, the 2x2/2 downsampling conv is ME's sparse convolution.
Both use the dense model's own weights, converted each forward by differentiable permutes, so
gradients land on the dense parameters. ME offset ``k`` of a ``K x K`` kernel is ``i_h + K * i_w``.

MinkowskiEngine is optional and imported on first use; see :data:`INSTALL_HINT`.
"""
from __future__ import annotations

import collections
import collections.abc
import functools
import warnings
from types import ModuleType
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ..layers import TokenPositions
from ..masking import upsample_mask
from ..models import ConvNeXtV2
from .tokens import drop_path, layer_norm

if TYPE_CHECKING:
    from MinkowskiEngine import CoordinateManager, CoordinateMapKey

INSTALL_HINT = (
    "MinkowskiEngine 0.5.4 is not importable. Build and install it (CPU-only by default, "
    "ME_CUDA=1 for CUDA; the wheel is cached under ~/.cache/cnx2lite) with "
    "`scripts/install_minkowski.sh [path/to/venv/bin/python]`."
)


@functools.lru_cache(maxsize=None)
def _minkowski() -> ModuleType | None:
    """Import MinkowskiEngine once; ``None`` if it is missing or broken."""
    # ME 0.5.4 does `from collections import Sequence`, removed in Python 3.10.
    if not hasattr(collections, "Sequence"):
        collections.Sequence = collections.abc.Sequence
    try:
        with warnings.catch_warnings():  # CPU-only is the default build here, not a mistake
            warnings.filterwarnings("ignore", message="The MinkowskiEngine was compiled with CPU_ONLY flag")
            import MinkowskiEngine
    except ImportError:
        return None
    return MinkowskiEngine


def is_available() -> bool:
    """Whether MinkowskiEngine imports here."""
    return _minkowski() is not None


def forward_features(model: ConvNeXtV2, x: Tensor, mask: Tensor) -> Tensor:
    """``x (N, C_in, H, W)``, ``mask (N, H/32, W/32)`` bool (True = masked) -> ``(N, C4, H/32, W/32)``,
    zero at masked cells (a constant, graph-free zero map if every cell is masked).

    In float32 (or float64) always: MinkowskiEngine has no bf16/fp16 kernels, so autocast is off here."""
    with torch.autocast(x.device.type, enabled=False):
        return _forward_features(model, x.to(torch.promote_types(x.dtype, torch.float32)), mask)


def _forward_features(model: ConvNeXtV2, x: Tensor, mask: Tensor) -> Tensor:
    me = _minkowski()
    if me is None:
        raise RuntimeError(INSTALL_HINT)
    if x.is_cuda and not me.is_cuda_available():
        raise RuntimeError("MinkowskiEngine is a CPU-only build; for CUDA: `ME_CUDA=1 scripts/install_minkowski.sh`")
    n, (h, w) = x.shape[0], mask.shape[1:]
    if mask.all():  # ME segfaults on an empty coordinate map; nothing is visible, nothing to compute
        return x.new_zeros(n, model.dims[-1], h, w)
    scale = 2 ** (len(model.stages) - 1)  # stem-output positions per cell side
    map_type = me.CoordinateMapType.CUDA if x.is_cuda else me.CoordinateMapType.CPU
    manager = me.CoordinateManager(D=2, coordinate_map_type=map_type)

    # The stem runs on the full image: its 4x4 patches never straddle a mask cell.
    stem = model.downsample_layers[0](x).permute(0, 2, 3, 1)
    visible = ~upsample_mask(mask, scale)
    coords = visible.nonzero().int().contiguous()  # (M, 3): sample, row, column
    key, (unique_index, _) = manager.insert_and_map(coords, tensor_stride=1)
    rows = stem[visible][unique_index.long()]  # features in the manager's row order

    for i, stage in enumerate(model.stages):
        order, rank, coords = _token_order(manager, key)
        tokens = rows[order]
        stride = 2 ** i  # of this stage's coordinates, in stem-output positions
        positions = TokenPositions(torch.bincount(coords[:, 0], minlength=n),
                                   torch.cat([coords[:, :1], coords[:, 1:] // stride], dim=1),
                                   (stem.shape[1] // stride, stem.shape[2] // stride))
        kernel_map = _submanifold_kernel_map(manager, key, stage[0].dwconv.kernel_size[0], rank)
        for block in stage:
            y = block.mlp(_channelwise_conv(tokens, kernel_map, block.dwconv), positions)
            tokens = tokens + drop_path(y, block.drop_path, positions)
        if i + 1 < len(model.stages):  # the next stage's input, back in the manager's row order
            norm, conv = model.downsample_layers[i + 1]
            rows, key = _downsample_conv(layer_norm(tokens[rank], norm), key, manager, conv)

    # The output shape is explicit, so masked border rows/columns still come out (as zeros).
    sample, row, col = coords.unbind(1)
    row, col = row // scale, col // scale  # tensor stride `scale` -> mask cells
    out = tokens.new_zeros(n, h, w, tokens.shape[1]).index_put((sample, row, col), tokens)
    return out.permute(0, 3, 1, 2)


def _token_order(manager: CoordinateManager, key: CoordinateMapKey) -> tuple[Tensor, Tensor, Tensor]:
    """Sort ``key``'s rows by sample: ``order (M,)`` (token ``t`` is row ``order[t]``), its inverse
    ``rank (M,)`` (row ``r`` is token ``rank[r]``) and the coordinates in token order ``(M, 3)``."""
    coords = manager.get_coordinates(key).long()
    order = coords[:, 0].argsort(stable=True)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order), device=order.device)
    return order, rank, coords[order]


def _submanifold_kernel_map(
    manager: CoordinateManager, key: CoordinateMapKey, kernel_size: int, rank: Tensor
) -> list[tuple[int, Tensor, Tensor]]:
    """ME's kernel map of a ``kernel_size`` submanifold conv on ``key`` (same coordinates in and
    out) as ``(offset, input tokens, output tokens)`` triples; ``rank (M,)`` maps ME rows to tokens."""
    kernel_map = manager.kernel_map(key, key, stride=1, kernel_size=kernel_size, dilation=1)
    return [(k, rank[rows[0].long()], rank[rows[1].long()]) for k, rows in kernel_map.items()]


def _channelwise_conv(feats: Tensor, kernel_map: list[tuple[int, Tensor, Tensor]], conv: nn.Conv2d) -> Tensor:
    """Submanifold depthwise conv of ``feats (M, C)`` with the dense ``conv``'s weight ``(C, 1, K, K)``
    and bias, as ``MinkowskiChannelwiseConvolution`` computes it."""
    weight = conv.weight[:, 0].permute(2, 1, 0).reshape(-1, conv.out_channels)  # (K*K, C)
    out = torch.zeros_like(feats)
    for k, rows_in, rows_out in kernel_map:
        out.index_add_(0, rows_out, feats[rows_in] * weight[k])
    return out + conv.bias


def _downsample_conv(
    feats: Tensor, key: CoordinateMapKey, manager: CoordinateManager, conv: nn.Conv2d
) -> tuple[Tensor, CoordinateMapKey]:
    """The 2x2/2 conv as an ME sparse convolution with the dense ``conv``'s weight
    ``(C_out, C_in, 2, 2)``: ``(M, C_in)`` -> ``(M / 4, C_out)`` and the new key, both in the
    manager's row order.
    Cells are all-visible or all-masked, so outputs land exactly on the visible coarse positions."""
    from MinkowskiEngineBackend._C import ConvolutionMode  # importable once MinkowskiEngine is

    me = _minkowski()
    kernel = conv.weight.permute(3, 2, 1, 0).reshape(-1, conv.in_channels, conv.out_channels)
    generator = me.KernelGenerator(kernel_size=conv.kernel_size, stride=conv.stride, dilation=1, dimension=2)
    out_key = manager.stride(key, conv.stride)
    out = me.MinkowskiConvolutionFunction.apply(
        feats, kernel.contiguous(), generator, ConvolutionMode.DEFAULT, key, out_key, manager
    )
    return out + conv.bias, out_key
