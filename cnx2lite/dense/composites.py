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
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torch.utils.data import Dataset

from .. import transforms
from ..images import load_image

SHAPES = ("ellipse", "polygon", "blob")


class CompositeDataset(Dataset):
    """``length`` composites of ``size x size`` px drawn from ``samples`` (``(path, class index)`` pairs, at least
    two classes). Item ``i``: ``(image (3, H, W) normalized, target)`` where ``target`` holds ``"semantic"`` ``(H, W)``
    int64, ``"boxes"`` ``(R, 4)`` float32 ``(x0, y0, x1, y1)`` in pixels (x1, y1 exclusive), ``"labels"`` ``(R,)``
    int64 class indices and ``"masks"`` ``(R, H, W)`` bool, for the ``R`` instances visible enough."""

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], size: int, length: int,
                 seed: int = 0, max_regions: int = 3, min_visible: int = 16) -> None:
        by_class: dict[int, list[str]] = {}
        for path, label in samples:
            by_class.setdefault(label, []).append(path)
        if len(by_class) < 2:
            raise ValueError(f"composites need photos of at least 2 classes (regions come from another class than "
                             f"the background); got {len(by_class)}")
        for name, value in (("size", size), ("length", length), ("max_regions", max_regions)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        self.by_class = {label: sorted(paths) for label, paths in sorted(by_class.items())}
        self.classes, self.size, self.length, self.seed = list(classes), size, length, seed
        self.max_regions, self.min_visible = max_regions, min_visible
        self.normalize = transforms.normalization(3)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        canvas, semantic, regions = self.compose(index)
        image = self.normalize(torch.from_numpy(canvas).permute(2, 0, 1).float() / 255)
        return image, {"semantic": torch.from_numpy(semantic).long(), **instances(semantic, regions,
                                                                                  self.min_visible)}

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
        return np.asarray(image.resize((hw[1], hw[0]), Image.BICUBIC), dtype=np.uint8).copy()


def random_shape(rng: np.random.Generator, size: int) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A random region of a ``size x size`` canvas: ``(mask (size, size) bool, its box (x0, y0, x1, y1))``. An
    ellipse, a polygon (5 to 9 vertices at random radii around a centre) or a blob (3 to 5 overlapping ellipses), its
    extent a fifth to two thirds of the canvas, centred anywhere in the middle 70%."""
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
            angles, distances = rng.uniform(0, 2 * math.pi, size=count), radius * rng.uniform(0.1, 0.5, size=count)
            parts = [(cx + d * math.cos(a), cy + d * math.sin(a), *(radius * rng.uniform(0.35, 0.6, size=2)))
                     for a, d in zip(angles, distances)]
        for x, y, rx, ry in parts:
            draw.ellipse((x - rx, y - ry, x + rx, y + ry), fill=1)
    mask = np.asarray(image, dtype=bool).copy()
    if not mask.any():  # a shape that fell between pixel centres: one pixel at its centre
        mask[min(int(cy), size - 1), min(int(cx), size - 1)] = True
    return mask, box_of(mask)


def box_of(mask: np.ndarray) -> tuple[int, int, int, int]:
    """The tight box ``(x0, y0, x1, y1)`` of a non-empty ``(H, W)`` mask, ``x1``/``y1`` exclusive."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def instances(semantic: np.ndarray, regions: list[tuple[np.ndarray, int]], min_visible: int) -> dict[str, Tensor]:
    """The detection targets of a composite: each region with at least ``min_visible`` visible pixels, its box, class
    and mask (see :class:`CompositeDataset`)."""
    kept = [(mask, label) for mask, label in regions if mask.sum() >= min_visible]
    h, w = semantic.shape
    return {"boxes": torch.tensor([box_of(mask) for mask, _ in kept], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor([label for _, label in kept], dtype=torch.int64),
            "masks": torch.from_numpy(np.stack([mask for mask, _ in kept])) if kept
            else torch.zeros(0, h, w, dtype=torch.bool)}
