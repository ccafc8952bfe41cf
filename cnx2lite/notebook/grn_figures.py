"""Figures of notebook 3 (GRN): per-channel norms before and after a GRN, GRN's first two steps
with their alternatives, and the dependence of a sample's response on its batch.

Feature maps are channels-last ``(1, H, W, C)`` (one sample), as GRN sees them; the GRN maths is
:mod:`cnx2lite.layers.grn`'s."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from ..layers.grn import GRN_AGGREGATIONS, grn_aggregate, grn_normalize
from .plotting import subplots

AGGREGATION_LABELS = {"l2": "L2", "l1": "L1", "mean": "average"}  # names in figures and widgets


def channel_norms(x: Tensor) -> Tensor:
    """Per-channel L2 norms over space of one sample ``(1, H, W, C)`` or ``(H, W, C)`` -> ``(C,)``."""
    return torch.linalg.vector_norm(x.reshape(-1, x.shape[-1]), dim=0)


def plot_channel_norms(before: Tensor, after: Tensor, title: str = "", order: Tensor | None = None) -> Figure:
    """Per-channel norms of one sample before and after a GRN, channels sorted by the norm before:
    as they are (left), and relative to the mean channel (right), where competition shows as the
    strong channels rising above the weak ones."""
    b, a = channel_norms(before), channel_norms(after)
    order = torch.argsort(b, descending=True) if order is None else order
    fig, axes = subplots(1, 2, figsize=(10.0, 3.0))
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
    fig, axes = subplots(1, 2, figsize=(10.5, 3.2))
    ax = axes[0]
    for aggregation, color in zip(GRN_AGGREGATIONS, ("#1a73e8", "#e8710a", "#188038")):
        g = grn_aggregate(x, aggregation).flatten()
        ax.plot(idx, (g / g.mean())[c].numpy(), marker="o", ms=3, lw=1, color=color,
                label=AGGREGATION_LABELS[aggregation])
    ax.set_title("1. aggregate: one number per channel (scaled to mean 1)", fontsize=10)
    ax.set_xlabel("channel")
    ax.legend(frameon=False, fontsize=9)
    ax = axes[1]
    gx = grn_aggregate(x, "l2")
    for normalization, color in (("divisive", "#1a73e8"), ("standardize", "#d93025")):
        ax.plot(idx, grn_normalize(gx, normalization).flatten()[c].numpy(), marker="o", ms=3, lw=1, color=color,
                label=normalization)
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
    fig, axes = subplots(1, len(responses), figsize=(5.2 * len(responses), 3.0), sharey=True)
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
