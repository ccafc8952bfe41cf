"""Figures of notebook 1 (masking): masked photos, the mask at every stage resolution, the effective mask
ratio, the pretraining augmentation, and an excerpt of the report's reconstructions. Masked cells are
opaque grey in all of them, with the key of :func:`.plotting.mask_legend`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from PIL import Image
from torch import Tensor
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from ..images import load_image
from ..masking import NUM_STAGES, mask_grid, num_visible, stage_masks
from ..models import PATCH_SIZE
from ..transforms import IMAGENET_MEAN
from .plotting import (
    EDGE_COLOR,
    MASK_COLOR,
    VISIBLE_COLOR,
    draw_masked_photo,
    grid_lines,
    mask_legend,
    subplots,
    to_rgb,
)

MASKED_CMAP = ListedColormap([VISIBLE_COLOR, MASK_COLOR])  # 0 = visible, 1 = masked
HIGHLIGHT = "#d93025"  # the outline of one mask cell
VIEW_COLORS = ("#1a73e8", "#e37400", "#188038", "#a142f4", "#d01884", "#12b5cb")  # one per augmented view


def plot_masked_photos(imgs: Sequence[Tensor], masks: Sequence[Tensor | None], titles: Sequence[str]) -> Figure:
    """A row of photos ``(3, H_i, W_i)`` (sizes may differ), each masked by ``masks[i] (H_i/32, W_i/32)``
    (None: shown as it is), with the masked / visible key below."""
    fig, axes = subplots(1, len(imgs), figsize=(3.1 * len(imgs), 3.4), squeeze=False)
    for ax, img, mask, title in zip(axes[0], imgs, masks, titles):
        if mask is None:
            ax.imshow(to_rgb(img), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title, fontsize=10)
        else:
            draw_masked_photo(ax, img, mask, title)
    fig.tight_layout()
    mask_legend(fig)
    return fig


def plot_masked_photo(img: Tensor, mask: Tensor) -> Figure:
    """Side by side: the photo ``(3, H, W)``, and what the encoder may see (the cells where
    ``mask (h, w)`` is True painted opaque grey)."""
    return plot_masked_photos([img, img], [None, mask],
                              [f"photo, {img.shape[-2]}x{img.shape[-1]} px",
                               f"{int(mask.sum())} of {mask.numel()} cells masked, {int((~mask).sum())} visible"])


def plot_stage_masks(mask: Tensor, img: Tensor | None = None, highlight: tuple[int, int] | None = None,
                     stages: Sequence[int] = tuple(range(NUM_STAGES)), dims: Sequence[int] | None = None) -> Figure:
    """The mask ``(h, w)`` at every stage resolution (finest first), one panel each, with the positions
    that come from one mask cell outlined (``highlight = (row, col)`` of that cell; the first visible
    cell by default). ``stages`` are indices into :func:`~cnx2lite.masking.stage_masks` (0 = stage 1,
    the finest). With ``img (3, H, W)``, a first panel shows the masked photo."""
    per_stage = [m[0].numpy() for m in stage_masks(mask[None])]
    if highlight is None:
        visible = (~mask).nonzero()
        highlight = tuple(visible[0].tolist()) if len(visible) else (0, 0)
    panels = len(stages) + (img is not None)
    fig, axes = subplots(1, panels, figsize=(2.6 * panels, 3.0))
    axes = np.atleast_1d(axes)
    r, c = highlight
    if img is not None:
        draw_masked_photo(axes[0], img, mask, f"input {img.shape[-2]}x{img.shape[-1]} px")
        axes[0].add_patch(Rectangle((c * PATCH_SIZE - 0.5, r * PATCH_SIZE - 0.5), PATCH_SIZE, PATCH_SIZE,
                                    fill=False, ec=HIGHLIGHT, lw=2.5))
    for ax, i in zip(axes[panels - len(stages):], stages):
        m = per_stage[i]
        s = 2 ** (NUM_STAGES - 1 - i)
        ax.imshow(m, cmap=MASKED_CMAP, vmin=0, vmax=1, interpolation="nearest")
        if s > 1:  # thin lines: feature-map positions; thick lines: mask cells
            ax.set_xticks(np.arange(-0.5, m.shape[1], 1), minor=True)
            ax.set_yticks(np.arange(-0.5, m.shape[0], 1), minor=True)
            ax.grid(which="minor", color="#dadce0", lw=0.4)
            ax.tick_params(which="minor", length=0)
        grid_lines(ax, *mask.shape, step=s, color=EDGE_COLOR, lw=1.0)
        ax.add_patch(Rectangle((c * s - 0.5, r * s - 0.5), s, s, fill=False, ec=HIGHLIGHT, lw=2))
        channels = f", C={dims[i]}" if dims is not None else ""
        ax.set_title(f"stage {i + 1}: {m.shape[0]}x{m.shape[1]}{channels}\none cell = {s}x{s} positions", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    mask_legend(fig, extra=[Patch(fill=False, ec=HIGHLIGHT, lw=2, label="one mask cell")])
    return fig


def masked_percent(img_size: int, ratio: float) -> float:
    """The share of cells :func:`~cnx2lite.masking.random_mask` masks at ``img_size``, in %: ``int()``
    rounds the visible cells down, so it is at least ``100 * ratio``."""
    h, w = mask_grid(img_size)
    return 100 * (1 - num_visible(h * w, ratio) / (h * w))


def plot_effective_ratio(ratio: float = 0.6, sizes: Sequence[int] = tuple(range(32, 385, 32)),
                         marked: Sequence[int] = (96, 224)) -> Figure:
    """The masked share of cells against the image size (multiples of 32), the nominal ``ratio`` as a
    dashed line, and the sizes in ``marked`` annotated with their cell counts."""
    fig, ax = subplots(figsize=(7.0, 3.4))
    shares = [masked_percent(s, ratio) for s in sizes]
    ax.plot(sizes, shares, marker="o", color=EDGE_COLOR,
            label=r"masked cells: $r_{\mathrm{eff}} = 1 - \lfloor L\,(1 - r) \rfloor / L$")
    ax.axhline(100 * ratio, ls="--", color=HIGHLIGHT, label=f"nominal mask ratio $r$ = {ratio:.0%}")
    for s in marked:
        h, w = mask_grid(s)
        ax.annotate(f"{h * w - num_visible(h * w, ratio)} of {h * w} masked", (s, masked_percent(s, ratio)),
                    xytext=(8, 8), textcoords="offset points", fontsize=9)
    ax.set_xticks(list(sizes), [f"{s}\n{s // PATCH_SIZE}x{s // PATCH_SIZE}" for s in sizes], fontsize=8)
    ax.set(xlabel="image size (px) and mask grid (cells)", ylabel="masked cells (%)",
           title=f"Effective mask ratio at a nominal {ratio:.0%}: the visible cells are rounded down")
    ax.legend(fontsize=9)
    fig.tight_layout()
    return fig


@dataclass(frozen=True)
class PretrainView:
    """One draw of the pretraining transform: the view ``(3, S, S)`` it returns, the crop box
    ``(top, left, height, width)`` in the source photo's pixels, and whether it was flipped."""

    image: Tensor
    box: tuple[int, int, int, int]
    flipped: bool


def pretrain_views(photo: Image.Image, transform: T.Compose, n: int, seed: int = 0) -> list[PretrainView]:
    """``n`` draws of ``transform`` (:func:`~cnx2lite.transforms.pretrain_transform`: a ``RandomResizedCrop``,
    a ``RandomHorizontalFlip``, then tensor conversion) on ``photo``, run step by step to record each
    crop box and flip. The views are exactly what ``transform(photo)`` returns after
    ``torch.manual_seed(seed)``; the global random state is left as it was."""
    views = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for _ in range(n):
            img, box, flipped = photo, None, False
            for step in transform.transforms:
                if isinstance(step, T.RandomResizedCrop):
                    box = tuple(step.get_params(img, step.scale, step.ratio))
                    img = TF.resized_crop(img, *box, step.size, step.interpolation, antialias=step.antialias)
                elif isinstance(step, T.RandomHorizontalFlip):
                    flipped = bool(torch.rand(1) < step.p)
                    img = TF.hflip(img) if flipped else img
                else:
                    img = step(img)
            if box is None:
                raise ValueError("transform has no RandomResizedCrop; expected transforms.pretrain_transform(...)")
            views.append(PretrainView(img, box, flipped))
    return views


def plot_pretrain_views(photo: Image.Image, views: Sequence[PretrainView], masks: Tensor, title: str) -> Figure:
    """The photo with each view's crop box, then each view ``(3, S, S)`` masked by ``masks (n, S/32, S/32)``,
    in the colour of its box: what the encoder gets in one pretraining step."""
    fig, axes = subplots(1, len(views) + 1, figsize=(2.7 * (len(views) + 1), 3.4))
    ax = axes[0]
    ax.imshow(np.asarray(photo))
    for color, view in zip(VIEW_COLORS, views):
        top, left, h, w = view.box
        ax.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, ec=color, lw=2))
    ax.set(xlabel="x (px)", ylabel="y (px)")
    ax.set_title(f"photo {photo.width}x{photo.height} px", fontsize=10)
    ax.tick_params(labelsize=7)
    for ax, color, view, mask in zip(axes[1:], VIEW_COLORS, views, masks):
        area = view.box[2] * view.box[3] / (photo.width * photo.height)
        flipped = ", flipped" if view.flipped else ""
        draw_masked_photo(ax, view.image, mask, f"view: {area:.0%} of the photo{flipped}")
        ax.title.set_color(color)
        for spine in ax.spines.values():
            spine.set(color=color, lw=3)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    mask_legend(fig, extra=[Patch(fill=False, ec=EDGE_COLOR, lw=2, label="crop box (its colour = its view)")])
    return fig


def panel_rows(rgb: np.ndarray, min_height: int = 50) -> list[tuple[int, int]]:
    """The pixel-row spans ``[top, bottom)`` of the panel rows of a figure image ``(H, W, 3)`` in [0, 1]:
    runs of pixel rows that are not all white, at least ``min_height`` tall (shorter runs are text)."""
    ink = np.concatenate([[False], rgb.min(axis=(1, 2)) < 0.97, [False]])
    edges = np.flatnonzero(np.diff(ink.astype(np.int8)))
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2]) if b - a >= min_height]


def plot_reconstruction_excerpt(path: Path, rows: int = 2) -> Figure:
    """The title and the first ``rows`` rows of a reconstruction grid PNG (one row per image: original /
    masked / reconstruction / reconstruction + visible, as :mod:`cnx2lite.train.plots` draws it), pixel for
    pixel at 100 dpi, with a key below. That figure paints a masked cell as the encoder's input there,
    0 after normalization: the ImageNet mean colour, not the notebooks' grey. Show it with
    :func:`.plotting.as_jpeg` (the noise in its panels makes a PNG large)."""
    rgb = np.asarray(load_image(path), dtype=np.float32) / 255
    spans = panel_rows(rgb)
    if len(spans) < rows:
        raise ValueError(f"{path} has {len(spans)} rows of panels, asked for {rows}")
    crop = rgb[: min(spans[rows - 1][1] + 4, len(rgb))]
    height, width, key = crop.shape[0] / 100, crop.shape[1] / 100, 0.4  # inches at 100 dpi
    fig = Figure(figsize=(width, height + key), dpi=100)
    ax = fig.add_axes((0, key / (height + key), 1, height / (height + key)))
    ax.imshow(crop, interpolation="none", aspect="auto")
    ax.set_axis_off()
    fig.legend(handles=[Patch(fc=IMAGENET_MEAN, ec=EDGE_COLOR, lw=0.8,
                              label="masked (drawn as the encoder's input: 0 = the mean colour)"),
                        Patch(fc=VISIBLE_COLOR, ec=EDGE_COLOR, lw=0.8, label="visible")],
               loc="lower center", ncols=2, frameon=False, fontsize=9)
    return fig
