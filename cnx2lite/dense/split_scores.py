"""A dense task's scores of a whole evaluation split, recomputed on weightings of its images: mIoU and pixel accuracy
from each image's per-class pixel counts, COCO's box and mask AP from pycocotools' matches of each image's detections.

A split's score is no mean of per-image scores: mIoU pools the pixels of all images, and AP ranks the detections of
all images together, so a confident detection of a class that an image does not hold costs precision only when
pooled (scored alone, pycocotools skips a class without instances in the image, and the detection with it). A
bootstrap interval over images therefore recomputes the split's statistic on each resample, image ``i`` drawn ``c_i``
times counting its pixels, or its detections and instances, ``c_i`` times (weights from
:func:`cnx2lite.bootstrap.image_counts`); weights of 1 give the split's own score, as torchmetrics computes it
(:func:`mean_average_precision`: with COCO's own IoU and recall thresholds). Integer weights give the score of the
split with each image repeated that often, but for one case: two detections of one class in one image with the same
score, one right and one wrong, which repeated images would interleave and a weight counts as one block.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
import torch
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval, Params
from torch import Tensor
from torchmetrics.detection import MeanAveragePrecision

from .formats import IGNORE_INDEX

IOU_TYPES = ("bbox", "segm")  # box AP, mask AP
COCO_THRESHOLDS = Params("bbox")  # COCO's IoU thresholds 0.5:0.95 and recall thresholds 0:0.01:1
RECALLS = torch.from_numpy(COCO_THRESHOLDS.recThrs)
_CHUNK = 64  # resamples at once


# ------------------------------------------------------------------------------------------------- segmentation
def pixel_counts(predicted: Tensor, truth: Tensor, num_classes: int) -> Tensor:
    """Per image and class, the labeled pixels where prediction and truth both are the class, where either is, and
    where the truth is: ``(B, K, 3)`` from class maps ``(B, H, W)`` (unlabeled pixels, ``IGNORE_INDEX``, left out)."""
    labeled = truth != IGNORE_INDEX
    classes = torch.arange(num_classes, device=truth.device)[:, None, None]
    counts = []
    for guess, target, keep in zip(predicted, truth, labeled):
        is_guess, is_target = (guess == classes) & keep, (target == classes) & keep  # (K, H, W)
        counts.append(torch.stack([(is_guess & is_target).sum((1, 2)), (is_guess | is_target).sum((1, 2)),
                                   is_target.sum((1, 2))], dim=1))
    return torch.stack(counts).cpu()


def segmentation_scores(counts: Tensor, weights: Tensor) -> Tensor:
    """``(R, 2)`` mIoU and pixel accuracy in percent of each weighting ``(R, N)`` of the images' :func:`pixel_counts`
    ``(N, K, 3)``: the mean IoU over the classes in the weighted labels or predictions (torchmetrics' macro Jaccard
    index) and the share of labeled pixels predicted right."""
    pooled = torch.einsum("rn,nkc->rkc", weights.double(), counts.double())  # (R, K, 3)
    intersection, union, truth = pooled.unbind(-1)
    present = union > 0
    miou = torch.where(present, intersection / union.where(present, 1), 0).sum(1) / present.sum(1)
    return 100 * torch.stack([miou, intersection.sum(1) / truth.sum(1)], dim=1)


# ---------------------------------------------------------------------------------------------------- detection
def mean_average_precision(**options) -> MeanAveragePrecision:
    """torchmetrics' COCO box and mask AP (pycocotools' evaluation) at COCO's own thresholds: its defaults are the
    thresholds rounded to float32, which lifts some recall thresholds just above a recall a split reaches exactly
    (0.0700000003 against 0.07 at 7 of 100 instances found) and moves the AP, by tenths of a point."""
    return MeanAveragePrecision(iou_type=IOU_TYPES, backend="pycocotools", **options,
                                iou_thresholds=COCO_THRESHOLDS.iouThrs.tolist(),
                                rec_thresholds=COCO_THRESHOLDS.recThrs.tolist())


@dataclass(frozen=True)
class Matches:
    """pycocotools' matching of one IoU type's detections (IoU 0.5:0.95, at most 100 per image and class), by class:
    ``image[k]`` ``(D,)`` the image of each detection ranked by score, ``true[k]`` and ``false[k]`` ``(T, D)`` whether
    it is a true or a false positive at each IoU threshold (neither where COCO ignores it), and ``instances``
    ``(N, K)`` each image's instances of each class that count."""

    image: list[Tensor]
    true: list[Tensor]
    false: list[Tensor]
    instances: Tensor


def coco_matches(detections: list[dict[str, Tensor]], truths: list[dict[str, Tensor]], num_classes: int,
                 iou_type: str) -> Matches:
    """Match each image's detections (``boxes`` (D, 4) xyxy, ``scores``, ``labels``, ``masks`` (D, H, W) bool) with
    its truths (``boxes``, ``labels``, ``masks``, optionally ``iscrowd``), labels ``1..num_classes``, as
    pycocotools' COCOeval does."""
    gt, found = [], []
    for i, (truth, detection) in enumerate(zip(truths, detections)):
        crowd = truth.get("iscrowd", torch.zeros(len(truth["labels"]), dtype=torch.long))
        gt += [dict(_instance(i, box, mask, iou_type), id=len(gt) + j + 1, category_id=int(label), iscrowd=int(c))
               for j, (box, mask, label, c) in enumerate(zip(truth["boxes"], truth["masks"], truth["labels"], crowd))]
        found += [dict(_instance(i, box, mask, iou_type), category_id=int(label), score=float(score))
                  for box, mask, label, score in zip(detection["boxes"], detection["masks"], detection["labels"],
                                                     detection["scores"])]
    height, width = truths[0]["masks"].shape[-2:]
    coco = COCO()
    coco.dataset = {"images": [{"id": i, "height": height, "width": width} for i in range(len(truths))],
                    "annotations": gt, "categories": [{"id": k} for k in range(1, num_classes + 1)]}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco.createIndex()
        evaluation = COCOeval(coco, coco.loadRes(found) if found else COCO(), iou_type)
        evaluation.params.areaRng, evaluation.params.areaRngLbl = [[0, 1e10]], ["all"]
        evaluation.evaluate()
    per_class = len(truths)  # evalImgs: for each class, for each image (one area range)
    image, true, false = [], [], []
    instances = torch.zeros(len(truths), num_classes, dtype=torch.float64)
    for k in range(num_classes):
        entries = [(i, e) for i, e in enumerate(evaluation.evalImgs[k * per_class:(k + 1) * per_class]) if e]
        for i, e in entries:
            instances[i, k] = float(np.count_nonzero(np.asarray(e["gtIgnore"]) == 0))
        if not entries:  # neither an instance nor a detection of the class anywhere
            entries = [(0, {"dtScores": [], "dtMatches": np.zeros((0, 0)), "dtIgnore": np.zeros((0, 0), bool)})]
        order = np.argsort(-np.concatenate([e["dtScores"] for _, e in entries]), kind="mergesort")  # ties: image order
        matched = np.concatenate([e["dtMatches"] for _, e in entries], axis=1)[:, order]
        ignored = np.concatenate([e["dtIgnore"] for _, e in entries], axis=1)[:, order]
        image.append(torch.tensor(np.concatenate([[i] * len(e["dtScores"]) for i, e in entries])[order],
                                  dtype=torch.long))
        true.append(torch.from_numpy((matched > 0) & ~ignored))
        false.append(torch.from_numpy((matched == 0) & ~ignored))
    return Matches(image, true, false, instances)


def _instance(image_id: int, box: Tensor, mask: Tensor, iou_type: str) -> dict:
    x0, y0, x1, y1 = box.tolist()
    area = float(mask.sum())
    shape = ({"bbox": [x0, y0, x1 - x0, y1 - y0]} if iou_type == "bbox"
             else {"segmentation": mask_utils.encode(np.asfortranarray(mask.numpy().astype(np.uint8)))})
    return {"image_id": image_id, "area": area, **shape}


def average_precision(matches: Matches, weights: Tensor) -> Tensor:
    """``(R,)`` COCO's AP in percent (mean over IoU thresholds 0.5:0.95, recall thresholds and the classes with
    instances) of each weighting ``(R, N)`` of the images: a detection or an instance of an image of weight ``c``
    counts ``c`` times. NaN where no class has an instance."""
    weights = weights.double()
    total, classes = torch.zeros(len(weights), dtype=torch.float64), torch.zeros(len(weights), dtype=torch.float64)
    for image, true, false, instances in zip(matches.image, matches.true, matches.false, matches.instances.T):
        counted = weights @ instances  # (R,)
        has = counted > 0
        classes += has
        if not len(image):
            continue  # no detection: precision 0 at every recall
        for chunk in range(0, len(weights), _CHUNK):
            w = weights[chunk:chunk + _CHUNK, image][:, None]  # (r, 1, D)
            tp, fp = (w * true.double()).cumsum(-1), (w * false.double()).cumsum(-1)  # (r, T, D)
            recall = tp / counted[chunk:chunk + _CHUNK, None, None].clamp(min=1e-12)
            precision = tp / (tp + fp + np.spacing(1))
            precision = precision.flip(-1).cummax(-1).values.flip(-1)  # COCO's envelope: best precision from here on
            at = torch.searchsorted(recall.contiguous(), RECALLS.expand(*recall.shape[:2], -1).contiguous())
            reached = precision.gather(-1, at.clamp(max=len(image) - 1)) * (at < len(image))  # (r, T, 101)
            total[chunk:chunk + _CHUNK] += torch.where(has[chunk:chunk + _CHUNK], reached.mean((1, 2)), 0)
    return 100 * total / classes
