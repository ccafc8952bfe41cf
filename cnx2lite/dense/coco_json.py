"""What COCO's instance format needs of an annotation file, checked before anything reads it: one line naming the file
and the entry for the first thing amiss (torchvision and pycocotools would fail mid-run on some faults, and silently
drop or misplace an instance on others)."""
from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

from pycocotools import mask as mask_utils

from ..image_files import leads_outside

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
    for image in content["images"]:  # the frame its annotations were made on (and an RLE mask's size)
        if not all(isinstance(image.get(key), int) and not isinstance(image[key], bool) and image[key] > 0
                   for key in ("width", "height")):
            raise ValueError(f"{path}: image {image['id']} needs its width and height in pixels (integers above 0), "
                             f"got {image.get('width')!r} and {image.get('height')!r}")
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
        if type(annotation["iscrowd"]) is not int or annotation["iscrowd"] not in (0, 1):
            raise ValueError(f"{where}: iscrowd must be 0 (an instance) or 1 (a crowd region), got "
                             f"{annotation['iscrowd']!r}")
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
        for polygon in segmentation:
            if not isinstance(polygon, list) or not all(map(_is_number, polygon)):
                return f"a polygon is a flat list of finite numbers x1, y1, x2, y2, ...; got {str(polygon)[:40]}"
            if len(polygon) % 2:
                return f"a polygon is x, y pairs (an even count), got {len(polygon)} numbers"
            if len(polygon) < 6:
                return "a polygon of fewer than 3 points"
    if problem := _box_problem(box, image_size):
        return f"its bbox {box} {problem}"
    if isinstance(segmentation, dict) and segmentation.get("size") != image_size:
        return f"its RLE mask's size {segmentation.get('size')} is not its image's height and width {image_size}"
    if isinstance(segmentation, dict) and not _decodes(segmentation):
        return (f"its RLE mask {str(segmentation)[:60]} does not decode (COCO's RLE is {{'size': [height, width], "
                "'counts': a list of run lengths or their string})")
    if isinstance(segmentation, dict) and not mask_utils.area(_encoded(segmentation)):
        return "its RLE mask covers no pixel: an instance covers pixels"
    if not _box_fits(box, _extent(segmentation), image_size):
        return (f"its bbox {box} is not the extent of its {'mask' if isinstance(segmentation, dict) else 'polygons'} "
                "(COCO boxes are [x, y, width, height])")
    return None


def _box_problem(box: object, image_size: list) -> str | None:
    """What keeps COCO's ``[x, y, width, height]`` ``box`` from framing an instance of an image of ``image_size``
    ``[height, width]``, or None. A box that runs past the image's edge is fine: training clips it to the image."""
    if not (isinstance(box, list) and len(box) == 4 and all(map(_is_number, box))):
        return "is not 4 finite numbers [x, y, width, height]"
    x, y, width, height = box
    if width <= 0 or height <= 0:
        return "has no area (width and height must be above 0): an instance covers pixels"
    image_height, image_width = image_size
    if x >= image_width or y >= image_height or x + width <= 0 or y + height <= 0:
        return f"lies outside its image ({image_width}x{image_height} px)"
    return None


def _is_number(value: object) -> bool:
    """A finite JSON number (not a bool, a string or NaN)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _encoded(rle: dict) -> dict:
    """pycocotools' compressed form of an RLE mask given as COCO writes it (run lengths as a list, or their string)."""
    height, width = rle["size"]
    return mask_utils.frPyObjects(rle, height, width) if isinstance(rle.get("counts"), list) else rle


def _decodes(rle: dict) -> bool:
    """Whether pycocotools decodes the RLE mask ``rle`` (its size checked already) into a mask of that size."""
    try:
        return mask_utils.decode(_encoded(rle)).shape == tuple(rle["size"])
    except (TypeError, ValueError, KeyError, OverflowError):
        return False


def _extent(segmentation: list | dict) -> tuple[float, float, float, float]:
    """``(x0, y0, x1, y1)`` of polygons (checked to be ones) or of an RLE mask (checked to decode)."""
    if isinstance(segmentation, dict):
        x, y, width, height = mask_utils.toBbox(_encoded(segmentation)).tolist()
        return x, y, x + width, y + height
    xs = [v for p in segmentation for v in p[0::2]]
    ys = [v for p in segmentation for v in p[1::2]]
    return min(xs), min(ys), max(xs), max(ys)


def _box_fits(box: list, extent: tuple[float, float, float, float], image_size: list, slack: float = 2.0) -> bool:
    """Whether COCO's ``[x, y, width, height]`` ``box`` (checked to be one) is the ``extent`` of its segmentation, as
    given or clipped to the image of ``image_size`` ``[height, width]`` (annotation tools cut the box of an object at
    the image's edge, not always its polygon), within ``slack`` pixels or 5%."""
    x, y, width, height = box
    image_height, image_width = image_size
    x0, y0, x1, y1 = extent
    clipped = (max(x0, 0), max(y0, 0), min(x1, image_width), min(y1, image_height))
    tolerance = max(slack, 0.05 * max(width, height))
    return any(all(abs(a - b) <= tolerance for a, b in zip((x, y, x + width, y + height), corners))
               for corners in (extent, clipped))
