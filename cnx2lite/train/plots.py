"""Run figures as PNG files: training curves and FCMAE reconstruction grids (no pyplot state, so
they draw the same in scripts, DDP workers and notebooks)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

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


def plot_curves(history: Sequence[dict], path: Path, title: str = "") -> Path:
    """Loss (train per logged step, val per epoch) and, when there, val top-1 (+ EMA, + the kNN monitor's) against
    epochs."""
    accuracy = [k for k in ("val_top1", "ema_top1", "knn_top1") if _series(history, "epoch", k)[0]]
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
        axes[1].plot(*_series(history, "epoch", key), marker="o", label=key.replace("_top1", " top-1"))
    if accuracy:
        axes[1].set(xlabel="epoch", ylabel="%", title="validation top-1")
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
