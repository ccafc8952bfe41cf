"""Building blocks of ConvNeXt V2: GRN and what can take its place, the positions their statistics run over,
channels-first LayerNorm, the depthwise conv, stochastic depth."""
from .block_norm import BLOCK_NORMS, create_block_norm
from .depthwise import DepthwiseConv2d
from .drop_path import DropPath, drop_path
from .grn import GRN, GRN_AGGREGATIONS, GRN_NORMALIZATIONS, global_response_norm
from .norm import LayerNorm2d
from .positions import AllPositions, MaskedPositions, TokenPositions

__all__ = ["GRN", "GRN_AGGREGATIONS", "GRN_NORMALIZATIONS", "global_response_norm", "BLOCK_NORMS",
           "create_block_norm", "AllPositions", "MaskedPositions", "TokenPositions", "LayerNorm2d", "DepthwiseConv2d",
           "DropPath", "drop_path"]
