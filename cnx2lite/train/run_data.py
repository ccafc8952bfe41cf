"""The images a run trains and scores on, assembled from its config: the train split (less the tuning split), the split
it scores on (val/, or the tuning split), the kNN monitor's labeled bank (pretraining), or a folder of unlabeled
images for pretraining, or a dense task's ADE20K or COCO folder; their fingerprint (a resume refuses other images)
and their decoded-image cache."""
from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Callable

from torch.utils.data import Dataset

from .. import data, transforms
from ..dense.formats import ADE20K, ADE20K_CLASSES, MIN_BOX_PX, COCOInstances, in_layout
from ..image_cache import DecodedImages, cache_side
from ..image_files import refuse_output_inside
from .config import FIELDS, TrainConfig
from .config_checks import DENSE_TASKS, WHOLE_SPLIT_IGNORES


class IgnoredSettingWarning(UserWarning):
    """A setting the run gives nothing to act on (a class count for unlabeled images, composites for an ADE20K
    folder, start weights for a resume, which continues from its checkpoint): the run goes on without it."""


@dataclass
class RunData:
    folder: Path
    train_set: data.ImageFolderSubset | Dataset  # a dense task's own format: ADE20K, COCO
    val_set: data.ImageFolderSubset | Dataset | None
    knn_bank: data.ImageFolderSubset | None
    fingerprint: str
    ignored: list[str] = field(default_factory=list)  # why a setting does not apply here, one message each
    left_out: list[str] = field(default_factory=list)  # what of the images or annotations training leaves out, and why

    @cached_property
    def fingerprints(self) -> dict[str, str]:
        """What a checkpoint keeps of the images (a resume refuses others): the training images' fingerprint, the
        scored images' (the val split, or the tuning split), and both splits' :func:`content_fingerprint`."""
        scored = "" if self.val_set is None else fingerprint(self.val_set, self.folder)
        content = content_fingerprint([self.train_set] + ([] if self.val_set is None else [self.val_set]))
        return {"data_fingerprint": self.fingerprint, "scoring_fingerprint": scored, "content_fingerprint": content}

    @property
    def splits(self) -> list[data.ImageFolderSubset]:
        """The splits read from a class folder (what skip_corrupt, the short-class notes and the cache reach)."""
        return [split for split in (self.train_set, self.val_set, self.knn_bank)
                if isinstance(split, data.ImageFolderSubset)]

    def summary(self) -> dict:
        """What a run's ``config.json`` records of its images (:data:`cnx2lite.train.config_files.RECORDED`)."""
        return {"data_folder": os.path.realpath(self.folder), "data_fingerprint": self.fingerprint,
                "train_images": len(self.train_set), "val_images": len(self.val_set) if self.val_set else 0,
                "classes": self.train_set.classes}

    def skipped(self) -> list[str]:
        """The unreadable files ``skip_corrupt`` left out of any split."""
        return sorted({path for split in self.splits for path, _ in split.skipped})

    def name_idle_intervals(self, c: TrainConfig, total_steps: int) -> None:
        """Keep in :attr:`ignored` a log or save interval beyond the ``total_steps`` the images gave the run."""
        for name, what in (("log_every_steps", "no training loss would be logged"),
                           ("save_every_steps", "no checkpoint is saved between epochs")):
            if (every := getattr(c, name)) and every > total_steps:
                self.ignored.append(f"{name}={every} does not apply: the run trains {total_steps} steps, so {what}")

    def warn(self) -> None:
        """A :class:`~cnx2lite.data.ShortClassWarning` for each split with classes short of the images asked for, an
        :class:`IgnoredSettingWarning` for each setting that does not apply (on stderr from the command line, like
        every warning of the package); called by one process of a run."""
        for split, setting in ((self.train_set, "images_per_class"), (self.val_set, "val_images_per_class"),
                               (self.knn_bank, "knn_images_per_class")):
            if split in self.splits and split.short is not None:
                warnings.warn(data.ShortClassWarning(split.short.message(setting)), stacklevel=2)
        for message in self.ignored:
            warnings.warn(IgnoredSettingWarning(message), stacklevel=2)

    def notes(self, task_name: str) -> list[str]:
        """What a run should say about its images before it trains: files or instances left out, no val split."""
        notes = list(self.left_out)
        if skipped := self.skipped():
            notes.append(f"skip_corrupt: left out {len(skipped)} unreadable image(s): {', '.join(skipped[:10])}"
                         + (f" and {len(skipped) - 10} more" if len(skipped) > 10 else ""))
        if self.val_set is None:
            notes.append(f"no val split in {self.folder}: no evaluation"
                         + (", no kNN monitor" if task_name == "pretrain" else ""))
        return notes

    def decode(self, img_size: int | tuple[int, int], log: Callable[[str], None]) -> None:
        """Decode every image of every split once, shared by the splits (idempotent)."""
        if any(split.decoded is None for split in self.splits):
            decoded = DecodedImages((path for split in self.splits for path, _ in split.samples), cache_side(img_size),
                                    log=log)
            for split in self.splits:
                split.decoded = decoded


def build_run_data(c: TrainConfig, task_name: str, train_transform: Callable) -> RunData:
    """The splits of the run ``c`` describes; unreadable files are left out (``skip_corrupt``) or refused now. Settings
    the images give nothing to act on (picking by class on unlabeled images, composites on an ADE20K folder) are
    refused, or kept in :attr:`RunData.ignored` for the run to name."""
    root = data.resolve_data_root(c.data)
    if task_name in DENSE_TASKS and c.dense_format != "composites":
        return _dense_format_data(c, root)
    folder = data.find_image_folder(root, c.dataset, unlabeled_ok=task_name == "pretrain")
    screen = dict(skip_corrupt=c.skip_corrupt, check_headers=True, warn_short=False)  # warn() names what is short
    # the folder of train/ and val/ as a whole: a run folder beside them becomes stray images of a later run
    refuse_output_inside(Path(c.output) / c.run_name, [folder or root], "output")
    if folder is None:  # pretraining on a folder of unlabeled images
        if c.tune_fraction or c.eval_split == "tune":
            raise ValueError(f"tune_fraction and eval_split='tune' carve images out of each class of train/; {root} "
                             "holds unlabeled images: leave them unset")
        train_set = data.build_unlabeled_dataset(root, train_transform, c.skip_corrupt, check_headers=True)
        unused = _changed_settings(c, ("num_classes", "images_per_class", "val_images_per_class", "image_selection",
                                       "knn_images_per_class"))
        ignored = [f"{root} holds unlabeled images: {', '.join(unused)} (the preset's or the flags') do not apply "
                   f"(no classes); training on all {len(train_set)}"] if unused else []
        return RunData(root, train_set, None, None, fingerprint(train_set, root), ignored)
    carve = dict(tune_fraction=c.tune_fraction)  # the tuning split is never trained on
    train_set = data.build_dataset(folder, "train", train_transform, num_classes=c.num_classes,
                                   images_per_class=c.images_per_class, seed=c.seed, image_selection=c.image_selection,
                                   **carve, **screen)
    ignored = []
    if c.image_selection != "first" and train_set.whole:  # a pick of every image is every image
        asked = ("without images_per_class" if c.images_per_class is None else
                 f"with images_per_class={c.images_per_class}, no fewer than any class holds")
        ignored.append(f"image_selection={c.image_selection} does not apply {asked}: every image of each class is "
                       "taken")
    if task_name != "pretrain" and len(train_set.classes) < 2:  # one class: a loss of 0, 100% top-1, no composite
        raise ValueError(f"{task_name} needs at least 2 classes; {folder / 'train'} gives {train_set.classes} "
                         f"(num_classes={c.num_classes})")
    scoring = transforms.eval_transform(c.img_size, in_chans=c.in_chans)
    val_set = knn_bank = None
    if c.eval_split == "tune":
        val_set = data.build_dataset(folder, "train", scoring, classes=train_set.classes,
                                     images_per_class=c.val_images_per_class, part="tune", **carve, **screen)
    elif (folder / "val").is_dir():
        val_set = data.build_dataset(folder, "val", scoring, classes=train_set.classes,
                                     images_per_class=c.val_images_per_class, **screen)
        data.warn_left_out_classes(folder, "val", train_set.classes, beside="train")  # a val/ class train/ lacks
    if task_name == "pretrain" and val_set is not None and c.knn_images_per_class > 0:
        if len(train_set.classes) < 2:
            ignored.append(f"knn_images_per_class={c.knn_images_per_class} does not apply to one class "
                           f"({train_set.classes[0]}): every neighbour would vote for it; no kNN monitor")
        else:
            knn_bank = data.build_dataset(folder, "train", scoring, classes=train_set.classes,
                                          images_per_class=c.knn_images_per_class, **carve, **screen)
    return RunData(folder, train_set, val_set, knn_bank, fingerprint(train_set, folder), ignored)


def _dense_format_data(c: TrainConfig, root: Path) -> RunData:
    """The train and val splits of an ADE20K or COCO folder (:func:`_dense_folder`)."""
    folder = _dense_folder(c, root)
    refuse_output_inside(Path(c.output) / c.run_name, [folder], "output")
    if c.dense_format == "ade20k":
        splits = [ADE20K(folder, split, c.img_size, c.num_classes or ADE20K_CLASSES, split == "train")
                  for split in ("train", "val")]
    else:
        splits = [COCOInstances(folder, split, c.img_size, split == "train") for split in ("train", "val")]
        if _categories(splits[0]) != _categories(splits[1]):  # each split maps its own categories to classes
            raise ValueError(f"{folder}: the val annotations' categories differ from train's (id: name "
                             f"{_categories(splits[1])} vs {_categories(splits[0])}): both splits must list the same "
                             "categories")
    unused = _changed_settings(c, WHOLE_SPLIT_IGNORES)
    ignored = [f"{', '.join(unused)} (the preset's or the flags') do not apply to a {c.dense_format} folder: its "
               "splits are used whole, its annotations are the labels"] if unused else []
    if c.dense_format == "ade20k":
        left_out = [note for split in splits if (note := split.ignored_share())]
    else:
        left_out = [f"{n} instance(s) of {folder}'s training annotations are under {MIN_BOX_PX:g} px wide or high at "
                    f"{c.img_size}x{c.img_size} px: left out of training (the val split scores all); a larger img_size "
                    "keeps them"] if (n := splits[0].too_small_to_train) else []
    return RunData(folder, *splits, None, fingerprint(splits[0], folder), ignored, left_out)


def _dense_folder(c: TrainConfig, root: Path) -> Path:
    """The ADE20K or COCO folder of a run: ``<root>/<dataset>``, or ``root`` itself where that is absent, or where
    ``root`` is in the format's layout and ``<root>/<dataset>``, at the default name, is not (an ``imagenette/``
    beside COCO's ``annotations/``). Both in the layout: refused, as :func:`data.find_image_folder` refuses a
    ``train/`` in both. A dataset named but absent is refused, not read from ``root``."""
    named = root / c.dataset
    root_fits, named_fits = (in_layout(folder, c.dense_format) for folder in (root, named))
    if root_fits and named_fits:
        raise ValueError(f"{root} and {named} are both in {c.dense_format}'s layout: give the one to use as --data")
    if named.is_dir() and (named_fits or not root_fits or c.dataset != data.DEFAULT_DATASET):
        return named
    data.check_dataset_named(root, c.dataset)
    return root


def _categories(split: COCOInstances) -> dict:
    return {category: split.classes[index] for category, index in split.index_of.items()}


def _changed_settings(c: TrainConfig, names: tuple[str, ...]) -> list[str]:
    """``name=value`` for each of ``names`` set away from its default (by the preset or by the user: the config does
    not tell them apart): settings a folder without them ignores."""
    return [f"{name}={getattr(c, name)}" for name in names if getattr(c, name) != FIELDS[name].default]


def fingerprint(dataset: data.ImageFolderSubset | Dataset, folder: str | os.PathLike) -> str:
    """A short hash of which images ``dataset`` holds with which labels: each file's path relative to ``folder``, its
    size and label, and the size of each annotation file (ADE20K's PNGs, COCO's JSON). The same tree copied elsewhere
    gives the same fingerprint; an image or annotation added, removed, replaced or relabeled gives another."""
    digest = hashlib.sha256()
    for path, label in sorted(dataset.samples):
        digest.update(os.fsencode(f"{os.path.relpath(path, folder)}\t{os.path.getsize(path)}\t{label}\n"))
    for path in getattr(dataset, "annotation_files", ()):
        digest.update(os.fsencode(f"{os.path.relpath(path, folder)}\t{os.path.getsize(path)}\n"))
    return digest.hexdigest()[:16]


CONTENT_BYTES = 4096  # read from the start and from the end of each file by content_fingerprint


def content_fingerprint(datasets: list[data.ImageFolderSubset | Dataset]) -> str:
    """A short hash of what the files of ``datasets`` hold: the first and last 4 KiB of each image and annotation file
    (all of a smaller one). :func:`fingerprint` compares names, sizes and labels; this tells an image replaced by
    another of the same byte size (the rule for uncompressed formats of one resolution), reading at most 8 KiB per
    file however large the data set. A copy of the tree elsewhere gives the same hash."""
    digest = hashlib.sha256()
    for dataset in datasets:
        for path in sorted({path for path, _ in dataset.samples}) + sorted(getattr(dataset, "annotation_files", ())):
            with open(path, "rb") as f:
                digest.update(f.read(CONTENT_BYTES))
                size = f.seek(0, os.SEEK_END)
                f.seek(max(CONTENT_BYTES, size - CONTENT_BYTES))
                digest.update(f.read())
    return digest.hexdigest()[:16]
