"""Figures of notebook 4 (feature collapse), and the small measurements only it makes: the analysis images, the
collapse statistics against block index (one panel per statistic), the feature cosine distance against block index
(one panel per variant of the measurement), the channel activation maps with their dead and saturated channels
marked, per-stage means, the levels of the saturated maps, and the distance of spatially centered maps.

The collapse statistics themselves are :mod:`cnx2lite.collapse` (:func:`~cnx2lite.collapse.collapse_by_layer`,
:func:`~cnx2lite.collapse.layer_collapse`); the reproduction report's curves over runs are
:func:`cnx2lite.collapse_curves.plot_curves`. Nothing here redefines them.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor, nn

from .. import collapse
from ..collapse import LayerCollapse, mark_stages
from .plotting import to_rgb

DEAD_COLOR, SATURATED_COLOR = "#d62728", "#ff7f0e"  # frames of flagged channel maps


def plot_analysis_images(images: Tensor, labels: Sequence[str], cols: int = 8, title: str = "") -> Figure:
    """The analysis images ``(N, 3, H, W)`` (ImageNet-normalized) in a grid, each titled with its ``labels[i]``;
    thumbnails at 72 dpi (photos make large PNGs)."""
    rows = -(-len(images) // cols)
    fig = Figure(figsize=(1.1 * cols, 1.3 * rows + 0.4), dpi=72, layout="constrained")
    for i, ax in enumerate(fig.subplots(rows, cols, squeeze=False).flat):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(to_rgb(images[i]))
            ax.set_title(labels[i], fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def plot_collapse_curves(results: Mapping[str, Sequence[LayerCollapse]],
                         fractions: Sequence[str] = ("dead", "saturated"), title: str = "") -> Figure:
    """Per block, one panel per statistic over a shared block axis, as :func:`~cnx2lite.collapse.collapse_by_layer`
    returns them: the feature cosine distance (on 0 to 0.55, 0 being complete collapse), then each of ``fractions``
    in % of the block's channels, on an axis fitted to its values. Models are colors, named in one legend; lines
    are means over images, bands mean +- one std (clipped at 0: a fraction is never negative)."""
    fig = Figure(figsize=(7, 2.9 + 1.8 * len(fractions)), layout="constrained")
    axes = fig.subplots(1 + len(fractions), 1, sharex=True, height_ratios=[1.5] + [1] * len(fractions))
    names = [layer.name for layer in next(iter(results.values()), [])]
    x = range(1, len(names) + 1)
    for ax, stat in zip(axes, ("distance", *fractions)):
        scale, highest = (1 if stat == "distance" else 100), 0.0
        for color, (label, layers) in enumerate(results.items()):
            values = scale * torch.stack([getattr(layer, stat) for layer in layers])  # (blocks, images)
            mean = values.mean(dim=1)
            std = values.std(dim=1) if values.shape[1] > 1 else torch.zeros_like(mean)
            ax.plot(x, mean, color=f"C{color}", marker="o", ms=3.5, label=label)
            ax.fill_between(x, (mean - std).clamp_min(0), mean + std, color=f"C{color}", alpha=0.2, lw=0)
            highest = max(highest, (mean + std).max().item())
        mark_stages(ax, names)
        ax.grid(alpha=0.3)
        if stat == "distance":
            ax.axhline(0.5, color="0.4", lw=0.8, ls="--")
            ax.annotate("0.5: independent zero-mean channels", (0.99, 0.5), xycoords=("axes fraction", "data"),
                        xytext=(0, 2), textcoords="offset points", ha="right", va="bottom", fontsize=8, color="0.3")
            ax.set(ylim=(0, 0.55), ylabel="feature cosine distance\n(0: identical channels)")
            continue
        ax.set(ylim=(0, max(1.15 * highest, 1.0)), ylabel=f"{stat} channels (%)")  # all zero: still a 0-1 % axis
        if highest == 0:
            ax.text(0.5, 0.5, f"no {stat} channel in any block, model or image", transform=ax.transAxes,
                    ha="center", va="center", fontsize=9, color="0.3")
    for ax in axes[:-1]:
        ax.xaxis.label.set_visible(False)
    fig.legend(handles=axes[0].lines[:len(results)], loc="outside lower center", ncol=min(len(results), 2),
               fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def plot_distance_by_layer(*panels: Mapping[str, Sequence[tuple[str, float]]], panel_titles: Sequence[str] = (),
                           title: str = "") -> Figure:
    """Feature cosine distance against block index (as the paper's Fig. 4), one panel per ``{model: [(layer name,
    distance)]}`` mapping, side by side with a shared y axis; a model keeps its color across panels."""
    fig = Figure(figsize=(4.6 * len(panels) + 1.4, 3.8), layout="constrained")
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    styles = [("o", "-"), ("s", "--"), ("^", ":"), ("D", "-.")]  # overlapping lines stay visible
    for ax, results, panel_title in zip(axes, panels, [*panel_titles, *[""] * len(panels)]):
        for color, (label, values) in enumerate(results.items()):
            marker, ls = styles[color % len(styles)]
            ax.plot(range(1, len(values) + 1), [v for _, v in values], marker=marker, ls=ls, ms=4, color=f"C{color}",
                    mfc="none", label=label)
        mark_stages(ax, [name for name, _ in next(iter(results.values()), [])])
        ax.axhline(0.5, color="0.4", lw=0.8, ls="--", label="independent zero-mean channels")
        ax.set_ylim(0, 0.55)
        ax.grid(alpha=0.3)
        if panel_title:
            ax.set_title(panel_title, fontsize=10)
    axes[0].set_ylabel("feature cosine distance (0: identical channels)")
    axes[0].legend(loc="lower left", fontsize=8)
    if title:
        fig.suptitle(title)
    return fig


def channel_flags(maps: Tensor) -> tuple[Tensor, Tensor]:
    """Which of the maps ``(k, H, W)`` are dead and which saturated, each ``(k,)`` bool, by the definitions of
    :func:`cnx2lite.collapse.layer_collapse` (each map is passed to it as an image with one channel)."""
    flags = collapse.layer_collapse(maps.unsqueeze(1))
    return flags.dead.bool(), flags.saturated.bool()


def plot_channel_maps(maps: Mapping[str, Tensor], cols: int = 8, title: str = "") -> Figure:
    """Side by side, one grid per model of ``(k, H, W)`` activation maps of one image. Each map is divided by its own
    largest ``|activation|`` (a diverging scale centred on 0, so a saturated map is uniformly coloured and a weak but
    structured one stays visible); dead maps are drawn as 0. Dead and saturated maps (:func:`channel_flags`) get a
    coloured frame and are counted in the panel title."""
    fig = Figure(figsize=(3.7 * len(maps) + 0.9, 4.9), layout="constrained")
    subfigs = fig.subfigures(1, len(maps), squeeze=False)[0]
    image = None
    for subfig, (label, m) in zip(subfigs, maps.items()):
        m = m.float()
        dead, saturated = channel_flags(m)
        peak = m.abs().amax(dim=(1, 2), keepdim=True)
        scaled = torch.where(dead.view(-1, 1, 1), torch.zeros_like(m), m / peak.clamp_min(1e-12))
        axes = subfig.subplots(-(-len(m) // cols), cols, squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.set_xticks([])
            ax.set_yticks([])
            if i >= len(m):
                ax.set_axis_off()
                continue
            image = ax.imshow(scaled[i].numpy(), cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
            frame = DEAD_COLOR if dead[i] else SATURATED_COLOR if saturated[i] else None
            for spine in ax.spines.values():
                spine.set(color=frame or "0.8", linewidth=2.5 if frame else 0.5)
        n_dead, n_sat = int(dead.sum()), int(saturated.sum())
        subfig.suptitle(f"{label}\n{len(m)} channels: {n_dead} dead + {n_sat} saturated = {n_dead + n_sat} constant",
                        fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=list(subfigs[-1].axes), shrink=0.6, label="activation / largest |activation| of its map")
    fig.legend(handles=[Patch(facecolor="none", edgecolor=DEAD_COLOR, lw=2.5, label="dead (|activation| < tol)"),
                        Patch(facecolor="none", edgecolor=SATURATED_COLOR, lw=2.5,
                              label="saturated (constant over positions)")],
               loc="outside lower center", ncol=2, fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def stage_means(layers: Sequence[LayerCollapse]) -> dict[str, dict[str, float]]:
    """``{"stage 1": {"distance": ..., "dead": ..., ...}, ...}``: each of ``collapse.STATS`` averaged over the
    blocks of a stage (read from names like ``"stages.2.0.act"``) and over images."""
    by_stage: dict[str, list[LayerCollapse]] = {}
    for layer in layers:
        by_stage.setdefault(f"stage {int(layer.name.split('.')[1]) + 1}", []).append(layer)
    return {stage: {stat: torch.stack([getattr(layer, stat) for layer in group]).mean().item()
                    for stat in collapse.STATS}
            for stage, group in by_stage.items()}


@torch.no_grad()
def saturated_levels(model: nn.Module, images: Tensor, batch_size: int = 8) -> Tensor:
    """The level (spatial mean, in GELU output units) of every saturated map of every block and image of
    ``images (N, 3, H, W)``: ``(M,)`` float64. Which maps are saturated is :func:`channel_flags`' call."""
    levels = []
    for i in range(0, len(images), batch_size):
        for feats in collapse.mlp_activations(model, images[i:i + batch_size]).values():  # (n, C, H, W)
            for maps in feats:  # (C, H, W): one image
                levels.append(maps[channel_flags(maps)[1]].double().mean(dim=(1, 2)))
    return torch.cat(levels)
