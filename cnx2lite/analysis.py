"""Feature-collapse analysis (Woo et al., 2023, the feature collapse analysis of the GRN section) for any ConvNeXt.

The paper looks at the MLP of every block: its expanded activations (``4C`` channels, after the
GELU, i.e. what enters GRN in a V2 block). A collapsed layer has many dead, saturated or redundant
channels. Fig. 4 measures this with the mean pairwise cosine distance between channels:

    distance = 1/C^2 * sum_i sum_j (1 - cos(X_i, X_j)) / 2

where ``X_i`` is channel ``i``'s activation map flattened over space, computed per image and
averaged over images. 0 means all channels are the same map (up to scale); higher means more
diverse channels.

``mlp_activations`` works on this package's models and on timm's ``convnext_*`` / ``convnextv2_*``:
it finds each block (a module with a depthwise conv child) and hooks the first GELU inside it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

__all__ = ["find_mlp_activations", "mlp_activations", "feature_cosine_distance", "cosine_distance_by_layer",
           "channel_maps", "plot_distance_by_layer", "plot_channel_maps"]


def _is_gelu(module: nn.Module) -> bool:
    # torch's nn.GELU, and timm's own GELU class (a different type with the same name)
    return isinstance(module, nn.GELU) or type(module).__name__ == "GELU"


def _is_block(module: nn.Module) -> bool:
    """A ConvNeXt block: a module with a depthwise conv as a direct child (ours: ``dwconv``,
    timm: ``conv_dw``)."""
    return any(isinstance(c, nn.Conv2d) and c.groups > 1 and c.groups == c.in_channels
               for c in module.children())


def find_mlp_activations(model: nn.Module) -> list[str]:
    """Names of the MLP activation modules of ``model``, one per block, in forward (definition) order:
    the first GELU inside each block."""
    names = []
    for block_name, block in model.named_modules():
        if not _is_block(block):
            continue
        gelus = [name for name, m in block.named_modules() if _is_gelu(m)]
        if gelus:
            names.append(f"{block_name}.{gelus[0]}" if block_name else gelus[0])
    if not names:
        raise ValueError(f"no ConvNeXt block with a GELU module found in {type(model).__name__}; "
                         "pass the activation modules' names as layers=[...]")
    return names


def _to_nchw(out: Tensor, spatial: tuple[int, int] | None) -> Tensor:
    """``(N, H, W, C)`` (channels-last MLP, ours and timm's default) or ``(N, C, H, W)`` (timm's
    ``conv_mlp``) -> ``(N, C, H, W)``. ``spatial`` is the block input's ``(H, W)``."""
    if out.dim() != 4:
        raise ValueError(f"expected a 4-d activation, got shape {tuple(out.shape)}")
    if spatial is not None and tuple(out.shape[2:]) == spatial and tuple(out.shape[1:3]) != spatial:
        return out
    if spatial is None or tuple(out.shape[1:3]) == spatial:
        return out.permute(0, 3, 1, 2)
    raise ValueError(f"activation shape {tuple(out.shape)} does not match the block's spatial size {spatial}")


@contextlib.contextmanager
def _hooks(model: nn.Module, layers: Sequence[str], store: dict[str, Tensor]) -> Iterator[None]:
    """Forward hooks that put each layer's output, as ``(N, C, H, W)`` on the CPU, into ``store``;
    always removed on exit."""
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise KeyError(f"no module named {', '.join(missing)} in {type(model).__name__}")
    handles, spatial = [], {}
    try:
        for name in layers:
            # the spatial size of the block the layer belongs to: its parent block's input (H, W)
            parent = name
            while parent and not _is_block(modules[parent]):
                parent = parent.rpartition(".")[0]
            if parent:
                handles.append(modules[parent].register_forward_pre_hook(
                    lambda m, args, name=name: spatial.__setitem__(name, tuple(args[0].shape[-2:]))))
            handles.append(modules[name].register_forward_hook(
                lambda m, args, out, name=name: store.__setitem__(
                    name, _to_nchw(out.detach(), spatial.get(name)).float().cpu())))
        yield
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def mlp_activations(model: nn.Module, images: Tensor, layers: Sequence[str] | None = None) -> dict[str, Tensor]:
    """The MLP's expanded activations (after GELU) of every block, ``{name: (N, 4C, H, W)}`` in block
    order, for ``images (N, 3, H, W)``. ``layers``: module names to capture instead (default:
    :func:`find_mlp_activations`). The model runs in eval mode; its mode is restored afterwards."""
    layers = list(layers) if layers is not None else find_mlp_activations(model)
    store: dict[str, Tensor] = {}
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        with _hooks(model, layers, store):
            features = getattr(model, "forward_features", model)
            features(images.to(device))
    finally:
        model.train(was_training)
    return {name: store[name] for name in layers}


def feature_cosine_distance(features: Tensor, eps: float = 1e-8) -> float:
    """Mean pairwise cosine distance between channels, ``1/C^2 sum_ij (1 - cos(X_i, X_j)) / 2``,
    per image and averaged over images. ``features``: ``(N, C, H, W)`` (or ``(C, H, W)``).
    A channel that is zero everywhere has cosine 0 with every channel (itself included)."""
    if features.dim() == 3:
        features = features.unsqueeze(0)
    x = features.flatten(2).double()  # (N, C, HW)
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
    gram = x @ x.transpose(1, 2)  # (N, C, C): cosine similarities
    return ((1 - gram) / 2).mean(dim=(1, 2)).mean().item()


def cosine_distance_by_layer(model: nn.Module, images: Tensor, layers: Sequence[str] | None = None,
                             batch_size: int = 8) -> list[tuple[str, float]]:
    """``[(layer name, feature cosine distance)]`` over ``images``, one entry per block in order;
    images go through in batches of ``batch_size`` to bound memory."""
    sums: dict[str, float] = {}
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        for name, feats in mlp_activations(model, batch, layers).items():
            sums[name] = sums.get(name, 0.0) + feature_cosine_distance(feats) * len(batch)
    return [(name, total / len(images)) for name, total in sums.items()]


def channel_maps(model: nn.Module, image: Tensor, layer: str | int, k: int = 64) -> Tensor:
    """The first ``k`` channels' activation maps ``(k, H, W)`` of one image ``(3, H, W)`` at ``layer``
    (a module name, or an index into :func:`find_mlp_activations`)."""
    if isinstance(layer, int):
        layer = find_mlp_activations(model)[layer]
    feats = mlp_activations(model, image.unsqueeze(0), [layer])[layer][0]
    return feats[:k]


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------
def plot_distance_by_layer(results: Mapping[str, Sequence[tuple[str, float]]], title: str = "") -> Figure:
    """One line per model: feature cosine distance against block index (as the paper's Fig. 4)."""
    fig = Figure(figsize=(7, 3.6), layout="constrained")
    ax = fig.subplots()
    styles = [("o", "-", 7), ("s", "--", 4), ("^", ":", 5), ("D", "-.", 4)]  # overlapping lines stay visible
    for (label, values), (marker, ls, ms) in zip(results.items(), styles * len(results)):
        ax.plot(range(1, len(values) + 1), [v for _, v in values], marker=marker, ls=ls, ms=ms, label=label,
                mfc="none" if marker == "o" else None)
    # stage boundaries, from names like "stages.2.0.act" (ours) or "stages.2.blocks.0.mlp.act" (timm)
    names = [name for name, _ in next(iter(results.values()), [])]
    stages = [".".join(name.split(".")[:2]) for name in names]
    for i in range(1, len(stages)):
        if stages[i] != stages[i - 1]:
            ax.axvline(i + 0.5, color="0.6", lw=0.8, ls=":")
    ax.axhline(0.5, color="0.4", lw=0.8, ls="--", label="independent zero-mean channels")
    ax.set_xticks(range(1, len(names) + 1))
    ax.set_xlabel("block (MLP layer), input to output; dotted lines: stage boundaries")
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
