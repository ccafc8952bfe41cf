"""The paper's image pipelines: PIL image -> normalized tensor ``(C, H, W)``.

Recipes follow the official ConvNeXt V2 code (facebookresearch/ConvNeXt-V2):
- FCMAE pre-training (main_pretrain.py): RandomResizedCrop(scale=(0.2, 1.0), bicubic) + horizontal flip.
- fine-tuning (main_finetune.py defaults, datasets.py build_transform): timm ``create_transform`` with
  RandAugment ``rand-m9-mstd0.5-inc1``, no color jitter, bicubic, random erasing p=0.25 mode 'pixel' count 1;
  Mixup/CutMix and the loss belong to the fine-tuning task (:mod:`cnx2lite.train.tasks`).
- evaluation: resize the shorter side to img_size / crop_pct (crop_pct 224/256), center crop; warp at >= 384.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Sequence

from PIL import Image
from timm.data import auto_augment, create_transform
from torch import Tensor
from torchvision import transforms as T

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IN_CHANS = (1, 3)  # what image files are converted to: greyscale or RGB


def image_hw(img_size: int | Sequence[int]) -> tuple[int, int]:
    """``(H, W)`` of an image size given as one int (square), a one-element sequence, or a pair."""
    size = (img_size, img_size) if isinstance(img_size, numbers.Integral) else tuple(img_size)
    size = size * 2 if len(size) == 1 else size
    if len(size) != 2:
        raise ValueError(f"img_size must be an int or (H, W), got {img_size!r}")
    return size


def normalization(in_chans: int = 3) -> T.Normalize:
    """ImageNet's mean/std for RGB; for greyscale, their channel averages (as timm does for 1-channel models)."""
    if in_chans not in IN_CHANS:
        raise ValueError(f"in_chans must be 1 (greyscale) or 3 (RGB) for image files; got {in_chans!r}: other channel "
                         "counts need your own dataset and transform (the model itself takes any in_chans)")
    if in_chans == 1:
        return T.Normalize((sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,))
    return T.Normalize(IMAGENET_MEAN, IMAGENET_STD)


def _channels(in_chans: int) -> list[Callable]:
    """The conversion of an RGB PIL image to ``in_chans`` channels, first in every pipeline."""
    return [T.Grayscale(num_output_channels=1)] if in_chans == 1 else []


def pretrain_transform(img_size: int | Sequence[int], in_chans: int = 3) -> Callable[[Image.Image], Tensor]:
    """FCMAE pre-training augmentation: PIL image -> normalized float tensor ``(in_chans, H, W)``."""
    return T.Compose([
        *_channels(in_chans),
        T.RandomResizedCrop(image_hw(img_size), scale=(0.2, 1.0), interpolation=T.InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        normalization(in_chans),
    ])


def finetune_transform(
    img_size: int | Sequence[int], rand_augment: str | None = "rand-m9-mstd0.5-inc1", reprob: float = 0.25,
    in_chans: int = 3,
) -> Callable[[Image.Image], Tensor]:
    """Fine-tuning augmentation (timm): PIL image -> normalized float tensor ``(in_chans, H, W)``.

    RandomResizedCrop (scale 0.08-1) + flip + RandAugment ``rand_augment`` (None: off) + random erasing ``reprob``.
    """
    norm = normalization(in_chans)
    transform = create_transform(
        image_hw(img_size),
        is_training=True,
        color_jitter=None,  # official default; timm ignores color jitter under RandAugment anyway
        auto_augment=rand_augment,
        interpolation="bicubic",
        re_prob=reprob,
        re_mode="pixel",
        re_count=1,
        mean=norm.mean,
        std=norm.std,
    )
    for op in _augment_ops(transform):
        if op.aug_fn is auto_augment.posterize:
            op.aug_fn = _posterize
    return T.Compose([*_channels(in_chans), *transform.transforms])


def _augment_ops(transform: T.Compose) -> list[auto_augment.AugmentOp]:
    """The RandAugment ops inside a timm transform pipeline."""
    return [op for t in transform.transforms if isinstance(t, auto_augment.RandAugment) for op in t.ops]


def _posterize(img: Image.Image, bits_to_keep: int, **_: Any) -> Image.Image:
    """timm's posterize, also for 0 bits: timm asks for 0 bits at magnitude 10 ('inc1' at the top of its range; with
    mstd 0.5 a draw reaches it with probability P(N(9, 0.5) >= 10) = 2.3%), which Pillow < 13 turned into a black
    image and Pillow >= 13 rejects with an error."""
    if bits_to_keep < 1:
        return Image.new(img.mode, img.size)
    return auto_augment.posterize(img, bits_to_keep)


def eval_transform(img_size: int | Sequence[int], crop_pct: float = 0.875, in_chans: int = 3
                   ) -> Callable[[Image.Image], Tensor]:
    """Evaluation: PIL image -> normalized float tensor ``(in_chans, H, W)``. Below 384 px, resize the shorter side
    to ``int(max(H, W) / crop_pct)`` and center crop; at 384 px and above, warp to ``H x W``."""
    if not 0 < crop_pct <= 1:
        raise ValueError(f"crop_pct must be in (0, 1], got {crop_pct}")
    height, width = image_hw(img_size)
    bicubic = T.InterpolationMode.BICUBIC
    if max(height, width) >= 384:
        resize = [T.Resize((height, width), interpolation=bicubic)]
    else:
        resize = [T.Resize(int(max(height, width) / crop_pct), interpolation=bicubic), T.CenterCrop((height, width))]
    return T.Compose([*_channels(in_chans), *resize, T.ToTensor(), normalization(in_chans)])


def denormalize(x: Tensor) -> Tensor:
    """Undo :func:`normalization` of images ``(..., C, H, W)`` (C = 1 or 3), clamped to [0, 1] for display."""
    norm = normalization(x.shape[-3])
    mean, std = x.new_tensor(norm.mean).view(-1, 1, 1), x.new_tensor(norm.std).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)
