"""Building blocks of ConvNeXt V2: GRN, channels-first LayerNorm, the depthwise conv, stochastic depth."""
from .depthwise import DepthwiseConv2d
from .drop_path import DropPath, drop_path
from .grn import (
    GRN,
    GRN_AGGREGATIONS,
    GRN_NORMALIZATIONS,
    AllPositions,
    MaskedPositions,
    TokenPositions,
    global_response_norm,
)
from .norm import LayerNorm2d

__all__ = ["GRN", "GRN_AGGREGATIONS", "GRN_NORMALIZATIONS", "global_response_norm", "AllPositions", "MaskedPositions",
           "TokenPositions", "LayerNorm2d", "DepthwiseConv2d", "DropPath", "drop_path"]
