"""The dense-task data sets a GPU user brings, in their own formats: ADE20K's folder layout for semantic segmentation
and COCO's instance JSON for detection. Items are what :class:`~cnx2lite.dense.composites.CompositeDataset` gives, so
the heads, losses and scores take either: ``(image (3, S, S) normalized, target)`` with ``"semantic"`` ``(S, S)``
int64 (ADE20K; :data:`IGNORE_INDEX` where no class is labeled) or ``"boxes"`` ``(R, 4)``, ``"labels"`` ``(R,)``
``0..K-1``, ``"masks"`` ``(R, S, S)`` bool and ``"iscrowd"`` ``(R,)`` bool (COCO).

Images are resized (squeezed) to ``S x S``, as the composites are; training adds a random horizontal flip. Reading
and geometry are torchvision's (``CocoDetection`` with its v2 wrapper, ``transforms.v2``, which move masks and boxes
with the image)."""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools import mask as mask_utils
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.datasets import CocoDetection, wrap_dataset_for_transforms_v2
from torchvision.transforms import v2

from .. import transforms
from ..image_files import IMG_EXTENSIONS, leads_outside
from ..images import DECODE_ERRORS, CorruptImageError, load_image, open_image, oriented_size

IGNORE_INDEX = -1  # ADE20K's label 0 ("other") and classes past num_classes (mmsegmentation's 255 is a class past 255)
ADE20K_CLASSES = 150
ADE20K_SPLITS = {"train": "training", "val": "validation"}


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
        paths = sorted(p for p in images.iterdir() if p.suffix.lower() in IMG_EXTENSIONS)
        if not paths:
            raise ValueError(f"no images in {images}")
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
                _check_annotation(folder / label_path, annotation, oriented_size(image_path))
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

    def _labels(self, label_path: str) -> Tensor:
        """The class index of every pixel of an annotation ``(H, W)``, :data:`IGNORE_INDEX` where none applies."""
        with open_image(self.folder / label_path) as annotation:
            try:
                labels = torch.from_numpy(np.asarray(annotation, dtype=np.int64) - 1)
            except DECODE_ERRORS as e:  # a header that opens over pixels that do not (a truncated file)
                raise CorruptImageError(f"cannot read annotation {self.folder / label_path}: {e}") from None
        labels[(labels < 0) | (labels >= len(self.classes))] = IGNORE_INDEX
        return labels

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
        image = load_image(image_path)
        with open_image(self.folder / label_path) as annotation:  # checked again: the file may have changed since
            _check_annotation(self.folder / label_path, annotation, image.size)
        labels = self._labels(label_path)
        image, semantic = self.transform(image, tv_tensors.Mask(labels))
        return image, {"semantic": semantic.as_subclass(Tensor)}


def _check_annotation(path: Path, annotation: Image.Image, image_size: tuple[int, int]) -> None:
    """An annotation PNG holds one class index per pixel of its image: mode L or P, the image's size."""
    if annotation.mode not in ("L", "P"):
        raise ValueError(f"{path} is a {annotation.mode} image: an annotation PNG holds one class index per pixel "
                         "(mode L or P)")
    if annotation.size != image_size:
        raise ValueError(f"{path} is {annotation.width}x{annotation.height} px, its image "
                         f"{image_size[0]}x{image_size[1]}: an annotation must match its image")


class COCOInstances(Dataset):
    """COCO's instance annotations: ``annotations/instances_<split>*.json`` (e.g. ``instances_val2017.json``) for the
    images in the folder of the same name (``val2017/``). Categories, whatever their ids, become classes ``0..K-1``
    in id order; boxes are clipped to the image, and those the resizing leaves degenerate are dropped with their
    masks. Crowd regions (``iscrowd``) are left out of training and kept, flagged ``"iscrowd"``, for scoring, where
    COCO's evaluation ignores what matches them."""

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
        # boxes are clipped to the image (COCO's may run past its edge: torchvision would drop them), then those the
        # resizing left degenerate go, with their masks, labels and crowd flags
        self.transform = v2.Compose([_geometry(size, train), v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(
            labels_getter=lambda inputs: (inputs[1]["labels"], inputs[1]["iscrowd"]))])

    def __len__(self) -> int:
        return len(self.reader)

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, target = self.reader[index]
        if "boxes" not in target:  # an image without annotations
            height, width = image.height, image.width
            target = {"boxes": tv_tensors.BoundingBoxes(torch.zeros(0, 4), format="XYXY", canvas_size=(height, width)),
                      "masks": tv_tensors.Mask(torch.zeros(0, height, width, dtype=torch.uint8)),
                      "labels": [], "iscrowd": []}
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


class _CocoFiles(CocoDetection):
    """torchvision's COCO reader with the images decoded as every image of cnx2lite is (:func:`load_image`: 16-bit and
    float images scaled, not clipped to white), in the frame the annotations were made on: upright (EXIF applied)
    where that frame has the width and height the JSON gives, as stored where only the stored frame has them."""

    def _load_image(self, id: int) -> Image.Image:
        entry = self.coco.loadImgs(id)[0]
        path = os.path.join(self.root, entry["file_name"])
        image, given = load_image(path), (entry.get("width"), entry.get("height"))
        if None in given or image.size == given:
            return image
        if (stored := load_image(path, upright=False)).size == given:  # annotated before its EXIF turn was applied
            return stored
        raise ValueError(f"{path} is {image.width}x{image.height} px, but its entry (image {id}) gives width "
                         f"{given[0]} and height {given[1]}: its annotations were made on another image")


ANNOTATION_KEYS = ("id", "image_id", "category_id", "bbox", "segmentation", "iscrowd")


def check_coco_json(path: Path, images: Path) -> None:
    """Refuse, naming the file and the entry, what COCO's instance format needs and ``path`` lacks: its three lists,
    images, annotations and categories in them, each annotation's keys, known image and category ids, its instance
    (:func:`_instance_problem`), and the image files it names in ``images``."""
    try:
        content = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not JSON: {e}") from None
    lists = ("images", "annotations", "categories")
    if not isinstance(content, dict) or not all(isinstance(content.get(key), list) for key in lists):
        raise ValueError(f"{path} is not COCO's instance format: it needs the lists {', '.join(lists)}")
    for key in lists:
        if not content[key]:
            raise ValueError(f"{path} lists no {key}")
        for entry in content[key]:  # pycocotools indexes entries by their integer ids
            if not isinstance(entry, dict) or not isinstance(entry.get("id"), int) or isinstance(entry["id"], bool):
                raise ValueError(f"{path}: {key} holds {str(entry)[:60]!r}, which is no entry with an integer id")
    for category in content["categories"]:
        if not isinstance(category.get("name"), str):
            raise ValueError(f"{path}: category {category['id']} has no name (a string)")
    names = Counter(category["name"] for category in content["categories"])
    if repeated := sorted(name for name, n in names.items() if n > 1):  # two classes no output can tell apart
        raise ValueError(f"{path}: categories share names ({', '.join(repeated[:5])}): each class needs its own")
    for key in lists:  # one entry silently replaces another of the same id
        counts = Counter(entry.get("id") for entry in content[key])
        if repeated := sorted(str(i) for i, n in counts.items() if n > 1):
            raise ValueError(f"{path}: {key} share ids ({', '.join(repeated[:5])}): each id must be listed once")
    image_ids = {image.get("id"): image.get("file_name") for image in content["images"]}
    image_sizes = {image.get("id"): [image.get("height"), image.get("width")] for image in content["images"]}
    category_ids = {category.get("id") for category in content["categories"]}
    for annotation in content["annotations"]:
        where = f"{path}: annotation {annotation.get('id', '(no id)')}"
        if missing := [key for key in ANNOTATION_KEYS if key not in annotation]:
            raise ValueError(f"{where} has no {', '.join(missing)}")
        if annotation["image_id"] not in image_ids:
            raise ValueError(f"{where} names image id {annotation['image_id']!r}, which images does not list")
        if annotation["category_id"] not in category_ids:
            raise ValueError(f"{where} names category id {annotation['category_id']!r}, which categories does not "
                             "list")
        if problem := _instance_problem(annotation["segmentation"], annotation["bbox"],
                                        image_sizes[annotation["image_id"]]):
            raise ValueError(f"{where}: {problem}")
    for image_id, file_name in image_ids.items():
        if not isinstance(file_name, str) or not (images / file_name).is_file():
            raise ValueError(f"{path} names the image {images / str(file_name)}, which is not a file")
        if leads_outside(images / file_name, images):  # '../val2017/', '/elsewhere/', a link
            raise ValueError(f"{path}: image {image_id}'s file_name {file_name!r} is not a file of {images}: a "
                             "split reads only its own folder's images")
    names = Counter(os.path.normpath(name) for name in image_ids.values())
    if repeated := sorted(name for name, n in names.items() if n > 1):  # one image trained and scored as several
        raise ValueError(f"{path}: several images name the same file_name ({', '.join(repeated[:3])}): list each "
                         "image once, with all its annotations")


def _instance_problem(segmentation: object, box: object, image_size: list) -> str | None:
    """What keeps an annotation's ``segmentation`` (polygons or an RLE dict) and ``box`` from being one instance of an
    image of ``image_size`` ``[height, width]``, or None."""
    if not isinstance(segmentation, (list, dict)):
        return "segmentation must be a list of polygons or an RLE dict"
    if isinstance(segmentation, list):
        if not segmentation:
            return "no polygon (an empty segmentation)"
        if any(not isinstance(p, list) or len(p) < 6 for p in segmentation):
            return "a polygon of fewer than 3 points"
        if (odd := next((p for p in segmentation if len(p) % 2), None)) is not None:
            return f"a polygon is x, y pairs (an even count), got {len(odd)} numbers"
    if problem := _box_problem(box, image_size):
        return f"its bbox {box} {problem}"
    if isinstance(segmentation, list) and not _box_fits(box, segmentation):
        return f"its bbox {box} is not its polygons' extent (COCO boxes are [x, y, width, height])"
    if isinstance(segmentation, dict) and segmentation.get("size") != image_size:
        return f"its RLE mask's size {segmentation.get('size')} is not its image's height and width {image_size}"
    if isinstance(segmentation, dict) and not _decodes(segmentation):
        return (f"its RLE mask {str(segmentation)[:60]} does not decode (COCO's RLE is {{'size': [height, width], "
                "'counts': a list of run lengths or their string})")
    return None


def _box_problem(box: object, image_size: list) -> str | None:
    """What keeps COCO's ``[x, y, width, height]`` ``box`` from framing an instance of an image of ``image_size``
    ``[height, width]``, or None. A box that runs past the image's edge is fine: training clips it to the image."""
    if not (isinstance(box, list) and len(box) == 4
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in box)):
        return "is not 4 finite numbers [x, y, width, height]"
    x, y, width, height = box
    if width <= 0 or height <= 0:
        return "has no area (width and height must be above 0): an instance covers pixels"
    image_height, image_width = image_size
    if (isinstance(image_height, (int, float)) and isinstance(image_width, (int, float))
            and (x >= image_width or y >= image_height or x + width <= 0 or y + height <= 0)):
        return f"lies outside its image ({image_width}x{image_height} px)"
    return None


def _decodes(rle: dict) -> bool:
    """Whether pycocotools decodes the RLE mask ``rle`` (its size checked already) into a mask of that size."""
    try:
        height, width = rle["size"]
        encoded = mask_utils.frPyObjects(rle, height, width) if isinstance(rle.get("counts"), list) else rle
        return mask_utils.decode(encoded).shape == (height, width)
    except (TypeError, ValueError, KeyError, OverflowError):
        return False


def _box_fits(box: list, polygons: list[list[float]], slack: float = 2.0) -> bool:
    """Whether COCO's ``[x, y, width, height]`` ``box`` (checked to be one) is the extent of ``polygons``, within
    ``slack`` pixels or 5%."""
    xs = [v for p in polygons for v in p[0::2]]
    ys = [v for p in polygons for v in p[1::2]]
    extent = (min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys))
    return all(abs(a - b) <= max(slack, 0.05 * max(box[2], box[3])) for a, b in zip(box, extent))
