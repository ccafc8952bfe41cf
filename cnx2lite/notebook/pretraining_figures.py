"""Figures and baselines of notebook 5 (FCMAE pre-training, then fine-tuning).

- what a norm-pix loss means: the loss of trivial predictions (:func:`zero_prediction`, the patch mean;
  :func:`nearest_visible_prediction`, a copy of the nearest visible patch) beside the model's, on the same
  images and masks (:func:`loss_comparison`), and their distributions (:func:`plot_loss_comparison`);
- reconstructions shown in the space the loss compares them in (:func:`plot_normalized_reconstructions`);
- the model's anatomy: the V1 and V2 blocks (:func:`plot_block_diagrams`), parameters per part
  (:func:`parameter_counts`, :func:`plot_parameter_budget`) and the decoder step by step
  (:func:`decoder_steps`).

Patches are ``(N, L, D)`` with ``L = h*w`` cells in row-major order and ``D = 32*32*3`` pixels, as
:func:`cnx2lite.fcmae.patchify` gives them; masks are ``(N, h, w)``, True = masked.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb as color_rgb
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch, Rectangle
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..amp import autocast, resolve_amp
from ..fcmae import FCMAE, patch_statistics, patchify
from ..masking import mask_grid, num_visible
from ..models import PATCH_SIZE
from ..reproduce import SCALES
from ..rundir import load_checkpoint
from ..train import TrainConfig, load_preset
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
    model = FCMAE(c["model"], decoder_dim=c["decoder_dim"], decoder_depth=c["decoder_depth"],
                  mask_ratio=c["mask_ratio"], norm_pix_loss=c["norm_pix_loss"], backend=c["backend"],
                  block=c["block"], grn_aggregation=c["grn_aggregation"], sparse=c["sparse_encoder"])
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


# --------------------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------------------
BLOCK_STEPS = (  # (label, parameters for channel width C, in V1, in V2)
    ("7x7 depthwise conv", "49C + C", True, True),
    ("LayerNorm", "2C", True, True),
    ("Linear C -> 4C", "4C^2 + 4C", True, True),
    ("GELU", "0", True, True),
    ("GRN (global response norm)", "2 x 4C", False, True),
    ("Linear 4C -> C", "4C^2 + C", True, True),
    ("LayerScale (x gamma, init 1e-6)", "C", True, False),
    ("+ input (residual, drop path)", "0", True, True),
)
SHARED_COLOR, V2_COLOR, V1_COLOR = "#dbe9f6", "#b7e1b0", "#f6c8a8"


def plot_block_diagrams() -> Figure:
    """The ConvNeXt V1 and V2 blocks side by side, top to bottom, with each layer's parameter count."""
    fig = Figure(figsize=(8.5, 5.6), layout="constrained")
    ax = fig.subplots()
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.6, len(BLOCK_STEPS) + 0.4)
    ax.set_axis_off()
    for x, version in ((0.3, "V1"), (5.3, "V2")):
        ax.text(x + 2.2, len(BLOCK_STEPS) + 0.1, f"ConvNeXt {version} block", ha="center", fontsize=11,
                weight="bold")
        previous = None
        for k, (label, params, in_v1, in_v2) in enumerate(BLOCK_STEPS):
            y = len(BLOCK_STEPS) - 1 - k
            present = in_v1 if version == "V1" else in_v2
            if not present:
                ax.text(x + 2.35, y + 0.05, "(nothing here)", ha="left", va="center", fontsize=8, color="0.5")
                continue
            color = SHARED_COLOR if in_v1 and in_v2 else (V2_COLOR if in_v2 else V1_COLOR)
            ax.add_patch(FancyBboxPatch((x, y - 0.3), 4.4, 0.65, boxstyle="round,pad=0.02", fc=color, ec="0.3"))
            ax.text(x + 0.15, y + 0.02, label, va="center", fontsize=9)
            ax.text(x + 4.3, y + 0.02, params, va="center", ha="right", fontsize=8, color="0.25")
            if previous is not None:
                ax.annotate("", (x + 2.2, y + 0.37), (x + 2.2, previous - 0.32),
                            arrowprops=dict(arrowstyle="->", color="0.3", lw=1))
            previous = y
    ax.legend(handles=[Patch(fc=SHARED_COLOR, ec="0.3", label="in both"),
                       Patch(fc=V2_COLOR, ec="0.3", label="V2 adds (after GELU)"),
                       Patch(fc=V1_COLOR, ec="0.3", label="V1 only (V2 drops it)")],
              loc="lower center", ncol=3, fontsize=9, bbox_to_anchor=(0.5, -0.1))
    ax.set_title("One block on an (N, C, H, W) map; right-hand numbers: parameters for width C")
    return fig


def _count(*modules: torch.nn.Module | torch.nn.Parameter) -> int:
    return sum(m.numel() if isinstance(m, torch.nn.Parameter) else sum(p.numel() for p in m.parameters())
               for m in modules)


def parameter_counts(model: FCMAE) -> dict[str, int]:
    """Parameters per part of an FCMAE, in forward order: the encoder's stem and stages (each stage after the
    first with the downsampling layer in front of it), then the decoder's projection, mask token, blocks and
    prediction head. The values add up to ``sum(p.numel() for p in model.parameters())``."""
    enc = model.encoder
    counts = {"encoder stem": _count(enc.downsample_layers[0])}
    for i, stage in enumerate(enc.stages):
        extra = () if i == 0 else (enc.downsample_layers[i],)
        counts[f"encoder stage {i + 1} ({len(stage)} blocks, C={enc.dims[i]})"] = _count(stage, *extra)
    dim = model.proj.out_channels
    counts[f"decoder proj (1x1 conv {enc.dims[-1]} -> {dim})"] = _count(model.proj)
    counts["decoder mask token"] = _count(model.mask_token)
    counts[f"decoder blocks ({len(model.decoder)} V2 block, C={dim})"] = _count(model.decoder)
    counts[f"decoder pred (1x1 conv {dim} -> {model.pred.out_channels})"] = _count(model.pred)
    return counts


def plot_parameter_budget(budgets: dict[str, dict[str, int]], title: str) -> Figure:
    """One horizontal stacked bar per FCMAE (``{label: parameter_counts(model)}``): encoder parts in blues,
    decoder parts in oranges, in millions of parameters."""
    fig = Figure(figsize=(9, 1.2 + 0.9 * len(budgets)), layout="constrained")
    ax = fig.subplots()
    blues, oranges = matplotlib.colormaps["Blues"], matplotlib.colormaps["Oranges"]
    for row, (label, counts) in enumerate(budgets.items()):
        left, n_enc = 0.0, sum(k.startswith("encoder") for k in counts)
        for k, (part, count) in enumerate(counts.items()):
            encoder = part.startswith("encoder")
            color = blues(0.3 + 0.6 * k / max(n_enc - 1, 1)) if encoder else oranges(0.3 + 0.15 * (k - n_enc))
            name = part.split(" (")[0]
            ax.barh(row, count / 1e6, left=left, color=color, ec="white",
                    label=name if row == 0 else None)
            left += count / 1e6
        ax.text(left + 0.05, row, f"{left:.2f} M", va="center", fontsize=9)
    ax.set_yticks(range(len(budgets)), list(budgets))
    ax.invert_yaxis()
    ax.set(xlabel="parameters (millions)", title=title)
    ax.set_xlim(0, ax.get_xlim()[1] * 1.08)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return fig


@torch.no_grad()
def decoder_steps(model: FCMAE, imgs: Tensor, mask: Tensor) -> list[tuple[str, tuple[int, ...], int]]:
    """The FCMAE forward pass on ``imgs (N, 3, H, W)`` with ``mask (N, h, w)`` as ``(step, output shape,
    parameters)``: the sparse encoder, then the decoder one operation at a time, down to the patches."""
    latent = model.forward_encoder(imgs, mask)  # (N, C4, h, w)
    projected = model.proj(latent)  # (N, D, h, w)
    masked = mask.unsqueeze(1).to(projected.dtype)
    tokens = projected * (1 - masked) + model.mask_token * masked
    decoded = model.decoder(tokens)
    pred = model.pred(decoded)  # (N, p*p*3, h, w)
    patches = pred.flatten(2).transpose(1, 2)  # (N, L, p*p*3)
    return [("image", tuple(imgs.shape), 0),
            ("sparse encoder (visible cells only)", tuple(latent.shape), _count(model.encoder)),
            ("proj: 1x1 conv to the decoder width", tuple(projected.shape), _count(model.proj)),
            ("mask token written at the masked cells", tuple(tokens.shape), _count(model.mask_token)),
            ("decoder: ConvNeXt V2 block(s)", tuple(decoded.shape), _count(model.decoder)),
            ("pred: 1x1 conv to 32*32*3 pixels per cell", tuple(pred.shape), _count(model.pred)),
            ("as patches (N, cells, pixels) for the loss", tuple(patches.shape), 0)]


def mask_grid_label(img_size: int, mask_ratio: float) -> str:
    """``"3x3 (6 masked, 3 visible)"`` for the FCMAE mask grid of ``img_size`` pixels at ``mask_ratio``."""
    h, w = mask_grid(img_size)
    visible = num_visible(h * w, mask_ratio)
    return f"{h}x{w} ({h * w - visible} masked, {visible} visible)"


def recipe_table() -> list[tuple[str, str, str, str]]:
    """FCMAE pre-training settings, as rows ``(setting, cpu preset, reproduce --scale cpu, in1k-atto preset)``,
    read from the library: ``load_preset(..., task="pretrain")`` and ``cnx2lite.reproduce.SCALES["cpu"]``."""
    cpu, paper = load_preset("cpu", task="pretrain"), load_preset("in1k-atto", task="pretrain")
    rep = SCALES["cpu"]
    rep_config = load_preset(rep.preset, task="pretrain", img_size=rep.img_size, batch_size=rep.batch_size,
                             decoder_dim=rep.decoder_dim, epochs=rep.pretrain_epochs)
    columns = [(cpu, cpu.batch_size, f"{cpu.num_classes} classes x {cpu.images_per_class}"),
               (rep_config, rep.batch_size, "all of Imagenette train"),
               (paper, paper.global_batch, "ImageNet-1K (1.28 M)")]

    def peak_lr(c: TrainConfig, batch: int) -> float:
        return c.lr if c.lr is not None else c.base_lr * batch / 256

    return [("model", *(c.model for c, _, _ in columns)),
            ("image size (px)", *(str(c.img_size) for c, _, _ in columns)),
            ("mask grid (32 px cells)", *(mask_grid_label(c.img_size, c.mask_ratio) for c, _, _ in columns)),
            ("decoder width x depth", *(f"{c.decoder_dim} x {c.decoder_depth}" for c, _, _ in columns)),
            ("epochs", *(str(c.epochs) for c, _, _ in columns)),
            ("warmup epochs", *(f"{c.warmup_epochs:g}" for c, _, _ in columns)),
            ("effective batch", *(str(b) for _, b, _ in columns)),
            ("peak lr", *(f"{peak_lr(c, b):.2e}" for c, b, _ in columns)),
            ("lr per 256 images", *(f"{peak_lr(c, b) * 256 / b:.2e}" for c, b, _ in columns)),
            ("training images", *(images for _, _, images in columns))]
