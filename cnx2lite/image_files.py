"""Which files of a folder are images: the one scanner every data set uses (folders walked once however links lead to
them, hidden files skipped, a class folder confined to itself), screening of the files found (headers opened, or
the unreadable ones left out), and the readable names a folder gives its class folders (``CLASSES.tsv``)."""
from __future__ import annotations

import functools
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Sequence

from .images import CorruptImageError, image_problem

# any case; .jfif: a JPEG as Windows browsers save it
IMG_EXTENSIONS = (".jpg", ".jpeg", ".jfif", ".png", ".webp", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".gif")


def refuse_unreadable(paths: Sequence[str], pool: ThreadPoolExecutor, where: Path) -> None:
    """Raise one CorruptImageError listing every file of ``paths`` whose header does not open."""
    header_problems = pool.map(functools.partial(image_problem, decode=False), paths)
    bad = [(path, reason) for path, reason in zip(paths, header_problems) if reason is not None]
    if bad:
        shown = "; ".join(f"{path} ({reason})" for path, reason in bad[:10]) + ("; ..." if len(bad) > 10 else "")
        raise CorruptImageError(f"{len(bad)} unreadable image file(s) under {where}: {shown}. Remove or replace "
                                "them, or pass skip_corrupt=True (--skip-corrupt) to leave them out")


def first_readable(paths: list[str], n: int, pool: ThreadPoolExecutor) -> tuple[list[str], list[tuple[str, str]]]:
    """The first ``n`` of ``paths`` that decode, and (path, reason) for the ones before them that do not."""
    good, bad, i = [], [], 0
    while len(good) < n and i < len(paths):
        batch = paths[i : i + n - len(good)]
        i += len(batch)
        for path, reason in zip(batch, pool.map(image_problem, batch)):
            if reason is None:
                good.append(path)
            else:
                bad.append((path, reason))
    return good, bad


def _unlistable(error: OSError) -> None:  # os.walk's: a folder there but not listable must not lose its images
    if not isinstance(error, FileNotFoundError):
        raise error


def walk_folders(folder: str | os.PathLike) -> Iterator[tuple[str, str, list[str]]]:
    """``(path, real path, file names)`` of ``folder`` and every folder under it, hidden ones skipped. Links are
    followed, but a folder is walked once however many links lead to it (a link to ``.`` or ``..`` neither loops nor
    repeats it)."""
    seen = set()
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True, onerror=_unlistable):
        real = os.path.realpath(dirpath)
        if real in seen:
            dirnames[:] = []
            continue
        seen.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        yield dirpath, real, filenames


def leads_outside(path: str | os.PathLike, folder: str | os.PathLike) -> str | None:
    """Where ``path`` really is (links resolved) when that is outside ``folder``; None when it is inside. What keeps a
    split's files to its own folder: a link into another split or data set would be read as this one's."""
    root, real = os.path.realpath(folder), os.path.realpath(path)
    return real if os.path.commonpath([root, real]) != root else None


LABELED_FOLDER = re.compile(r"(train|val|training|validation)(\d{4})?|annotations")


def labeled_folders(root: Path) -> list[Path]:
    """Folders under ``root`` named as a labeled data set's splits or annotations (ImageFolder's ``train/``, ``val/``,
    ADE20K's ``training/``, ``validation/``, COCO's ``train2017/``, ``annotations/``), sorted."""
    return sorted(Path(parent) / d for parent, dirs, _ in os.walk(root, followlinks=True) for d in dirs
                  if LABELED_FOLDER.fullmatch(d))


def is_image_name(name: str) -> bool:
    """Whether a file of this name is read as an image: an image suffix, and not hidden (macOS's ``._photo.jpg``
    resource files, editors' backups)."""
    return not name.startswith(".") and name.lower().endswith(IMG_EXTENSIONS)


def list_images(folder: Path, confined: bool = False) -> list[str]:
    """Image files under ``folder`` (recursively, hidden files skipped, each folder once: :func:`walk_folders`),
    sorted; a file reached twice is listed once. ``confined`` (a class folder): a link that leads outside ``folder`` is
    refused, as its images would take this class's label."""
    seen_files, paths = set(), []
    for dirpath, real, filenames in walk_folders(folder):
        if confined and leads_outside(real, folder):
            raise ValueError(f"{dirpath} links to {real}, outside the class folder {folder}: its images would be "
                             "labeled with this class; remove the link or copy the images in")
        for name in filenames:
            path = os.path.join(dirpath, name)
            if not is_image_name(name):
                continue
            real_file = os.path.realpath(path)
            if confined and leads_outside(real_file, folder):
                raise ValueError(f"{path} links to {real_file}, outside the class folder {folder}: it would be "
                                 "labeled with this class; remove the link or copy the image in")
            if real_file not in seen_files:
                seen_files.add(real_file)
                paths.append(path)
    return sorted(paths)


def refuse_output_inside(output: str | os.PathLike, trees: Sequence[Path], setting: str) -> None:
    """An output folder inside the image folders a command reads (directly, or through a link in them) would put what
    it writes among the images, where the next run reads it as data: a ValueError naming ``setting``."""
    target = Path(output).resolve()
    for tree in trees:
        for folder, real, _ in walk_folders(tree) if tree.is_dir() else ():
            if target.is_relative_to(real):
                through = "" if Path(folder) == tree else f" through {folder}, which leads to {real}"
                raise ValueError(f"{setting} {output}: {target} is inside the images read from {tree}{through}, where "
                                 "what is written there would become images of the data set; choose an output "
                                 "outside it")


def display_names(folder: Path) -> dict[str, str]:
    """Class folder name -> readable name, from ``folder/CLASSES.tsv`` (``name<TAB>readable`` lines, as Imagenette
    names its WordNet-id folders); empty without one. A line without a readable name keeps the folder's."""
    tsv = Path(folder) / "CLASSES.tsv"
    if not tsv.is_file():
        return {}
    rows = (line.partition("\t") for line in tsv.read_text(encoding="utf-8").splitlines() if line.strip())
    return {name.strip(): (readable.strip() or name.strip()) for name, _, readable in rows}
