"""cnx2lite: ConvNeXt V2 and FCMAE pretraining, from a laptop CPU to multi-GPU ImageNet.

The public API below is imported on first use (``cnx2lite.create_model`` imports torch then), so that ``import
cnx2lite`` and the command line start light: a Ctrl-C while torch loads is the command's to report in one line.
"""
from __future__ import annotations

import importlib
from typing import Any

from .openmp import shorter_spin_wait

shorter_spin_wait()  # before anything imports torch (see cnx2lite.openmp)

__version__ = "0.1.0"
_EXPORTS = {  # public name -> the module that defines it
    "ConvNeXtV2": ".models", "VARIANTS": ".models", "create_model": ".factory", "load_model": ".factory",
    "FCMAE": ".fcmae", "random_mask": ".masking", "upsample_mask": ".masking", "stage_masks": ".masking",
    "sparse_forward_features": ".sparse", "available_backends": ".sparse", "load_pretrained": ".checkpoints",
    "read_weights": ".checkpoints", "save_pretrained": ".hub", "GRN": ".layers", "export_timm": ".checkpoint_formats",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cnx2lite' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
