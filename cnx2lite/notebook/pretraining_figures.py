"""Figures and baselines of notebook 5 (FCMAE pre-training, then fine-tuning).

- what a norm-pix loss means: the loss of trivial predictions (:func:`zero_prediction`, the patch mean;
  :func:`nearest_visible_prediction`, a copy of the nearest visible patch) beside the model's, on the same
  images and masks (:func:`loss_comparison`), and their distributions (:func:`plot_loss_comparison`);
- reconstructions shown in the space the loss compares them in (:func:`plot_normalized_reconstructions`);
- what the features are worth while the loss falls: the kNN monitor per pretraining epoch (:func:`plot_knn_curve`).

The model's anatomy (blocks, parameter counts, the decoder step by step, the recipes) is :mod:`.anatomy`.

Patches are ``(N, L, D)`` with ``L = h*w`` cells in row-major order and ``D = 32*32*3`` pixels, as
:func:`cnx2lite.fcmae.patchify` gives them; masks are ``(N, h, w)``, True = masked.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb as color_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..amp import autocast, resolve_amp
from ..fcmae import FCMAE, patch_statistics, patchify
from ..models import PATCH_SIZE
from ..rundir import load_checkpoint
from ..train.seeding import derive_seed
from ..train.tasks import seeded_masks
from .plotting import VISIBLE_COLOR, draw_masked_photo, grid_lines, mask_legend, to_rgb

NORMALIZED_RANGE = 2.5  # normalized pixel values in [-2.5, 2.5] fill the display range [0, 1]


# --------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------
def load_fcmae(run_dir: str | Path) -> tuple[FCMAE, dict]:
    """The FCMAE of a pre-training run directory (its newest checkpoint), in eval mode, and the run's
    ``config.json`` (the resolved config, plus what the data gave: ``classes``, ``train_images``, ...)."""
    c = json.loads((Path(run_dir) / "config.json").read_text())
    model = FCMAE.from_config(c)
    model.load_state_dict(load_checkpoint(run_dir)["model"])
    return model.eval(), c


def read_history(run_dir: str | Path) -> list[dict[str, str]]:
    """The rows of a run's ``metrics.csv`` (values as strings, empty where not measured), in the form of
    ``RunResult.history``."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def last_value(history: list[dict], key: str) -> float:
    """The last epoch row's value of ``key`` (e.g. ``val_loss``) in a history (``metrics.csv`` rows, whose
    values are strings, or ``RunResult.history``, whose values are numbers or None)."""
    return float([r for r in history if r["kind"] == "epoch" and r.get(key) not in (None, "")][-1][key])


def epoch_series(history: list[dict], key: str) -> tuple[list[float], list[float]]:
    """The epochs at which a run measured ``key`` (e.g. ``knn_top1``) and the values, from its epoch rows."""
    rows = [r for r in history if r["kind"] == "epoch" and r.get(key) not in (None, "")]
    return [float(r["epoch"]) for r in rows], [float(r[key]) for r in rows]


def top1_standard_error(top1: float, images: int) -> float:
    """The binomial standard error, in points, of a top-1 of ``top1`` % measured on ``images`` images."""
    p = top1 / 100
    return 100 * (p * (1 - p) / images) ** 0.5


def plot_knn_curve(histories: dict[str, list[dict]], val_images: int, title: str) -> Figure:
    """Pretraining runs (``{label: metrics.csv rows}``) epoch by epoch. Left: the val loss. Right: the kNN monitor
    (top-1 on val of a kNN on the frozen encoder's features) with +-1 binomial standard error over ``val_images``,
    zoomed to the data like the loss, so that a change can be read against its noise. The first run is drawn on top."""
    fig = Figure(figsize=(10, 3.4), dpi=80, layout="constrained")
    loss_ax, knn_ax = fig.subplots(1, 2, sharex=True)
    for k, (label, history) in enumerate(histories.items()):
        style = {"marker": "osD^v"[k % 5], "ms": 7 if k == 0 else 5, "zorder": 2 + len(histories) - k,
                 "color": f"C{k}"}
        loss_ax.plot(*epoch_series(history, "val_loss"), label=label, **style)
        epochs, top1 = epoch_series(history, "knn_top1")
        knn_ax.errorbar(epochs, top1, [top1_standard_error(t, val_images) for t in top1], capsize=3, **style)
    loss_ax.set(xlabel="pretraining epoch", ylabel="val loss (masked patches, normalized pixels)",
                title="what FCMAE minimizes")
    knn_ax.set(xlabel="pretraining epoch", ylabel=f"kNN top-1 on val (%), +-1 s.e. ({val_images} images)",
               title="what the encoder's features are worth")
    loss_ax.legend(fontsize=8)
    for ax in (loss_ax, knn_ax):
        ax.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------------
# The loss, and what trivial predictions score
# --------------------------------------------------------------------------------------------------
def normalized_patches(imgs: Tensor) -> Tensor:
    """``imgs (N, C, H, W)`` -> norm-pix targets ``(N, L, D)``: each patch minus its mean, over its std (all
    channels together), exactly as :meth:`FCMAE.forward_loss` builds them."""
    patches = patchify(imgs)
    mean, std = patch_statistics(patches)
    return (patches - mean) / std


def masked_patch_losses(pred: Tensor, target: Tensor, mask: Tensor) -> Tensor:
    """Per-patch MSE ``(M,)`` over the masked patches only, for ``pred, target (N, L, D)`` and ``mask (N, h, w)``;
    its mean is FCMAE's loss."""
    return (pred.float() - target.float()).square().mean(dim=-1)[mask.flatten(1)]


def zero_prediction(target: Tensor) -> Tensor:
    """Predict each patch's own mean color: in normalized space that is 0 everywhere. ``(N, L, D)``."""
    return torch.zeros_like(target)


def nearest_visible_prediction(target: Tensor, mask: Tensor) -> Tensor:
    """Predict each masked patch as a copy of the nearest visible one (normalized), ``(N, L, D)``: nearest by the
    distance between cell centers, ties to the first in row-major order. Visible patches copy themselves."""
    n, h, w = mask.shape
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    centers = torch.stack([rows.flatten(), cols.flatten()], dim=1).float()  # (L, 2)
    distance = torch.cdist(centers, centers)  # (L, L): from cell to candidate source
    distance = distance.expand(n, -1, -1).masked_fill(mask.flatten(1)[:, None, :], float("inf"))  # masked: no source
    source = distance.argmin(dim=-1)  # (N, L), the first of equal minima
    return torch.gather(target, 1, source[..., None].expand(-1, -1, target.shape[-1]))


@dataclass
class LossComparison:
    """Per-masked-patch losses ``(M,)`` of the model and of two trivial predictions, on the same patches."""

    model: Tensor
    patch_mean: Tensor
    nearest_visible: Tensor
    images: int

    def means(self) -> dict[str, float]:
        return {"FCMAE model": self.model.mean().item(), "predict the patch mean (0)": self.patch_mean.mean().item(),
                "copy the nearest visible patch": self.nearest_visible.mean().item()}


@torch.no_grad()
def loss_comparison(model: FCMAE, val_set: Dataset, config: dict) -> LossComparison:
    """The model and both baselines on every image of ``val_set``, with the masks the training engine used for
    the run's ``val_loss`` (seeded by batch position, batches of ``config["batch_size"]`` on one process) and
    under the run's autocast, so the model's mean loss reproduces the run's last ``val_loss``."""
    dtype = resolve_amp(config["amp"], torch.device("cpu"))
    out: dict[str, list[Tensor]] = {"model": [], "patch_mean": [], "nearest_visible": []}
    for index, (imgs, _) in enumerate(DataLoader(val_set, batch_size=config["batch_size"], shuffle=False)):
        seeds = torch.tensor([derive_seed(config["seed"], "mask", index, i) for i in range(len(imgs))])
        mask = seeded_masks(seeds, config["img_size"], config["mask_ratio"], imgs.device)  # (N, h, w)
        with autocast(torch.device("cpu"), dtype):
            pred = model(imgs, mask)[1]  # (N, D, h, w)
        target = normalized_patches(imgs)  # (N, L, D)
        out["model"].append(masked_patch_losses(pred.flatten(2).transpose(1, 2), target, mask))
        out["patch_mean"].append(masked_patch_losses(zero_prediction(target), target, mask))
        out["nearest_visible"].append(masked_patch_losses(nearest_visible_prediction(target, mask), target, mask))
    return LossComparison(**{k: torch.cat(v) for k, v in out.items()}, images=len(val_set))


def plot_loss_comparison(result: LossComparison, history: list[dict], title: str) -> Figure:
    """Left: the run's train and val loss per epoch (``metrics.csv`` rows) against the baselines' mean losses.
    Right: histograms of the per-masked-patch loss of the model and of both baselines, means dashed."""
    fig = Figure(figsize=(12, 3.9), layout="constrained")
    curve, hist = fig.subplots(1, 2, width_ratios=(1, 1.25))
    means = result.means()
    colors = dict(zip(means, ("tab:blue", "tab:orange", "tab:green")))
    for kind, key, style, label in (("train", "train_loss", "-", "train loss (logged batches)"),
                                    ("epoch", "val_loss", "o-", "val loss")):
        rows = [r for r in history if r["kind"] == kind and r.get(key) not in (None, "")]
        curve.plot([float(r["epoch"]) for r in rows], [float(r[key]) for r in rows], style, ms=4, label=label,
                   color="tab:blue" if kind == "epoch" else "tab:cyan", lw=1 if kind == "train" else 1.5)
    for label in list(means)[1:]:
        curve.axhline(means[label], color=colors[label], ls="--", label=f"{label} (no training)")
    curve.set(xlabel="epoch", ylabel="loss (MSE on masked patches, normalized pixels)",
              title="pre-training loss against trivial predictions")
    curve.set_ylim(0, None)
    curve.legend(fontsize=8, loc="lower left")
    curve.grid(alpha=0.3)
    high = max(3.0, float(torch.quantile(result.nearest_visible, 0.99)))
    bins = np.linspace(0, high, 61)
    for (label, mean), values in zip(means.items(), (result.model, result.patch_mean, result.nearest_visible)):
        hist.hist(values.clamp(max=high).numpy(), bins=bins, alpha=0.5, color=colors[label],
                  label=f"{label}: mean {mean:.3f}")
        hist.axvline(mean, color=colors[label], ls="--", lw=1.5)
    hist.set(xlabel="per-patch MSE (normalized pixels; the last bin holds everything beyond)",
             ylabel="masked val patches (log scale)", yscale="log",
             title=f"per masked patch, {result.images} val images, the run's val masks")
    hist.legend(fontsize=8)
    hist.grid(alpha=0.3)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------------------------------
# Reconstructions, in the loss's space and de-normalized
# --------------------------------------------------------------------------------------------------
def _normalized_image(patches: Tensor, mask: Tensor) -> np.ndarray:
    """``(L, D)`` normalized patches -> ``(H, W, 3)`` display image: ``0.5 + v / (2 * NORMALIZED_RANGE)`` per
    channel at masked cells, white at visible ones (not scored)."""
    h, w = mask.shape
    img = patches.reshape(h, w, PATCH_SIZE, PATCH_SIZE, 3).permute(0, 2, 1, 3, 4).reshape(h * PATCH_SIZE,
                                                                                          w * PATCH_SIZE, 3)
    shown = (0.5 + img / (2 * NORMALIZED_RANGE)).clamp(0, 1).numpy()
    visible = ~mask.repeat_interleave(PATCH_SIZE, 0).repeat_interleave(PATCH_SIZE, 1).numpy()
    shown[visible] = color_rgb(VISIBLE_COLOR)
    return shown


def _outline_cells(ax: Axes, mask: Tensor) -> None:
    """A black frame around each masked cell (the cells the loss scores)."""
    for r, c in mask.nonzero().tolist():
        ax.add_patch(Rectangle((c * PATCH_SIZE - 0.5, r * PATCH_SIZE - 0.5), PATCH_SIZE, PATCH_SIZE, fill=False,
                               ec="black", lw=0.8))


@torch.no_grad()
def plot_normalized_reconstructions(model: FCMAE, imgs: Tensor, mask: Tensor, title: str) -> Figure:
    """One row per image ``imgs (N, 3, H, W)`` with ``mask (N, h, w)``: the photo, what the encoder sees, the
    normalized target and the model's normalized prediction on the masked cells (what the loss compares, with the
    per-image loss), and the prediction de-normalized with each true patch's mean and std (``FCMAE.reconstruct``)."""
    pred = model(imgs, mask)[1].flatten(2).transpose(1, 2).float()  # (N, L, D)
    target = normalized_patches(imgs)
    denormalized = model.reconstruct(imgs, mask).pasted
    names = ("photo", "encoder input", "target\n(normalized patches)", "prediction, normalized\n(the model's output)",
             "prediction de-normalized with the\nTRUE patch mean & std, pasted")
    n = len(imgs)
    fig = Figure(figsize=(12, 2.55 * n + 1.0), layout="constrained")
    axes = fig.subplots(n, 5, squeeze=False)
    for i in range(n):
        m = mask[i]
        loss = masked_patch_losses(pred[i:i + 1], target[i:i + 1], m[None]).mean().item()
        baseline = masked_patch_losses(zero_prediction(target[i:i + 1]), target[i:i + 1], m[None]).mean().item()
        axes[i, 0].imshow(to_rgb(imgs[i]), interpolation="nearest")
        draw_masked_photo(axes[i, 1], imgs[i], m)
        axes[i, 2].imshow(_normalized_image(target[i], m), interpolation="nearest")
        axes[i, 3].imshow(_normalized_image(pred[i], m), interpolation="nearest")
        axes[i, 4].imshow(to_rgb(denormalized[i]), interpolation="nearest")
        axes[i, 3].set_xlabel(f"loss {loss:.2f} (patch-mean baseline {baseline:.2f})", fontsize=9)
        for j, ax in enumerate(axes[i]):
            if j in (2, 3, 4):
                _outline_cells(ax, m)
            if j in (2, 3, 4):
                grid_lines(ax, *m.shape, step=PATCH_SIZE, color="0.6", lw=0.5)
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(names[j], fontsize=9)
    extra = [Patch(fc="none", ec="black", lw=1.5, label="frame: masked cell, scored by the loss"),
             Patch(fc="#808080", ec="black", label=f"normalized 0 (= the patch mean); +-{NORMALIZED_RANGE} std "
                                                   "span the color range")]
    fig.suptitle(title)
    mask_legend(fig, masked="masked (hidden from the encoder)",
                visible="visible (photo; white in the normalized panels: not scored)", extra=extra, ncols=2)
    return fig
