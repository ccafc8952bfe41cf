"""Figures and measurements of notebook 2 (sparse convolution): holes filling in under dense convs, the
mask pattern fading in a ConvNeXt, the distribution shift between zero-filled and complete images, the
measured sparse-vs-dense difference beside the paper's, and a masked image as a set of points. Where the time of
an FCMAE training step goes is :mod:`.step_timing`.

Conventions as in :mod:`.plotting`: images ``(3, H, W)`` normalized, masks ``(h, w)`` or ``(N, h, w)`` bool
cell grids (True = masked, one cell per 32x32 patch).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Iterator

import matplotlib
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.colors import to_rgb as color_rgb
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from torch import Tensor

from ..masking import pixel_mask, upsample_mask
from ..models import PATCH_SIZE, ConvNeXtV2
from ..sparse import sparse_forward_features
from .plotting import MASK_COLOR, draw_masked_photo, mask_legend, subplots, to_rgb

EDGE = "#00bcd4"  # the border of the masked cells (cyan: stands out from photos and the magma colormap)
DPI = 72  # figures stay small in the committed notebook
CONTENT_CMAP = matplotlib.colormaps["magma"].with_extremes(bad=MASK_COLOR)  # exactly 0 (masked out): grey
FILL_THRESHOLD = 0.1  # a masked position counts as filled above this share of the visible positions' mean content
BORDER = Line2D([], [], color=EDGE, lw=1.2, label="border of masked cells")


# --- the toy: a stack of 7x7 averaging convs -------------------------------------------------------

TOY_KERNEL = 7  # ConvNeXt's depthwise kernel size


def toy_conv(x: Tensor, visible: Tensor | None = None) -> Tensor:
    """One layer of the toy on ``x (C, H, W)``: each channel's 7x7 average, zero-padded. Given
    ``visible (H, W)`` (1 = visible pixel) it is a submanifold sparse conv emulated on the dense grid:
    mask the input, convolve, mask the output."""
    if visible is not None:
        return toy_conv(x * visible) * visible
    kernel = x.new_full((x.shape[0], 1, TOY_KERNEL, TOY_KERNEL), 1 / TOY_KERNEL**2)
    return F.conv2d(x[None], kernel, padding=TOY_KERNEL // 2, groups=x.shape[0])[0]


def visible_pixels(mask: Tensor) -> Tensor:
    """The cell mask ``(h, w)`` as the toy's pixel mask ``(32h, 32w)`` float: 1 = visible pixel, 0 = masked."""
    return (~pixel_mask(mask[None])[0]).float()


def toy_stack(x: Tensor, layers: int, visible: Tensor | None = None) -> list[Tensor]:
    """``x (C, H, W)`` after 0, 1, ..., ``layers`` :func:`toy_conv` layers (sparse given ``visible``)."""
    maps = [x]
    for _ in range(layers):
        maps.append(toy_conv(maps[-1], visible))
    return maps


def plot_fill_in(dense: Sequence[Tensor], sparse: Sequence[Tensor], depths: Sequence[int], mask: Tensor) -> Figure:
    """Rows: a stack of dense convs, then the same convs as submanifold (masked) convs (:func:`toy_stack`,
    the image ``(3, H, W)`` after each layer); columns: after ``depths[j]`` layers. A site whose features
    are all exactly zero (a hole nothing has written into) is painted :data:`MASK_COLOR`; a masked site
    that a conv filled shows the colour it was given. The borders of the masked cells are drawn in cyan."""
    fig, axes = subplots(2, len(depths), figsize=(1.9 * len(depths), 4.4), dpi=DPI, squeeze=False)
    edges = _mask_edges(mask)
    for row, (name, stack) in enumerate((("dense conv", dense), ("sparse conv", sparse))):
        for col, depth in enumerate(depths):
            ax, img = axes[row, col], stack[depth]
            rgb = to_rgb(img)
            rgb[(img == 0).all(0).numpy()] = color_rgb(MASK_COLOR)
            ax.imshow(rgb, interpolation="nearest")
            ax.plot(*edges, color=EDGE, lw=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            layers = f"{depth} layer{'s' if depth != 1 else ''}"
            ax.set_title(f"{layers}: {filled_pixels(img, mask):.0%} filled", fontsize=9)
            if col == 0:
                ax.set_ylabel(name, fontsize=10)
    fig.suptitle("7x7 averaging convs on the masked photo: dense convs close the holes, sparse ones do not",
                 fontsize=10)
    fig.tight_layout()
    mask_legend(fig, masked="masked, still empty (exactly 0)", visible="visible or filled (shows its colour)",
                extra=[BORDER])
    return fig


def filled_pixels(img: Tensor, mask: Tensor) -> float:
    """Fraction of the masked pixels of ``img (3, H, W)`` that are no longer empty (not all exactly zero)."""
    masked = pixel_mask(mask[None])[0]
    return float((img != 0).any(0)[masked].float().mean()) if masked.any() else 0.0


def filled_cells(img: Tensor, mask: Tensor) -> int:
    """How many masked cells of ``mask (h, w)`` are completely filled in ``img (3, H, W)``: no pixel empty."""
    empty = (img == 0).all(0).unflatten(0, (mask.shape[0], -1)).unflatten(2, (mask.shape[1], -1))  # (h, P, w, P)
    return int((~empty.any(3).any(1))[mask].sum())


def _mask_edges(mask: Tensor, step: float = PATCH_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Line segments (x, y with NaN breaks) along the borders between masked and visible cells of
    ``mask (h, w)``, in the coordinates of an image with ``step`` pixels per cell."""
    m = mask.numpy()
    h, w = m.shape
    xs: list[float] = []
    ys: list[float] = []
    for r, c in zip(*m.nonzero()):
        for dr, dc, ((x0, y0), (x1, y1)) in ((-1, 0, ((c, r), (c + 1, r))), (1, 0, ((c, r + 1), (c + 1, r + 1))),
                                             (0, -1, ((c, r), (c, r + 1))), (0, 1, ((c + 1, r), (c + 1, r + 1)))):
            rr, cc = r + dr, c + dc
            if 0 <= rr < h and 0 <= cc < w and not m[rr, cc]:
                xs += [x0 * step - 0.5, x1 * step - 0.5, np.nan]
                ys += [y0 * step - 0.5, y1 * step - 0.5, np.nan]
    return np.array(xs), np.array(ys)


# --- the mask pattern fading in a real ConvNeXt ----------------------------------------------------

@contextmanager
def _block_inputs(model: ConvNeXtV2) -> Iterator[list[Tensor]]:
    """Collects the input of every block's 7x7 dwconv (that is, the block's input map) while the
    context is open. All three encoders (plain dense, ``dense`` and ``gather`` backends) call
    ``block.dwconv`` on a full-size map, zero at masked positions for the sparse backends."""
    maps: list[Tensor] = []
    handles = [block.dwconv.register_forward_pre_hook(lambda _, args: maps.append(args[0].detach()))
               for stage in model.stages for block in stage]
    try:
        yield maps
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def depth_maps(model: ConvNeXtV2, x: Tensor, mask: Tensor, backend: str | None = None) -> list[Tensor]:
    """The feature maps of ``x (N, 3, H, W)`` at every depth: the input of each block (the first is the
    stem's output), then the last block's output; ``len = sum(depths) + 1``, each ``(N, C_i, H_i, W_i)``.
    ``backend=None``: the plain dense model on the zero-filled image (the dense-conv ablation); else the
    sparse encoder with that backend."""
    with _block_inputs(model) as maps:
        if backend is None:
            final = model.forward_features(x * ~pixel_mask(mask).unsqueeze(1))
        else:
            final = sparse_forward_features(model, x, mask, backend)
    return [*maps, final]


def photo_content(model: ConvNeXtV2, x: Tensor, mask: Tensor, backend: str | None = None) -> list[Tensor]:
    """How much of each position's features comes from the photo: ``||F(x) - F(blank)||`` over channels,
    where ``blank`` is an all-zero image (every pixel the dataset's mean colour) under the same mask and
    ``F`` is :func:`depth_maps`. One ``(N, H_i, W_i)`` map per depth. At a masked position, non-zero
    content means visible pixels have flowed into the hole."""
    photo = depth_maps(model, x, mask, backend)
    blank = depth_maps(model, torch.zeros_like(x), mask, backend)
    return [(a - b).norm(dim=1) for a, b in zip(photo, blank)]


def at_resolution(mask: Tensor, size: int) -> Tensor:
    """The cell mask ``(N, h, w)`` repeated to a ``size``-wide map ``(N, size, size * w / h)``."""
    return upsample_mask(mask, size // mask.shape[-1])


def filled_fraction(content: Tensor, mask: Tensor, threshold: float = FILL_THRESHOLD) -> float:
    """Fraction of masked positions of ``content (N, H_i, W_i)`` (from :func:`photo_content`) that carry
    photo content above ``threshold`` times the mean content of the visible positions."""
    masked = at_resolution(mask, content.shape[-1])
    return float((content[masked] > threshold * content[~masked].mean()).float().mean())


def stage_ends(depths: Sequence[int]) -> list[int]:
    """Indices into :func:`depth_maps` of the stem's output and of the end of each stage: the input of
    the next stage's first block (the stage's output after the 2x2 downsampling, which stays inside the
    cells and so fills no hole), and for the last stage the final output."""
    return [0, *np.cumsum(depths).tolist()]


def plot_mask_fading(content: Mapping[str, Sequence[Tensor]], mask: Tensor, depths: Sequence[int],
                     show: Sequence[int], title: str) -> Figure:
    """Left: one row of maps per encoder (``content[name]``: :func:`photo_content`, ``(N, H_i, W_i)`` per
    depth, under ``mask (N, h, w)``) for the first image at the depths ``show``, with the masked cells'
    borders and that image's filled fraction; right: the fraction of masked positions filled
    (:func:`filled_fraction`) over all N images at every depth, stage boundaries dotted."""
    names = list(content)
    fig = Figure(figsize=(2.0 * len(show) + 4.2, 2.1 * len(names) + 0.9), dpi=DPI)
    grid = fig.add_gridspec(len(names), len(show) + 1, width_ratios=[1] * len(show) + [2.3])
    for row, name in enumerate(names):
        for col, k in enumerate(show):
            c = content[name][k][0]
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(np.ma.masked_equal(c.numpy(), 0), cmap=CONTENT_CMAP, vmin=0, vmax=float(c.max()) or 1.0,
                      interpolation="nearest")
            ax.plot(*_mask_edges(mask[0], step=c.shape[-1] / mask.shape[-1]), color=EDGE, lw=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            filled = filled_fraction(content[name][k][:1], mask[:1])
            ax.set_title(f"{depth_label(k, depths)}: {filled:.0%} filled", fontsize=9)
            if col == 0:
                ax.set_ylabel(name, fontsize=9)
    ax = fig.add_subplot(grid[:, -1])
    for name in names:
        ax.plot([100 * filled_fraction(c, mask) for c in content[name]], marker="o", ms=3,
                label=f"{name} ({len(mask)} images)")
    for boundary in np.cumsum(depths)[:-1]:
        ax.axvline(boundary - 0.5, color="#5f6368", ls=":", lw=0.8)
    ax.set_xlabel("blocks applied (dotted: downsampling)")
    ax.set_ylabel("masked positions filled (%)")
    ax.set_ylim(-3, 103)
    ax.legend(fontsize=8, loc="center right")
    ax.set_title(f"filled = photo content > {FILL_THRESHOLD:.0%} of\nthe visible positions' mean", fontsize=9)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.legend(handles=[Patch(fc=MASK_COLOR, label="no photo content at all (exactly 0)"),
                        Patch(fc=CONTENT_CMAP(0.0), label="little photo content"),
                        Patch(fc=CONTENT_CMAP(1.0), ec="#3c4043", lw=0.5, label="most photo content (per panel)"),
                        BORDER],
               loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=4, frameon=False, fontsize=9)
    return fig


def depth_label(k: int, depths: Sequence[int]) -> str:
    """A short name for depth ``k`` of :func:`depth_maps`: ``stem``, ``after stage i`` or ``after k blocks``."""
    ends = stage_ends(depths)
    return "stem" if k == 0 else f"after stage {ends.index(k)}" if k in ends else f"after {k} blocks"


# --- the distribution shift: zero-filled pretraining inputs vs complete fine-tuning inputs ----------

def channel_shift(pretrain: Tensor, finetune: Tensor) -> float:
    """How far the pretraining features ``(M, C)`` sit from the fine-tuning ones ``(M', C)``: the mean
    over channels of ``|mean_pretrain - mean_finetune| / std_finetune`` (0: same channel means)."""
    return float(((pretrain.mean(0) - finetune.mean(0)).abs() / (finetune.std(0) + 1e-6)).mean())


def positions(maps: Tensor, where: Tensor) -> Tensor:
    """The feature vectors ``(M, C)`` of ``maps (N, C, H, W)`` at ``where (N, H, W)`` bool."""
    return maps.permute(0, 2, 3, 1)[where]


def feature_shift(dense_conv: ConvNeXtV2, sparse: ConvNeXtV2, x: Tensor, mask: Tensor) -> dict[str, list[float]]:
    """:func:`channel_shift` at every depth between what each encoder computed in pretraining (the
    masked images ``x (N, 3, H, W)`` under ``mask``) and what it computes at fine-tuning (the complete
    images, densely). The dense-conv encoder is split into its masked and visible positions; the sparse
    encoder computes nothing at masked positions, so only its visible ones count."""
    everywhere = torch.zeros_like(mask)
    shifts: dict[str, list[float]] = {"dense conv: masked positions": [], "dense conv: visible positions": [],
                                      "sparse: visible positions": []}
    for model, backend in ((dense_conv, None), (sparse, "gather")):
        pre, fine = depth_maps(model, x, mask, backend), depth_maps(model, x, everywhere)
        for p, f in zip(pre, fine):
            masked = at_resolution(mask, p.shape[-1])
            reference = positions(f, torch.ones_like(masked))
            if backend is None:
                shifts["dense conv: masked positions"].append(channel_shift(positions(p, masked), reference))
                shifts["dense conv: visible positions"].append(channel_shift(positions(p, ~masked), reference))
            else:
                shifts["sparse: visible positions"].append(channel_shift(positions(p, ~masked), reference))
    return shifts


def plot_distribution_shift(x: Tensor, mask: Tensor, shifts: Mapping[str, Sequence[float]],
                            depths: Sequence[int]) -> Figure:
    """Left: the histogram of normalized pixel values of ``x (N, 3, H, W)`` complete (fine-tuning) and
    zero-filled under ``mask`` (dense-conv pretraining); right: :func:`feature_shift` per depth."""
    fig, (left, right) = subplots(1, 2, figsize=(10.5, 3.6), dpi=DPI, width_ratios=[1, 1.3])
    zero_filled = x * ~pixel_mask(mask).unsqueeze(1)
    bins = np.linspace(-2.2, 2.7, 50)
    for values, label, color in ((x, "complete (fine-tuning)", "#1a73e8"),
                                 (zero_filled, "zero-filled (dense-conv pretraining)", "#e8710a")):
        left.hist(values.flatten().numpy(), bins=bins, histtype="step", lw=1.5, color=color, label=label,
                  weights=np.full(values.numel(), 100 / values.numel()))
    left.set_xlabel("pixel value (normalized: (pixel - mean) / std)")
    left.set_yscale("log")
    left.set_ylabel("share of pixel values (%, log scale)")
    left.set_title(f"input: {float((zero_filled == 0).float().mean()):.0%} of the pretraining values are exactly 0",
                   fontsize=10)
    left.legend(fontsize=8, loc="upper left")
    for name, values in shifts.items():
        right.plot(values, marker="o", ms=3, label=name)
    for boundary in np.cumsum(depths)[:-1]:
        right.axvline(boundary - 0.5, color="#5f6368", ls=":", lw=0.8)
    right.set_xlabel("blocks applied (dotted: downsampling)")
    right.set_ylabel("channel-mean shift (fine-tuning std)")
    right.set_title("features: pretraining input vs complete image", fontsize=10)
    right.legend(fontsize=8)
    fig.suptitle("What dense-conv pretraining sees vs what fine-tuning sees", fontsize=10)
    fig.tight_layout()
    return fig


# --- the masked image as a sparse set ----------------------------------------------------------------

def plot_sparse_set(img: Tensor, mask: Tensor, stride: int = 4) -> Figure:
    """A masked image ``(3, H, W)`` under ``mask (h, w)`` as what a sparse ConvNet stores: a set of
    visible points (one per ``stride`` pixels, the stem's resolution), each a coordinate plus a feature
    vector (here its colour), next to the dense view with its holes."""
    vis = ~pixel_mask(mask[None])[0][::stride, ::stride]
    rows, cols = vis.nonzero(as_tuple=True)
    colors = to_rgb(img)[::stride, ::stride][rows.numpy(), cols.numpy()]
    fig, axes = subplots(1, 2, figsize=(7.6, 4.1), dpi=DPI)
    draw_masked_photo(axes[0], img, mask, "dense view: a full array with holes")
    ax = axes[1]
    ax.scatter(cols.numpy(), rows.numpy(), c=colors, s=13, marker="s", lw=0)
    ax.set_xlim(-0.5, vis.shape[1] - 0.5)
    ax.set_ylim(vis.shape[0] - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_title(f"sparse view: {len(rows)} sites = (row, col) + features", fontsize=10)
    ax.set_xlabel(f"col (stem grid: 1 site = {stride}x{stride} px)")
    ax.set_ylabel("row")
    fig.suptitle("The same masked image, stored two ways", fontsize=10)
    fig.tight_layout()
    site = Line2D([], [], ls="", marker="s", ms=5, color="#5f6368", label="sparse view: one stored site")
    mask_legend(fig, masked="masked (dense view: stored as zeros)", visible="visible (dense view)", extra=[site])
    return fig
