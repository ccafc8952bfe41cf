"""The layouts of ConvNeXt V2 weights in the wild, and renaming between them (:func:`convert_state_dict` to ours,
:func:`export_timm` to timm's). Recognized formats:

* ``"dense"``: the official repo's dense model, which uses our names (e.g. ``stages.0.0.dwconv``).
* ``"fcmae"``: an FCMAE module of this project: ``encoder.*`` dense tensors plus decoder keys.
* ``"fcmae_minkowski"``: the official FCMAE, whose encoder is MinkowskiEngine-sparse: conv weights
  are ``*.kernel`` tensors shaped ``(K*K, C)`` (depthwise) or ``(K*K, Cin, Cout)`` with the kernel
  offset ``i_h + K * i_w``; norms and linears sit one level deeper (``.ln.``, ``.linear.``); GRN
  parameters and conv biases are ``(1, C)``.
* ``"timm"``: timm's ``convnextv2_*`` (and ``convnext_*`` for ``block="v1"`` models); its atto to
  nano models use 1x1 convs for the MLP, so ``fc1``/``fc2`` weights are ``(out, in, 1, 1)`` there.

FCMAE checkpoints hold an encoder only: the final ``norm`` and ``head`` keep their initialization.
"""
from __future__ import annotations

import math
import re
from typing import Mapping

from torch import Tensor

from .models.convnextv2 import VARIANTS, ConvNeXtV2

__all__ = ["convert_state_dict", "fcmae_decoder_state_dict", "export_timm", "timm_name", "strip_wrappers",
           "variant_name"]

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DistributedDataParallel, torch.compile
FCMAE_DECODER = ("proj.", "decoder.", "pred.", "mask_token")
FINAL_KEYS = ("norm.", "head.")  # not trained by FCMAE pretraining

# (ours, timm) key prefixes; {s} is a stage index, {b} a block index. Specific rules come first.
TIMM_NAMES = (
    ("downsample_layers.0.", "stem."),
    ("downsample_layers.{s}.", "stages.{s}.downsample."),
    ("stages.{s}.{b}.dwconv.", "stages.{s}.blocks.{b}.conv_dw."),
    ("stages.{s}.{b}.pwconv1.", "stages.{s}.blocks.{b}.mlp.fc1."),
    ("stages.{s}.{b}.pwconv2.", "stages.{s}.blocks.{b}.mlp.fc2."),
    ("stages.{s}.{b}.grn.gamma", "stages.{s}.blocks.{b}.mlp.grn.weight"),
    ("stages.{s}.{b}.grn.beta", "stages.{s}.blocks.{b}.mlp.grn.bias"),
    ("stages.{s}.{b}.", "stages.{s}.blocks.{b}."),  # norm, gamma (LayerScale)
    ("norm.", "head.norm."),
    ("head.", "head.fc."),
)
TIMM_CONV_MLP = ("atto", "femto", "pico", "nano")  # sizes whose timm MLP is 1x1 convs


def _template_regex(template: str) -> re.Pattern:
    """``"stages.{s}.{b}."`` -> a regex matching that prefix, with named groups ``s`` and ``b``."""
    return re.compile(re.sub(r"\\\{(\w)\\\}", r"(?P<\1>\\d+)", re.escape(template)))


TO_TIMM = [(_template_regex(ours), timm) for ours, timm in TIMM_NAMES]
FROM_TIMM = [(_template_regex(timm), ours) for ours, timm in TIMM_NAMES]


def fcmae_decoder_state_dict(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """The FCMAE decoder entries (``proj``, ``mask_token``, ``decoder``, ``pred``) of a raw FCMAE state dict, ours or
    the official one's (same names); empty for the released FCMAE checkpoints, which carry the encoder only."""
    return {k: v for k, v in state_dict.items() if k.startswith(FCMAE_DECODER)}


def convert_state_dict(state_dict: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], str]:
    """Convert a state dict in any supported format to our dense names and shapes.

    Returns ``(state_dict, format)`` with ``format`` one of ``"transfer"`` (a segmentation or detection model's
    backbone), ``"fcmae_minkowski"``, ``"fcmae"``, ``"timm"``, ``"dense"``. FCMAE decoder keys and the encoder's
    unused final norm/head are dropped, and so are a transfer model's heads."""
    state_dict = {strip_wrappers(k): v for k, v in state_dict.items()}
    name, convert = next((name, convert) for name, detect, convert in FORMATS if detect(state_dict))
    return {k: _dense_shape(k, v) for k, v in convert(state_dict).items()}, name


def export_timm(model: ConvNeXtV2) -> dict[str, Tensor]:
    """``model``'s state dict in the names and shapes of timm's ``timm_name(model)``, which loads it
    with ``strict=True`` when built with the same ``num_classes``. The tensors share storage with
    the model, as with ``model.state_dict()``."""
    conv_mlp = timm_name(model).split("_")[-1] in TIMM_CONV_MLP
    out = {}
    for key, value in model.state_dict().items():
        key = _rename(key, TO_TIMM)
        if ".grn." in key:
            value = value.reshape(-1)
        elif conv_mlp and ".mlp.fc" in key and key.endswith(".weight"):
            value = value[:, :, None, None]
        out[key] = value
    return out


def timm_name(model: ConvNeXtV2) -> str:
    """timm's model name for ``model``: ``convnextv2_*``, or ``convnext_*`` (V1) for ``block="v1"``."""
    variant = variant_name(model)
    if model.block == "v2":
        return variant
    if variant == "convnextv2_huge":
        raise ValueError("timm has no ConvNeXt V1 model shaped like convnextv2_huge (block='v1')")
    return variant.replace("convnextv2_", "convnext_")


def _from_fcmae(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """FCMAE (dense or MinkowskiEngine) -> encoder weights under our names."""
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("encoder.")
        if key.startswith(FCMAE_DECODER + FINAL_KEYS):
            continue
        key = re.sub(r"\.(ln|linear)\.", ".", key)
        if key.endswith(".kernel"):
            key, value = key.removesuffix("kernel") + "weight", _from_minkowski_kernel(key, value)
        out[key] = value
    return out


def _from_minkowski_kernel(key: str, kernel: Tensor) -> Tensor:
    """``(K*K, C)`` depthwise or ``(K*K, Cin, Cout)`` kernel, offset ``i_h + K * i_w`` ->
    ``(C, 1, K, K)`` / ``(Cout, Cin, K, K)`` conv weight."""
    k = math.isqrt(kernel.shape[0])
    if k * k != kernel.shape[0] or kernel.dim() not in (2, 3):
        raise ValueError(f"{key}: expected a (K*K, C) or (K*K, Cin, Cout) kernel, got {tuple(kernel.shape)}")
    w = kernel.reshape(k, k, *kernel.shape[1:])  # (i_w, i_h, [Cin,] Cout)
    if kernel.dim() == 2:
        w = w.unsqueeze(2)  # depthwise: one input channel per group
    return w.permute(3, 2, 1, 0).contiguous()


def _from_timm(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {_rename(k, FROM_TIMM): v for k, v in state_dict.items()}


def _from_transfer(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A dense transfer model (UperNet ``backbone.*``, Mask R-CNN ``backbone.backbone.*``) -> its backbone's weights;
    the heads and the stage norms (which a new task trains afresh, as from any other source) are dropped."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith("backbone."):
            key = key.removeprefix("backbone.")
        if key.startswith(("downsample_layers.", "stages.")):
            out[key] = value
    return out


FORMATS = (  # (name, detect, convert), first match wins
    ("transfer", lambda sd: any(k.startswith("backbone.") and ".stages." in k for k in sd), _from_transfer),
    ("fcmae_minkowski", lambda sd: any(k.endswith(".kernel") for k in sd), _from_fcmae),
    ("fcmae", lambda sd: any(k.startswith("encoder.") for k in sd), _from_fcmae),
    ("timm", lambda sd: any(k.startswith("stem.") or ".blocks." in k for k in sd), _from_timm),
    ("dense", lambda sd: True, dict),
)


def _dense_shape(key: str, value: Tensor) -> Tensor:
    """Our shapes: GRN ``(1, 1, 1, C)``, MLP weights ``(out, in)``, biases ``(C,)``."""
    if ".grn." in key:
        return value.reshape(1, 1, 1, -1)
    if ".pwconv" in key and key.endswith(".weight"):
        return value.flatten(1)
    if key.endswith(".bias"):
        return value.reshape(-1)
    return value


def _rename(key: str, rules: list[tuple[re.Pattern, str]]) -> str:
    """Replace the prefix of ``key`` matched by the first applicable rule; other keys pass as is."""
    for pattern, template in rules:
        if m := pattern.match(key):
            return template.format(**m.groupdict()) + key[m.end():]
    return key


def strip_wrappers(key: str) -> str:
    while key.startswith(WRAPPER_PREFIXES):
        key = key.split(".", 1)[1]
    return key


def variant_name(model: ConvNeXtV2) -> str:
    """The variant name of ``model``, from ``model.variant`` or its depths and dims."""
    shape = (model.depths, model.dims)
    name = getattr(model, "variant", None) or next((n for n, cfg in VARIANTS.items() if cfg == shape), None)
    if name is None:
        raise ValueError(f"depths={model.depths}, dims={model.dims} match no named variant ({', '.join(VARIANTS)})")
    return name
