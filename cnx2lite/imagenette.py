"""Imagenette, the default data: downloading it with torchvision into a data root."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

from torchvision.datasets import Imagenette

from .arguments import checked_path
from .data import SPLITS, DataNotFoundError, find_image_folder, how_to_get_data, resolve_data_root
from .image_files import is_image_name, walk_folders
from .rundir import run_directory_of

# torchvision's Imagenette archives extract to <root>/<archive stem>/{train,val}/<wnid>/*.JPEG
IMAGENETTE_DIRS = {"full": "imagenette2", "320px": "imagenette2-320", "160px": "imagenette2-160"}


def download_imagenette(root: Path, size: str = "320px") -> Path:
    """Download and extract Imagenette under ``root`` with torchvision; returns the folder with train/ and val/
    (``root/imagenette2-320`` for size '320px'), usable as ``--data``. Raises DataNotFoundError when offline."""
    if size not in IMAGENETTE_DIRS:
        raise ValueError(f"size must be one of {tuple(IMAGENETTE_DIRS)}, got {size!r}")
    root = checked_path(root, "root")
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"cannot download into {root}: it is a file; pass a folder with --data")
    if (run := run_directory_of(root)) is not None:  # its folder holds the run's files only
        raise ValueError(f"cannot download into {root}: it is inside the training run {run}; pass another folder "
                         "with --data")
    created = [folder for folder in (root, *root.parents) if not folder.exists()]  # deepest first
    root.mkdir(parents=True, exist_ok=True)
    try:
        for split in SPLITS:  # one archive holds both splits: the second call only checks it
            Imagenette(root, split=split, size=size, download=True)
    except (OSError, RuntimeError) as e:  # URLError is an OSError; torchvision raises RuntimeError on a bad md5
        for folder in created:  # a failed download leaves no empty folders behind (a partial archive stays)
            with contextlib.suppress(OSError):
                folder.rmdir()
        url = f"https://s3.amazonaws.com/fast-ai-imageclas/{IMAGENETTE_DIRS[size]}.tgz"
        raise DataNotFoundError(how_to_get_data(
            f"Could not download Imagenette ({size}) into {root}: {type(e).__name__}: {e}\n"
            f"Without network access, fetch {url} elsewhere and extract it into {root}."
        )) from None
    return find_image_folder(root / IMAGENETTE_DIRS[size])


def find_or_download(data: str | Path | None = None) -> Path:
    """The image folder under the data root (``data``, else ``$CNX2LITE_DATA_ROOT``, else ``<repo>/data``); when
    it holds none, Imagenette is downloaded there first (saying so), but only into a new or empty folder (a README and
    a partial download aside): never among a user's photos, another data set's layout or other files."""
    root = resolve_data_root(data)
    try:
        return find_image_folder(root)
    except DataNotFoundError:
        if (theirs := _images_of_its_own(root)) is not None:
            raise DataNotFoundError(f"{root} holds images (e.g. {theirs}) but no folder of classes (train/<class>/ and "
                                    "val/<class>/): Imagenette is downloaded only into a new or empty folder; give "
                                    "--data a folder of classes, or a new one to download into") from None
        if (entry := next(_entries_of_its_own(root), None)) is not None:
            raise DataNotFoundError(f"{root} holds no images but files of its own (e.g. {entry}): Imagenette is "
                                    "downloaded only into a new or empty folder (a README and a partial download "
                                    "aside); give --data a folder of classes, or a new one to download into") from None
        print(f"no images under {root}: downloading Imagenette there", flush=True)
        return download_imagenette(root)


def _entries_of_its_own(root: Path) -> Iterator[Path]:
    """What ``root`` holds at its top besides hidden files, a README and a (maybe partial) Imagenette download (its
    folder and archive), in name order."""
    if not root.is_dir():
        return
    for entry in sorted(root.iterdir()):
        name = entry.name
        readme = entry.is_file() and name.upper().split(".")[0] == "README"
        if not (name.startswith(".") or readme or name.removesuffix(".tgz") in IMAGENETTE_DIRS.values()):
            yield entry


def _images_of_its_own(root: Path) -> str | None:
    """An image under ``root`` outside a (maybe partial) Imagenette download, or None: the first one found (hidden
    files and folders skipped, as training skips them), without walking the download."""
    for entry in _entries_of_its_own(root):
        if entry.is_dir():
            for folder, _, names in walk_folders(entry):
                if image := next((name for name in sorted(names) if is_image_name(name)), None):
                    return os.path.join(folder, image)
        elif is_image_name(entry.name):
            return str(entry)
    return None
