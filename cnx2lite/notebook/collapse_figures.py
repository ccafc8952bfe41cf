"""Figures of notebook 4 (feature collapse): feature cosine distance against block index, and channel activation
maps. The figure of all collapse statistics, which the reproduction report draws too, is
:func:`cnx2lite.analysis.plot_collapse_by_layer`."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..analysis import mark_stages


def plot_distance_by_layer(results: Mapping[str, Sequence[tuple[str, float]]], title: str = "") -> Figure:
    """One line per model: feature cosine distance against block index (as the paper's Fig. 4)."""
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    styles = [("o", "-", 7), ("s", "--", 4), ("^", ":", 5), ("D", "-.", 4)]  # overlapping lines stay visible
    for (label, values), (marker, ls, ms) in zip(results.items(), styles * len(results)):
        ax.plot(range(1, len(values) + 1), [v for _, v in values], marker=marker, ls=ls, ms=ms, label=label,
                mfc="none" if marker == "o" else None)
    mark_stages(ax, [name for name, _ in next(iter(results.values()), [])])
    ax.axhline(0.5, color="0.4", lw=0.8, ls="--", label="independent zero-mean channels")
    ax.set_ylabel("feature cosine distance")
    ax.set_ylim(0, 0.55)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=9)
    if title:
        ax.set_title(title)
    return fig


def plot_channel_maps(maps: Mapping[str, Tensor], cols: int = 8, title: str = "") -> Figure:
    """Side by side, one grid per model of ``(k, H, W)`` activation maps. Each map is min-max scaled
    on its own (so structure is visible whatever its magnitude); a map that is constant is drawn
    flat black and counted in the panel title."""
    fig = Figure(figsize=(4.2 * len(maps), 4.6), layout="constrained")
    subfigs = fig.subfigures(1, len(maps), squeeze=False)[0]
    for subfig, (label, m) in zip(subfigs, maps.items()):
        m = m.float()
        lo, hi = m.amin(dim=(1, 2), keepdim=True), m.amax(dim=(1, 2), keepdim=True)
        flat = (hi - lo).flatten() <= 1e-6 * hi.abs().flatten().clamp_min(1e-6)
        scaled = torch.where(flat.view(-1, 1, 1), torch.zeros_like(m), (m - lo) / (hi - lo).clamp_min(1e-12))
        rows = -(-len(m) // cols)
        axes = subfig.subplots(rows, cols, squeeze=False)
        for i, ax in enumerate(axes.flat):
            ax.set_axis_off()
            if i < len(m):
                ax.imshow(scaled[i].numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
        subfig.suptitle(f"{label}\n{len(m)} channels, {int(flat.sum())} constant", fontsize=10)
    if title:
        fig.suptitle(title)
    return fig
