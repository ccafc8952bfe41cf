"""Building blocks of ConvNeXt V2: GRN, channels-first LayerNorm, stochastic depth."""
from .drop_path import DropPath, drop_path
from .grn import GRN, masked_l2, spatial_l2, token_l2
from .norm import LayerNorm2d

__all__ = ["GRN", "masked_l2", "spatial_l2", "token_l2", "LayerNorm2d", "DropPath", "drop_path"]
