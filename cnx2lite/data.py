"""Data: where the images live, and ImageFolder subsets of them (K classes x N images, tuning splits).

Where the images live is a setting: ``--data PATH`` > ``$CNX2LITE_DATA_ROOT`` > ``<repo>/data``. The data root
holds an ImageFolder tree ``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG``, either directly or in
``<root>/imagenette`` (or a downloaded ``<root>/imagenette2-320``), plus optionally ``samples/*.JPEG``. Finding the
image files is :mod:`cnx2lite.image_files`, decoding one :mod:`cnx2lite.images`; the augmentations are
:mod:`cnx2lite.transforms`.
"""
from __future__ import annotations

import glob
import os
import random
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset
from torchvision.transforms import functional as TF

from .arguments import checked_path
from .image_files import IMG_EXTENSIONS, first_readable, labeled_folders, list_images, refuse_unreadable
from .images import load_image

SPLITS = ("train", "val")
SELECTIONS = ("first", "random")
PARTS = ("fit", "tune")  # of train/ when a tuning split is carved out
ENV_VAR = "CNX2LITE_DATA_ROOT"
DEFAULT_DATASET = "imagenette"  # the folder name under the data root when none is given
REPO = Path(__file__).resolve().parents[1]


class ShortClassWarning(UserWarning):
    """A class holds fewer images than were asked for per class: it keeps all it has, and the classes are unbalanced.
    The command line prints it as one ``warning:`` line."""


def warn_left_out_classes(folder: Path, split: str, classes: Sequence[str], beside: str | None = None) -> None:
    """Warn (a :class:`ShortClassWarning`: one ``warning:`` line) when ``folder/split`` holds class folders outside
    ``classes`` (a model's) and, with ``beside`` (``"train"``), outside that split's (num_classes leaves a class out of
    both by choice): their images are not scored, and the user should know which."""
    split_dir, kept = Path(folder) / split, {*classes, *(list_classes(Path(folder) / beside) if beside else ())}
    left_out = {name: len(list_images(split_dir / name, confined=True)) for name in list_classes(split_dir)
                if name not in kept}
    if left_out:
        shown = ", ".join(f"{name} ({count} images)" for name, count in list(left_out.items())[:5])
        warnings.warn(ShortClassWarning(f"{split_dir} holds {len(left_out)} class folder(s) the model was not trained "
                                        f"on, left out of the scores: {shown}{' ...' if len(left_out) > 5 else ''}"),
                      stacklevel=2)


@dataclass(frozen=True)
class ShortClasses:
    """The classes of a subset that hold fewer images than the ``asked`` number per class (``counts``: class -> the
    images it holds), of ``total`` classes of the folder ``where``."""

    asked: int
    counts: dict[str, int]
    total: int
    where: str

    def message(self, setting: str = "images_per_class") -> str:
        """One line naming the ``setting`` that asked and the classes short of it."""
        listed = ", ".join(f"{name} ({count})" for name, count in list(self.counts.items())[:5])
        return (f"{setting}={self.asked}: {len(self.counts)} of {self.total} class(es) of {self.where} hold fewer "
                f"images and keep all they have: {listed}{' ...' if len(self.counts) > 5 else ''}")


class DataNotFoundError(FileNotFoundError):
    """The images are not where the settings point; the message says what to pass."""


def how_to_get_data(problem: str) -> str:
    return (
        f"{problem} Pass the data root with --data PATH or set {ENV_VAR}=PATH, where PATH (or PATH/imagenette) holds "
        "an ImageFolder tree train/<class>/*.JPEG and val/<class>/*.JPEG. "
        "To fetch Imagenette: `cnx2lite download imagenette` or cnx2lite.imagenette.download_imagenette(PATH)."
    )


def resolve_data_root(data: str | os.PathLike | None = None) -> Path:
    """The data root: ``data`` (from ``--data``) if given, else ``$CNX2LITE_DATA_ROOT``, else ``<repo>/data``."""
    for given, name in ((data, "data"), (os.environ.get(ENV_VAR), ENV_VAR)):
        if given is not None and os.fspath(given):
            return checked_path(given, name)
    return REPO / "data"


def find_image_folder(root: Path, name: str = DEFAULT_DATASET, unlabeled_ok: bool = False,
                      split: str = "train") -> Path | None:
    """The folder holding ``split/`` (``train/``, and ``val/``; ``split="val"`` to evaluate): ``root``, else
    ``root/name`` (both: refused), else a download ``root/name*`` (e.g. ``imagenette2-320``; refused when several
    match). When there is none, raises DataNotFoundError, or with ``unlabeled_ok`` returns None if ``root`` itself
    holds images (see :func:`build_unlabeled_dataset`). The images at ``root`` itself are read only for the default
    ``name``: another one that is not there is refused (:func:`check_dataset_named`), not ignored."""
    root = checked_path(root, "root")
    if not name or os.sep in name or name in (".", ".."):
        raise ValueError(f"dataset must be one folder name under the data root, got {name!r}: give a path with "
                         "--data instead")
    if (root / split).is_dir() and (root / name / split).is_dir():  # which one was meant cannot be told
        raise ValueError(f"{root} holds both {split}/ and {name}/{split}/: give the one to use as --data "
                         f"({root} or {root / name})")
    for folder in (root, root / name):
        if (folder / split).is_dir():
            if folder == root:
                check_dataset_named(root, name)
                if unlabeled_ok:
                    _refuse_mixed_tree(root)
            return folder
    downloads = sorted(f for f in root.glob(f"{glob.escape(name)}*") if (f / split).is_dir())
    if len(downloads) > 1:  # a prefix must not pick one of several folders silently
        raise ValueError(f"{root} holds {len(downloads)} folders named {name}* "
                         f"({', '.join(f.name for f in downloads)}): name one with --dataset, or give it as --data")
    if downloads:
        return downloads[0]
    if unlabeled_ok and root.is_dir():
        if splits := labeled_folders(root):  # a labeled tree (another name, ADE20K's, COCO's): never read as photos
            labeled = splits[0].parent
            advice = (f"pass --data {labeled} (or --dataset {labeled.name})" if (labeled / "train").is_dir() else
                      f"rename {splits[0]} (or move it out)")
            raise DataNotFoundError(how_to_get_data(
                f"No image folder found: neither {root} nor {root / name} has train/, but {splits[0]} exists: "
                f"{advice}. Unlabeled pretraining takes a folder without a labeled data set's split or annotation "
                "folders in it (train/, val/, ADE20K's training/, validation/, COCO's train2017/, annotations/)."))
        if list_images(root):
            check_dataset_named(root, name)
            return None
    raise DataNotFoundError(how_to_get_data(f"No image folder found: neither {root} nor {root / name} has {split}/"
                                             + (", and no images are under it." if unlabeled_ok else ".")))


def check_dataset_named(root: Path, name: str) -> None:
    """Refuse to read the images at ``root`` itself for a dataset ``name`` other than the default (a typo): a
    ValueError, like every error of the name's (the data root is not at fault, nor is a config that gave it)."""
    if name != DEFAULT_DATASET:
        raise ValueError(f"dataset {name!r}: {root} holds no folder of that name; for the images at {root} itself, "
                         "leave dataset (--dataset) out")


def _refuse_mixed_tree(root: Path) -> None:
    """A folder with ``train/`` that also holds images elsewhere is ambiguous for pretraining: a labeled tree (those
    images would be dropped) or a photo collection with a subfolder named train (most of it would be)."""
    outside = [path for path in list_images(root) if Path(path).relative_to(root).parts[0] not in SPLITS]
    if outside:
        raise DataNotFoundError(
            f"{root} has a {SPLITS[0]}/ folder, so it reads as a labeled tree, but {len(outside)} image(s) lie outside "
            f"{' and '.join(f'{s}/' for s in SPLITS)} (e.g. {outside[0]}) and would be left out. For labeled data, "
            f"move them out; to pretrain on every image, rename the {SPLITS[0]}/ folder or point --data at one "
            "without it.")


def list_classes(split_dir: Path) -> list[str]:
    """The class folders of a split; images lying loose beside them (whose class is unknown) are refused."""
    entries = [e for e in os.scandir(split_dir) if not e.name.startswith(".")]
    loose = sorted(e.name for e in entries if e.is_file() and e.name.lower().endswith(IMG_EXTENSIONS))
    if loose:
        raise DataNotFoundError(f"{split_dir} holds {len(loose)} image file(s) outside any class folder (e.g. "
                                f"{loose[0]}): a labeled split has one folder per class; move them into theirs")
    return sorted(e.name for e in entries if e.is_dir())


class ImageFolderSubset(Dataset):
    """(image, label) pairs of an ImageFolder subset; build it with :func:`build_dataset`.

    ``classes[i]`` is the folder name (wnid) of label ``i``; ``samples`` is a list of (path, label).
    Items: the RGB image through ``transform``; without one, a float tensor (3, H, W) in [0, 1].
    ``skipped`` lists (path, reason) of the unreadable files that ``skip_corrupt`` left out, ``short`` the classes that
    hold fewer images than were asked for; ``whole`` says that every image of each class was taken (no pick was
    made, so how images are picked made no difference). ``decoded``, when set, holds images already decoded (see
    :mod:`cnx2lite.image_cache`), used instead of their files.
    """

    def __init__(self, samples: Sequence[tuple[str, int]], classes: Sequence[str], transform: Callable | None = None,
                 skipped: Sequence[tuple[str, str]] = (), short: ShortClasses | None = None, whole: bool = True):
        self.samples = list(samples)
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.targets = [label for _, label in self.samples]
        self.transform = transform
        self.skipped = list(skipped)
        self.short = short
        self.whole = whole
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
    warn_short: bool = True,
) -> ImageFolderSubset:
    """K classes x at most N images of ``folder/split/<class>/*``, deterministic for given arguments.

    Classes: ``classes`` (folder names, in that label order; pass ``train_set.classes`` to build val) or the first
    ``num_classes`` in sorted order ('first') or a seeded random pick, sorted ('random'). None: all classes.
    Images: per class, the first ``images_per_class`` files in sorted order ('first') or a seeded random pick
    ('random', independent of the other classes chosen). None: all; classes with fewer files keep them all, listed in
    ``dataset.short`` and, with ``warn_short``, named by a :class:`ShortClassWarning` (a caller that names the setting
    itself turns it off).
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
        raise DataNotFoundError(how_to_get_data(f"Split {split!r} not found: {split_dir} is not a folder."))
    available = list_classes(split_dir)
    if not available:
        raise DataNotFoundError(how_to_get_data(f"No class folders in {split_dir}."))

    if classes is not None:
        if isinstance(classes, str):
            raise ValueError(f"classes must be a list of class folder names, got the string {classes!r}")
        classes = list(classes)
        unknown = sorted(set(classes) - set(available))
        if unknown:
            raise ValueError(f"{split_dir} has no folder for {len(unknown)} of the {len(set(classes))} class(es) "
                             f"asked for: {unknown[:5]}; its class folders ({len(available)}): {available[:5]}"
                             f"{' ...' if len(available) > 5 else ''}")
        if not classes or len(set(classes)) != len(classes):
            raise ValueError(f"classes must be a non-empty list of distinct names, got {classes}")
        if num_classes is not None and num_classes != len(classes):
            raise ValueError(f"num_classes={num_classes} disagrees with the {len(classes)} names in classes")
    else:
        k = len(available) if num_classes is None else num_classes
        if not 1 <= k <= len(available):
            raise ValueError(f"num_classes must be in 1..{len(available)} (class folders in {split_dir}), got {k}")
        classes = available[:k] if class_selection == "first" else sorted(random.Random(seed).sample(available, k))

    real = {}
    for name in classes:  # a class folder linked to another would give its images both labels
        if (other := real.setdefault(os.path.realpath(split_dir / name), name)) != name:
            raise ValueError(f"{split_dir / name} and {split_dir / other} are the same folder (a link): each class "
                             "needs a folder of its own")
    samples, skipped, short, whole = [], [], {}, True
    with ThreadPoolExecutor() as pool:
        for label, name in enumerate(classes):
            paths = list_images(split_dir / name, confined=True)
            if not paths:
                raise DataNotFoundError(f"class folder {split_dir / name} has no images ({', '.join(IMG_EXTENSIONS)}): "
                                        "remove it, or pass classes/num_classes that leave it out")
            if tune_fraction:
                all_paths, paths = paths, tuning_split(paths, name, tune_fraction)[part == "tune"]
                if not paths:
                    raise ValueError(f"tune_fraction={tune_fraction:g} leaves no {part} images in class {name} "
                                     f"({len(all_paths)} in {split_dir / name}): choose a fraction that leaves some")
            if image_selection == "random":
                random.Random(f"{seed}/{name}").shuffle(paths)
            n = len(paths) if images_per_class is None else images_per_class
            whole = whole and len(paths) <= n
            if skip_corrupt:
                chosen, bad = first_readable(paths, n, pool)
                skipped += bad
                if not chosen:
                    raise DataNotFoundError(f"class folder {split_dir / name} has no readable image: all "
                                            f"{len(bad)} are corrupt ({bad[0][0]}: {bad[0][1]}); remove the folder "
                                            "or pass classes/num_classes that leave it out")
            else:
                chosen = paths[:n]
            samples += [(path, label) for path in sorted(chosen)]
            if images_per_class is not None and len(chosen) < n:
                short[name] = len(chosen)
        if check_headers and not skip_corrupt:
            refuse_unreadable([path for path, _ in samples], pool, split_dir)
    short_classes = None
    if short:
        where = f"{split_dir}{f' ({part} part)' if tune_fraction else ''}"
        short_classes = ShortClasses(images_per_class, short, len(classes), where)
        if warn_short:
            warnings.warn(ShortClassWarning(short_classes.message()), stacklevel=2)
    return ImageFolderSubset(samples, classes, transform=transform, skipped=skipped, short=short_classes, whole=whole)


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
    paths = list_images(checked_path(folder, "folder"))
    if not paths:
        raise DataNotFoundError(how_to_get_data(f"No images ({', '.join(IMG_EXTENSIONS)}) under {folder}."))
    skipped = []
    with ThreadPoolExecutor() as pool:
        if skip_corrupt:
            paths, skipped = first_readable(paths, len(paths), pool)
        elif check_headers:
            refuse_unreadable(paths, pool, Path(folder))
    return ImageFolderSubset([(path, -1) for path in paths], [], transform=transform, skipped=skipped)
