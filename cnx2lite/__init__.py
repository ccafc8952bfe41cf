"""cnx2lite: ConvNeXt V2 and FCMAE pretraining, from a laptop CPU to multi-GPU ImageNet."""
from .openmp import shorter_spin_wait

shorter_spin_wait()  # before anything imports torch (see cnx2lite.openmp)

from .checkpoint_formats import export_timm
from .checkpoints import load_pretrained, read_weights
from .factory import create_model, load_model
from .fcmae import FCMAE
from .hub import save_pretrained
from .layers import GRN
from .masking import random_mask, stage_masks, upsample_mask
from .models import VARIANTS, ConvNeXtV2
from .sparse import available_backends, sparse_forward_features

__version__ = "0.1.0"
__all__ = [
    "ConvNeXtV2",
    "create_model",
    "VARIANTS",
    "FCMAE",
    "random_mask",
    "upsample_mask",
    "stage_masks",
    "sparse_forward_features",
    "available_backends",
    "load_pretrained",
    "load_model",
    "read_weights",
    "save_pretrained",
    "GRN",
    "export_timm",
]
