"""FCMAE masks: drawn at the last stage's resolution, upsampled to every stage.

A ConvNeXt downsamples by 32 in total, so one mask cell covers a 32x32 input patch and maps onto
exactly one position of the last stage, 2x2 positions of stage 2, 4x4 of stage 1 and 8x8 of
stage 0 (the stem output). Masks are boolean ``(N, h, w)`` tensors, True = masked.
"""
from __future__ import annotations

import numbers

import torch
from torch import Tensor

from .models.convnextv2 import PATCH_SIZE

NUM_STAGES = 4


def mask_grid(img_size: int | tuple[int, int], patch_size: int = PATCH_SIZE) -> tuple[int, int]:
    """The mask grid ``(h, w)`` for images of ``img_size`` (an int for square images, or ``(H, W)``)."""
    size = (img_size, img_size) if isinstance(img_size, numbers.Integral) else img_size
    if not isinstance(size, (tuple, list)) or len(size) != 2 or not all(isinstance(s, numbers.Integral) for s in size):
        raise ValueError(f"img_size must be an int or a pair (H, W) of ints, got {img_size!r}")
    height, width = size
    if height <= 0 or width <= 0 or height % patch_size or width % patch_size:
        raise ValueError(
            f"img_size must be positive multiples of patch_size={patch_size} (one mask cell per patch), "
            f"got {height}x{width}"
        )
    return height // patch_size, width // patch_size


def num_visible(num_cells: int, ratio: float) -> int:
    """Cells kept per sample: ``int(L * (1 - ratio))``, as the paper's code (49 cells at 0.6 -> 19)."""
    return int(num_cells * (1 - ratio))


def effective_mask_ratio(img_size: int | tuple[int, int], ratio: float) -> float:
    """The fraction of cells really masked at ``img_size``: ``num_visible`` rounds the kept cells down, so a small
    grid masks more than ``ratio`` (96 px: 3x3 cells, 3 kept at 0.6, 6/9 = 0.667 masked; 224 px: 19 of 49 kept,
    0.612)."""
    h, w = mask_grid(img_size)
    return 1 - num_visible(h * w, ratio) / (h * w)


def check_mask_ratio(ratio: float, img_size: int | tuple[int, int]) -> None:
    """FCMAE needs at least one masked cell (something to reconstruct) and one visible cell (something to encode)
    per image, with ``int(L * (1 - ratio))`` of the ``L = (H / 32) * (W / 32)`` cells visible."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask_ratio must be in (0, 1): at {ratio!r} there is "
                         f"{'nothing to reconstruct' if ratio == 0 else 'no visible patch'}; got {ratio!r}")
    rows, cols = mask_grid(img_size)
    cells = rows * cols
    if not 1 <= num_visible(cells, ratio) < cells:
        fits = next((size for size in range(32, 4096, 32) if 1 <= num_visible((size // 32) ** 2, ratio)
                     < (size // 32) ** 2), None)
        raise ValueError(f"mask_ratio={ratio} at img_size={img_size} keeps {num_visible(cells, ratio)} of "
                         f"{rows}x{cols}={cells} cells visible: every image would be "
                         f"{'fully masked' if num_visible(cells, ratio) < 1 else 'fully visible'}. "
                         + (f"The smallest img_size that works at this ratio is {fits}" if fits else
                            "Use a lower mask_ratio"))


def random_mask(
    batch_size: int,
    img_size: int | tuple[int, int],
    ratio: float = 0.6,
    patch_size: int = PATCH_SIZE,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """Random masks ``(batch_size, H / patch, W / patch)``, True = masked, with exactly
    ``int(L * (1 - ratio))`` visible cells per sample. Drawn on the CPU from ``generator`` so the
    same seed gives the same masks on every device."""
    if isinstance(ratio, torch.Tensor) and ratio.numel() == 1 and ratio.is_floating_point():
        ratio = ratio.item()  # a 0-d tensor holds a number as numpy scalars do
    if not isinstance(ratio, numbers.Real) or isinstance(ratio, bool) or not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio (the masked fraction) must be in [0, 1) (a number), got {ratio!r}")
    if not isinstance(batch_size, numbers.Integral) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    h, w = mask_grid(img_size, patch_size)
    keep = num_visible(h * w, ratio)
    noise = torch.rand(batch_size, h * w, generator=generator)
    rank = noise.argsort(dim=1).argsort(dim=1)  # rank of each cell's noise within its sample
    return (rank >= keep).view(batch_size, h, w).to(device)


def check_mask(mask: Tensor, batch_size: int, grid: tuple[int, int]) -> Tensor:
    """Validate a mask for a batch of ``batch_size`` images whose mask grid is ``grid``; returns it as
    bool. Integer or float masks must hold only 0 and 1."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor shaped (N, h, w), got {type(mask).__name__}")
    expected = (batch_size, *grid)
    if tuple(mask.shape) != expected:
        raise ValueError(
            f"mask must be shaped (N, H/32, W/32) = {expected} for this input (one cell per 32x32 patch, "
            f"True = masked), got {tuple(mask.shape)}"
        )
    if mask.dtype != torch.bool:
        if mask.is_complex() or not ((mask == 0) | (mask == 1)).all():
            raise ValueError(f"mask must be bool or hold only 0/1 values, got dtype {mask.dtype} with other values")
        mask = mask.bool()
    return mask


def upsample_mask(mask: Tensor, scale: int) -> Tensor:
    """Repeat each cell ``scale`` times along both spatial axes: ``(N, h, w)`` -> ``(N, h*scale, w*scale)``."""
    if mask.dim() != 3:
        raise ValueError(f"mask must be shaped (N, h, w), got {tuple(mask.shape)}")
    if not isinstance(scale, numbers.Integral) or isinstance(scale, bool) or scale < 1:
        raise ValueError(f"scale must be a positive int, got {scale!r}")
    return mask.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)


def stage_masks(mask: Tensor, num_stages: int = NUM_STAGES) -> list[Tensor]:
    """The mask at every stage, finest first: stage ``i`` is upsampled by ``2 ** (num_stages - 1 - i)``
    (8, 4, 2, 1 for ConvNeXt)."""
    return [upsample_mask(mask, 2 ** (num_stages - 1 - i)) for i in range(num_stages)]


def pixel_mask(mask: Tensor, patch_size: int = PATCH_SIZE) -> Tensor:
    """The mask at input resolution ``(N, H, W)``, for display and for losses on pixels."""
    return upsample_mask(mask, patch_size)
