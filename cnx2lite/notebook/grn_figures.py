"""Figures of notebook 3 (GRN): GRN's first two steps with their alternatives, per-channel norms
before and after a GRN, what the GRNs of a trained encoder do (learned gamma and beta, gain against
response per stage), the channel redundancy of trained and random encoders before and after GRN, and
the dependence of a sample's response on its batch.

Feature maps are channels-last ``(N, H, W, C)``, as GRN sees them. The GRN maths is
:mod:`cnx2lite.layers.grn`'s, the MLP features and the cosine distance :mod:`cnx2lite.collapse`'s."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from ..collapse import feature_cosine_distance, mark_stages, mlp_activations
from ..layers.grn import GRN_AGGREGATIONS, grn_aggregate, grn_normalize
from .plotting import subplots

AGGREGATION_LABELS = {"l2": "L2", "l1": "L1", "mean": "average"}  # names in figures and widgets
STAGE_COLORS = ("#1a73e8", "#e8710a", "#188038", "#a142f4")  # stage 1..4


def channel_norms(x: Tensor) -> Tensor:
    """Per-channel L2 norms over space of one sample ``(1, H, W, C)`` or ``(H, W, C)`` -> ``(C,)``."""
    return torch.linalg.vector_norm(x.reshape(-1, x.shape[-1]), dim=0)


def mean_abs_correlation(x: Tensor) -> Tensor:
    """Redundancy of the channels of each sample of ``x (N, H, W, C)`` -> ``(N,)``: the mean absolute
    Pearson correlation over positions between two different channels (a spatially constant channel
    counts as uncorrelated). 0: unrelated maps; 1: every channel is an affine copy of every other."""
    f = x.reshape(len(x), -1, x.shape[-1]).double()  # (N, HW, C)
    f = f - f.mean(dim=1, keepdim=True)
    f = f / torch.linalg.vector_norm(f, dim=1, keepdim=True).clamp_min(1e-12)
    r = (f.transpose(1, 2) @ f).abs()  # (N, C, C)
    c = x.shape[-1]
    return (r.sum(dim=(1, 2)) - r.diagonal(dim1=1, dim2=2).sum(dim=1)) / (c * (c - 1))


def block_label(name: str) -> str:
    """``"stages.1.0.act"`` -> ``"stage 2, block 1"`` (counted from 1, as in the figures)."""
    _, stage, block = name.split(".")[:3]
    return f"stage {int(stage) + 1}, block {int(block) + 1}"


@dataclass(frozen=True)
class GRNCapture:
    """What every GRN of an encoder sees and does on a batch of images, per MLP activation name
    (``"stages.1.0.act"``, one per block, in order): its input and output ``(N, H, W, C)`` and the
    block's GRN parameters ``gamma`` and ``beta`` ``(C,)``."""

    inputs: dict[str, Tensor]
    outputs: dict[str, Tensor]
    gamma: dict[str, Tensor]
    beta: dict[str, Tensor]

    def response(self, name: str) -> Tensor:
        """GRN's relative response ``N = grn_normalize(grn_aggregate(x))`` of block ``name``: ``(N, C)``."""
        return grn_normalize(grn_aggregate(self.inputs[name])).flatten(1)

    def gain(self, name: str) -> Tensor:
        """The factor ``1 + gamma_i * N_i`` by which block ``name``'s GRN scales each channel: ``(N, C)``."""
        return 1 + self.gamma[name] * self.response(name)


@torch.no_grad()
def capture_grn(model: nn.Module, images: Tensor) -> GRNCapture:
    """Run ``images (N, 3, S, S)`` through a V2 encoder and apply each block's GRN to its MLP features
    (after the GELU, captured by :func:`~cnx2lite.collapse.mlp_activations`)."""
    inputs, outputs, gamma, beta = {}, {}, {}, {}
    for name, feats in mlp_activations(model, images).items():
        grn = model.get_submodule(name.rpartition(".")[0]).grn
        inputs[name] = feats.permute(0, 2, 3, 1).contiguous()  # (N, C, H, W) -> (N, H, W, C)
        outputs[name] = grn(inputs[name])
        gamma[name], beta[name] = grn.gamma.detach().flatten(), grn.beta.detach().flatten()
    return GRNCapture(inputs, outputs, gamma, beta)


def _tidy(ax) -> None:
    ax.spines[["top", "right"]].set_visible(False)


def plot_grn_steps(x: Tensor, where: str = "") -> Figure:
    """The first two GRN steps on one sample ``x (1, H, W, C)``, all ``C`` channels sorted by their
    L2 aggregate: the three aggregates per channel (each divided by its largest magnitude over channels so they
    share an axis: the average's mean over channels can be near 0, and a ratio to it meaningless) and the two
    normalizations of the L2 aggregate. ``where`` names the features."""
    g2 = grn_aggregate(x, "l2").flatten()
    order = torch.argsort(g2, descending=True)
    fig, axes = subplots(1, 2, figsize=(10.5, 3.3))
    ax = axes[0]
    for aggregation, color in zip(GRN_AGGREGATIONS, ("#1a73e8", "#e8710a", "#188038")):
        g = grn_aggregate(x, aggregation).flatten()
        ax.plot((g / g.abs().max())[order].numpy(), lw=1.2, color=color, label=AGGREGATION_LABELS[aggregation])
    ax.axhline(0, color="black", lw=0.6)
    ax.set_title("1. aggregate: one number per channel", fontsize=10)
    ax.set_ylabel("G_i / largest |G| over channels (ratio)")
    ax = axes[1]
    for normalization, color in (("divisive", "#1a73e8"), ("standardize", "#d93025")):
        ax.plot(grn_normalize(g2, normalization)[order].numpy(), lw=1.5, color=color, label=normalization)
    ax.axhline(0, color="black", lw=0.6)
    ax.axhline(1, color="#1a73e8", lw=0.6, ls=":", label="N_i = 1: the mean channel")
    ax.set_title("2. normalize the L2 aggregate across channels", fontsize=10)
    ax.set_ylabel("response N_i (ratio)")
    for ax in axes:
        ax.set_xlabel(f"channel, sorted by L2 norm (all {x.shape[-1]})")
        ax.legend(frameon=False, fontsize=9)
        _tidy(ax)
    fig.suptitle(f"GRN steps 1 and 2 on {where or 'one feature map'}", fontsize=11)
    fig.tight_layout()
    return fig


def plot_channel_norms(before: Tensor, after: Tensor, title: str = "", order: Tensor | None = None) -> Figure:
    """Per-channel norms of one sample ``(1, H, W, C)`` before and after a GRN, all ``C`` channels
    sorted by the norm before (or by ``order``): as they are (left), and relative to the mean channel
    (right), where competition shows as the strong channels rising above the weak ones."""
    b, a = channel_norms(before), channel_norms(after)
    order = torch.argsort(b, descending=True) if order is None else order
    fig, axes = subplots(1, 2, figsize=(10.0, 3.2))
    for ax, (what, scale_b, scale_a) in zip(axes, (("||X_i|| over space (activation units)", 1.0, 1.0),
                                                  ("||X_i|| / mean over channels (ratio)", b.mean(),
                                                   a.mean().clamp_min(1e-12)))):
        ax.plot((b / scale_b)[order].numpy(), color="#5f6368", lw=2, label="before GRN")
        ax.plot((a / scale_a)[order].numpy(), color="#1a73e8", lw=1.5, label="after GRN")
        ax.set_xlabel(f"channel, sorted by norm before GRN (all {len(b)})")
        ax.set_ylabel(what)
        ax.set_ylim(bottom=0)
        _tidy(ax)
    axes[0].legend(frameon=False, fontsize=9)
    fig.suptitle(title or "per-channel norms before and after GRN", fontsize=10)
    fig.tight_layout()
    return fig


def plot_learned_grn(capture: GRNCapture, title: str = "") -> Figure:
    """The learned ``gamma`` (left) and ``beta`` (right) of every block's GRN, one box per block
    (all its channels), colored by stage; both start at 0."""
    names = list(capture.gamma)
    fig, axes = subplots(1, 2, figsize=(10.5, 3.7), sharex=True)
    colors = [STAGE_COLORS[int(n.split(".")[1]) % len(STAGE_COLORS)] for n in names]
    for ax, (param, values) in zip(axes, (("gamma", capture.gamma), ("beta", capture.beta))):
        boxes = ax.boxplot([values[n].numpy() for n in names], positions=range(1, len(names) + 1), widths=0.6,
                           patch_artist=True, medianprops={"color": "black"}, flierprops={"ms": 2, "alpha": 0.4})
        for box, color in zip(boxes["boxes"], colors):
            box.set(facecolor=color, alpha=0.5, edgecolor=color)
        ax.axhline(0, color="black", lw=0.8, ls="--")
        mark_stages(ax, names)
        ax.set_xlabel("block (input to output); dotted lines: stage boundaries", fontsize=9)
        ax.set_ylabel(f"learned {param} (per channel)")
        ax.set_title(f"{param} of each block's GRN (all channels)", fontsize=10)
        _tidy(ax)
    handles = [axes[0].plot([], [], "s", color=c, alpha=0.6, label=f"stage {i + 1}")[0]
               for i, c in enumerate(STAGE_COLORS)]
    handles.append(axes[0].plot([], [], "--", color="black", lw=0.8, label="initial value (0)")[0])
    fig.legend(handles=handles, frameon=False, fontsize=9, loc="lower center", ncol=len(handles))
    fig.suptitle(title or "learned GRN parameters", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    return fig


def stage_gains(capture: GRNCapture) -> list[tuple[Tensor, Tensor]]:
    """Per stage, in order: the responses ``N_i`` and gains ``1 + gamma_i * N_i`` of every channel of
    every block of that stage on every image, as two flat tensors of equal length."""
    stages: dict[str, list[str]] = {}
    for name in capture.inputs:
        stages.setdefault(name.split(".")[1], []).append(name)
    return [(torch.cat([capture.response(n).flatten() for n in names]),
             torch.cat([capture.gain(n).flatten() for n in names])) for names in stages.values()]


def plot_gain_vs_response(capture: GRNCapture, title: str = "", bins: int = 40) -> Figure:
    """One panel per stage: how many (image, channel) pairs of its blocks fall at each response ``N_i``
    (x) and gain ``1 + gamma_i * N_i`` (y), as a 2D histogram on a log color scale, with the median
    gain per response bin (line). Above the dashed line (gain 1) GRN amplifies a channel, below it damps."""
    per_stage = stage_gains(capture)
    responses = torch.cat([r for r, _ in per_stage])
    gains = torch.cat([g for _, g in per_stage])
    margin = 0.02 * max(float(gains.max() - gains.min()), 0.1)  # an identity GRN (all gains 1) still has a y range
    extent = (0.0, float(responses.quantile(0.999)), float(gains.min()) - margin, float(gains.max()) + margin)
    fig, axes = subplots(1, len(per_stage), figsize=(3.0 * len(per_stage) + 1.0, 3.4), sharex=True, sharey=True)
    fig.set_layout_engine("constrained")  # room for the shared colorbar
    for stage, (ax, (response, gain)) in enumerate(zip(axes, per_stage)):
        image = ax.hexbin(response.numpy(), gain.numpy(), gridsize=bins, extent=extent, bins="log", mincnt=1,
                          cmap="Blues", linewidths=0.1)
        edges = torch.linspace(extent[0], extent[1], 13)
        which = torch.bucketize(response, edges)
        medians = [(float(response[which == b].median()), float(gain[which == b].median()))
                   for b in range(1, len(edges)) if int((which == b).sum()) >= 20]  # bins with enough points
        ax.plot(*zip(*medians), color="#d93025", lw=1.8, label="median gain")
        ax.axhline(1, color="black", lw=0.8, ls="--", label="gain 1 (identity)")
        ax.set_title(f"stage {stage + 1}: {len(response):,} (image, channel) pairs", fontsize=10)
        ax.set_xlabel("response $N_i$ (ratio to the mean channel)")
        _tidy(ax)
    axes[0].set_ylabel("gain $1 + \\gamma_i N_i$ (factor)")
    axes[0].legend(frameon=False, fontsize=8, loc="upper left")
    fig.colorbar(image, ax=list(axes), label="(image, channel) pairs per cell", pad=0.01)
    fig.suptitle(title or "gain against response of every channel, per stage", fontsize=11)
    return fig


def grn_redundancy(capture: GRNCapture) -> dict[str, np.ndarray]:
    """Channel redundancy of every block before and after its GRN, averaged over the images: the
    feature cosine distance of :func:`~cnx2lite.collapse.feature_cosine_distance` (the paper's Fig. 4
    measure; lower = more redundant) and :func:`mean_abs_correlation` (higher = more redundant).
    Returns ``{"distance before", "distance after", "|r| before", "|r| after"}``, each ``(blocks,)``."""
    rows = [(feature_cosine_distance(x.permute(0, 3, 1, 2)), feature_cosine_distance(y.permute(0, 3, 1, 2)),
             mean_abs_correlation(x).mean().item(), mean_abs_correlation(y).mean().item())
            for x, y in zip(capture.inputs.values(), capture.outputs.values())]
    return dict(zip(("distance before", "distance after", "|r| before", "|r| after"), np.array(rows).T))


def plot_redundancy(captures: Mapping[str, GRNCapture], title: str = "") -> Figure:
    """Per encoder (one color): the feature cosine distance (left) and the mean absolute channel
    correlation (right) of every block's MLP features before (solid) and after (dashed) its GRN."""
    fig, axes = subplots(1, 2, figsize=(11.0, 3.9))
    colors = ("#5f6368", "#1a73e8", "#e8710a")
    names = list(next(iter(captures.values())).inputs)
    blocks = np.arange(1, len(names) + 1)
    for (label, cap), color in zip(captures.items(), colors):
        stats = grn_redundancy(cap)
        for ax, measure in zip(axes, ("distance", "|r|")):
            ax.plot(blocks, stats[f"{measure} before"], color=color, marker="o", ms=4, lw=2,
                    label=f"{label}, before GRN")
            ax.plot(blocks, stats[f"{measure} after"], color=color, marker="x", ms=6, lw=1.2, ls="--",
                    label=f"{label}, after GRN")
    panels = (("mean pairwise cosine distance", "feature cosine distance (higher = more diverse)"),
              ("mean |Pearson r| between channels", "channel correlation (higher = more redundant)"))
    for ax, (ylabel, what) in zip(axes, panels):
        mark_stages(ax, names)
        ax.set_xlabel("block (input to output); dotted lines: stage boundaries", fontsize=9)
        ax.set_ylabel(ylabel)
        ax.set_title(what, fontsize=10)
        ax.grid(alpha=0.3)
        _tidy(ax)
    fig.legend(*axes[0].get_legend_handles_labels(), frameon=False, fontsize=9, loc="lower center",
               ncol=2 * len(captures))
    fig.suptitle(title or "redundancy of the MLP channels before and after GRN", fontsize=11)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return fig


def plot_batch_dependence(responses: Mapping[str, Sequence[Tensor]], labels: Sequence[str],
                          num_channels: int = 40) -> Figure:
    """One panel per GRN statistic (``responses[name]``: one ``(C,)`` response N of the same sample
    per batch it was put in, named by ``labels``), for the first ``num_channels`` channels.
    Identical curves = independent of the batch."""
    fig, axes = subplots(1, len(responses), figsize=(5.2 * len(responses), 3.2), sharey=True)
    axes = np.atleast_1d(axes)
    styles = (("#1a73e8", "-"), ("#e8710a", "--"), ("#188038", ":"))
    for ax, (name, curves) in zip(axes, responses.items()):
        for curve, label, (color, ls) in zip(curves, labels, styles):
            ax.plot(curve[:num_channels].numpy(), color=color, ls=ls, lw=1.6, label=label)
        ax.set_title(name, fontsize=10)
        total = len(next(iter(curves)))
        ax.set_xlabel(f"channel index (the first {min(num_channels, total)} of {total})")
        _tidy(ax)
    axes[0].set_ylabel("response N_i of image A (ratio)")
    axes[0].legend(frameon=False, fontsize=9)
    fig.suptitle("is image A's GRN response the same whatever else is in its batch?", fontsize=11)
    fig.tight_layout()
    return fig
