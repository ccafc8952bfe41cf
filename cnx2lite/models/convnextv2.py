"""ConvNeXt V2 (Woo et al., CVPR 2023), dense form, with the official repository's parameter names.

An image ``(N, 3, H, W)`` goes through a 4x4/4 stem and four stages of blocks; between stages a
LayerNorm + 2x2/2 conv halves the resolution, so the last stage map is ``(N, C4, H/32, W/32)``.

V2 block: 7x7 depthwise conv -> LayerNorm -> Linear(C, 4C) -> GELU -> GRN -> Linear(4C, C) ->
residual (+ drop path). ``block="v1"`` gives the ConvNeXt V1 block instead (no GRN, LayerScale
1e-6), which the feature-collapse analysis compares against. ``grn_aggregation`` picks GRN's
per-channel statistic for the paper's ablation (``"l2"``, the default and the paper's; ``"l1"``;
``"mean"``); it adds no parameters, so official checkpoints load under any of them. ``block_norm`` puts
another module in GRN's place, for the paper's normalization and gating ablation (one of
:data:`~cnx2lite.layers.block_norm.BLOCK_NORMS`; default: GRN in V2 blocks, none in V1 blocks).

:data:`ARCHITECTURE` names the options that change what a given set of weights computes: they are
recorded with the weights (run configs, checkpoints, ``save_pretrained``) and checked when loading.
"""
from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ..layers import GRN_AGGREGATIONS, DepthwiseConv2d, DropPath, LayerNorm2d
from ..layers.block_norm import BLOCK_NORMS, create_block_norm
from ..layers.grn import GRN
from ..layers.positions import Positions

VARIANTS: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = {
    "convnextv2_atto": ((2, 2, 6, 2), (40, 80, 160, 320)),
    "convnextv2_femto": ((2, 2, 6, 2), (48, 96, 192, 384)),
    "convnextv2_pico": ((2, 2, 6, 2), (64, 128, 256, 512)),
    "convnextv2_nano": ((2, 2, 8, 2), (80, 160, 320, 640)),
    "convnextv2_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "convnextv2_base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
    "convnextv2_large": ((3, 3, 27, 3), (192, 384, 768, 1536)),
    "convnextv2_huge": ((3, 3, 27, 3), (352, 704, 1408, 2816)),
}
BLOCK_STYLES = ("v2", "v1")
ARCHITECTURE = ("block", "grn_aggregation", "block_norm")  # recorded with weights, checked at loading
PATCH_SIZE = 32  # total stride: 4 (stem) * 2 * 2 * 2 (downsampling layers)


class Block(nn.Module):
    """One ConvNeXt block on ``(N, C, H, W)`` maps; the MLP runs channels-last. ``block_norm`` (default: ``"grn"`` for
    a V2 block, ``"none"`` for V1) is the module after the GELU: GRN as ``self.grn`` (the official parameter names),
    any other as ``self.mlp_norm``."""

    def __init__(self, dim: int, drop_path: float = 0.0, block: str = "v2", grn_aggregation: str = "l2",
                 block_norm: str | None = None) -> None:
        super().__init__()
        block_norm = default_block_norm(block, block_norm)
        self.dwconv = DepthwiseConv2d(dim, kernel_size=7)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        after_act = create_block_norm(block_norm, 4 * dim, grn_aggregation)
        self.grn = after_act if isinstance(after_act, GRN) else None
        self.mlp_norm = None if isinstance(after_act, GRN) else after_act
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 1e-6)) if block == "v1" else None
        self.drop_path = DropPath(drop_path)

    def mlp(self, x: Tensor, positions: Positions | None = None) -> Tensor:
        """The per-position part of the block on channels-last ``(..., C)`` features, up to the
        residual. ``positions`` tells GRN (or what takes its place) where each sample's visible positions are."""
        x = self.act(self.pwconv1(self.norm(x)))
        if self.grn is not None:
            x = self.grn(x, positions)
        if self.mlp_norm is not None:
            x = self.mlp_norm(x, positions)
        x = self.pwconv2(x)
        return x if self.gamma is None else x * self.gamma

    def forward(self, x: Tensor) -> Tensor:
        y = self.mlp(self.dwconv(x).permute(0, 2, 3, 1))
        return x + self.drop_path(y.permute(0, 3, 1, 2))


class ConvNeXtV2(nn.Module):
    """ConvNeXt V2 classifier. ``forward_features`` gives the last stage map, ``forward_head`` the
    logits: global average pool -> LayerNorm -> Linear."""

    def __init__(
        self,
        depths: tuple[int, ...] = (3, 3, 9, 3),
        dims: tuple[int, ...] = (96, 192, 384, 768),
        in_chans: int = 3,
        num_classes: int = 1000,
        drop_path_rate: float = 0.0,
        head_init_scale: float = 1.0,
        block: str = "v2",
        grn_aggregation: str = "l2",
        block_norm: str | None = None,
        stage_norms: bool = False,
    ) -> None:
        super().__init__()
        _check_choice("block", block, BLOCK_STYLES)
        _check_choice("grn_aggregation", grn_aggregation, GRN_AGGREGATIONS)
        block_norm = default_block_norm(block, block_norm)
        _check_choice("block_norm", block_norm, BLOCK_NORMS)
        check_positive_int("in_chans", in_chans)
        if not isinstance(num_classes, numbers.Integral) or isinstance(num_classes, bool) or num_classes < 0:
            raise ValueError(f"num_classes must be an int >= 0 (0 removes the classifier), got {num_classes!r}")
        if not 0.0 <= drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {drop_path_rate!r}")
        if len(depths) != 4 or len(dims) != 4:
            raise ValueError(f"depths and dims need 4 stages each, got depths={depths}, dims={dims}")
        self.depths, self.dims, self.in_chans, self.block = tuple(depths), tuple(dims), in_chans, block
        self.grn_aggregation, self.block_norm = grn_aggregation, block_norm
        self.num_classes = num_classes

        stem = nn.Sequential(nn.Conv2d(in_chans, dims[0], kernel_size=4, stride=4), LayerNorm2d(dims[0], eps=1e-6))
        self.downsample_layers = nn.ModuleList([stem])
        for i in range(3):
            self.downsample_layers.append(
                nn.Sequential(LayerNorm2d(dims[i], eps=1e-6), nn.Conv2d(dims[i], dims[i + 1], kernel_size=2, stride=2))
            )
        n = sum(depths)
        rates = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # linear in depth
        self.stages = nn.ModuleList()
        for i, depth in enumerate(depths):
            first = sum(depths[:i])
            blocks = [Block(dims[i], rates[first + j], block, grn_aggregation, block_norm) for j in range(depth)]
            self.stages.append(nn.Sequential(*blocks))
        # A LayerNorm per stage output for dense tasks, as the official detection/segmentation backbones add them.
        self.stage_norms = nn.ModuleList(LayerNorm2d(d, eps=1e-6) for d in dims) if stage_norms else None
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()

        self.apply(init_weights)
        if num_classes > 0:
            self.head.weight.data.mul_(head_init_scale)
            self.head.bias.data.mul_(head_init_scale)

    def check_input(self, x: Tensor) -> None:
        """Raise a clear error for an input that is not ``(N, in_chans, H, W)`` with H, W % 32 == 0."""
        if not isinstance(x, Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"expected images shaped (N, {self.in_chans}, H, W), got {shape}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected {self.in_chans} input channels (in_chans={self.in_chans}), got {x.shape[1]} "
                f"in an input of shape {tuple(x.shape)}"
            )
        h, w = x.shape[-2:]
        if h % PATCH_SIZE or w % PATCH_SIZE:
            raise ValueError(f"input height and width must be multiples of {PATCH_SIZE}, got {h}x{w}")
        weight = self.downsample_layers[0][0].weight  # the stem conv: the model's dtype
        if x.dtype != weight.dtype:  # autocast casts float32 inputs itself; a uint8 image needs scaling first
            hint = "scale it to floats first (x.float() / 255, then normalize)" if not x.is_floating_point() else (
                f"convert it with x.to({weight.dtype}), or the model with model.to({x.dtype})")
            raise ValueError(f"expected images of the model's dtype {weight.dtype}, got {x.dtype}: {hint}")

    def forward_features(self, x: Tensor) -> Tensor:
        """``(N, in_chans, H, W)`` -> last stage map ``(N, C4, H/32, W/32)``."""
        self.check_input(x)
        for downsample, stage in zip(self.downsample_layers, self.stages):
            x = stage(downsample(x))
        return x

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Per-stage maps for dense tasks, with timm's signature and semantics: ``indices`` takes the last n stages
        for an int, the given stages for a sequence (negative counts from the end), all four for None. Stage ``i``
        gives ``(N, dims[i], H / 2**(i+2), W / 2**(i+2))``. ``norm`` applies the per-stage LayerNorms of a model
        built with ``stage_norms=True`` (timm's ConvNeXt has none to apply here); ``stop_early`` skips the stages
        after the last one taken. Returns the maps, or ``(last stage map, maps)`` unless ``intermediates_only``."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take = _take_indices(len(self.stages), indices)
        if norm and self.stage_norms is None:
            raise ValueError("norm=True needs per-stage norms: build the model with stage_norms=True")
        self.check_input(x)
        intermediates = []
        last = max(take) if stop_early else len(self.stages) - 1
        for i in range(last + 1):
            x = self.stages[i](self.downsample_layers[i](x))
            if i in take:
                intermediates.append(self.stage_norms[i](x) if norm else x)
        return intermediates if intermediates_only else (x, intermediates)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """``(N, C4, h, w)`` -> logits ``(N, num_classes)`` (pooled, normed features if ``pre_logits``)."""
        x = self.norm(x.mean(dim=(-2, -1)))
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _take_indices(num_stages: int, indices: int | Sequence[int] | None) -> list[int]:
    """Stage indices as timm's ``feature_take_indices``: the last n for an int, all for None, negatives wrapped."""
    if indices is None:
        return list(range(num_stages))
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"indices as an int takes the last n stages, n in 1..{num_stages}; got {indices}")
        return list(range(num_stages - indices, num_stages))
    take = [i % num_stages if -num_stages <= i < num_stages else None for i in indices]
    if None in take or not take:
        raise ValueError(f"indices must name stages in -{num_stages}..{num_stages - 1}; got {list(indices)}")
    return take


def init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) weights and zero biases for convs and linears, as the paper."""
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


def _check_choice(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")


def default_block_norm(block: str, block_norm: str | None = None) -> str:
    """``block_norm``, or for ``None`` / ``"auto"`` what follows the MLP's GELU in the block style: GRN in V2, nothing
    in V1."""
    if block_norm not in (None, "auto"):
        return block_norm
    return "grn" if block == "v2" else "none"


def recorded_block_norm(saved: Mapping[str, Any]) -> str | None:
    """The block norm that saved settings (a config, a checkpoint's architecture) record, ``"auto"`` spelled as
    the recorded block style's own (V2 where none is recorded: the only style before ``--block``); ``None`` where they
    record none."""
    return default_block_norm(saved.get("block", "v2"), saved["block_norm"]) if "block_norm" in saved else None


def architecture(model: ConvNeXtV2) -> dict:
    """The model's :data:`ARCHITECTURE` options, as recorded with its weights."""
    return {name: getattr(model, name) for name in ARCHITECTURE}


def check_positive_int(name: str, value: object) -> None:
    """Refuse anything but an int >= 1 (numpy ints are ints; bools are not), naming ``name``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def create_model(name: str, **overrides) -> ConvNeXtV2:
    """Build a ConvNeXt V2 variant by name, randomly initialized: ``create_model("convnextv2_atto", num_classes=10)``.
    With weights (released or a file): :func:`cnx2lite.create_model` (``pretrained=``), which builds on this one.

    Options: ``num_classes``, ``drop_path_rate``, ``head_init_scale``, ``in_chans``, ``block``
    (``"v2"`` or ``"v1"``), ``grn_aggregation`` (``"l2"``, ``"l1"`` or ``"mean"``), ``block_norm`` (one of
    ``BLOCK_NORMS``), ``stage_norms`` (a LayerNorm per stage output for :meth:`ConvNeXtV2.forward_intermediates`)."""
    if name not in VARIANTS:
        raise ValueError(f"unknown model name {name!r}; available: {', '.join(VARIANTS)}")
    allowed = ("num_classes", "drop_path_rate", "head_init_scale", "in_chans", *ARCHITECTURE, "stage_norms")
    if "pretrained" in overrides:
        raise TypeError("cnx2lite.models.create_model builds the architecture only: for weights use "
                        "cnx2lite.create_model(name, pretrained=...)")
    unknown = sorted(set(overrides) - set(allowed))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)} for create_model; allowed: {', '.join(allowed)}")
    depths, dims = VARIANTS[name]
    model = ConvNeXtV2(depths, dims, **overrides)
    model.variant = name
    return model
