"""cnx2lite: ConvNeXt V2 and FCMAE pretraining, from a laptop CPU to multi-GPU ImageNet."""
from .models import VARIANTS, ConvNeXtV2, create_model

__version__ = "0.1.0"
__all__ = ["ConvNeXtV2", "create_model", "VARIANTS"]
