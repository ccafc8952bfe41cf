"""Notebook 6's figures: the backbone's four stage maps of a photo, and composites with their labels."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor

from ..dense.composites import CompositeDataset
from ..dense.heads import stage_maps
from ..models import ConvNeXtV2
from ..train.plots import class_colors, draw_instances
from ..transforms import denormalize


@torch.no_grad()
def plot_stage_maps(backbone: ConvNeXtV2, image: Tensor) -> Figure:
    """A photo ``(3, H, W)`` and what each of the four stages makes of it: the mean absolute activation per position
    of the normed stage map ``(C_i, H / 2^(i+2), W / 2^(i+2))``, the maps both dense heads read. Each map has its own
    colour scale (the figure's caption says so): the point is where a stage responds, not how strongly."""
    maps = stage_maps(backbone.eval(), image[None])
    fig = Figure(figsize=(12, 2.8), layout="constrained")
    axes = fig.subplots(1, 5)
    axes[0].imshow(denormalize(image).movedim(0, -1).numpy())
    axes[0].set_title(f"photo {tuple(image.shape[-2:])}", fontsize=9)
    for ax, (level, stage) in zip(axes[1:], maps.items()):
        ax.imshow(stage[0].abs().mean(0).numpy(), cmap="magma")
        ax.set_title(f"stage {int(level) + 1}: {tuple(stage.shape[1:])}", fontsize=9)
    for ax in axes:
        ax.set_axis_off()
    fig.supxlabel("colour: mean |activation| over the channels at each position, bright = high (each map on its own "
                  "scale)", fontsize=9)
    return fig


def plot_composites(dataset: CompositeDataset, indices: Sequence[int],
                    names: Mapping[str, str] | None = None) -> Figure:
    """One row per composite: the image, its semantic labels (a colour per class, named by ``names`` where given,
    e.g. :func:`.photos.class_names`) and its instances (visible masks and boxes, the detection targets). The key
    lists the classes these composites hold, in class order."""
    colors = class_colors(len(dataset.classes))
    shown: set[int] = set()
    fig = Figure(figsize=(7.5, 2.5 * len(indices) + 0.6), layout="constrained")
    axes = fig.subplots(len(indices), 3, squeeze=False)
    for row, index in zip(axes, indices):
        image, target = dataset[index]
        labels = target["labels"]
        shown.update(target["semantic"].unique().tolist())
        instances = draw_instances(image, target["masks"], target["boxes"], labels, len(dataset.classes))
        row[0].imshow(denormalize(image).movedim(0, -1).numpy())
        row[1].imshow(colors[target["semantic"].numpy()])
        row[2].imshow(instances.movedim(0, -1).numpy())
        for ax, title in zip(row, (f"composite {index}", "semantic labels", f"{len(labels)} instance(s)")):
            ax.set_title(title, fontsize=9)
            ax.set_axis_off()
    names = names or {}
    fig.legend(handles=[Patch(color=colors[c], label=names.get(dataset.classes[c], dataset.classes[c]))
                        for c in sorted(shown)],
               loc="outside lower center", ncols=min(len(shown), 5), fontsize=7, frameon=False)
    return fig
