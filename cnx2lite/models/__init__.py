from .convnextv2 import PATCH_SIZE, VARIANTS, Block, ConvNeXtV2, create_model

__all__ = ["ConvNeXtV2", "Block", "create_model", "VARIANTS", "PATCH_SIZE"]
