"""Dense-prediction models on the ConvNeXt V2 backbone, as the paper transfers it (Sec. 6): UperNet for semantic
segmentation (ADE20K) and Mask R-CNN for instance detection (COCO), both over the four stage maps of
:meth:`~cnx2lite.models.ConvNeXtV2.forward_intermediates`, each normed by its own LayerNorm (``stage_norms``, as the
official detection and segmentation backbones do).

Built from torchvision's parts rather than written again: its :class:`~torchvision.ops.FeaturePyramidNetwork` (the
top-down path both heads share), :class:`~torchvision.ops.Conv2dNormActivation` and its whole Mask R-CNN
(:class:`~torchvision.models.detection.MaskRCNN`: RPN, RoIAlign, box and mask heads, losses). UperNet's pyramid pooling
and fusion are the few lines torchvision lacks. Sized for a CPU: ``channels`` (default 128; mmsegmentation's UperNet
uses 512) and GroupNorm in the head, which holds at the batch of 2 to 8 images a laptop trains with (the paper's
heads use synchronized BatchNorm over 16 GPUs).
"""
from __future__ import annotations

from collections import OrderedDict
from functools import partial

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.ops import Conv2dNormActivation, FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from ..models import ConvNeXtV2
from ..models.convnextv2 import check_positive_int

POOL_SCALES = (1, 2, 3, 6)  # PSPNet's, as UperNet uses them
BOX_FEATURES = 256  # Mask R-CNN's box head width (torchvision's 1024)


def _conv(in_channels: int, out_channels: int, kernel_size: int, groups: int = 32) -> Conv2dNormActivation:
    """Conv -> GroupNorm (``groups``, fewer where the channels do not divide) -> ReLU."""
    groups = next(g for g in (groups, 16, 8, 4, 2, 1) if g <= groups and out_channels % g == 0)
    return Conv2dNormActivation(in_channels, out_channels, kernel_size, norm_layer=partial(nn.GroupNorm, groups))


def _check_backbone(backbone: object, user: str) -> None:
    if not isinstance(backbone, ConvNeXtV2):
        raise ValueError(f"backbone must be a ConvNeXtV2 (cnx2lite.create_model(..., num_classes=0, "
                         f"stage_norms=True)); got {type(backbone).__name__}")
    if backbone.stage_norms is None:
        raise ValueError(f"{user} reads normed stage maps: build the backbone with stage_norms=True")


def stage_maps(backbone: ConvNeXtV2, images: Tensor) -> OrderedDict[str, Tensor]:
    """``images (N, C, H, W)`` -> the four normed stage maps ``"0".."3"``, stage ``i`` ``(N, dims[i], H/2^(i+2),
    W/2^(i+2))``: what both heads read."""
    maps = backbone.forward_intermediates(images, norm=True, intermediates_only=True)
    return OrderedDict((str(i), m) for i, m in enumerate(maps))


class PyramidPooling(nn.Module):
    """PSPNet's pyramid pooling on the last stage map: the map and its averages over 1x1, 2x2, 3x3 and 6x6 cells
    (each projected to ``channels``, upsampled back), concatenated and fused by a 3x3 conv. ``(N, C4, h, w)`` ->
    ``(N, channels, h, w)``. A pooled cell holds one value per channel, so its norm is over all channels (one group):
    groups of a few channels would normalize a handful of numbers, at 1x1 each to its bias."""

    def __init__(self, in_channels: int, channels: int, scales: tuple[int, ...] = POOL_SCALES) -> None:
        super().__init__()
        self.scales = scales
        self.branches = nn.ModuleList(_conv(in_channels, channels, 1, groups=1) for _ in scales)
        self.fuse = _conv(in_channels + len(scales) * channels, channels, 3)

    def forward(self, x: Tensor) -> Tensor:
        pooled = [F.interpolate(branch(F.adaptive_avg_pool2d(x, scale)), x.shape[-2:], mode="bilinear",
                                align_corners=False) for scale, branch in zip(self.scales, self.branches)]
        return self.fuse(torch.cat([x, *pooled], dim=1))


class UperNet(nn.Module):
    """UperNet (Xiao et al., ECCV 2018) on a ConvNeXt V2 backbone built with ``stage_norms=True``: pyramid pooling on
    stage 4, a feature pyramid over stages 1-3 and that, every level upsampled to stage 1's resolution (1/4),
    concatenated, fused, classified per pixel and upsampled to the image. ``(N, C, H, W)`` -> logits
    ``(N, num_classes, H, W)``. The pyramid is torchvision's: its lateral and output convs have no norm and no
    activation (mmsegmentation's have both), and its pooled level gets a lateral 1x1 conv too."""

    def __init__(self, backbone: ConvNeXtV2, num_classes: int, channels: int = 128) -> None:
        super().__init__()
        _check_backbone(backbone, "UperNet")
        check_positive_int("num_classes", num_classes)
        check_positive_int("channels", channels)
        dims = list(backbone.dims)
        self.backbone = backbone
        self.pooling = PyramidPooling(dims[-1], channels)
        self.fpn = FeaturePyramidNetwork([*dims[:-1], channels], channels)
        self.fuse = _conv(len(dims) * channels, channels, 3)
        self.classifier = nn.Conv2d(channels, num_classes, 1)

    def forward(self, images: Tensor) -> Tensor:
        maps = stage_maps(self.backbone, images)
        maps["3"] = self.pooling(maps["3"])
        levels = list(self.fpn(maps).values())
        size = levels[0].shape[-2:]
        fused = self.fuse(torch.cat([levels[0], *(F.interpolate(level, size, mode="bilinear", align_corners=False)
                                                  for level in levels[1:])], dim=1))
        return F.interpolate(self.classifier(fused), images.shape[-2:], mode="bilinear", align_corners=False)


class StagePyramid(nn.Module):
    """The backbone's four normed stage maps through a feature pyramid with a max-pooled fifth level, as
    torchvision's detection models take a backbone: ``(N, C, H, W)`` -> levels ``"0".."3", "pool"`` of
    ``out_channels`` each. (torchvision's own ``BackboneWithFPN`` takes a model's named children as its maps; the
    stage norms are applied inside :meth:`~cnx2lite.models.ConvNeXtV2.forward_intermediates`, so it cannot.)"""

    def __init__(self, backbone: ConvNeXtV2, channels: int = 128) -> None:
        super().__init__()
        _check_backbone(backbone, "the detection backbone")
        check_positive_int("channels", channels)
        self.backbone = backbone
        self.fpn = FeaturePyramidNetwork(list(backbone.dims), channels, extra_blocks=LastLevelMaxPool())
        self.out_channels = channels

    def forward(self, images: Tensor) -> OrderedDict[str, Tensor]:
        return self.fpn(stage_maps(self.backbone, images))


def mask_rcnn(backbone: ConvNeXtV2, num_classes: int, img_size: int, channels: int = 128) -> MaskRCNN:
    """torchvision's Mask R-CNN on the backbone through :class:`StagePyramid`, for ``num_classes`` object classes
    (its labels are ``1..num_classes``, 0 being its background: :func:`~cnx2lite.dense.composites.detection_target`
    gives them) on square images of ``img_size`` px that the data already normalized (no resizing, no second
    normalization). Anchors of 16 to 256 px, one size per pyramid level, for objects of a laptop-sized image.

    Sized for images holding a few objects: 128 sampled RoIs per image (torchvision: 512), 600/300 proposals before and
    after NMS in training (2000/2000), 300/150 in evaluation (1000/1000), a box head of 256 features (1024) and mask
    convs of ``channels`` (256). On 2 CPU cores at 128 px this trains atto's detector 3.8x faster than torchvision's
    defaults (0.9 -> 3.4 img/s, batch 16, measured while another training shared the cores)."""
    check_positive_int("num_classes", num_classes)
    check_positive_int("img_size", img_size)
    check_positive_int("channels", channels)
    anchors = AnchorGenerator(sizes=((16,), (32,), (64,), (128,), (256,)), aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    resolution = 7  # torchvision's RoIAlign output for the box head
    return MaskRCNN(StagePyramid(backbone, channels), min_size=img_size,
                    max_size=img_size, image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
                    rpn_anchor_generator=anchors, rpn_pre_nms_top_n_train=600, rpn_post_nms_top_n_train=300,
                    rpn_pre_nms_top_n_test=300, rpn_post_nms_top_n_test=150, box_batch_size_per_image=128,
                    box_head=TwoMLPHead(channels * resolution**2, BOX_FEATURES),
                    box_predictor=FastRCNNPredictor(BOX_FEATURES, num_classes + 1),
                    mask_head=MaskRCNNHeads(channels, [channels] * 4, dilation=1),
                    mask_predictor=MaskRCNNPredictor(channels, channels, num_classes + 1))
