"""Figures and small helpers for the notebook walkthrough (``notebooks/``).

Everything here draws with matplotlib on a figure it creates and returns, so a notebook cell stays
one line and the same figure renders as a PNG for the interactive widgets (:mod:`cnx2lite.widgets`).

Conventions: images are normalized ``(3, H, W)`` tensors (ImageNet mean/std); masks are boolean
cell grids ``(h, w)``, True = masked, as in :mod:`cnx2lite.masking`.
"""
from __future__ import annotations

import io
import os
from typing import Sequence, TypeVar

import matplotlib
from matplotlib.axes import Axes
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

from .data import IMAGENET_MEAN, IMAGENET_STD, denormalize, sample_images
from .masking import NUM_STAGES, pixel_mask, stage_masks
from .models import PATCH_SIZE

T = TypeVar("T")
SCALES = ("smoke", "cpu", "gpu")
MASK_COLOR = "#9aa0a6"  # the grey that stands for "masked" in every figure
EMPTY_COLOR = "#202124"  # a site with no features at all (exactly zero), e.g. a masked pixel
MASKED_CMAP = ListedColormap(["#ffffff", MASK_COLOR])  # 0 = visible, 1 = masked


# --------------------------------------------------------------------------------------------------
# Run scale and images
# --------------------------------------------------------------------------------------------------
def scale() -> str:
    """The notebooks' run scale from ``$CNX2LITE_SCALE``: ``smoke`` (seconds, for CI), ``cpu`` (the
    default: meaningful on a laptop) or ``gpu`` (the real sizes)."""
    value = os.environ.get("CNX2LITE_SCALE", "cpu").strip().lower() or "cpu"
    if value not in SCALES:
        raise ValueError(f"CNX2LITE_SCALE must be one of {', '.join(SCALES)}; got {value!r}")
    return value


def pick(*, smoke: T, cpu: T, gpu: T) -> T:
    """The value for the current :func:`scale`, e.g. ``pick(smoke=64, cpu=224, gpu=224)``."""
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[scale()]


def photos(n: int, img_size: int, seed: int = 0) -> Tensor:
    """``n`` real photos ``(n, 3, img_size, img_size)``, normalized with the ImageNet mean/std.

    They come from :func:`cnx2lite.data.sample_images` (the data root: ``$CNX2LITE_DATA_ROOT``, else
    ``<repo>/data``); if no photos are there, from scikit-image's bundled photos when scikit-image is
    installed. Otherwise this raises with what to do."""
    try:
        return sample_images(n, img_size, seed=seed)
    except (FileNotFoundError, RuntimeError, ValueError, OSError) as error:
        problem = str(error)
    try:
        return _skimage_photos(n, img_size, seed)
    except ImportError:
        pass
    raise RuntimeError(
        f"No photos to show.\n{problem}\nFor the notebooks, a folder with samples/*.JPEG is enough; or "
        "`pip install scikit-image` to use its bundled photos instead."
    )


def _skimage_photos(n: int, img_size: int, seed: int) -> Tensor:
    from skimage import data as skdata  # optional fallback only

    names = ["astronaut", "coffee", "chelsea", "rocket", "cat"]
    rng = np.random.default_rng(seed)
    chosen = [names[i % len(names)] for i in rng.permutation(len(names))][:n]
    chosen += [names[i % len(names)] for i in range(n - len(chosen))]
    out = []
    for name in chosen:
        img = torch.from_numpy(np.asarray(getattr(skdata, name)())).float().div(255).permute(2, 0, 1)[:3]
        side = min(img.shape[-2:])
        top, left = (img.shape[-2] - side) // 2, (img.shape[-1] - side) // 2
        img = img[:, top:top + side, left:left + side]
        img = torch.nn.functional.interpolate(img[None], size=(img_size, img_size), mode="bilinear",
                                              antialias=True, align_corners=False)[0]
        out.append(img)
    x = torch.stack(out)
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


def to_rgb(img: Tensor) -> np.ndarray:
    """A normalized ``(3, H, W)`` image -> ``(H, W, 3)`` float array in [0, 1] for ``imshow``."""
    return denormalize(img.detach().cpu()).permute(1, 2, 0).numpy()


def _subplots(nrows: int = 1, ncols: int = 1, **kwargs) -> tuple[Figure, np.ndarray | Axes]:
    """Like ``pyplot.subplots`` but outside pyplot: nothing global, so a figure appears exactly once
    (as a cell's value in a notebook) and widget redraws leave no stray figures behind."""
    fig = Figure(figsize=kwargs.pop("figsize", None))
    return fig, fig.subplots(nrows, ncols, **kwargs)


def figure_png(fig: Figure, dpi: int = 96) -> bytes:
    """Render ``fig`` to PNG bytes (for ``ipywidgets.Image`` and exported figures)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


# --------------------------------------------------------------------------------------------------
# 01 masking
# --------------------------------------------------------------------------------------------------
def _grid_lines(ax: Axes, rows: int, cols: int, step: float, color: str = "white", lw: float = 0.8) -> None:
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
    _grid_lines(ax, *mask.shape, step=PATCH_SIZE, color="white", lw=0.6)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)


def plot_masked_photo(img: Tensor, mask: Tensor) -> Figure:
    """Side by side: the photo, and what the encoder may see (masked 32x32 cells greyed out)."""
    fig, axes = _subplots(1, 2, figsize=(7.5, 3.9))
    axes[0].imshow(to_rgb(img), interpolation="nearest")
    axes[0].set_axis_off()
    axes[0].set_title(f"photo, {img.shape[-2]}x{img.shape[-1]} px", fontsize=10)
    kept = int((~mask).sum())
    draw_masked_photo(axes[1], img, mask, f"{int(mask.sum())} of {mask.numel()} cells masked, {kept} visible")
    fig.tight_layout()
    return fig


def plot_stage_masks(mask: Tensor, img: Tensor | None = None, highlight: tuple[int, int] | None = None,
                     stages: Sequence[int] = tuple(range(NUM_STAGES)), dims: Sequence[int] | None = None) -> Figure:
    """The mask at every stage resolution (finest first), one panel each, with the positions that
    come from one mask cell outlined (``highlight = (row, col)`` of that cell; the first visible cell
    by default). ``stages`` are indices into :func:`~cnx2lite.masking.stage_masks` (0 = stage 1, the
    finest). With ``img``, a first panel shows the masked photo."""
    per_stage = [m[0].numpy() for m in stage_masks(mask[None])]
    if highlight is None:
        visible = (~mask).nonzero()
        highlight = tuple(visible[0].tolist()) if len(visible) else (0, 0)
    panels = len(stages) + (img is not None)
    fig, axes = _subplots(1, panels, figsize=(2.6 * panels, 3.0))
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
        _grid_lines(ax, *mask.shape, step=s, color="#3c4043", lw=1.0)
        r, c = highlight
        ax.add_patch(Rectangle((c * s - 0.5, r * s - 0.5), s, s, fill=False, ec="#d93025", lw=2))
        size = f"{m.shape[0]}x{m.shape[1]}"
        channels = f", C={dims[i]}" if dims is not None else ""
        ax.set_title(f"stage {i + 1}: {size}{channels}\none cell = {s}x{s} positions", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------------------------------
# 02 sparse convolution
# --------------------------------------------------------------------------------------------------
def plot_fill_in(dense: Sequence[Tensor], sparse: Sequence[Tensor], depths: Sequence[int], mask: Tensor) -> Figure:
    """Rows: a stack of dense convs, then the same convs as submanifold (masked) convs; columns: the
    image after ``depths[j]`` layers. Images are ``(3, H, W)`` normalized tensors. Empty sites (all
    features exactly zero) are drawn dark, so the holes visibly shrink when a conv fills them; the
    borders of the masked cells are drawn in red."""
    fig, axes = _subplots(2, len(depths), figsize=(2.2 * len(depths), 4.9))
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
    fig, axes = _subplots(1, 2, figsize=(8.2, 4.0))
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
    fig, axes = _subplots(1, len(names), figsize=(3.3 * len(names), 3.6))
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
    fig, ax = _subplots(figsize=(6.0, 0.5 + 0.45 * len(names)))
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


# --------------------------------------------------------------------------------------------------
# 03 GRN
# --------------------------------------------------------------------------------------------------
AGGREGATES = ("L2", "L1", "average")
NORMALIZATIONS = ("divisive", "standardize", "none")


def grn_aggregate(x: Tensor, kind: str = "L2") -> Tensor:
    """Step 1, one value per sample and channel: ``(N, H, W, C)`` -> ``(N, 1, 1, C)``. ``L2`` is
    GRN's choice; ``L1`` and ``average`` (global average pooling) are the alternatives the paper
    ablates."""
    if kind == "L2":
        return torch.linalg.vector_norm(x, dim=(1, 2), keepdim=True)
    if kind == "L1":
        return x.abs().sum(dim=(1, 2), keepdim=True)
    if kind == "average":
        return x.mean(dim=(1, 2), keepdim=True)
    raise ValueError(f"aggregate must be one of {AGGREGATES}; got {kind!r}")


def grn_normalize(gx: Tensor, kind: str = "divisive", eps: float = 1e-6) -> Tensor:
    """Step 2 across channels: ``divisive`` (GRN: divide by the mean over channels), ``standardize``
    (subtract the mean, divide by the standard deviation) or ``none``."""
    if kind == "divisive":
        return gx / (gx.mean(dim=-1, keepdim=True) + eps)
    if kind == "standardize":
        return (gx - gx.mean(dim=-1, keepdim=True)) / (gx.std(dim=-1, keepdim=True) + eps)
    if kind == "none":
        return gx
    raise ValueError(f"normalize must be one of {NORMALIZATIONS}; got {kind!r}")


def grn_variant(x: Tensor, gamma: float | Tensor = 0.0, beta: float | Tensor = 0.0, aggregate: str = "L2",
                normalize: str = "divisive", residual: bool = True) -> Tensor:
    """GRN with its design choices exposed: ``gamma * (x * N(G(x))) + beta (+ x)``. The defaults
    (L2, divisive, residual) are :class:`cnx2lite.layers.GRN`."""
    nx = grn_normalize(grn_aggregate(x, aggregate), normalize)
    out = gamma * (x * nx) + beta
    return out + x if residual else out


def channel_norms(x: Tensor) -> Tensor:
    """Per-channel L2 norms over space of one sample ``(1, H, W, C)`` or ``(H, W, C)`` -> ``(C,)``."""
    return torch.linalg.vector_norm(x.reshape(-1, x.shape[-1]), dim=0)


def plot_channel_norms(before: Tensor, after: Tensor, title: str = "", order: Tensor | None = None) -> Figure:
    """Per-channel norms of one sample before and after a GRN, channels sorted by the norm before:
    as they are (left), and relative to the mean channel (right), where competition shows as the
    strong channels rising above the weak ones."""
    b, a = channel_norms(before), channel_norms(after)
    order = torch.argsort(b, descending=True) if order is None else order
    fig, axes = _subplots(1, 2, figsize=(10.0, 3.0))
    for ax, (what, scale_b, scale_a) in zip(axes, (("||X_i|| over space", 1.0, 1.0),
                                                  ("||X_i|| / mean over channels", b.mean(), a.mean().clamp_min(1e-12)))):
        ax.plot((b / scale_b)[order].numpy(), color="#5f6368", lw=2, label="before GRN")
        ax.plot((a / scale_a)[order].numpy(), color="#1a73e8", lw=1.5, label="after GRN")
        ax.set_xlabel("channel (sorted by norm before GRN)")
        ax.set_ylabel(what)
        ax.set_ylim(bottom=0)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(frameon=False, fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_grn_steps(x: Tensor, num_channels: int = 48) -> Figure:
    """The first two GRN steps on one sample ``(1, H, W, C)``: the three aggregates per channel
    (each divided by its mean over channels so they share an axis) and the two normalizations of
    the L2 aggregate. Shows the first ``num_channels`` channels."""
    c = slice(0, min(num_channels, x.shape[-1]))
    idx = np.arange(x.shape[-1])[c]
    fig, axes = _subplots(1, 2, figsize=(10.5, 3.2))
    ax = axes[0]
    for kind, color in zip(AGGREGATES, ("#1a73e8", "#e8710a", "#188038")):
        g = grn_aggregate(x, kind).flatten()
        ax.plot(idx, (g / g.mean())[c].numpy(), marker="o", ms=3, lw=1, color=color, label=kind)
    ax.set_title("1. aggregate: one number per channel (scaled to mean 1)", fontsize=10)
    ax.set_xlabel("channel")
    ax.legend(frameon=False, fontsize=9)
    ax = axes[1]
    gx = grn_aggregate(x, "L2")
    for kind, color in (("divisive", "#1a73e8"), ("standardize", "#d93025")):
        ax.plot(idx, grn_normalize(gx, kind).flatten()[c].numpy(), marker="o", ms=3, lw=1, color=color, label=kind)
    ax.axhline(0, color="black", lw=0.6)
    ax.axhline(1, color="#1a73e8", lw=0.6, ls=":")
    ax.set_title("2. normalize across channels: N_i", fontsize=10)
    ax.set_xlabel("channel")
    ax.legend(frameon=False, fontsize=9)
    for ax in axes:
        ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def plot_batch_dependence(responses: dict[str, Sequence[Tensor]], labels: Sequence[str], num_channels: int = 40) -> Figure:
    """One panel per GRN statistic (``responses[name]``: one ``(C,)`` response N of the same sample
    per batch it was put in, named by ``labels``). Identical curves = independent of the batch."""
    fig, axes = _subplots(1, len(responses), figsize=(5.2 * len(responses), 3.0), sharey=True)
    axes = np.atleast_1d(axes)
    styles = (("#1a73e8", "-"), ("#e8710a", "--"), ("#188038", ":"))
    for ax, (name, curves) in zip(axes, responses.items()):
        for curve, label, (color, ls) in zip(curves, labels, styles):
            ax.plot(curve[:num_channels].numpy(), color=color, ls=ls, lw=1.6, label=label)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("channel")
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].set_ylabel("response N_i of image A")
    axes[0].legend(frameon=False, fontsize=9)
    fig.tight_layout()
    return fig
