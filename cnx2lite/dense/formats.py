"""The dense-task data sets a GPU user brings, in their own formats: ADE20K's folder layout for semantic segmentation
and COCO's instance JSON for detection. Items are what :class:`~cnx2lite.dense.composites.CompositeDataset` gives, so
the heads, losses and scores take either: ``(image (3, S, S) normalized, target)`` with ``"semantic"`` ``(S, S)``
int64 (ADE20K; :data:`IGNORE_INDEX` where no class is labeled) or ``"boxes"`` ``(R, 4)``, ``"labels"`` ``(R,)``
``0..K-1``, ``"masks"`` ``(R, S, S)`` bool and ``"iscrowd"`` ``(R,)`` bool (COCO).

Images are resized (squeezed) to ``S x S``, as the composites are; training adds a random horizontal flip. Images
are decoded as every image of the package is (:func:`~cnx2lite.images.load_image`); COCO's annotation file is checked
first (:mod:`.coco_json`), then read by torchvision (``CocoDetection`` with its v2 wrapper); the geometry is
``transforms.v2``'s, which moves masks and boxes with the image."""
from __future__ import annotations

import contextlib
import io
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
from torchvision.transforms import v2

from .. import transforms
from ..image_files import is_image_name, leads_outside
from ..images import DECODE_ERRORS, CorruptImageError, frame_sizes, load_image, open_image
from .coco_json import check_coco_json

MIN_BOX_PX = 1.0  # a training box's least width and height at the run's size (torchvision's SanitizeBoundingBoxes)
IGNORE_INDEX = -1  # ADE20K's label 0 ("other") and classes past num_classes (mmsegmentation's 255 is a class past 255)
ADE20K_CLASSES = 150
ADE20K_SPLITS = {"train": "training", "val": "validation"}
IGNORED_SHARE_READS = 100  # ADE20K annotations read (spread evenly over a split) to say what share of pixels is ignored


def in_layout(folder: Path, dense_format: str) -> bool:
    """Whether ``folder`` is laid out as ``dense_format`` has it: ADE20K's ``images/`` and ``annotations/``, COCO's
    ``annotations/instances_*.json``."""
    if dense_format == "ade20k":
        return (folder / "images").is_dir() and (folder / "annotations").is_dir()
    return any((folder / "annotations").glob("instances_*.json"))


def _geometry(size: int, train: bool) -> v2.Compose:
    """Resize to ``size x size`` (masks by nearest neighbour), a random flip when training, then normalize."""
    flip = [v2.RandomHorizontalFlip()] if train else []
    rgb = transforms.normalization(3)
    return v2.Compose([v2.ToImage(), v2.Resize((size, size), antialias=True), *flip,
                       v2.ToDtype(torch.float32, scale=True), v2.Normalize(rgb.mean, rgb.std)])


class ADE20K(Dataset):
    """ADEChallengeData2016's layout: ``images/<training|validation>/<name>.jpg`` and, for each,
    ``annotations/<training|validation>/<name>.png`` holding a class index per pixel (0: unlabeled, ``1..150``).
    Label ``k`` is class ``k - 1``; 0 and labels past ``num_classes`` become :data:`IGNORE_INDEX`."""

    def __init__(self, folder: str | Path, split: str, size: int, num_classes: int = ADE20K_CLASSES,
                 train: bool = False) -> None:
        folder = Path(folder)
        images, annotations = (folder / kind / ADE20K_SPLITS[split] for kind in ("images", "annotations"))
        for needed in (images, annotations):
            if not needed.is_dir():
                raise ValueError(f"{folder} is not in ADE20K's layout: {needed} is not a folder (images/ and "
                                 "annotations/ each hold training/ and validation/)")
        paths = sorted(p for p in images.iterdir() if is_image_name(p.name))
        if not paths:
            raise ValueError(f"no images in {images}")
        if nested := sorted(p.name for p in images.iterdir() if p.is_dir() and not p.name.startswith(".")):
            raise ValueError(f"{images} holds folders ({', '.join(nested[:3])}): ADE20K's split folders are flat, so "
                             "their images would be left out; move them up, or out")
        stems = Counter(p.stem for p in paths)
        if shared := sorted(p.name for p in paths if stems[p.stem] > 1):
            raise ValueError(f"images of {images} share a name and so one annotation PNG: {', '.join(shared[:4])}; "
                             "rename or remove all but one")
        self.folder = folder
        # (image, its annotation relative to the folder): a copy of the folder elsewhere is the same data
        self.samples = [(str(p), f"annotations/{ADE20K_SPLITS[split]}/{p.stem}.png") for p in paths]
        self.annotation_files = [str(folder / label) for _, label in self.samples]  # (the run's fingerprint)
        unlabeled = [label for _, label in self.samples if not (folder / label).is_file()]
        if unlabeled:
            raise ValueError(f"{len(unlabeled)} image(s) of {images} have no annotation PNG, e.g. "
                             f"{folder / unlabeled[0]}")
        for image_path, label in self.samples:  # a link into another split or data set would be read as this one's
            for file, split_folder in ((Path(image_path), images), (folder / label, annotations)):
                if (real := leads_outside(file, split_folder)) is not None:
                    raise ValueError(f"{file} links to {real}, outside {split_folder}: a split reads only its own "
                                     "files; remove the link or copy the file in")
        self.classes = [f"ADE20K class {k}" for k in range(1, num_classes + 1)]
        self.transform = _geometry(size, train)
        for image_path, label_path in self.samples:  # headers only: a bad file stops the run before it trains
            with open_image(folder / label_path) as annotation:
                _check_annotation(folder / label_path, annotation, frame_sizes(image_path))
        shown = self._first_classes(2)  # reads annotations until two classes are seen: one, or a few, on real data
        if not shown:
            raise ValueError(f"no pixel of {annotations} is labeled: its annotations hold only 0 (unlabeled) or "
                             f"classes past num_classes={num_classes}, so there is nothing to "
                             f"{'train on' if train else 'score'}")
        if train and len(shown) < 2:  # as num_classes=1 is refused: a segmenter of one class learns nothing
            raise ValueError(f"the training annotations of {annotations} label one class only (label "
                             f"{shown.pop() + 1}): nothing to tell apart; label at least two classes")

    def __len__(self) -> int:
        return len(self.samples)

    def _stored_labels(self, label_path: str) -> np.ndarray:
        """An annotation's pixels as stored ``(H, W)`` int64: 0 unlabeled, ``k`` class ``k - 1``."""
        with open_image(self.folder / label_path) as annotation:
            try:
                return np.asarray(annotation, dtype=np.int64)
            except DECODE_ERRORS as e:  # a header that opens over pixels that do not (a truncated file)
                raise CorruptImageError(f"cannot read annotation {self.folder / label_path}: {e}") from None

    def _labels(self, label_path: str) -> Tensor:
        """The class index of every pixel of an annotation ``(H, W)``, :data:`IGNORE_INDEX` where none applies."""
        labels = torch.from_numpy(self._stored_labels(label_path) - 1)
        labels[(labels < 0) | (labels >= len(self.classes))] = IGNORE_INDEX
        return labels

    def ignored_share(self, reads: int = IGNORED_SHARE_READS) -> str | None:
        """What share of this split's pixels training and scoring ignore, and why: label 0 (unlabeled: ADE20K's
        classes start at 1) and each label past ``num_classes``, measured on ``reads`` annotations spread evenly over
        the split (decoding all of ADE20K's 20,210 training PNGs would take a minute). None when none is ignored."""
        picked = [self.samples[i * len(self.samples) // min(reads, len(self.samples))][1]
                  for i in range(min(reads, len(self.samples)))]
        counts: Counter[int] = Counter()
        for label in picked:
            values, found = np.unique(self._stored_labels(label), return_counts=True)
            counts.update(dict(zip(values.tolist(), found.tolist())))
        pixels, unlabeled = sum(counts.values()), counts[0]
        past = {value: n for value, n in sorted(counts.items()) if value > len(self.classes)}
        if not unlabeled and not past:
            return None
        reasons = [f"label 0 (unlabeled: ADE20K's classes start at 1) {unlabeled / pixels:.1%}"] if unlabeled else []
        if past:
            shown = ", ".join(f"{value} {n / pixels:.1%}" for value, n in list(past.items())[:6])
            reasons.append(f"labels past num_classes={len(self.classes)}: {shown}{' ...' if len(past) > 6 else ''} "
                           "(a larger --num-classes keeps them)")
        ignored = (unlabeled + sum(past.values())) / pixels
        read = f"{len(picked)} of its {len(self.samples)} annotations" if len(picked) < len(self.samples) else (
            f"its {len(picked)} annotations")
        return (f"{self.folder / Path(picked[0]).parent}: {ignored:.1%} of the pixels of {read} "
                f"are ignored in training and scoring: {'; '.join(reasons)}")

    def _first_classes(self, enough: int) -> set[int]:
        """The classes the annotations label, read in order until ``enough`` of them are seen."""
        seen: set[int] = set()
        for _, label in self.samples:
            seen.update(self._labels(label).unique().tolist())
            seen.discard(IGNORE_INDEX)
            if len(seen) >= enough:
                break
        return seen

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image_path, label_path = self.samples[index]
        with open_image(self.folder / label_path) as annotation:  # checked again: the file may have changed since
            upright, stored = frame_sizes(image_path)  # headers: the image is decoded once, in its annotation's frame
            image = load_image(image_path, upright=annotation.size == upright or annotation.size != stored)
            _check_annotation(self.folder / label_path, annotation, (image.size,))
        labels = self._labels(label_path)
        image, semantic = self.transform(image, tv_tensors.Mask(labels))
        return image, {"semantic": semantic.as_subclass(Tensor)}


def _check_annotation(path: Path, annotation: Image.Image, frames: tuple[tuple[int, int], ...]) -> None:
    """An annotation PNG holds one class index per pixel of its image: lossless PNG data, mode L or P, the size of
    one of the image's ``frames`` (``(width, height)`` upright, then as stored: the image is read in the frame its
    annotation was made on, as COCO's are)."""
    if annotation.format != "PNG":  # a JPEG's compression turns class indices into others (or into 0, unlabeled)
        raise ValueError(f"{path} holds {annotation.format or 'non-PNG'} data: an annotation must be a PNG, whose "
                         "class indices survive saving (lossy formats change them)")
    if annotation.mode not in ("L", "P"):
        raise ValueError(f"{path} is a {annotation.mode} image: an annotation PNG holds one class index per pixel "
                         "(mode L or P)")
    if annotation.size not in frames:
        sizes = " or, as stored (before its EXIF turn), ".join(f"{w}x{h} px" for w, h in dict.fromkeys(frames))
        raise ValueError(f"{path} is {annotation.width}x{annotation.height} px, its image {sizes}: an annotation "
                         "must match its image")


class COCOInstances(Dataset):
    """COCO's instance annotations: ``annotations/instances_<split>*.json`` (e.g. ``instances_val2017.json``) for the
    images in the folder of the same name (``val2017/``). Categories, whatever their ids, become classes ``0..K-1``
    in id order; boxes are clipped to the image. Training leaves out the instances the resizing makes narrower or
    lower than :data:`MIN_BOX_PX` (:attr:`too_small_to_train` counts them); scoring keeps every one: box IoU does not
    change when both boxes are resized (a mask thinner than a pixel may vanish in the resize, a miss in mask AP that
    the original resolution would not have). Crowd regions (``iscrowd``) are left out of training and kept, flagged
    ``"iscrowd"``, for scoring, where COCO's evaluation ignores what matches them."""

    def __init__(self, folder: str | Path, split: str, size: int, train: bool = False) -> None:
        folder = Path(folder)
        found = sorted((folder / "annotations").glob(f"instances_{split}*.json"))
        if len(found) != 1:
            raise ValueError(f"{folder} is not in COCO's layout: expected one annotations/instances_{split}*.json, "
                             f"found {len(found)}")
        images = folder / found[0].stem.removeprefix("instances_")
        if not images.is_dir():
            raise ValueError(f"{found[0]} names images in {images}, which is not a folder")
        check_coco_json(found[0], images)
        self.annotation_files = [str(found[0])]  # (the run's fingerprint)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
            coco = _CocoFiles(str(images), str(found[0]))
        self.reader = wrap_dataset_for_transforms_v2(coco, target_keys=("boxes", "labels", "masks", "iscrowd"))
        categories = sorted(coco.coco.cats.values(), key=lambda c: c["id"])
        if not any(not a.get("iscrowd") for a in coco.coco.anns.values()):  # training and scoring skip crowds
            raise ValueError(f"{found[0]}: every annotation is a crowd region (iscrowd=1), which detection neither "
                             "learns nor scores: no instance to train on or find")
        self.classes = [c["name"] for c in categories]
        self.index_of = {c["id"]: i for i, c in enumerate(categories)}
        self.samples = [(str(images / coco.coco.imgs[i]["file_name"]), i) for i in coco.ids]
        self.train = train
        self.too_small_to_train = _too_small(coco.coco, size) if train else 0
        if train and self.too_small_to_train == sum(not a["iscrowd"] for a in coco.coco.anns.values()):
            raise ValueError(f"{found[0]}: every instance is under {MIN_BOX_PX:g} px wide or high at {size}x{size} "
                             "px: no instance to train on; a larger img_size keeps them")
        # boxes are clipped to the image (COCO's may run past its edge: torchvision would drop them); in training the
        # instances the resizing made too small go, with their masks, labels and crowd flags
        too_small_dropped = [v2.SanitizeBoundingBoxes(min_size=MIN_BOX_PX, labels_getter=lambda inputs: (
            inputs[1]["labels"], inputs[1]["iscrowd"]))] if train else []
        self.transform = v2.Compose([_geometry(size, train), v2.ClampBoundingBoxes(), *too_small_dropped])

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, target = self.reader[index]
        if "boxes" not in target:  # an image without annotations
            height, width = image.height, image.width
            target = {"boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(height, width)),
                      "masks": tv_tensors.Mask(torch.zeros(0, height, width, dtype=torch.uint8)),
                      "labels": [], "iscrowd": []}
        target["boxes"] = tv_tensors.wrap(target["boxes"].float(), like=target["boxes"])  # integers would be floored
        target["labels"] = torch.tensor([self.index_of[int(k)] for k in target["labels"]], dtype=torch.int64)
        target["iscrowd"] = torch.tensor(target["iscrowd"], dtype=torch.bool)
        if self.train:  # a crowd region is no instance to learn; scoring ignores detections on it, as COCO's does
            keep = ~target["iscrowd"]
            target = {"boxes": tv_tensors.wrap(target["boxes"][keep], like=target["boxes"]),
                      "masks": tv_tensors.Mask(target["masks"][keep]), "labels": target["labels"][keep],
                      "iscrowd": target["iscrowd"][keep]}
        image, target = self.transform(image, target)
        return image, {"boxes": target["boxes"].as_subclass(Tensor).float(), "labels": target["labels"],
                       "masks": target["masks"].as_subclass(Tensor).bool(), "iscrowd": target["iscrowd"]}


def _too_small(coco: COCO, size: int) -> int:
    """How many instances of ``coco`` (crowd regions aside) training leaves out at ``size x size`` px: their boxes,
    read, clipped, resized and screened by the transforms training uses, narrower or lower than :data:`MIN_BOX_PX`."""
    screen = v2.Compose([v2.Resize((size, size)), v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(MIN_BOX_PX,
                                                                                                 labels_getter=None)])
    count = 0
    for image_id, entries in coco.imgToAnns.items():
        if boxes := [entry["bbox"] for entry in entries if not entry["iscrowd"]]:
            image = coco.imgs[image_id]
            xywh = tv_tensors.BoundingBoxes(boxes, format="XYWH", canvas_size=(image["height"], image["width"]))
            xyxy = v2.functional.convert_bounding_box_format(xywh, new_format="XYXY")
            count += len(boxes) - len(screen(tv_tensors.wrap(xyxy.float(), like=xyxy)))  # as __getitem__ has them
    return count


class _CocoFiles(CocoDetection):
    """torchvision's COCO reader with the images decoded as every image of cnx2lite is (:func:`load_image`: 16-bit and
    float images scaled, not clipped to white), in the frame the annotations were made on: upright (EXIF applied)
    where that frame has the width and height the JSON gives, as stored where only the stored frame has them."""

    def _load_image(self, id: int) -> Image.Image:
        entry = self.coco.loadImgs(id)[0]
        path = os.path.join(self.root, entry["file_name"])
        given, (upright, stored) = (entry["width"], entry["height"]), frame_sizes(path)  # headers: decoded once
        if given not in (upright, stored):
            raise ValueError(f"{path} is {upright[0]}x{upright[1]} px, but its entry (image {id}) gives width "
                             f"{given[0]} and height {given[1]}: its annotations were made on another image")
        return load_image(path, upright=given == upright)  # else annotated before its EXIF turn was applied
