"""Decode once, augment every epoch: a run's images kept in memory as uint8 pixels.

Decoding a JPEG costs about as much as the whole 96 px augmentation that follows it (0.2-0.4 ms each on one
core of the 2-core CPU we measured), and an epoch decodes every image again. :class:`DecodedImages` decodes each
file once, in threads, into one flat ``uint8`` tensor (so DataLoader workers share it instead of copying it), and
hands the datasets a PIL image per path; the random crop, flip and RandAugment are still drawn per step.

Images whose shorter side is above ``max_side`` are stored shrunk to it (JPEGs are decoded at a reduced scale
first, then resized with an antialiased bicubic filter). :func:`cache_side` chooses ``max_side`` so that the
smallest pretraining crop (20% of the area) still has a cached pixel for every output pixel: a run on images no
larger than that sees exactly the pixels an uncached run sees.
"""
from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .images import load_image, oriented_size, shrunk_size

SIDE_FACTOR = 2.5  # max_side / training size: sqrt(1 / 0.2) = 2.24 for the pretraining crop, with a margin
MAX_MEMORY_FRACTION = 0.5  # of the memory available when the cache is built


def cache_side(img_size: int | Sequence[int]) -> int:
    """The largest shorter side kept for images trained at ``img_size`` (an int or ``(H, W)``)."""
    sides = (img_size,) if isinstance(img_size, numbers.Integral) else tuple(img_size)
    return math.ceil(SIDE_FACTOR * max(sides))


def available_memory() -> int:
    """Bytes of memory available to new allocations (``MemAvailable``), or the physical total where unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


class DecodedImages:
    """The images at ``paths`` decoded once: ``cache[path]`` is a PIL RGB image (``path in cache`` to test).

    Raises ValueError naming ``cache_images`` when the decoded pixels would take more than
    :data:`MAX_MEMORY_FRACTION` of the available memory (sizes read from the headers first)."""

    def __init__(self, paths: Iterable[str], max_side: int, threads: int | None = None,
                 log: Callable[[str], None] = lambda message: None) -> None:
        paths = sorted(set(paths))
        with ThreadPoolExecutor(threads) as pool:
            sizes = list(pool.map(lambda p: shrunk_size(oriented_size(p), max_side), paths))
            needed = sum(3 * w * h for w, h in sizes)
            budget = MAX_MEMORY_FRACTION * available_memory()
            if needed > budget:
                total = budget / MAX_MEMORY_FRACTION
                raise ValueError(f"cache_images: the {len(paths):,} images take {needed / 2**30:.1f} GiB decoded "
                                 f"(shorter side at most {max_side} px), more than {MAX_MEMORY_FRACTION:.0%} of the "
                                 f"{total / 2**30:.1f} GiB available: pass --no-cache-images")
            self.pixels = torch.empty(needed, dtype=torch.uint8)
            self.index: dict[str, tuple[int, int, int]] = {}  # path -> (offset, height, width)
            offset = 0
            for path, (w, h) in zip(paths, sizes):
                self.index[path] = (offset, h, w)
                offset += 3 * w * h

            def store(path: str) -> None:
                start, h, w = self.index[path]
                array = np.asarray(load_image(path, max_side))
                if array.shape != (h, w, 3):  # a header that disagrees with its data
                    raise ValueError(f"cache_images: {path} decodes to {array.shape[1]}x{array.shape[0]}, its header "
                                     f"says {w}x{h}")
                self.pixels[start:start + 3 * w * h].numpy()[:] = array.reshape(-1)  # PIL's array is read-only

            list(pool.map(store, paths))
        log(f"cache_images: {len(paths):,} images decoded once, {needed / 2**20:,.0f} MiB in memory")

    def __contains__(self, path: object) -> bool:
        return path in self.index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, path: str) -> Image.Image:
        start, h, w = self.index[path]
        return Image.fromarray(self.pixels[start:start + 3 * w * h].numpy().reshape(h, w, 3), "RGB")
