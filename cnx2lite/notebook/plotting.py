"""What the notebook figures share: image display, the masked/visible convention, and figures built outside pyplot.

Every figure function draws on a figure it creates and returns, so a notebook cell stays one line and
the same figure renders as a PNG for the interactive widgets (:mod:`.widgets`); :func:`as_jpeg` stores
a figure full of photos in a fraction of the space.

Conventions: images are normalized ``(3, H, W)`` tensors (ImageNet mean/std); masks are boolean
cell grids ``(h, w)``, True = masked, as in :mod:`cnx2lite.masking`. In every figure a masked cell is
opaque :data:`MASK_COLOR` grey (nothing of the hidden content shows through: the encoder sees none of it)
and a visible cell shows the photo, or :data:`VISIBLE_COLOR` in a mask-only panel; :func:`mask_legend`
adds the key.
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from IPython.display import Image as DisplayImage
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb as color_rgb
from matplotlib.figure import Figure
from matplotlib.legend import Legend
from matplotlib.patches import Patch
from PIL import Image
from torch import Tensor

from ..masking import pixel_mask
from ..models import PATCH_SIZE
from ..train.plots import MASK_COLOR  # the opaque grey that stands for "masked", also in the run figures
from ..transforms import denormalize

VISIBLE_COLOR = "#ffffff"  # a visible cell in a panel that shows the mask alone
EDGE_COLOR = "#3c4043"  # cell borders and legend patch edges


def to_rgb(img: Tensor) -> np.ndarray:
    """A normalized ``(3, H, W)`` image -> ``(H, W, 3)`` float array in [0, 1] for ``imshow``."""
    return denormalize(img.detach().cpu()).permute(1, 2, 0).numpy()


def to_pil(img: Tensor) -> Image.Image:
    """A normalized ``(3, H, W)`` image -> an 8-bit RGB PIL image (the input type of the data transforms)."""
    return Image.fromarray((to_rgb(img) * 255).round().astype(np.uint8))


def subplots(nrows: int = 1, ncols: int = 1, **kwargs: Any) -> tuple[Figure, np.ndarray | Axes]:
    """Like ``pyplot.subplots`` but outside pyplot: nothing global, so a figure appears exactly once
    (as a cell's value in a notebook) and widget redraws leave no stray figures behind. ``figsize`` and
    ``dpi`` go to the figure, the rest to ``Figure.subplots``."""
    fig = Figure(figsize=kwargs.pop("figsize", None), dpi=kwargs.pop("dpi", None))
    return fig, fig.subplots(nrows, ncols, **kwargs)


def figure_png(fig: Figure, dpi: int = 96) -> bytes:
    """Render ``fig`` to PNG bytes (for ``ipywidgets.Image`` and exported figures)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def as_jpeg(fig: Figure, quality: int = 85) -> DisplayImage:
    """``fig`` as a JPEG for a notebook cell to show: a fraction of a PNG's size for figures full of photos
    (and of noise), at the figure's own dpi."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="jpeg", dpi=fig.dpi, bbox_inches="tight", pil_kwargs={"quality": quality})
    return DisplayImage(data=buffer.getvalue(), format="jpeg")


def jpeg_file(path: str | Path, quality: int = 85) -> DisplayImage:
    """An image file (e.g. a run's ``predictions.png``) as a JPEG for a notebook cell to show, at a fraction of the
    PNG's size."""
    buffer = io.BytesIO()
    Image.open(path).convert("RGB").save(buffer, format="jpeg", quality=quality)
    return DisplayImage(data=buffer.getvalue(), format="jpeg")


def grid_lines(ax: Axes, rows: int, cols: int, step: float, color: str = "white", lw: float = 0.8) -> None:
    """Lines between the cells of a ``rows x cols`` grid whose cells are ``step`` pixels wide."""
    for r in range(1, rows):
        ax.axhline(r * step - 0.5, color=color, lw=lw)
    for c in range(1, cols):
        ax.axvline(c * step - 0.5, color=color, lw=lw)


def draw_masked_photo(ax: Axes, img: Tensor, mask: Tensor, title: str | None = None) -> None:
    """The photo ``(3, H, W)`` with the cells where ``mask (H/32, W/32)`` is True painted opaque
    :data:`MASK_COLOR`, and the 32x32 cell grid drawn on top. Add the key with :func:`mask_legend`."""
    shown = to_rgb(img).copy()
    shown[pixel_mask(mask[None])[0].numpy()] = color_rgb(MASK_COLOR)
    ax.imshow(shown, interpolation="nearest")
    grid_lines(ax, *mask.shape, step=PATCH_SIZE, color="white", lw=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)


def mask_legend(target: Axes | Figure, masked: str = "masked", visible: str = "visible",
                extra: Sequence[Artist] = (), **kwargs: Any) -> Legend:
    """The key of every masked figure: an opaque :data:`MASK_COLOR` patch for masked cells and a
    :data:`VISIBLE_COLOR` one for visible cells (in a photo, the photo shows there), then the labelled
    ``extra`` handles (e.g. a ``Patch`` for an outline the figure draws). On a figure the key goes in one
    row below the panels (call it after ``tight_layout``); on axes, ``kwargs`` place it as ``Axes.legend``
    would."""
    handles = [Patch(fc=MASK_COLOR, ec=EDGE_COLOR, lw=0.8, label=masked),
               Patch(fc=VISIBLE_COLOR, ec=EDGE_COLOR, lw=0.8, label=visible), *extra]
    if isinstance(target, Figure):
        kwargs = {"loc": "upper center", "bbox_to_anchor": (0.5, 0.0), "ncols": len(handles), "frameon": False,
                  "fontsize": 9, **kwargs}
    return target.legend(handles=handles, **kwargs)
