"""Sparse ConvNeXt V2 encoders for FCMAE: one function, three interchangeable backends.

Every backend computes what a submanifold sparse ConvNet computes on the visible part of a masked
image, with the dense model's own parameters (so a pretrained encoder is a dense model again at
fine-tuning):

- ``dense``: exact masked emulation on full-size maps (plain PyTorch, the readable reference);
- ``gather``: per-position work on visible tokens only (plain PyTorch, the fast path);
- ``minkowski``: MinkowskiEngine 0.5.4 sparse tensors (optional extra, the reference engine).
"""
from __future__ import annotations

import importlib

from torch import Tensor

from ..masking import check_mask
from ..models import PATCH_SIZE, ConvNeXtV2

BACKENDS = ("dense", "gather", "minkowski")


def _backend_module(name: str):
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {name!r}")
    return importlib.import_module(f"{__name__}.{name}")


def available_backends() -> list[str]:
    """The backends that run here (``minkowski`` only when MinkowskiEngine imports)."""
    return [b for b in BACKENDS if getattr(_backend_module(b), "is_available", lambda: True)()]


def check_backend(name: str) -> None:
    """Raise a clear error if backend ``name`` is unknown or cannot run here."""
    module = _backend_module(name)
    if not getattr(module, "is_available", lambda: True)():
        raise RuntimeError(f"backend {name!r} is not available: {module.INSTALL_HINT}")


def sparse_forward_features(model: ConvNeXtV2, x: Tensor, mask: Tensor, backend: str = "gather") -> Tensor:
    """Encode the visible part of ``x (N, C_in, H, W)`` under ``mask (N, H/32, W/32)`` (True = masked).

    Returns the last stage map ``(N, C4, H/32, W/32)`` with zeros at masked cells."""
    check_backend(backend)
    model.check_input(x)
    mask = check_mask(mask, x.shape[0], (x.shape[-2] // PATCH_SIZE, x.shape[-1] // PATCH_SIZE)).to(x.device)
    return _backend_module(backend).forward_features(model, x, mask)


__all__ = ["BACKENDS", "available_backends", "check_backend", "sparse_forward_features"]
