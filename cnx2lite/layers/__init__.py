"""Building blocks of ConvNeXt V2: GRN, channels-first LayerNorm, stochastic depth."""
from .drop_path import DropPath, drop_path
from .grn import GRN, MaskedL2, SpatialL2, TokenL2
from .norm import LayerNorm2d

__all__ = ["GRN", "SpatialL2", "MaskedL2", "TokenL2", "LayerNorm2d", "DropPath", "drop_path"]
