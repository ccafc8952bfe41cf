"""Transfer to dense tasks, for the one training loop in ``engine``: semantic segmentation with UperNet and instance
detection with Mask R-CNN (:mod:`cnx2lite.dense.heads`), on composites of the run's photos
(:mod:`cnx2lite.dense.composites`) or on an ADE20K or COCO folder (:mod:`cnx2lite.dense.formats`). The backbone
starts from any weights fine-tuning reads, or from scratch; layer decay runs over its blocks (the heads are "head"
and train at the full lr, :mod:`.optim`).

The training composites are made from the train photos and change with the seed; the evaluation composites are made
from the photos of the split that scores and are the same for every seed, so runs are compared on the same images.
Scores come from torchmetrics, over the whole split and all processes: mIoU (classes averaged that occur in the
labels or predictions) and pixel accuracy; COCO's box and mask AP (pycocotools' evaluation, IoU 0.5:0.95). The same
scores recomputed on weightings of the split's images (:mod:`cnx2lite.dense.split_scores`) give their intervals."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import Dataset
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from .. import transforms
from ..dense.composites import CompositeDataset, detection_target
from ..dense.formats import IGNORE_INDEX
from ..dense.heads import UperNet, mask_rcnn
from ..dense.split_scores import (
    IOU_TYPES,
    average_precision,
    coco_matches,
    mean_average_precision,
    pixel_counts,
    segmentation_scores,
)
from ..image_files import display_names
from ..models import ConvNeXtV2, create_model
from .config import TrainConfig
from .distributed import gather_lists
from .plots import plot_detections, plot_segmentations
from .run_data import RunData
from .seeding import derive_seed
from .task_base import Task

VAL_COMPOSITES_SEED = 0  # one evaluation set for every run
NUM_FIGURE_COMPOSITES = 4
MASK_THRESHOLD = 0.5  # Mask R-CNN's mask probabilities -> instance masks, as torchvision's own COCO evaluation


class DenseTask(Task):
    """What segmentation and detection share: the backbone, the composites, batches of stacked images with the task's
    targets."""

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.num_classes = 0  # known once the model is built
        self.sample_kind = "composites" if config.dense_format == "composites" else "images"
        self.class_names: dict[str, str] = {}  # readable names of the photos' class folders (composites only)

    def backbone(self) -> ConvNeXtV2:
        """The ConvNeXt V2 encoder with a LayerNorm per stage map, from ``pretrained`` (its classifier, final norm and
        any FCMAE decoder left out) or from scratch."""
        c = self.config
        backbone = create_model(c.model, num_classes=0, stage_norms=True, drop_path_rate=c.drop_path, block=c.block,
                                grn_aggregation=c.grn_aggregation, block_norm=c.block_norm, in_chans=c.in_chans)
        if c.pretrained:
            self.load_encoder(backbone, c.pretrained)
        backbone.norm = nn.Identity()  # the heads read the stage norms: a final norm would get no gradient (DDP)
        return backbone

    def train_transform(self) -> Callable:
        """The photos' transform; the composites read their photos themselves, so no sample goes through it."""
        return transforms.eval_transform(self.config.img_size, in_chans=self.config.in_chans)

    def datasets(self, run_data: RunData) -> tuple[Dataset, Dataset | None]:
        """Composites of the run's photos, or the splits of an ADE20K or COCO folder as they are."""
        c = self.config
        if c.dense_format != "composites":
            return run_data.train_set, run_data.val_set
        self.class_names = display_names(run_data.folder)  # Imagenette's for its WordNet-id folders

        def composites(photos, length: int, seed: int) -> CompositeDataset:
            return CompositeDataset(photos.samples, photos.classes, c.img_size, length, seed, c.max_regions)

        val = run_data.val_set
        return (composites(run_data.train_set, c.composites, derive_seed(c.seed, "composites")),
                None if val is None else composites(val, c.val_composites, VAL_COMPOSITES_SEED))

    @classmethod
    def collate(cls, batch: list[tuple]) -> tuple:
        """``(image, target[, seed])`` samples -> ``(images (B, 3, H, W), the task's targets[, seeds (B,)])`` (a class
        method: loader workers get the class, not the task and its metrics)."""
        images, targets, *seeds = zip(*batch)
        return (torch.stack(images), cls.batch_targets(list(targets)), *(torch.tensor(s) for s in seeds))

    @staticmethod
    def batch_targets(targets: list[dict[str, Tensor]]) -> Tensor | list[dict[str, Tensor]]:
        raise NotImplementedError

    plot: Callable  # the figure of predictions: plots.plot_segmentations or plots.plot_detections

    def save_figures(self, model: nn.Module, dataset: Dataset, folder: Path, epoch: int, last: bool) -> list[Path]:
        """At the last epoch: ``predictions.png``, the first evaluation composites with their labels and the model's
        predictions."""
        if not last:
            return []
        samples = [dataset[i] for i in range(min(NUM_FIGURE_COMPOSITES, len(dataset)))]
        images = torch.stack([image for image, _ in samples]).to(next(model.parameters()).device)
        was_training = model.training
        model.eval()
        with torch.no_grad():
            predictions = model(images)
        model.train(was_training)
        path = folder / "predictions.png"
        self.plot(images.cpu(), [target for _, target in samples], predictions,
                  [self.class_names.get(c, c) for c in dataset.classes], path,
                  f"{self.config.model}, {self.name}, epoch {epoch}"
                  + (" (synthetic composites)" if self.config.dense_format == "composites" else ""))
        return [path]


class SegmentTask(DenseTask):
    """Semantic segmentation: UperNet, per-pixel cross-entropy; evaluation = loss, mIoU, pixel accuracy."""

    name = "segment"
    plot = staticmethod(plot_segmentations)

    def build_model(self, num_classes: int) -> UperNet:
        self.num_classes = num_classes
        return UperNet(self.backbone(), num_classes, self.config.head_channels)

    @staticmethod
    def batch_targets(targets: list[dict[str, Tensor]]) -> Tensor:
        """The semantic maps ``(B, H, W)``."""
        return torch.stack([t["semantic"] for t in targets])

    def loss(self, model: nn.Module, images: Tensor, targets: Tensor, seeds: Tensor) -> Tensor:
        """The mean over the batch's labeled pixels; a batch without any (crops of unlabeled regions) adds 0."""
        pixel_losses = F.cross_entropy(model(images), targets, ignore_index=IGNORE_INDEX, reduction="sum")
        return pixel_losses / (targets != IGNORE_INDEX).sum().clamp(min=1)

    def start_scoring(self, device: torch.device) -> None:
        scores = dict(num_classes=self.num_classes, ignore_index=IGNORE_INDEX)
        self.iou = MulticlassJaccardIndex(**scores, average="macro").to(device)
        self.pixel_accuracy = MulticlassAccuracy(**scores, average="micro").to(device)

    def eval_batch(self, model: nn.Module, images: Tensor, targets: Tensor, index: int) -> dict[str, float]:
        """Each image's mean loss over its labeled pixels, summed; the predictions go into the scores."""
        logits = model(images)
        predicted = logits.argmax(1)
        self.iou.update(predicted, targets)
        self.pixel_accuracy.update(predicted, targets)
        pixel_losses = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="none")
        labeled = (targets != IGNORE_INDEX).sum(dim=(1, 2)).clamp(min=1)
        return {"val_loss": (pixel_losses.sum(dim=(1, 2)) / labeled).sum().item()}

    @torch.no_grad()
    def image_statistics(self, model: nn.Module, images: Tensor, targets: Tensor) -> Tensor:
        """What the split's scores pool of each image: its per-class pixel counts ``(B, K, 3)``
        (:func:`~cnx2lite.dense.split_scores.pixel_counts`)."""
        return pixel_counts(model(images).argmax(1), targets, self.num_classes)

    def resampled_scores(self, statistics: list[Tensor], weights: Tensor) -> Tensor:
        """``(R, 2)`` mIoU and pixel accuracy in percent of each weighting ``(R, N)`` of the images."""
        return segmentation_scores(torch.cat(statistics), weights)

    def scores(self) -> dict[str, float]:
        miou = 100 * self.iou.compute().item()
        if math.isnan(miou):
            raise ValueError("no pixel of the val split is labeled: its annotations hold only 0 (unlabeled) or "
                             f"classes past num_classes={self.num_classes}; check the annotation PNGs")
        return {"val_miou": miou, "val_pixel_acc": 100 * self.pixel_accuracy.compute().item()}


class DetectTask(DenseTask):
    """Instance detection: Mask R-CNN, the sum of its five losses; evaluation = COCO box and mask AP."""

    name = "detect"
    plot = staticmethod(plot_detections)

    def build_model(self, num_classes: int) -> nn.Module:
        self.num_classes = num_classes
        return mask_rcnn(self.backbone(), num_classes, self.config.img_size, self.config.head_channels)

    @staticmethod
    def batch_targets(targets: list[dict[str, Tensor]]) -> list[dict[str, Tensor]]:
        """Per image: boxes, masks and labels ``1..K`` (0 is Mask R-CNN's background)."""
        return [detection_target(t) for t in targets]

    def loss(self, model: nn.Module, images: Tensor, targets: list[dict[str, Tensor]], seeds: Tensor) -> Tensor:
        return sum(model(images, targets).values())

    def start_scoring(self, device: torch.device) -> None:
        self.detections: list[dict[str, Tensor]] = []
        self.truths: list[dict[str, Tensor]] = []

    def eval_batch(self, model: nn.Module, images: Tensor, targets: list[dict[str, Tensor]],
                   index: int) -> dict[str, float]:
        """The detections (masks thresholded) and the truths are kept for the scores; no statistic to sum (Mask R-CNN
        gives losses only while training)."""
        self.detections += [_thresholded(found) for found in model(images)]
        self.truths += [{k: v.cpu() for k, v in t.items()} for t in targets]
        return {}

    @torch.no_grad()
    def image_statistics(self, model: nn.Module, images: Tensor,
                         targets: list[dict[str, Tensor]]) -> list[tuple[dict[str, Tensor], dict[str, Tensor]]]:
        """What the split's AP pools of each image: its detections (masks thresholded) and its truths."""
        return [(_thresholded(found), {k: v.cpu() for k, v in truth.items()})
                for found, truth in zip(model(images), targets)]

    def resampled_scores(self, statistics: list[list[tuple[dict, dict]]], weights: Tensor) -> Tensor:
        """``(R, 2)`` COCO box and mask AP in percent of each weighting ``(R, N)`` of the images."""
        detections, truths = zip(*(pair for batch in statistics for pair in batch))
        return torch.stack([average_precision(coco_matches(list(detections), list(truths), self.num_classes, kind),
                                              weights) for kind in IOU_TYPES], dim=1)

    def scores(self) -> dict[str, float]:
        """COCO's AP over every process's images, gathered here: torchmetrics' own gathering of per-image states
        fails when processes hold different numbers of images."""
        metric = mean_average_precision(sync_on_compute=False)
        metric.update(gather_lists(self.detections), gather_lists(self.truths))
        ap = metric.compute()
        return {"val_box_ap": _percent(ap["bbox_map"]), "val_box_ap50": _percent(ap["bbox_map_50"]),
                "val_mask_ap": _percent(ap["segm_map"])}


def _percent(ap: Tensor) -> float:
    """pycocotools' AP in percent; NaN for its -1, which says there was no instance to find (a split whose composites
    all lost their instances to later shapes), never an AP of -100%."""
    return 100 * ap.item() if ap >= 0 else float("nan")


def _thresholded(found: dict[str, Tensor]) -> dict[str, Tensor]:
    """One image's Mask R-CNN detections on the CPU, its mask probabilities ``(R, 1, H, W)`` as masks ``(R, H, W)``."""
    return {**{k: v.cpu() for k, v in found.items()}, "masks": found["masks"][:, 0].cpu() > MASK_THRESHOLD}
