"""Figures of notebook 2 (sparse convolution): holes filling in, a masked image as a set of points,
leaked information per encoder, and throughput."""
from __future__ import annotations

from typing import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from ..masking import pixel_mask
from ..models import PATCH_SIZE
from .plotting import MASK_COLOR, draw_masked_photo, subplots, to_rgb

EMPTY_COLOR = "#202124"  # a site with no features at all (exactly zero), e.g. a masked pixel


def plot_fill_in(dense: Sequence[Tensor], sparse: Sequence[Tensor], depths: Sequence[int], mask: Tensor) -> Figure:
    """Rows: a stack of dense convs, then the same convs as submanifold (masked) convs; columns: the
    image after ``depths[j]`` layers. Images are ``(3, H, W)`` normalized tensors. Empty sites (all
    features exactly zero) are drawn dark, so the holes visibly shrink when a conv fills them; the
    borders of the masked cells are drawn in red."""
    fig, axes = subplots(2, len(depths), figsize=(2.2 * len(depths), 4.9))
    edges = _mask_edges(mask)
    for row, (name, images) in enumerate((("dense conv", dense), ("sparse conv", sparse))):
        for col, (img, depth) in enumerate(zip(images, depths)):
            ax = axes[row, col]
            rgb = to_rgb(img)
            rgb[(img == 0).all(0).numpy()] = matplotlib.colors.to_rgb(EMPTY_COLOR)
            ax.imshow(rgb, interpolation="nearest")
            ax.plot(*edges, color="#d93025", lw=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            leak = _masked_energy(img, mask)
            ax.set_title(f"{depth} layer{'s' if depth != 1 else ''}: {leak:.0%} filled", fontsize=9)
            if col == 0:
                ax.set_ylabel(name, fontsize=10)
    fig.tight_layout()
    return fig


def _masked_energy(img: Tensor, mask: Tensor) -> float:
    """Fraction of masked pixels that are no longer empty (not all features exactly zero)."""
    masked = pixel_mask(mask[None])[0]
    if masked.sum() == 0:
        return 0.0
    return float((img != 0).any(0)[masked].float().mean())


def _mask_edges(mask: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Line segments (x, y with NaN breaks) along the borders between masked and visible cells."""
    m = mask.numpy()
    h, w = m.shape
    xs: list[float] = []
    ys: list[float] = []
    p = PATCH_SIZE
    for r in range(h):
        for c in range(w):
            if not m[r, c]:
                continue
            for dr, dc, seg in ((-1, 0, ((c, r), (c + 1, r))), (1, 0, ((c, r + 1), (c + 1, r + 1))),
                                (0, -1, ((c, r), (c, r + 1))), (0, 1, ((c + 1, r), (c + 1, r + 1)))):
                rr, cc = r + dr, c + dc
                if 0 <= rr < h and 0 <= cc < w and not m[rr, cc]:
                    (x0, y0), (x1, y1) = seg
                    xs += [x0 * p - 0.5, x1 * p - 0.5, np.nan]
                    ys += [y0 * p - 0.5, y1 * p - 0.5, np.nan]
    return np.array(xs), np.array(ys)


def plot_sparse_set(img: Tensor, mask: Tensor, stride: int = 4) -> Figure:
    """A masked image as what a sparse ConvNet stores: a set of visible points (one per ``stride``
    pixels, the stem's resolution), each a coordinate plus a feature vector (here its colour)."""
    vis = ~pixel_mask(mask[None])[0][::stride, ::stride]
    rgba = np.concatenate([to_rgb(img)[::stride, ::stride], vis.numpy()[..., None].astype(float)], axis=-1)
    fig, axes = subplots(1, 2, figsize=(8.2, 4.0))
    draw_masked_photo(axes[0], img, mask, "dense view: a full array with holes")
    ax = axes[1]
    ax.imshow(rgba, interpolation="nearest")  # masked sites fully transparent: they do not exist
    ax.set_title(f"sparse view: {int(vis.sum())} sites = (row, col) + features", fontsize=10)
    ax.set_xlabel("col")
    ax.set_ylabel("row")
    fig.tight_layout()
    return fig


def plot_leak(changes: dict[str, Tensor], mask: Tensor) -> Figure:
    """One panel per encoder: how much each last-stage position changed when only the *masked*
    pixels changed (``changes[name]``: ``(h, w)`` max abs change over channels). Masked cells are
    hatched grey; any colour on a visible cell is leaked information."""
    names = list(changes)
    top = max(float(max(c.max() for c in changes.values())), 1e-12)
    fig, axes = subplots(1, len(names), figsize=(3.3 * len(names), 3.6))
    axes = np.atleast_1d(axes)
    m = mask.numpy()
    for ax, name in zip(axes, names):
        change = changes[name].numpy().copy()
        shown = np.ma.masked_where(m, change)
        im = ax.imshow(shown, cmap="magma", vmin=0, vmax=top, interpolation="nearest")
        for r, c in zip(*m.nonzero()):
            ax.add_patch(Rectangle((c - 0.5, r - 0.5), 1, 1, fc=MASK_COLOR, ec="white", hatch="//", lw=0))
        worst = float(change[~m].max()) if (~m).any() else 0.0
        note = "\n(float rounding)" if 0 < worst < 1e-4 * top else ""
        ax.set_title(f"{name}\nvisible cells: max {worst:.2g}{note}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(im, ax=list(axes), shrink=0.8, label="max |change| over channels")
    return fig


def plot_speed(images_per_second: dict[str, float], reference: str) -> Figure:
    """Horizontal bars of throughput, each labelled with its speed-up over ``reference``."""
    names = list(images_per_second)
    values = [images_per_second[n] for n in names]
    fig, ax = subplots(figsize=(6.0, 0.5 + 0.45 * len(names)))
    bars = ax.barh(names, values, color=["#5f6368" if n == reference else "#1a73e8" for n in names])
    for bar, n in zip(bars, names):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2,
                f"  {images_per_second[n] / images_per_second[reference]:.2f}x", va="center", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("images / second (forward)")
    ax.set_xlim(0, max(values) * 1.25)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig
