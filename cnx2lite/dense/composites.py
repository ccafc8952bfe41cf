"""A dense-prediction task a laptop can train on, with exact labels: composites of labeled photos.

No segmentation or detection data set reaches a machine without network access, so one is made from any image-class
folder: each composite is a photo of one class (the background) with 1 to ``max_regions`` regions of photos of
*other* classes pasted on it. A region is a random shape (an ellipse, a polygon or a blob) at a random scale and
place, filled with its whole photo shrunk to the shape's bounding box. By construction:

* every pixel's **semantic label** is the class of the photo it came from (``(H, W)``, values ``0..K-1``);
* every pasted region is an **instance**: its class, its exact mask (what is left visible of it once later regions
  are pasted over it) and the box of that mask. An instance left with fewer than ``min_visible`` pixels is not a
  detection target (its pixels keep their class in the semantic map).

It is a synthetic task, and every output built on it says so: the regions' edges are sharp, and a region's class is
told by what the photo shows, not by its shape. A composite is a function of ``(seed, index)`` only, so a data set
is the same on every machine and in every epoch; training sets come from ``train/`` images, evaluation sets from
``val/`` images (any val folder gives a test set), so their photos never overlap.
"""
from __future__ import annotations

import math
import numbers
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.ops import masks_to_boxes
from torchvision.transforms import functional as TF

from .. import transforms
from ..images import load_image
from ..models.convnextv2 import check_positive_int

SHAPES = ("ellipse", "polygon", "blob")


class CompositeDataset(Dataset):
    """``length`` composites of ``size x size`` px drawn from ``samples`` (``(path, class index)`` pairs, at least
    two classes). Item ``i``: ``(image (3, H, W) normalized, target)`` where ``target`` holds ``"semantic"`` ``(H, W)``
    int64, ``"boxes"`` ``(R, 4)`` float32 ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive), ``"labels"`` ``(R,)``
    int64 class indices and ``"masks"`` ``(R, H, W)`` bool, for the ``R`` instances visible enough."""

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], size: int, length: int,
                 seed: int = 0, max_regions: int = 3, min_visible: int = 16) -> None:
        for name, value in (("size", size), ("length", length), ("max_regions", max_regions),
                            ("min_visible", min_visible)):
            check_positive_int(name, value)
        if not _is_int(seed) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}")
        by_class: dict[int, list[str]] = {}
        for sample in samples:
            if not (isinstance(sample, (tuple, list)) and len(sample) == 2 and _is_int(sample[1])):
                raise ValueError(f"samples must be (path, class index) pairs, e.g. a dataset's .samples; got "
                                 f"{sample!r}")
            path, label = sample
            if not 0 <= label < len(classes):
                raise ValueError(f"{path} has label {label}, outside the {len(classes)} classes")
            by_class.setdefault(int(label), []).append(path)
        if len(by_class) < 2:
            raise ValueError(f"composites need photos of at least 2 classes (regions come from another class than "
                             f"the background); got {len(by_class)}")
        self.by_class = {label: sorted(paths) for label, paths in sorted(by_class.items())}
        self.classes, self.size, self.length, self.seed = list(classes), int(size), int(length), seed
        self.max_regions, self.min_visible = int(max_regions), int(min_visible)
        self.normalize = transforms.normalization(3)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        if not _is_int(index) or not 0 <= index < self.length:  # also ends iteration, as a sequence's does
            raise IndexError(f"composite index {index!r} out of range 0..{self.length - 1}")
        canvas, semantic, regions = self.compose(index)
        target = {"semantic": torch.from_numpy(semantic), **instances(regions, semantic.shape, self.min_visible)}
        return self.normalize(TF.to_tensor(canvas)), target

    def compose(self, index: int) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray, int]]]:
        """Composite ``index`` as ``(RGB (H, W, 3) uint8, semantic (H, W) int64, regions)``; ``regions`` are the
        pasted ``(visible mask (H, W) bool, class)``, in pasting order."""
        rng = np.random.default_rng([self.seed, index])
        labels = list(self.by_class)
        background = labels[rng.integers(len(labels))]
        canvas = self._photo(background, rng, (self.size, self.size))
        semantic = np.full((self.size, self.size), background, dtype=np.int64)
        regions: list[tuple[np.ndarray, int]] = []
        for _ in range(rng.integers(1, self.max_regions + 1)):
            label = [c for c in labels if c != background][rng.integers(len(labels) - 1)]
            mask, (x0, y0, x1, y1) = random_shape(rng, self.size)
            photo = self._photo(label, rng, (y1 - y0, x1 - x0))
            inside = mask[y0:y1, x0:x1]
            canvas[y0:y1, x0:x1][inside] = photo[inside]
            semantic[mask] = label
            regions = [(visible & ~mask, c) for visible, c in regions] + [(mask, label)]
        return canvas, semantic, regions

    def _photo(self, label: int, rng: np.random.Generator, hw: tuple[int, int]) -> np.ndarray:
        """A random photo of class ``label``, resized (squeezed) to ``hw``, as ``(h, w, 3)`` uint8."""
        paths = self.by_class[label]
        image = load_image(paths[rng.integers(len(paths))], max_side=2 * max(hw))
        return np.asarray(image.resize((hw[1], hw[0]), Image.Resampling.BICUBIC), dtype=np.uint8).copy()


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def random_shape(rng: np.random.Generator, size: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A random region of a ``size x size`` canvas: ``(mask (size, size) bool, its box (x0, y0, x1, y1))``. An
    ellipse, a polygon (5 to 9 vertices at random radii around a centre) or a blob (3 to 5 ellipses that all cover its
    centre), its extent a tenth to two thirds of the canvas, centred anywhere in the middle 70%."""
    shape = SHAPES[rng.integers(len(SHAPES))]
    radius = size * rng.uniform(0.1, 0.33)
    cx, cy = size * rng.uniform(0.15, 0.85, size=2)
    image = Image.new("1", (size, size))
    draw = ImageDraw.Draw(image)
    if shape == "polygon":
        count = rng.integers(5, 10)
        angles = np.sort(rng.uniform(0, 2 * math.pi, size=count))
        radii = radius * rng.uniform(0.5, 1.0, size=count)
        draw.polygon([(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii)], fill=1)
    else:
        parts = [(cx, cy, radius * rng.uniform(0.5, 1.0), radius * rng.uniform(0.5, 1.0))]
        if shape == "blob":  # ellipses around the centre, overlapping
            count = rng.integers(3, 6)
            angles, distances = rng.uniform(0, 2 * math.pi, size=count), radius * rng.uniform(0.1, 0.35, size=count)
            parts = [(cx + d * math.cos(a), cy + d * math.sin(a), *(radius * rng.uniform(0.35, 0.6, size=2)))
                     for a, d in zip(angles, distances)]
        for x, y, rx, ry in parts:
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=1)
    mask = np.asarray(image, dtype=bool).copy()
    if not mask.any():  # a shape that fell between pixel centres: one pixel at its centre
        mask[min(int(cy), size - 1), min(int(cx), size - 1)] = True
    return mask, box_of(mask)


def boxes_of(masks: Tensor) -> Tensor:
    """The tight boxes ``(R, 4)`` ``(x0, y0, x1, y1)`` of non-empty masks ``(R, H, W)``, ``x1``/``y1`` exclusive
    (pixel edges, torchvision's convention for boxes; :func:`torchvision.ops.masks_to_boxes` gives the last pixel)."""
    return masks_to_boxes(masks) + torch.tensor([0.0, 0.0, 1.0, 1.0])


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    """:func:`boxes_of` of one non-empty ``(H, W)`` mask, as ints."""
    return tuple(int(v) for v in boxes_of(torch.as_tensor(np.ascontiguousarray(mask))[None])[0])


def instances(regions: list[tuple[np.ndarray, int]], hw: tuple[int, int], min_visible: int) -> dict[str, Tensor]:
    """The detection targets of a composite of ``hw`` pixels: each region with at least ``min_visible`` visible
    pixels, its box, class and mask (see :class:`CompositeDataset`)."""
    kept = [(mask, label) for mask, label in regions if mask.sum() >= min_visible]
    masks = torch.from_numpy(np.stack([m for m, _ in kept])) if kept else torch.zeros(0, *hw, dtype=torch.bool)
    return {"boxes": boxes_of(masks) if kept else torch.zeros(0, 4), "masks": masks,
            "labels": torch.tensor([label for _, label in kept], dtype=torch.int64)}


def detection_target(target: dict[str, Tensor]) -> dict[str, Tensor]:
    """A target as torchvision's detection models take it: boxes, masks, labels ``1..K`` (their 0 is the background),
    and COCO's crowd flags where the data has them (for scoring)."""
    kept = ("boxes", "masks", "iscrowd")
    return {**{key: target[key] for key in kept if key in target}, "labels": target["labels"] + 1}
