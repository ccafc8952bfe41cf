"""Sparse ConvNeXt V2 encoders for FCMAE: one function, three interchangeable backends.

Every backend computes what a submanifold sparse ConvNet computes on the visible part of a masked
image, with the dense model's own parameters (so a pretrained encoder is a dense model again at
fine-tuning):

- ``dense``: exact masked emulation on full-size maps (plain PyTorch, the readable reference);
- ``gather``: per-position work on visible tokens only (plain PyTorch, the fast path);
- ``minkowski``: MinkowskiEngine 0.5.4 sparse tensors (optional extra, the reference engine).

Why three stage loops and not one. Each backend writes out its own stem -> downsample -> blocks
loop, because what the loop carries from stage to stage is what makes each backend what it is:
full-size maps and a visibility map per stage (``dense``), a token matrix and the visible positions
(``gather``), a token matrix plus MinkowskiEngine's coordinate key and row order (``minkowski``). A
single loop over small per-backend operations, SparK's way, would hide that state in an object
whose methods run in an order written in another file, so a newcomer could no longer read one
backend from top to bottom, or two side by side as notebook 2 does. What the loops share is written
once: the block's per-position math (``Block.mlp``, with GRN statistics per sample over the
positions the backend passes) is the model's own, and the two token backends share the
downsampling LayerNorm and per-sample drop path in :mod:`.tokens`.
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor

from ..masking import check_mask, mask_grid
from ..models import ConvNeXtV2
from . import dense, gather, minkowski

ForwardFeatures = Callable[[ConvNeXtV2, Tensor, Tensor], Tensor]  # (model, x, validated bool mask) -> map

BACKENDS: dict[str, ForwardFeatures] = {
    "dense": dense.forward_features,
    "gather": gather.forward_features,
    "minkowski": minkowski.forward_features,  # imports MinkowskiEngine on first use
}


def available_backends() -> list[str]:
    """The backends that run here (``minkowski`` only when MinkowskiEngine imports)."""
    return [name for name in BACKENDS if name != "minkowski" or minkowski.is_available()]


def _forward_features(backend: str) -> ForwardFeatures:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    return BACKENDS[backend]


def check_backend(name: str) -> None:
    """Raise a clear error if backend ``name`` is unknown or cannot run here."""
    _forward_features(name)
    if name == "minkowski" and not minkowski.is_available():
        raise ValueError(f"backend 'minkowski' is not available: {minkowski.INSTALL_HINT}")


def sparse_forward_features(model: ConvNeXtV2, x: Tensor, mask: Tensor, backend: str = "gather") -> Tensor:
    """Encode the visible part of ``x (N, C_in, H, W)`` under ``mask (N, H/32, W/32)`` (True = masked).

    Returns the last stage map ``(N, C4, H/32, W/32)`` with zeros at masked cells. The ``minkowski``
    backend says how to install MinkowskiEngine when it is missing."""
    forward_features = _forward_features(backend)
    model.check_input(x)
    mask = check_mask(mask, x.shape[0], mask_grid(tuple(x.shape[-2:]))).to(x.device)
    return forward_features(model, x, mask)


__all__ = ["BACKENDS", "available_backends", "check_backend", "sparse_forward_features"]
