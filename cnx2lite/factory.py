"""``create_model(name, pretrained=...)``: a ConvNeXt V2 by name with its weights, the one place above the
architecture (:mod:`cnx2lite.models`), the released weights (:mod:`cnx2lite.hub`) and the weight formats
(:mod:`cnx2lite.checkpoints`), so none of them reaches up to another."""
from __future__ import annotations

import os

from . import models
from .checkpoints import load_pretrained
from .hub import RELEASES
from .models import ConvNeXtV2


def create_model(name: str, pretrained: str | os.PathLike | None = None, **overrides) -> ConvNeXtV2:
    """Build a ConvNeXt V2 variant by name, e.g. ``create_model("convnextv2_atto", pretrained="fcmae")``.

    ``pretrained``: a released tag (``"fcmae"``, ``"in1k"``, ``"in22k-in1k"``, ... see :mod:`cnx2lite.hub`),
    downloaded once and cached, or any source :func:`cnx2lite.checkpoints.load_pretrained` reads. With another
    ``num_classes`` than the weights' classifier, the model keeps its own freshly initialized head. Options as
    :func:`cnx2lite.models.create_model`."""
    model = models.create_model(name, **overrides)
    if pretrained is not None:
        source = f"{name}.{pretrained}" if pretrained in RELEASES else pretrained
        load_pretrained(model, source, skip_head=model.num_classes not in (0, 1000))
    return model
