"""Interactive explorers for the notebooks: ipywidgets controls, a text readout and a figure.

Each explorer returns an ``ipywidgets.VBox``; the figure is an ``ipywidgets.Image`` holding a PNG
of a notebook figure (:func:`.plotting.figure_png`), so it redraws without a matplotlib GUI backend and
looks the same in JupyterLab, VS Code and a static export. ``explorer.update()`` redraws by hand (handy in tests).
"""
from __future__ import annotations

import base64
import copy
import functools
import html
import io
import re
from collections.abc import Mapping, Sequence
from typing import Any, Callable

import ipywidgets as W
import torch
from PIL import Image
from torch import Tensor

from ..collapse import LayerCollapse, mlp_activations
from ..dense.composites import CompositeDataset, instances
from ..fcmae import FCMAE
from ..layers.grn import GRN_NORMALIZATIONS, global_response_norm
from ..masking import NUM_STAGES, mask_grid, num_visible, random_mask
from ..models import PATCH_SIZE
from .collapse_figures import plot_channel_maps
from .dense_figures import plot_composites
from .grn_figures import AGGREGATION_LABELS, channel_norms, plot_channel_norms
from .masking_figures import plot_stage_masks
from .photos import photos
from .plotting import figure_png
from .pretraining_figures import (
    masked_patch_losses,
    normalized_patches,
    plot_normalized_reconstructions,
    zero_prediction,
)
from .sparse_figures import filled_cells, filled_pixels, plot_fill_in, toy_stack, visible_pixels

__all__ = ["mask_explorer", "grn_explorer", "collapse_layer_explorer", "reconstruction_explorer", "fill_in_explorer",
           "composite_explorer"]


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


def collapse_layer_explorer(models: Mapping[str, torch.nn.Module], images: Tensor,
                            stats: Mapping[str, Sequence[LayerCollapse]], image_labels: Sequence[str] = (),
                            block: int = 1, image: int = 0, k: int = 32) -> Explorer:
    """The block of the collapse curves (1 to L, input to output, as on their x axis) and one of ``images
    (N, 3, H, W)`` -> that block's first ``k`` activation maps for that image, one grid per model of ``models``
    (dead and saturated maps framed: :func:`~.collapse_figures.plot_channel_maps`), and a readout of the block's
    statistics in ``stats`` (``{label: collapse_by_layer(model, images)}`` for the same labels): the mean over
    the images, and in brackets the value on the image shown."""
    style, wide = _slider_style(), W.Layout(width="22em")
    names = [layer.name for layer in next(iter(stats.values()))]
    titles = list(image_labels) or [f"image {i}" for i in range(len(images))]
    controls = [
        W.IntSlider(value=block, min=1, max=len(names), description="block", continuous_update=False, style=style,
                    layout=wide),
        W.Dropdown(options=[(f"{i}: {title}", i) for i, title in enumerate(titles)], value=image,
                   description="image", style=style),
    ]
    block_w, image_w = controls

    def draw() -> tuple[str, bytes]:
        index, n = block_w.value - 1, image_w.value
        name = names[index]
        maps = {label: mlp_activations(model, images[n:n + 1], [name])[name][0] for label, model in models.items()}
        channels, h, w = next(iter(maps.values())).shape
        parts = [f"<b>block {index + 1} ({name}): {channels} channels of {h}x{w}</b>"]
        for label in models:
            layer = stats[label][index]
            parts.append(f"{label}: distance {layer.distance.mean():.3f} ({layer.distance[n]:.3f}), centered "
                         f"{layer.centered_distance.mean():.3f} ({layer.centered_distance[n]:.3f}), dead "
                         f"{100 * layer.dead.mean():.1f} % ({100 * layer.dead[n]:.1f} %), saturated "
                         f"{100 * layer.saturated.mean():.1f} % ({100 * layer.saturated[n]:.1f} %)")
        fig = plot_channel_maps({label: m[:k] for label, m in maps.items()},
                                title=f"block {index + 1} ({name}), {titles[n]}: first {min(k, channels)} of "
                                      f"{channels} channels")
        fig.set_size_inches(7.4, 3.9)
        return "; <br>".join(parts), figure_png(fig)

    return Explorer(controls, draw)


def reconstruction_explorer(model: FCMAE, images: Tensor, ratio: float | None = None, seed: int = 0) -> Explorer:
    """One of ``images (n, 3, H, W)`` (normalized photos) through an FCMAE under a mask drawn from ``seed`` at
    ``ratio`` (default: the model's ``mask_ratio``): the photo, the encoder's input, the normalized target and
    prediction and the pasted reconstruction (:func:`.pretraining_figures.plot_normalized_reconstructions`), and a
    readout of this view's loss (``model(image, mask)[0]``) beside the loss of predicting each patch's mean. The
    ratios offered are the multiples of 0.05 that leave at least one cell masked and one visible."""
    h, w = mask_grid(tuple(images.shape[-2:]))
    ratios = [r for r in (round(k * 0.05, 2) for k in range(1, 20)) if 1 <= num_visible(h * w, r) < h * w]
    start = min(ratios, key=lambda r: abs(r - (model.mask_ratio if ratio is None else ratio)))
    style, wide = _slider_style(), W.Layout(width="22em")
    controls = [
        W.Dropdown(options=[(f"photo {i + 1}", i) for i in range(len(images))], value=0, description="image",
                   style=style),
        W.IntSlider(value=seed, min=0, max=99, description="mask seed", continuous_update=False, style=style,
                    layout=wide),
        W.SelectionSlider(options=ratios, value=start, description="mask ratio", continuous_update=False,
                          style=style, layout=wide),
    ]
    image_w, seed_w, ratio_w = controls

    def draw() -> tuple[str, bytes]:
        img = images[image_w.value:image_w.value + 1]  # (1, 3, H, W)
        mask = random_mask(1, tuple(images.shape[-2:]), ratio_w.value,
                           generator=torch.Generator().manual_seed(seed_w.value))  # (1, h, w)
        with torch.no_grad():
            loss = model(img, mask)[0].item()
        target = normalized_patches(img)
        baseline = masked_patch_losses(zero_prediction(target), target, mask).mean().item()
        text = (f"<b>loss {loss:.3f}</b> on the {int(mask.sum())} masked of {h * w} cells "
                f"(predicting each patch's mean: {baseline:.3f})")
        fig = plot_normalized_reconstructions(model, img, mask, f"{image_w.label}, mask seed {seed_w.value}, "
                                                                f"ratio {ratio_w.value:.2f}")
        return text, _palette_png(figure_png(fig))

    return Explorer(controls, draw)


def _palette_png(png: bytes) -> bytes:
    """A PNG of photos re-encoded with a 256-color palette: about a third of the size, which counts twice in a
    stored notebook (the widget's state and its static frame)."""
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(buffer, format="png", optimize=True)
    return buffer.getvalue()


def fill_in_explorer(photo: Tensor, mask: Tensor, layers: int = 4, max_layers: int = 16) -> Explorer:
    """The number of 7x7 averaging layers in notebook 2's fill-in toy (:func:`~.sparse_figures.toy_stack`) on
    ``photo (3, H, W)`` with the cells of ``mask (H/32, W/32)`` zeroed -> the image before and after that many
    dense convs and as many sparse ones, and a readout of how much of the holes the dense convs filled."""
    visible = visible_pixels(mask)  # (H, W), 1 = visible pixel
    dense = toy_stack(photo * visible, max_layers)  # every depth once: the slider only picks one
    sparse = toy_stack(photo * visible, max_layers, visible)
    controls = [W.IntSlider(value=layers, min=0, max=max_layers, description="dense layers",
                            continuous_update=False, style=_slider_style(), layout=W.Layout(width="22em"))]

    def draw() -> tuple[str, bytes]:
        n = controls[0].value
        text = (f"<b>after {n} dense 7x7 layers: {filled_pixels(dense[n], mask):.0%} of the masked pixels filled, "
                f"{filled_cells(dense[n], mask)} of {int(mask.sum())} masked cells completely</b>; "
                f"after {n} sparse layers: {filled_pixels(sparse[n], mask):.0%} filled")
        return text, _palette_png(figure_png(plot_fill_in(dense, sparse, sorted({0, n}), mask)))

    return Explorer(controls, draw)


def composite_explorer(dataset: CompositeDataset, names: Mapping[str, str] | None = None) -> Explorer:
    """Composite index, most regions pasted and the fewest visible pixels an instance keeps -> the composite, its
    semantic labels and its instances (:func:`~.dense_figures.plot_composites`), with what was pasted and kept."""
    style, wide = _slider_style(), W.Layout(width="22em")
    controls = [
        W.IntSlider(value=0, min=0, max=len(dataset) - 1, description="composite", continuous_update=False,
                    style=style, layout=wide),
        W.IntSlider(value=dataset.max_regions, min=1, max=max(6, dataset.max_regions), description="max regions",
                    continuous_update=False, style=style, layout=wide),
        W.IntSlider(value=dataset.min_visible, min=1, max=max(1000, dataset.min_visible), description="min visible px",
                    continuous_update=False, style=style, layout=wide),
    ]
    index_w, regions_w, visible_w = controls

    def draw() -> tuple[str, bytes]:
        view = copy.copy(dataset)  # the same photos and seed, other settings
        view.max_regions, view.min_visible = regions_w.value, visible_w.value
        canvas, _, regions = view.compose(index_w.value)
        sizes = [int(mask.sum()) for mask, _ in regions]
        kept = len(instances(regions, canvas.shape[:2], view.min_visible)["labels"])  # the dataset's own rule
        text = (f"<b>{len(sizes)} region(s) pasted, {kept} kept as instances</b> (visible pixels: "
                f"{', '.join(map(str, sizes))}; an instance needs {view.min_visible})")
        return text, _palette_png(figure_png(plot_composites(view, [index_w.value], names)))

    return Explorer(controls, draw)
