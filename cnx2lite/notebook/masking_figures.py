"""Figures of notebook 1 (masking): the masked photo and the mask at every stage resolution."""
from __future__ import annotations

from typing import Sequence

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from ..masking import NUM_STAGES, stage_masks
from ..models import PATCH_SIZE
from .plotting import MASK_COLOR, draw_masked_photo, grid_lines, subplots, to_rgb

MASKED_CMAP = ListedColormap(["#ffffff", MASK_COLOR])  # 0 = visible, 1 = masked


def plot_masked_photo(img: Tensor, mask: Tensor) -> Figure:
    """Side by side: the photo ``(3, H, W)``, and what the encoder may see (the cells where
    ``mask (h, w)`` is True greyed out)."""
    fig, axes = subplots(1, 2, figsize=(7.5, 3.9))
    axes[0].imshow(to_rgb(img), interpolation="nearest")
    axes[0].set_axis_off()
    axes[0].set_title(f"photo, {img.shape[-2]}x{img.shape[-1]} px", fontsize=10)
    kept = int((~mask).sum())
    draw_masked_photo(axes[1], img, mask, f"{int(mask.sum())} of {mask.numel()} cells masked, {kept} visible")
    fig.tight_layout()
    return fig


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
    if img is not None:
        draw_masked_photo(axes[0], img, mask, f"input {img.shape[-2]}x{img.shape[-1]}")
        r, c = highlight
        axes[0].add_patch(Rectangle((c * PATCH_SIZE - 0.5, r * PATCH_SIZE - 0.5), PATCH_SIZE, PATCH_SIZE,
                                    fill=False, ec="#d93025", lw=2.5))
    for ax, i in zip(axes[panels - len(stages):], stages):
        m = per_stage[i]
        s = 2 ** (NUM_STAGES - 1 - i)
        ax.imshow(m, cmap=MASKED_CMAP, vmin=0, vmax=1, interpolation="nearest")
        if s > 1:  # thin lines: feature-map positions; thick lines: mask cells
            ax.set_xticks(np.arange(-0.5, m.shape[1], 1), minor=True)
            ax.set_yticks(np.arange(-0.5, m.shape[0], 1), minor=True)
            ax.grid(which="minor", color="#dadce0", lw=0.4)
            ax.tick_params(which="minor", length=0)
        grid_lines(ax, *mask.shape, step=s, color="#3c4043", lw=1.0)
        r, c = highlight
        ax.add_patch(Rectangle((c * s - 0.5, r * s - 0.5), s, s, fill=False, ec="#d93025", lw=2))
        size = f"{m.shape[0]}x{m.shape[1]}"
        channels = f", C={dims[i]}" if dims is not None else ""
        ax.set_title(f"stage {i + 1}: {size}{channels}\none cell = {s}x{s} positions", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig
