"""Run figures as PNG files: training curves, FCMAE reconstruction grids and the transfer tasks' predictions (no pyplot
state, so they draw the same in scripts, DDP workers and notebooks)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor
from torchvision.utils import draw_bounding_boxes, draw_segmentation_masks

from ..fcmae import Reconstruction
from ..rundir import open_in_run
from ..transforms import denormalize

MASK_COLOR = "#9aa0a6"  # the opaque grey that stands for "masked" in every figure, the notebooks' included


def _series(history: Sequence[dict], kind: str, key: str) -> tuple[list[float], list[float]]:
    rows = [r for r in history if r.get("kind") == kind and r.get(key) not in (None, "")]
    return [float(r["epoch"]) for r in rows], [float(r[key]) for r in rows]


def save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` as a PNG at ``path`` without following a symlink planted there (a run's figures go where its
    other files go: :func:`~cnx2lite.rundir.open_in_run`)."""
    with open_in_run(Path(path), "wb") as f:
        fig.savefig(f, format="png", dpi=100)


SCORES = {"val_top1": "top-1", "ema_top1": "EMA top-1", "knn_top1": "kNN top-1", "val_miou": "mIoU",
          "ema_miou": "EMA mIoU", "val_box_ap": "box AP", "val_mask_ap": "mask AP", "ema_box_ap": "EMA box AP",
          "ema_mask_ap": "EMA mask AP"}  # the percentages a run's curves show, where it has them


def plot_curves(history: Sequence[dict], path: Path, title: str = "") -> Path:
    """Loss (train per logged step, val per epoch) and, when there, the val scores in percent (top-1, + EMA, + the
    kNN monitor's; mIoU; box and mask AP) against epochs."""
    accuracy = [k for k in SCORES if _series(history, "epoch", k)[0]]
    fig = Figure(figsize=(10 if accuracy else 5.5, 3.6), layout="constrained")
    axes = fig.subplots(1, 2 if accuracy else 1, squeeze=False)[0]
    for kind, key, label in (("train", "train_loss", "train"), ("epoch", "val_loss", "val")):
        x, y = _series(history, kind, key)
        if x:
            axes[0].plot(x, y, marker="o" if kind == "epoch" else None, label=label)
    axes[0].set(xlabel="epoch", ylabel="loss", title="loss")
    if axes[0].lines:  # the first epochs of a short run may have logged nothing yet
        axes[0].legend()
    for key in accuracy:
        axes[1].plot(*_series(history, "epoch", key), marker="o", label=SCORES[key])
    if accuracy:
        axes[1].set(xlabel="epoch", ylabel="%", title="validation")
        axes[1].legend()
    if title:
        fig.suptitle(title)
    save_png(fig, path)
    return Path(path)


def plot_reconstructions(recon: Reconstruction, path: Path, title: str = "", note: str = "") -> Path:
    """One row per image: original / masked (masked cells opaque :data:`MASK_COLOR`) / reconstruction /
    reconstruction with visible pixels; ``note`` under the figure says how the reconstruction was de-normalized."""
    names = ("original", "masked", "reconstruction", "reconstruction + visible")
    hidden = (recon.masked.detach().cpu() == 0).all(dim=1)  # (N, H, W): the masked panel holds zeros there
    panels = [denormalize(p.detach().float().cpu()).movedim(1, -1) for p in recon]  # (N, H, W, C)
    if panels[1].shape[-1] == 3:
        panels[1][hidden] = torch.tensor(to_rgb(MASK_COLOR))
    else:
        panels[1][hidden] = sum(to_rgb(MASK_COLOR)) / 3
    n = len(panels[0])
    fig = Figure(figsize=(8, 2 * n + 0.5 + (0.3 if title else 0)), layout="constrained")
    axes = fig.subplots(n, 4, squeeze=False)
    for i in range(n):
        for j, panel in enumerate(panels):
            pixels = panel[i].squeeze(-1).numpy()  # (H, W, 3), or (H, W) for greyscale
            axes[i, j].imshow(pixels, cmap="gray" if pixels.ndim == 2 else None, vmin=0, vmax=1)
            axes[i, j].set_axis_off()
            if i == 0:
                axes[i, j].set_title(names[j], fontsize=9)
    legend = [Patch(color=MASK_COLOR, label="masked (hidden from the encoder)")]
    legend += [Patch(color="none", label=note)] if note else []  # a line of text under the grey patch
    fig.legend(handles=legend, loc="outside lower left", fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    save_png(fig, path)
    return Path(path)


def plot_comparison(histories: dict[str, Sequence[dict]], key: str, path: Path, ylabel: str, title: str = "") -> Path:
    """``key`` per epoch of several runs on one axis, e.g. val top-1 of FCMAE vs scratch fine-tuning."""
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for label, history in histories.items():
        ax.plot(*_series(history, "epoch", key), marker="o", label=label)
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.legend()
    save_png(fig, path)
    return Path(path)


def class_colors(count: int) -> np.ndarray:
    """One RGB colour ``(count, 3)`` in [0, 1] per class: tab10's, tab20's, or spread over turbo for more classes."""
    if count <= 20:
        return np.array(colormaps["tab10" if count <= 10 else "tab20"].colors[:count])
    return colormaps["turbo"](np.linspace(0, 1, count))[:, :3]


def _image_rows(n: int, names: Sequence[str], title: str) -> tuple[Figure, np.ndarray]:
    fig = Figure(figsize=(2.4 * len(names), 2.4 * n + 0.4 + (0.3 if title else 0)), layout="constrained")
    axes = fig.subplots(n, len(names), squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, name in zip(axes[0], names):
        ax.set_title(name, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig, axes


LEGEND_CLASSES = 20  # the most classes a segmentation figure's legend names


def plot_segmentations(images: Tensor, targets: Sequence[dict], logits: Tensor, classes: Sequence[str], path: Path,
                       title: str = "") -> Path:
    """One row per image ``(N, 3, H, W)``: the image, its labels (``targets[i]["semantic"]``; values outside the
    classes, unlabeled, in grey) and the predicted classes (argmax of ``logits (N, K, H, W)``), one colour per class.
    The legend names the classes on the page, at most :data:`LEGEND_CLASSES` of them (ADE20K has 150)."""
    colors = class_colors(len(classes))
    fig, axes = _image_rows(len(images), ("image", "labels", "prediction"), title)
    predicted = logits.argmax(1).cpu().numpy()
    unlabeled = np.vstack([colors, to_rgb(MASK_COLOR)])  # pixels of no class (ignored) in the grey of "hidden"
    on_page = set(np.unique(predicted))
    for i, image in enumerate(images):
        semantic = targets[i]["semantic"].numpy()
        semantic = np.where((semantic >= 0) & (semantic < len(classes)), semantic, len(classes))
        on_page |= set(np.unique(semantic)) - {len(classes)}
        axes[i, 0].imshow(denormalize(image.float()).movedim(0, -1).numpy())
        axes[i, 1].imshow(unlabeled[semantic])
        axes[i, 2].imshow(colors[predicted[i]])
    shown = sorted(on_page)[:LEGEND_CLASSES]
    handles = [Patch(color=colors[k], label=classes[k]) for k in shown]
    if len(on_page) > len(shown):
        handles.append(Patch(color="none", label=f"and {len(on_page) - len(shown)} more classes"))
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 5), fontsize=7, frameon=False)
    save_png(fig, path)
    return Path(path)


def plot_detections(images: Tensor, targets: Sequence[dict], detections: Sequence[dict], classes: Sequence[str],
                    path: Path, title: str = "", min_score: float = 0.5) -> Path:
    """One row per image ``(N, 3, H, W)``: the true instances (``targets[i]``: masks, boxes, labels ``0..K-1``) and
    the detections scoring at least ``min_score`` (Mask R-CNN's: labels ``1..K``), masks and boxes in their class's
    colour."""
    fig, axes = _image_rows(len(images), ("true instances", f"detections (score >= {min_score:g})"), title)
    for i, image in enumerate(images):
        found = {k: v.cpu() for k, v in detections[i].items()}
        keep = found["scores"] >= min_score
        shown = ((targets[i]["masks"], targets[i]["boxes"], targets[i]["labels"]),
                 (found["masks"][keep, 0] > 0.5, found["boxes"][keep], found["labels"][keep] - 1))
        for ax, (masks, boxes, labels) in zip(axes[i], shown):
            ax.imshow(draw_instances(image, masks, boxes, labels, len(classes), classes).movedim(0, -1).numpy())
    save_png(fig, path)
    return Path(path)


def draw_instances(image: Tensor, masks: Tensor, boxes: Tensor, labels: Tensor, num_classes: int,
                   classes: Sequence[str] | None = None) -> Tensor:
    """A normalized image ``(3, H, W)`` as uint8 with its instances drawn in their class's colour of
    :func:`class_colors`: masks ``(R, H, W)`` bool, boxes ``(R, 4)``, labels ``(R,)`` ``0..num_classes-1`` (boxes named
    by ``classes`` where given)."""
    pixels = (255 * denormalize(image.float())).to(torch.uint8)
    if not len(labels):  # torchvision warns about an empty set
        return pixels
    colors = [tuple(int(255 * v) for v in class_colors(num_classes)[k]) for k in labels.tolist()]
    drawn = draw_segmentation_masks(pixels, masks, alpha=0.45, colors=colors)
    names = [classes[k] for k in labels.tolist()] if classes is not None else None
    return draw_bounding_boxes(drawn, boxes, labels=names, colors=colors)
