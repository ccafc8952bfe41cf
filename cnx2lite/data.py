"""Data: ImageFolder subsets (K classes x N images) and the paper's augmentations.

Where the images live is a setting: ``--data PATH`` > ``$CNX2LITE_DATA_ROOT`` > ``<repo>/data``. The data root
holds an ImageFolder tree ``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG``, either directly or in
``<root>/imagenette`` (or a downloaded ``<root>/imagenette2-320``), plus optionally ``samples/*.JPEG``.

Recipes follow the official ConvNeXt V2 code (facebookresearch/ConvNeXt-V2):
- FCMAE pre-training (main_pretrain.py): RandomResizedCrop(scale=(0.2, 1.0), bicubic) + horizontal flip.
- fine-tuning (main_finetune.py defaults, datasets.py build_transform): timm ``create_transform`` with
  RandAugment ``rand-m9-mstd0.5-inc1``, no color jitter, bicubic, random erasing p=0.25 mode 'pixel' count 1;
  Mixup/CutMix and the loss belong to the fine-tuning task (:mod:`cnx2lite.train.tasks`).
- evaluation: resize the shorter side to img_size / crop_pct (crop_pct 224/256), center crop; warp at >= 384.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import numbers
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from PIL import ExifTags, Image, ImageOps
from timm.data import auto_augment, create_transform
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import transforms as T
from torchvision.datasets import Imagenette
from torchvision.transforms import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IN_CHANS = (1, 3)  # what image files are converted to: greyscale or RGB
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".ppm", ".pgm", ".tif", ".tiff")  # case-insensitive
SPLITS = ("train", "val")
SELECTIONS = ("first", "random")
PARTS = ("fit", "tune")  # of train/ when a tuning split is carved out
ENV_VAR = "CNX2LITE_DATA_ROOT"
REPO = Path(__file__).resolve().parents[1]
# torchvision's Imagenette archives extract to <root>/<archive stem>/{train,val}/<wnid>/*.JPEG
IMAGENETTE_DIRS = {"full": "imagenette2", "320px": "imagenette2-320", "160px": "imagenette2-160"}
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


class DataNotFoundError(FileNotFoundError):
    """The images are not where the settings point; the message says what to pass."""


class CorruptImageError(OSError):
    """An image file that cannot be decoded; the message names the file."""


def _how_to_get_data(problem: str) -> str:
    return (
        f"{problem} "
        f"Pass the data root with --data PATH or set {ENV_VAR}=PATH, where PATH (or PATH/imagenette) holds an "
        "ImageFolder tree train/<class>/*.JPEG and val/<class>/*.JPEG. "
        "To fetch Imagenette: `cnx2lite download imagenette` or cnx2lite.data.download_imagenette(PATH)."
    )


def resolve_data_root(data: str | os.PathLike | None = None) -> Path:
    """The data root: ``data`` (from ``--data``) if given, else ``$CNX2LITE_DATA_ROOT``, else ``<repo>/data``."""
    if data is not None and os.fspath(data):
        return Path(data).expanduser()
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR]).expanduser()
    return REPO / "data"


def find_image_folder(root: Path, name: str = "imagenette", unlabeled_ok: bool = False,
                      split: str = "train") -> Path | None:
    """The folder holding ``split/`` (``train/``, and ``val/``; ``split="val"`` to evaluate): ``root``, else
    ``root/name``, else a download ``root/name*`` (e.g. ``imagenette2-320``; refused when several match). When there
    is none, raises DataNotFoundError, or with ``unlabeled_ok`` returns None if ``root`` itself holds images (see
    :func:`build_unlabeled_dataset`)."""
    root = Path(root).expanduser()
    if not name or os.sep in name or name in (".", ".."):
        raise ValueError(f"dataset must be one folder name under the data root, got {name!r}: give a path with "
                         "--data instead")
    for folder in (root, root / name):
        if (folder / split).is_dir():
            if unlabeled_ok and folder == root:
                _refuse_mixed_tree(root)
            return folder
    downloads = sorted(f for f in root.glob(f"{glob.escape(name)}*") if (f / split).is_dir())
    if len(downloads) > 1:  # a prefix must not pick one of several folders silently
        raise DataNotFoundError(f"--dataset {name!r} matches {len(downloads)} folders under {root} "
                                f"({', '.join(f.name for f in downloads)}): pass the full name")
    if downloads:
        return downloads[0]
    if unlabeled_ok and root.is_dir():
        splits = sorted(Path(parent) / d for parent, dirs, _ in os.walk(root, followlinks=True) for d in dirs
                        if d in SPLITS)
        if splits:  # a labeled tree under another name: a typo in --dataset must not pretrain on train/ and val/
            raise DataNotFoundError(_how_to_get_data(
                f"No image folder found: neither {root} nor {root / name} has train/, but {splits[0]} exists: pass "
                f"--data {splits[0].parent} (or --dataset {splits[0].parent.name}). Unlabeled pretraining takes a "
                "folder without train/ or val/ folders in it."))
        if _list_images(root):
            return None
    raise DataNotFoundError(_how_to_get_data(f"No image folder found: neither {root} nor {root / name} has {split}/"
                                             + (", and no images are under it." if unlabeled_ok else ".")))


def download_imagenette(root: Path, size: str = "320px") -> Path:
    """Download and extract Imagenette under ``root`` with torchvision; returns the folder with train/ and val/
    (``root/imagenette2-320`` for size '320px'), usable as ``--data``. Raises DataNotFoundError when offline."""
    if size not in IMAGENETTE_DIRS:
        raise ValueError(f"size must be one of {tuple(IMAGENETTE_DIRS)}, got {size!r}")
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"cannot download into {root}: it is a file; pass a folder with --data")
    root.mkdir(parents=True, exist_ok=True)
    try:
        for split in SPLITS:  # one archive holds both splits: the second call only checks it
            Imagenette(root, split=split, size=size, download=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; torchvision raises RuntimeError on a bad md5
        url = f"https://s3.amazonaws.com/fast-ai-imageclas/{IMAGENETTE_DIRS[size]}.tgz"
        raise DataNotFoundError(_how_to_get_data(
            f"Could not download Imagenette ({size}) into {root}: {type(e).__name__}: {e}\n"
            f"Without network access, fetch {url} elsewhere and extract it into {root}."
        )) from None
    return find_image_folder(root / IMAGENETTE_DIRS[size])


def load_image(path: str | os.PathLike, max_side: int | None = None) -> Image.Image:
    """Decode an image file to 8-bit RGB, upright; CorruptImageError names the file. Every mode is converted with its
    range scaled (:func:`to_rgb`: 16-bit and float images are not clipped to white or black) and the EXIF orientation
    is applied (a phone photo taken sideways is upright). With ``max_side``, an image whose shorter side is longer is
    shrunk to it (a JPEG is decoded at a reduced DCT scale first, then resized with an antialiased bicubic filter)."""
    try:
        with Image.open(path) as img:
            if max_side is not None and shrunk_size(img.size, max_side) != img.size:
                img.draft("RGB", shrunk_size(img.size, max_side))  # JPEG: the smallest DCT scale still >= that
            rgb = to_rgb(ImageOps.exif_transpose(img))
            size = rgb.size if max_side is None else shrunk_size(rgb.size, max_side)
            return rgb if rgb.size == size else rgb.resize(size, Image.Resampling.BICUBIC)
    except _DECODE_ERRORS as e:
        raise CorruptImageError(f"cannot read image {path}: {type(e).__name__}: {e}") from None


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB. Palette with transparency goes through RGBA; 16-bit integer modes are scaled by 1/257
    (65535 -> 255); 32-bit integer images by 1/257 when their values fit 16 bits (how PNG's 16-bit greyscale often
    opens), else by their maximum; float images ('F') by 255 when their values lie in [0, 1], else their [min, max]
    is stretched to [0, 255]. PIL's own conversion of these modes clips at 255: a 16-bit photo would be white and a
    [0, 1] float one black."""
    if img.mode == "P" and "transparency" in img.info:
        return img.convert("RGBA").convert("RGB")
    if img.mode.startswith("I") or img.mode == "F":
        values = np.asarray(img, dtype=np.float64)
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if img.mode == "F":
            scaled = values * 255 if low >= 0 and high <= 1 else (values - low) * (255 / max(high - low, 1e-12))
        elif img.mode.startswith("I;16") or high > 255:
            scaled = values / 257 if high <= 65535 else values * (255 / high)
        else:
            scaled = values  # 32-bit integers holding 8-bit values
        return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8), "L").convert("RGB")
    return img.convert("RGB")


def oriented_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of the image :func:`load_image` returns, from the header alone (EXIF orientations 5-8 turn
    it by 90 degrees)."""
    with Image.open(path) as img:
        width, height = img.size
        orientation = img.getexif().get(ExifTags.Base.Orientation, 1)
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


def fingerprint(dataset: ImageFolderSubset, folder: str | os.PathLike) -> str:
    """A short hash of which images ``dataset`` holds with which labels: each file's path relative to ``folder``, its
    size and label. The same tree copied elsewhere gives the same fingerprint; an image added, removed, replaced or
    relabeled gives another."""
    digest = hashlib.sha256()
    for path, label in sorted(dataset.samples):
        digest.update(f"{os.path.relpath(path, folder)}\t{os.path.getsize(path)}\t{label}\n".encode())
    return digest.hexdigest()[:16]


def shrunk_size(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """``(width, height)`` scaled down so that the shorter side is at most ``max_side`` (unchanged if it is)."""
    width, height = size
    scale = max_side / min(width, height)
    if scale >= 1:
        return width, height
    return max(1, round(width * scale)), max(1, round(height * scale))


def _image_problem(path: str, decode: bool = True) -> str | None:
    """None if ``path`` is a readable image, else the reason. ``decode``: decode it (JPEGs at 1/8 scale, which still
    reads every byte); else only parse its header (PIL's verify: fast, no decode)."""
    try:
        with Image.open(path) as img:
            if decode:
                img.draft(None, (1, 1))  # no-op for other formats
                img.load()
            else:
                img.verify()
    except _DECODE_ERRORS as e:
        return f"{type(e).__name__}: {e}"
    return None


def _refuse_unreadable(paths: Sequence[str], pool: ThreadPoolExecutor, where: Path) -> None:
    """Raise one CorruptImageError listing every file of ``paths`` whose header does not open."""
    bad = [(path, reason)
           for path, reason in zip(paths, pool.map(functools.partial(_image_problem, decode=False), paths))
           if reason is not None]
    if bad:
        shown = "; ".join(f"{path} ({reason})" for path, reason in bad[:10])
        more = f"; and {len(bad) - 10} more" if len(bad) > 10 else ""
        raise CorruptImageError(f"{len(bad)} unreadable image file(s) under {where}: {shown}{more}. Remove or replace "
                                "them, or pass skip_corrupt=True (--skip-corrupt) to leave them out")


def _first_valid(paths: list[str], n: int, pool: ThreadPoolExecutor) -> tuple[list[str], list[tuple[str, str]]]:
    """The first ``n`` of ``paths`` that decode, and (path, reason) for the ones before them that do not."""
    good, bad, i = [], [], 0
    while len(good) < n and i < len(paths):
        batch = paths[i : i + n - len(good)]
        i += len(batch)
        for path, reason in zip(batch, pool.map(_image_problem, batch)):
            if reason is None:
                good.append(path)
            else:
                bad.append((path, reason))
    return good, bad


def _refuse_mixed_tree(root: Path) -> None:
    """A folder with ``train/`` that also holds images elsewhere is ambiguous for pretraining: a labeled tree (those
    images would be dropped) or a photo collection with a subfolder named train (most of it would be)."""
    outside = [path for path in _list_images(root)
               if Path(path).relative_to(root).parts[0] not in SPLITS]
    if outside:
        raise DataNotFoundError(
            f"{root} has a {SPLITS[0]}/ folder, so it reads as a labeled tree, but {len(outside)} image(s) lie outside "
            f"{' and '.join(f'{s}/' for s in SPLITS)} (e.g. {outside[0]}) and would be left out. For labeled data, "
            f"move them out; to pretrain on every image, rename the {SPLITS[0]}/ folder or point --data at one "
            "without it.")


def _list_classes(split_dir: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split_dir) if e.is_dir() and not e.name.startswith("."))


def _list_images(folder: Path, confined: bool = False) -> list[str]:
    """Image files under ``folder`` (recursively, hidden files skipped), sorted. Links are followed, but a folder is
    walked once however many links lead to it (a link to ``.`` or ``..`` neither loops nor repeats images), and a file
    reached twice is listed once. ``confined`` (a class folder): a link that leads outside ``folder`` is refused, as
    its images would take this class's label."""
    root = os.path.realpath(folder)
    seen_dirs, seen_files, paths = set(), set(), []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:
            dirnames[:] = []
            continue
        if confined and os.path.commonpath([root, real]) != root:
            raise ValueError(f"{dirpath} links to {real}, outside the class folder {folder}: its images would be "
                             "labeled with this class; remove the link or copy the images in")
        seen_dirs.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = os.path.join(dirpath, name)
            if name.startswith(".") or not name.lower().endswith(IMG_EXTENSIONS):
                continue
            real_file = os.path.realpath(path)
            if confined and os.path.commonpath([root, real_file]) != root:
                raise ValueError(f"{path} links to {real_file}, outside the class folder {folder}: it would be "
                                 "labeled with this class; remove the link or copy the image in")
            if real_file not in seen_files:
                seen_files.add(real_file)
                paths.append(path)
    return sorted(paths)


class ImageFolderSubset(Dataset):
    """(image, label) pairs of an ImageFolder subset; build it with :func:`build_dataset`.

    ``classes[i]`` is the folder name (wnid) of label ``i``; ``samples`` is a list of (path, label).
    Items: the RGB image through ``transform``; without one, a float tensor (3, H, W) in [0, 1].
    ``skipped`` lists (path, reason) of the unreadable files that ``skip_corrupt`` left out. ``decoded``, when set,
    holds images already decoded (see :mod:`cnx2lite.image_cache`), used instead of their files.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        transform: Callable | None = None,
        skipped: Sequence[tuple[str, str]] = (),
    ):
        self.samples = list(samples)
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [label for _, label in self.samples]
        self.transform = transform
        self.skipped = list(skipped)
        self.decoded: Mapping[str, Image.Image] | None = None  # images decoded once (cnx2lite.image_cache), by path

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        img = self.decoded[path] if self.decoded is not None and path in self.decoded else load_image(path)
        return (self.transform(img) if self.transform is not None else TF.to_tensor(img)), label

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({len(self)} images, {len(self.classes)} classes, "
                f"{len(self.skipped)} skipped, transform={self.transform})")


def build_dataset(
    folder: Path,
    split: str,
    transform: Callable | None = None,
    num_classes: int | None = None,
    classes: Sequence[str] | None = None,
    class_selection: str = "first",
    images_per_class: int | None = None,
    seed: int = 0,
    skip_corrupt: bool = False,
    image_selection: str = "first",
    check_headers: bool = False,
    tune_fraction: float = 0.0,
    part: str = "fit",
) -> ImageFolderSubset:
    """K classes x at most N images of ``folder/split/<class>/*``, deterministic for given arguments.

    Classes: ``classes`` (folder names, in that label order; pass ``train_set.classes`` to build val) or the first
    ``num_classes`` in sorted order ('first') or a seeded random pick, sorted ('random'). None: all classes.
    Images: per class, the first ``images_per_class`` files in sorted order ('first') or a seeded random pick
    ('random', independent of the other classes chosen). None: all; classes with fewer files keep them all.
    Unreadable files raise CorruptImageError when loaded. With ``skip_corrupt`` every candidate is decoded here,
    in the main process (threads, JPEGs at 1/8 scale: about 0.5 ms each), bad ones are recorded in
    ``dataset.skipped`` and the next readable files take their place, so DataLoader workers never meet them.
    Without it, ``check_headers`` opens every chosen file's header (no decode) and raises one CorruptImageError
    listing all that fail, before a run starts rather than when the sampler reaches them.
    ``tune_fraction`` carves that fraction of every class of ``train/`` out as a tuning split (:func:`tuning_split`):
    ``part="fit"`` keeps the rest, ``part="tune"`` the carved images; the selection above applies within the part.
    """
    folder = Path(folder)
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    for arg, value, allowed in (("class_selection", class_selection, SELECTIONS),
                                ("image_selection", image_selection, SELECTIONS), ("part", part, PARTS)):
        if value not in allowed:
            raise ValueError(f"{arg} must be one of {allowed}, got {value!r}")
    if not 0.0 <= tune_fraction < 1.0 or (tune_fraction > 0 and split != "train"):
        raise ValueError(f"tune_fraction must be in [0, 1) and carves train/ only; got {tune_fraction!r} for split "
                         f"{split!r}")
    if images_per_class is not None and images_per_class < 1:
        raise ValueError(f"images_per_class must be >= 1 or None (all), got {images_per_class}")
    split_dir = folder / split
    if not split_dir.is_dir():
        raise DataNotFoundError(_how_to_get_data(f"Split {split!r} not found: {split_dir} is not a folder."))
    available = _list_classes(split_dir)
    if not available:
        raise DataNotFoundError(_how_to_get_data(f"No class folders in {split_dir}."))

    if classes is not None:
        if isinstance(classes, str):
            raise ValueError(f"classes must be a list of class folder names, got the string {classes!r}")
        classes = list(classes)
        unknown = sorted(set(classes) - set(available))
        if unknown:
            raise ValueError(
                f"classes has {len(unknown)} name(s) not in {split_dir}: {unknown[:5]}; "
                f"available ({len(available)}): {available[:5]}{' ...' if len(available) > 5 else ''}"
            )
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be a non-empty list of distinct names, got {classes}")
        if num_classes is not None and num_classes != len(classes):
            raise ValueError(f"num_classes={num_classes} disagrees with the {len(classes)} names in classes")
    else:
        k = len(available) if num_classes is None else num_classes
        if not 1 <= k <= len(available):
            raise ValueError(f"num_classes must be in 1..{len(available)} (class folders in {split_dir}), got {k}")
        classes = available[:k] if class_selection == "first" else sorted(random.Random(seed).sample(available, k))

    samples, skipped = [], []
    with ThreadPoolExecutor() as pool:
        for label, name in enumerate(classes):
            paths = _list_images(split_dir / name, confined=True)
            if not paths:
                raise DataNotFoundError(f"class folder {split_dir / name} has no images ({', '.join(IMG_EXTENSIONS)}): "
                                        "remove it, or pass classes/num_classes that leave it out")
            if tune_fraction:
                paths = tuning_split(paths, name, tune_fraction)[part == "tune"]
            if image_selection == "random":
                random.Random(f"{seed}/{name}").shuffle(paths)
            n = len(paths) if images_per_class is None else images_per_class
            if skip_corrupt:
                chosen, bad = _first_valid(paths, n, pool)
                skipped += bad
                if not chosen:
                    raise DataNotFoundError(f"class folder {split_dir / name} has no readable image: all "
                                            f"{len(bad)} are corrupt ({bad[0][0]}: {bad[0][1]}); remove the folder "
                                            "or pass classes/num_classes that leave it out")
            else:
                chosen = paths[:n]
            samples += [(path, label) for path in sorted(chosen)]
        if check_headers and not skip_corrupt:
            _refuse_unreadable([path for path, _ in samples], pool, split_dir)
    return ImageFolderSubset(samples, classes, transform=transform, skipped=skipped)


def tuning_split(paths: Sequence[str], class_name: str, fraction: float) -> tuple[list[str], list[str]]:
    """``(fit, tune)``: ``round(fraction * len(paths))`` (at least one) of a class's training images, drawn at random
    with a seed fixed by the class name (so every run and every seed carves the same images), are the tuning split;
    the rest fit. Both keep the order of ``paths``. Settings are chosen on the tuning split, never on ``val/``."""
    order = sorted(paths)
    random.Random(f"tune/{class_name}").shuffle(order)
    tune = set(order[:max(1, round(fraction * len(order)))])
    return [p for p in paths if p not in tune], [p for p in paths if p in tune]


def distinct_class_order(targets: Sequence[int]) -> list[int]:
    """Indices of ``targets`` ordered so that classes alternate: the first image of each class (in order of first
    appearance), then the second of each, ... For figures and analyses over images of distinct classes."""
    by_class: dict[int, list[int]] = {}
    for index, target in enumerate(targets):
        by_class.setdefault(target, []).append(index)
    rounds = max(map(len, by_class.values()), default=0)
    return [indices[r] for r in range(rounds) for indices in by_class.values() if r < len(indices)]


def build_unlabeled_dataset(folder: Path, transform: Callable | None = None, skip_corrupt: bool = False,
                            check_headers: bool = False) -> ImageFolderSubset:
    """Every image under ``folder``, flat or nested in any layout (found recursively, any common extension,
    hidden files skipped), for pretraining without labels: no classes, every target -1. ``skip_corrupt`` and
    ``check_headers`` as in :func:`build_dataset`."""
    paths = _list_images(Path(folder).expanduser())
    if not paths:
        raise DataNotFoundError(_how_to_get_data(f"No images ({', '.join(IMG_EXTENSIONS)}) under {folder}."))
    skipped = []
    with ThreadPoolExecutor() as pool:
        if skip_corrupt:
            paths, skipped = _first_valid(paths, len(paths), pool)
        elif check_headers:
            _refuse_unreadable(paths, pool, Path(folder))
    return ImageFolderSubset([(path, -1) for path in paths], [], transform=transform, skipped=skipped)


def class_names(folder: Path) -> dict[str, str]:
    """wnid -> readable name from ``folder/CLASSES.tsv`` (``wnid<TAB>name`` lines), else train class -> itself."""
    folder = Path(folder)
    tsv = folder / "CLASSES.tsv"
    if tsv.is_file():
        rows = (line.partition("\t") for line in tsv.read_text(encoding="utf-8").splitlines() if line.strip())
        return {wnid.strip(): (name.strip() or wnid.strip()) for wnid, _, name in rows}
    train = folder / "train"
    return {c: c for c in _list_classes(train)} if train.is_dir() else {}


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
