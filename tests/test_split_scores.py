"""A dense task's split scores recomputed on weightings of its images (cnx2lite.dense.split_scores): weights of 1 give
torchmetrics' own scores of the split, integer weights its scores of the split with each image repeated that often."""
from __future__ import annotations

import pytest
import torch
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from cnx2lite.dense.formats import IGNORE_INDEX
from cnx2lite.dense.split_scores import (
    average_precision,
    coco_matches,
    mean_average_precision,
    pixel_counts,
    segmentation_scores,
)

SIZE, CLASSES = 32, 3
COUNTS = torch.tensor([2.0, 0.0, 1.0, 3.0, 1.0, 0.0])  # a bootstrap draw: image 0 twice, image 1 never, ...


def _box_mask(x0: int, y0: int, x1: int, y1: int) -> torch.Tensor:
    mask = torch.zeros(SIZE, SIZE, dtype=torch.bool)
    mask[y0:y1, x0:x1] = True
    return mask


def _instances(boxes: list[tuple[int, int, int, int]], labels: list[int], scores: list[float] | None = None) -> dict:
    found = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
             "masks": torch.stack([_box_mask(*b) for b in boxes]) if boxes else torch.zeros(0, SIZE, SIZE).bool(),
             "labels": torch.tensor(labels, dtype=torch.long)}
    return found if scores is None else {**found, "scores": torch.tensor(scores)}


def _random_split(images: int, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Images with 1-3 instances and 0-5 detections each, some of them of a class the image does not hold."""
    g = torch.Generator().manual_seed(seed)
    truths, detections = [], []
    for _ in range(images):
        boxes = []
        for _ in range(int(torch.randint(1, 4, (1,), generator=g))):
            x0, y0 = torch.randint(0, SIZE - 12, (2,), generator=g).tolist()
            w, h = torch.randint(6, 13, (2,), generator=g).tolist()
            boxes.append((x0, y0, x0 + w, y0 + h))
        labels = torch.randint(1, CLASSES + 1, (len(boxes),), generator=g).tolist()
        truths.append(_instances(boxes, labels))
        found = []
        for box in boxes + boxes[:1]:  # near the truths, shifted, some with another class
            shift = torch.randint(-1, 2, (2,), generator=g).tolist()
            found.append((max(box[0] + shift[0], 0), max(box[1] + shift[1], 0), box[2] + shift[0], box[3] + shift[1]))
        detections.append(_instances(found, torch.randint(1, CLASSES + 1, (len(found),), generator=g).tolist(),
                                     torch.rand(len(found), generator=g).tolist()))  # distinct scores: no ties
    return detections, truths


def _torchmetrics_ap(detections: list[dict], truths: list[dict]) -> list[float]:
    metric = mean_average_precision()
    metric.update(detections, truths)
    result = metric.compute()
    return [100 * result["bbox_map"].item(), 100 * result["segm_map"].item()]


def _ours(detections: list[dict], truths: list[dict], weights: torch.Tensor) -> list[float]:
    return [average_precision(coco_matches(detections, truths, CLASSES, iou_type), weights[None])[0].item()
            for iou_type in ("bbox", "segm")]


def test_weights_of_one_give_cocos_ap_of_the_split():
    detections, truths = _random_split(6)
    assert _ours(detections, truths, torch.ones(6)) == pytest.approx(_torchmetrics_ap(detections, truths), abs=1e-6)
    unused = coco_matches(detections, truths, CLASSES + 1, "bbox")  # a class no image holds or predicts: not counted
    assert average_precision(unused, torch.ones(1, 6)).item() == pytest.approx(_ours(detections, truths,
                                                                                     torch.ones(6))[0])


def test_integer_weights_give_the_ap_of_the_split_with_images_repeated():
    detections, truths = _random_split(6, seed=1)
    repeated = [i for i, c in enumerate(COUNTS.int().tolist()) for _ in range(c)]
    expected = _torchmetrics_ap([detections[i] for i in repeated], [truths[i] for i in repeated])
    assert _ours(detections, truths, COUNTS) == pytest.approx(expected, abs=1e-6)


def test_a_confident_detection_of_a_class_the_image_does_not_hold_costs_precision():
    """Image 0 holds a class-1 instance and gets a class-2 detection over it at score 0.9 (above its right one at
    0.5); image 1 holds a class-2 instance, found at 0.8. Scored alone, image 0's AP is 100: pycocotools skips class 2,
    which it does not hold. Pooled, class 2 ranks the wrong detection first: AP 50, and 75 over the two classes."""
    box = (4, 4, 20, 20)
    truths = [_instances([box], [1]), _instances([box], [2])]
    detections = [_instances([box, box], [2, 1], [0.9, 0.5]), _instances([box], [2], [0.8])]
    assert _torchmetrics_ap(detections[:1], truths[:1]) == [100.0, 100.0]  # what a per-image score saw
    assert _ours(detections, truths, torch.ones(2)) == pytest.approx([75.0, 75.0])
    assert _ours(detections, truths, torch.tensor([1.0, 0.0])) == pytest.approx([100.0, 100.0])


def test_many_weightings_at_once_match_one_at_a_time():
    detections, truths = _random_split(6, seed=2)
    matches = coco_matches(detections, truths, CLASSES, "bbox")
    weights = torch.stack([torch.ones(6), COUNTS, COUNTS.flip(0)] * 30)  # more than one chunk
    at_once = average_precision(matches, weights)
    assert torch.allclose(at_once, torch.cat([average_precision(matches, w[None]) for w in weights]))


def _segmentation_split(images: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    truth = torch.randint(0, 4, (images, 8, 8), generator=g)  # class 4 never in the labels
    truth[:, :2] = IGNORE_INDEX
    predicted = torch.where(torch.rand(images, 8, 8, generator=g) < 0.6, truth.clamp(min=0),
                            torch.randint(0, 5, (images, 8, 8), generator=g))
    predicted[0, 0, 0] = 5  # predicted on an unlabeled pixel only: no class of the score
    return predicted, truth


@pytest.mark.parametrize("weights", [torch.ones(6), COUNTS])
def test_segmentation_scores_are_torchmetrics_on_the_weighted_split(weights):
    predicted, truth = _segmentation_split(6)
    repeated = [i for i, c in enumerate(weights.int().tolist()) for _ in range(c)]
    iou = MulticlassJaccardIndex(num_classes=6, ignore_index=IGNORE_INDEX, average="macro")
    accuracy = MulticlassAccuracy(num_classes=6, ignore_index=IGNORE_INDEX, average="micro")
    expected = [100 * metric(predicted[repeated], truth[repeated]).item() for metric in (iou, accuracy)]
    ours = segmentation_scores(pixel_counts(predicted, truth, 6), weights[None])[0]
    assert ours.tolist() == pytest.approx(expected, abs=1e-5)


def test_classes_without_detections_crowds_and_a_split_without_any_detection_score_as_coco():
    """A class with instances and no detection scores 0 in the mean; a crowd region's instance does not count and a
    detection on it is no false positive; a split without a single detection (an untrained detector) scores 0."""
    a, b = (4, 4, 14, 14), (18, 18, 30, 30)
    truths = [_instances([a, b], [1, 2]), {**_instances([a, b], [3, 1]), "iscrowd": torch.tensor([1, 0])}]
    detections = [_instances([a], [1], [0.9]), _instances([a, b], [3, 1], [0.8, 0.7])]
    expected = _torchmetrics_ap(detections, truths)
    assert 0 < expected[0] < 100 and _ours(detections, truths, torch.ones(2)) == pytest.approx(expected, abs=1e-6)
    nothing = [_instances([], [], []) for _ in truths]
    assert _ours(nothing, truths, torch.ones(2)) == pytest.approx(_torchmetrics_ap(nothing, truths)) == [0.0, 0.0]


def test_a_tie_of_a_right_and_a_wrong_detection_in_one_image_counts_as_one_block():
    """The documented exception: repeated, the image interleaves its two tied detections; weighted, they stay one
    block (the bootstrap draws only; weights of 1 are exact)."""
    box = (4, 4, 20, 20)
    truths = [_instances([box], [1])]
    detections = [_instances([box, (22, 22, 30, 30)], [1, 1], [0.9, 0.9])]
    assert _ours(detections, truths, torch.ones(1)) == pytest.approx(_torchmetrics_ap(detections, truths))
    assert _ours(detections, truths, torch.tensor([2.0])) == pytest.approx(_ours(detections, truths, torch.ones(1)))
    assert _torchmetrics_ap(detections * 2, truths * 2)[0] < _ours(detections, truths, torch.tensor([2.0]))[0]
