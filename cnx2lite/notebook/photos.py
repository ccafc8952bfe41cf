"""The photos the notebooks show: normalized ``(n, 3, S, S)`` batches (ImageNet mean/std), from the
data root's ``samples/`` folder or its val split, else scikit-image's bundled photos."""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..data import (
    DataNotFoundError,
    build_dataset,
    build_unlabeled_dataset,
    find_image_folder,
    list_classes,
    resolve_data_root,
)
from ..image_files import display_names
from ..transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform


def sample_images(n: int = 4, img_size: int = 224, data: str | None = None, seed: int = 0) -> Tensor:
    """``n`` real photos (n, 3, img_size, img_size), ImageNet-normalized, shorter side resized and center-cropped:
    a seeded pick from ``<data root>/samples/`` if it has images, else from the image folder's val split."""
    root = resolve_data_root(data)
    transform = eval_transform(img_size, crop_pct=1.0)
    try:
        images = build_unlabeled_dataset(root / "samples", transform)
    except DataNotFoundError:  # no samples/ folder, or no images in it
        images = build_dataset(find_image_folder(root), "val", transform)
    if not 1 <= n <= len(images):
        raise ValueError(f"n must be in 1..{len(images)} (images available), got {n}")
    return torch.stack([images[i][0] for i in random.Random(seed).sample(range(len(images)), n)])


def photos(n: int, img_size: int, seed: int = 0) -> Tensor:
    """``n`` real photos ``(n, 3, img_size, img_size)``, normalized with the ImageNet mean/std.

    They come from :func:`sample_images` (the data root: ``$CNX2LITE_DATA_ROOT``, else
    ``<repo>/data``); if no photos are there, from scikit-image's bundled photos when scikit-image is
    installed. Otherwise this raises with what to do."""
    try:
        return sample_images(n, img_size, seed=seed)
    except (FileNotFoundError, RuntimeError, ValueError, OSError) as error:
        problem = str(error)
    try:
        return _skimage_photos(n, img_size, seed)
    except ImportError:
        pass
    raise RuntimeError(
        f"No photos to show.\n{problem}\nFor the notebooks, a folder with samples/*.JPEG is enough; or "
        "`pip install scikit-image` to use its bundled photos instead."
    )


def _skimage_photos(n: int, img_size: int, seed: int) -> Tensor:
    from skimage import data as skdata  # optional fallback only

    names = ["astronaut", "coffee", "chelsea", "rocket", "cat"]
    rng = np.random.default_rng(seed)
    chosen = [names[i % len(names)] for i in rng.permutation(len(names))][:n]
    chosen += [names[i % len(names)] for i in range(n - len(chosen))]
    out = []
    for name in chosen:
        img = torch.from_numpy(np.asarray(getattr(skdata, name)())).float().div(255).permute(2, 0, 1)[:3]
        side = min(img.shape[-2:])
        top, left = (img.shape[-2] - side) // 2, (img.shape[-1] - side) // 2
        img = img[:, top:top + side, left:left + side]
        img = torch.nn.functional.interpolate(img[None], size=(img_size, img_size), mode="bilinear",
                                              antialias=True, align_corners=False)[0]
        out.append(img)
    x = torch.stack(out)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def class_names(folder: Path) -> dict[str, str]:
    """wnid -> readable name from ``folder/CLASSES.tsv`` (:func:`~cnx2lite.image_files.display_names`), else train
    class -> itself."""
    names = display_names(folder)
    train = Path(folder) / "train"
    return names or ({c: c for c in list_classes(train)} if train.is_dir() else {})
