"""What the notebook figures share: image display, the "masked" grey, and figures built outside pyplot.

Every figure function draws on a figure it creates and returns, so a notebook cell stays one line and
the same figure renders as a PNG for the interactive widgets (:mod:`.widgets`).

Conventions: images are normalized ``(3, H, W)`` tensors (ImageNet mean/std); masks are boolean
cell grids ``(h, w)``, True = masked, as in :mod:`cnx2lite.masking`.
"""
from __future__ import annotations

import io

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from ..data import denormalize
from ..masking import pixel_mask
from ..models import PATCH_SIZE

MASK_COLOR = "#9aa0a6"  # the grey that stands for "masked" in every figure


def to_rgb(img: Tensor) -> np.ndarray:
    """A normalized ``(3, H, W)`` image -> ``(H, W, 3)`` float array in [0, 1] for ``imshow``."""
    return denormalize(img.detach().cpu()).permute(1, 2, 0).numpy()


def subplots(nrows: int = 1, ncols: int = 1, **kwargs) -> tuple[Figure, np.ndarray | Axes]:
    """Like ``pyplot.subplots`` but outside pyplot: nothing global, so a figure appears exactly once
    (as a cell's value in a notebook) and widget redraws leave no stray figures behind."""
    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(nrows, ncols, **kwargs)


def figure_png(fig: Figure, dpi: int = 96) -> bytes:
    """Render ``fig`` to PNG bytes (for ``ipywidgets.Image`` and exported figures)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def grid_lines(ax: Axes, rows: int, cols: int, step: float, color: str = "white", lw: float = 0.8) -> None:
    """Lines between the cells of a ``rows x cols`` grid whose cells are ``step`` pixels wide."""
    for r in range(1, rows):
        ax.axhline(r * step - 0.5, color=color, lw=lw)
    for c in range(1, cols):
        ax.axvline(c * step - 0.5, color=color, lw=lw)


def draw_masked_photo(ax: Axes, img: Tensor, mask: Tensor, title: str | None = None) -> None:
    """The photo with masked cells greyed out and the 32x32 cell grid drawn on top."""
    rgb = to_rgb(img)
    masked = pixel_mask(mask[None])[0].numpy()
    shown = rgb.copy()
    shown[masked] = 0.2 * shown[masked] + 0.8 * np.array(matplotlib.colors.to_rgb(MASK_COLOR))
    ax.imshow(shown, interpolation="nearest")
    grid_lines(ax, *mask.shape, step=PATCH_SIZE, color="white", lw=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
