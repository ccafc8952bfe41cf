"""Models with their weights, the one place above the architecture (:mod:`cnx2lite.models`), the released weights
(:mod:`cnx2lite.hub`), the weight formats (:mod:`cnx2lite.checkpoints`) and run directories (:mod:`cnx2lite.rundir`),
so none of them reaches up to another: :func:`create_model` builds a variant by name (``pretrained=`` a released tag or
a file), :func:`load_model` rebuilds whatever a source holds (a run, a checkpoint, a released name, a saved folder)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch

from . import hub, models
from .arguments import checked_arguments
from .checkpoints import load_pretrained
from .hub import RELEASES
from .models import ConvNeXtV2
from .models.convnextv2 import ARCHITECTURE
from .rundir import load_checkpoint


@checked_arguments
def create_model(name: str, pretrained: str | os.PathLike | None = None, **overrides) -> ConvNeXtV2:
    """Build a ConvNeXt V2 variant by name, e.g. ``create_model("convnextv2_atto", pretrained="fcmae")``.

    ``pretrained``: a released tag (``"fcmae"``, ``"in1k"``, ``"in22k-in1k"``, ... see :mod:`cnx2lite.hub`),
    downloaded once and cached, or any source :func:`cnx2lite.checkpoints.load_pretrained` reads. The weights'
    classifier is loaded when it has ``num_classes`` classes; with another number the model keeps its own freshly
    initialized head, and a warning says so. Options as :func:`cnx2lite.models.create_model`."""
    if pretrained is not None and not isinstance(pretrained, (str, os.PathLike)):
        raise ValueError(f"pretrained must be a released tag ({', '.join(RELEASES)}) or a file, got {pretrained!r}")
    model = models.create_model(name, **overrides)
    if pretrained is not None:
        source = f"{name}.{pretrained}" if pretrained in RELEASES else pretrained
        if source is pretrained and not os.path.exists(pretrained) and not any(sep in str(pretrained) for sep in "/."):
            raise ValueError(f"pretrained must be a released tag ({', '.join(RELEASES)}), a file or a released name; "
                             f"got {pretrained!r}, which is none of them")  # e.g. 'in1K': a tag mistyped
        result = load_pretrained(model, source, skip_head="mismatched")
        for note in result.notes:
            if "classifier was not loaded" in note:
                warnings.warn(f"{source}: {note} ({model.num_classes} classes, freshly initialized)", stacklevel=2)
    return model


@checked_arguments
def load_model(source: str | os.PathLike, model: str | None = None, block: str | None = None, seed: int = 0,
               classifier: bool | None = False, use_ema: bool = False) -> tuple[ConvNeXtV2, dict]:
    """A model from ``source``: a cnx2lite run directory or checkpoint (model, block and GRN options
    come from its config), any file :func:`load_pretrained` reads (give ``model``), or ``"random"``
    for a random initialization from ``seed`` (the baseline; the global RNG is left alone). An encoder
    (``num_classes=0``) unless ``classifier``, which takes a fine-tuning run's head and classes
    (``use_ema``: its EMA weights); ``classifier=None`` takes the head when the source is a fine-tuning run. A
    released name (``"convnextv2_atto.fcmae"``) is downloaded once (:mod:`cnx2lite.hub`); a ``save_pretrained``
    folder gives its own architecture. Returns ``(model,
    config)``: a cnx2lite run's config and its ``classes`` (label order), empty for other sources."""
    hub.check_released_variant(source, model, "model")
    if (released := hub.released_variant(source)) is not None:  # its variant is in its name
        model, source = model or released, hub.resolve_name(source)
    config = {}
    if hub.is_safetensors_file(source) and hub.is_saved_folder(Path(source).parent):  # a save's own file
        source = Path(source).parent
    if source != "random" and hub.is_saved_folder(source):  # save_pretrained: its config.json names the architecture
        state, saved = hub.load_saved(source)
        config = {k: saved[k] for k in (*ARCHITECTURE, "in_chans") if k in saved}
        model = model or saved.get("variant")
    elif hub.is_safetensors_file(source):  # a bare state dict (e.g. timm's): give ``model`` for another variant
        state = hub.read_safetensors(source)
    else:
        state = None if source == "random" else load_checkpoint(source)
    if state is not None and not isinstance(state, dict):
        raise ValueError(f"{source} holds a {type(state).__name__}, not a state dict or a checkpoint")
    if state is not None and isinstance(state.get("config"), dict):
        config = {**state["config"], "classes": state.get("classes")}
    num_classes = 0
    if classifier is None:
        classifier = isinstance(state, dict) and state.get("task") == "finetune"
    if classifier:
        if state is None or state.get("task") != "finetune" or "classes" not in state:
            task = None if state is None else state.get("task")
            raise ValueError(f"{source} is not a fine-tuning checkpoint of cnx2lite (task {task!r}): only those "
                             "have a trained classifier")
        num_classes = len(state["classes"])
    options = {"block": block or config.get("block", "v2"), "grn_aggregation": config.get("grn_aggregation", "l2"),
               "block_norm": config.get("block_norm"),
               "in_chans": config.get("in_chans", 3)}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = models.create_model(model or config.get("model") or "convnextv2_atto", num_classes=num_classes, **options)
    if state is not None:
        try:
            load_pretrained(net, state, use_ema=use_ema)
        except ValueError as e:  # the message speaks of "the checkpoint": say which
            raise ValueError(f"{source}: {e}") from None
    return net, config
