"""Interactive explorers for the notebooks: ipywidgets controls, a text readout and a figure.

Each explorer returns an ``ipywidgets.VBox``; the figure is an ``ipywidgets.Image`` holding a PNG
of a notebook figure (:func:`.plotting.figure_png`), so it redraws without a matplotlib GUI backend and
looks the same in JupyterLab, VS Code and a static export. ``explorer.update()`` redraws by hand (handy in tests).
"""
from __future__ import annotations

import base64
import functools
import html
import re
from typing import Any, Callable

import ipywidgets as W
import torch
from torch import Tensor

from ..layers.grn import GRN_NORMALIZATIONS, global_response_norm
from ..masking import NUM_STAGES, mask_grid, num_visible, random_mask
from ..models import PATCH_SIZE
from .grn_figures import AGGREGATION_LABELS, channel_norms, plot_channel_norms
from .masking_figures import plot_stage_masks
from .photos import photos
from .plotting import figure_png

__all__ = ["mask_explorer", "grn_explorer"]


class Explorer(W.VBox):
    """A VBox of controls, a readout (``HTML``) and a figure (``Image``), redrawn on every change."""

    def __init__(self, controls: list[W.Widget], draw: Callable[[], tuple[str, bytes]]) -> None:
        self.readout = W.HTML(layout=W.Layout(min_height="1.6em"))
        self.figure = W.Image(format="png", layout=W.Layout(max_width="100%"))
        self._draw = draw
        super().__init__([W.HBox(controls[:2]), W.HBox(controls[2:]), self.readout, self.figure])
        for control in controls:
            control.observe(lambda _change: self.update(), names="value")
        self.add_class("cnx2lite-explorer")
        self.update()

    def update(self) -> None:
        """Redraw the readout and the figure from the controls' current values."""
        text, png = self._draw()
        self.readout.value = f"<span class='cnx2lite-readout'>{text}</span>"
        self.figure.value = png

    @property
    def text(self) -> str:
        """The readout as plain text."""
        return html.unescape(re.sub(r"<[^>]+>", "", self.readout.value))

    def __repr__(self) -> str:
        return f"{type(self).__name__}: {self.text}"

    def _repr_mimebundle_(self, **kwargs: Any) -> dict:
        """The live widget for Jupyter front ends, plus the current figure and readout for static
        viewers (GitHub, nbviewer without widget state), which cannot run widgets."""
        bundle = super()._repr_mimebundle_(**kwargs) or {}
        bundle["image/png"] = base64.b64encode(self.figure.value).decode("ascii")
        bundle["text/plain"] = f"[interactive: run the notebook to use the controls] {self.text}"
        return bundle


def _slider_style() -> dict:
    return {"description_width": "7em"}


def mask_explorer(ratio: float = 0.6, seed: int = 0, img_size: int = 224, stage: int = 4,
                  photo: Callable[[int], Tensor] | None = None, dims: tuple[int, ...] | None = None) -> Explorer:
    """Mask ratio, seed, image size and stage -> the masked photo and the mask at that stage.

    ``stage`` counts from 1 to 4 like the figures and the paper (``stage_masks(...)[stage - 1]``).
    ``photo(img_size)`` returns one normalized ``(3, S, S)`` image (default: the first of
    :func:`~cnx2lite.notebook.photos.photos`); ``dims`` are the channels per stage, shown in the titles."""
    load = functools.lru_cache(maxsize=8)(photo or (lambda size: photos(1, size)[0]))
    style, wide = _slider_style(), W.Layout(width="22em")
    controls = [
        W.FloatSlider(value=ratio, min=0.0, max=0.95, step=0.05, description="mask ratio", readout_format=".2f",
                      continuous_update=False, style=style, layout=wide),
        W.IntSlider(value=seed, min=0, max=99, description="seed", continuous_update=False, style=style, layout=wide),
        W.IntSlider(value=img_size, min=PATCH_SIZE, max=384, step=PATCH_SIZE, description="image size",
                    continuous_update=False, style=style, layout=wide),
        W.IntSlider(value=stage, min=1, max=NUM_STAGES, description="stage", continuous_update=False, style=style,
                    layout=wide),
    ]
    ratio_w, seed_w, size_w, stage_w = controls

    def draw() -> tuple[str, bytes]:
        size, i = size_w.value, stage_w.value - 1
        h, w = mask_grid(size)
        mask = random_mask(1, size, ratio_w.value, generator=torch.Generator().manual_seed(seed_w.value))[0]
        kept = num_visible(h * w, ratio_w.value)
        s = 2 ** (NUM_STAGES - 1 - i)
        text = (f"<b>{kept} of {h * w} cells visible</b> ({h}x{w} grid of {PATCH_SIZE}x{PATCH_SIZE} patches); "
                f"stage {i + 1} map {h * s}x{w * s}, one cell = {s}x{s} positions, "
                f"{kept * s * s} of {h * w * s * s} positions visible")
        fig = plot_stage_masks(mask, load(size), stages=(i,), dims=dims)
        fig.set_size_inches(6.4, 3.4)
        return text, figure_png(fig)

    return Explorer(controls, draw)


def grn_explorer(x: Tensor, gamma: float = 1.0, beta: float = 0.0) -> Explorer:
    """GRN on a feature map ``x (1, H, W, C)`` with one ``gamma`` and ``beta`` for every channel and
    each design choice switchable: the norms of all ``C`` channels before and after, and a readout.
    It opens at ``gamma``, ``beta`` (the default, gamma = 1, shows competition; gamma = 0 would
    show the identity, an uninformative first view)."""
    style, wide = _slider_style(), W.Layout(width="22em")
    controls = [
        W.FloatSlider(value=gamma, min=-1.0, max=3.0, step=0.1, description="gamma", continuous_update=False,
                      style=style, layout=wide),
        W.FloatSlider(value=beta, min=-0.5, max=0.5, step=0.05, description="beta", continuous_update=False,
                      style=style, layout=wide),
        W.Dropdown(options=[(label, name) for name, label in AGGREGATION_LABELS.items()], value="l2",
                   description="aggregate", style=style),
        W.Dropdown(options=GRN_NORMALIZATIONS, value="divisive", description="normalize", style=style),
        W.Checkbox(value=True, description="residual (+ x)", indent=False),
    ]
    gamma_w, beta_w, agg_w, norm_w, res_w = controls
    before = channel_norms(x)
    order = torch.argsort(before, descending=True)

    def spread(norms: Tensor) -> float:
        return float(norms.max() / norms.mean().clamp_min(1e-12))

    def draw() -> tuple[str, bytes]:
        out = global_response_norm(x, gamma_w.value, beta_w.value, agg_w.value, norm_w.value, res_w.value)
        after = channel_norms(out)
        identity = bool(torch.equal(out, x))
        change = float((out - x).abs().max())
        text = (f"<b>max/mean channel norm: {spread(before):.2f} before, {spread(after):.2f} after</b>; "
                f"max |GRN(x) - x| = {change:.3g}" + (" (identity)" if identity else ""))
        fig = plot_channel_norms(x, out, order=order,
                                 title=f"gamma={gamma_w.value:.2f}, beta={beta_w.value:.2f}, {agg_w.label}, "
                                       f"{norm_w.value}, residual {'on' if res_w.value else 'off'}")
        return text, figure_png(fig)

    return Explorer(controls, draw)
