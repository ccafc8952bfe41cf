"""Feature-collapse analysis (Woo et al., 2023, the feature collapse analysis of the GRN section) for any ConvNeXt.

The paper looks at the MLP of every block: its expanded activations (``4C`` channels, after the
GELU, i.e. what enters GRN in a V2 block). A collapsed layer has many dead, saturated or redundant
channels. Fig. 4 measures this with the mean pairwise cosine distance between channels:

    distance = 1/C^2 * sum_i sum_j (1 - cos(X_i, X_j)) / 2

where ``X_i`` is channel ``i``'s activation map flattened over space, computed per image and
averaged over images. 0 means all channels are the same map (up to scale); higher means more
diverse channels. GELU's outputs are mostly positive, so a common offset alone pulls the distance
below 1/2; the *centered* distance removes each channel map's spatial mean first and asks only
whether channels share spatial patterns. The distance cannot see a dead channel (zero everywhere:
it scores 1/2 against every other channel, like an independent one), so :func:`collapse_by_layer`
also counts, per image, the fractions of dead, off (never positive) and saturated (spatially
constant) channels, and keeps every image's values so that the spread across images can be
reported next to the mean. :func:`effective_rank` is a second, standard measure: how many channel
directions a layer's activations spread over.

``mlp_activations`` works on this package's models and on timm's ``convnext_*`` / ``convnextv2_*``:
it finds each block (a module with a depthwise conv child) and hooks the first GELU inside it, or
its GRN (``point="grn"``, V2 blocks: what the rest of the block sees). The per-layer curves over
several encoders with intervals are :mod:`cnx2lite.collapse_curves`; the notebook's figures
:mod:`cnx2lite.notebook.collapse_figures`.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
from matplotlib.axes import Axes
from torch import Tensor, nn

__all__ = ["POINTS", "find_mlp_activations", "mlp_activations", "feature_cosine_distance", "cosine_distance_by_layer",
           "effective_rank", "layer_effective_rank", "LayerCollapse", "layer_collapse", "collapse_by_layer",
           "grn_change_by_layer", "channel_maps", "stages"]

# A channel is dead in an image when |activation| < DEAD_TOL at every position. GELU outputs are in
# absolute units (GELU has no scale of its own to learn): |GELU(x)| < 1e-3 only for x < -3.4, where
# its slope is below 0.004 (the channel passes almost no signal and gets almost no gradient), or for
# |x| < 0.002.
DEAD_TOL = 1e-3
# A live channel is saturated in an image when its map is (nearly) constant over positions:
# std <= FLAT_TOL * RMS, i.e. at least 99% of the map's energy is its mean. Relative to the channel's
# own RMS, so the test needs no "typical" channel and still works when most of a layer has collapsed.
FLAT_TOL = 0.1
# A channel is off in an image when its activation is <= 0 at every position: GELU's input is negative
# everywhere, so the channel sits between GELU's floor (-0.17, at x = -0.75) and 0 and passes no
# positive response. Where a trained network parks unused channels; DEAD_TOL only catches x < -3.4.
STATS = ("distance", "centered_distance", "dead", "off", "saturated")
# Where in a block the activations are taken: after the MLP's GELU (the paper's Fig. 4), or after
# GRN (V2 blocks only: what the second pointwise conv sees).
POINTS = ("gelu", "grn")


def _is_gelu(module: nn.Module) -> bool:
    # torch's nn.GELU, and timm's own GELU class (a different type with the same name)
    return isinstance(module, nn.GELU) or type(module).__name__ == "GELU"


def _is_block(module: nn.Module) -> bool:
    """A ConvNeXt block: a module with a depthwise conv as a direct child (ours: ``dwconv``,
    timm: ``conv_dw``)."""
    return any(isinstance(c, nn.Conv2d) and c.groups > 1 and c.groups == c.in_channels
               for c in module.children())


def _is_grn(module: nn.Module) -> bool:
    # ours (GRN) and timm's (GlobalResponseNorm)
    return type(module).__name__ in ("GRN", "GlobalResponseNorm")


def find_mlp_activations(model: nn.Module, point: str = "gelu") -> list[str]:
    """Names of the modules whose outputs are a block's MLP activations, one per block, in forward (definition)
    order: the first GELU inside each block, or with ``point="grn"`` its GRN (V2 blocks)."""
    if point not in POINTS:
        raise ValueError(f"point must be one of {', '.join(POINTS)}; got {point!r}")
    wanted = _is_gelu if point == "gelu" else _is_grn
    names = []
    for block_name, block in model.named_modules():
        if not _is_block(block):
            continue
        found = [name for name, m in block.named_modules() if wanted(m)]
        if found:
            names.append(f"{block_name}.{found[0]}" if block_name else found[0])
    if not names:
        module = "GELU" if point == "gelu" else "GRN (a V2 block)"
        raise ValueError(f"no ConvNeXt block with a {module} module found in {type(model).__name__}; "
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
def mlp_activations(model: nn.Module, images: Tensor, layers: Sequence[str] | None = None,
                    point: str = "gelu") -> dict[str, Tensor]:
    """The MLP's expanded activations (after GELU, or after GRN with ``point="grn"``) of every block,
    ``{name: (N, 4C, H, W)}`` in block order, for ``images (N, 3, H, W)``. ``layers``: module names to
    capture instead (default: :func:`find_mlp_activations`). The model runs in eval mode; its mode is
    restored afterwards."""
    layers = list(layers) if layers is not None else find_mlp_activations(model, point)
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


def _flatten(features: Tensor) -> Tensor:
    """``(N, C, H, W)`` or ``(C, H, W)`` -> ``(N, C, HW)`` in float64."""
    if features.dim() == 3:
        features = features.unsqueeze(0)
    if not torch.isfinite(features).all():
        raise ValueError("the features hold nan or inf: their collapse statistics are undefined")
    return features.flatten(2).double()


def _cosine_distance(x: Tensor, eps: float = 1e-8, centered: bool = False) -> Tensor:
    """Per-image mean pairwise cosine distance ``(N,)`` of ``x (N, C, HW)``; ``centered`` removes each channel map's
    spatial mean first and compares only the channels that keep a spatial pattern (``std > FLAT_TOL * RMS``): a
    flat map has nothing left but noise, whose direction would count as a diverse channel. 0 when no two do.

    Without the ``(C, C)`` matrix of pairs: for unit maps ``u_i`` (an all-zero map stays 0) and weights ``w_i`` (1, or
    whether the channel counts), ``sum_ij w_i w_j (1 - u_i . u_j) / 2 = (W^2 - |sum_i w_i u_i|^2) / 2`` with
    ``W = sum_i w_i``: one pass over the activations instead of a ``C x C`` float64 matrix per image."""
    weights = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)  # (N, C)
    if centered:
        rms = x.square().mean(dim=-1).sqrt()
        x = x - x.mean(dim=-1, keepdim=True)
        weights = (x.square().mean(dim=-1).sqrt() > FLAT_TOL * rms).to(x.dtype)
    unit = x / x.norm(dim=-1, keepdim=True).clamp_min(eps)
    total = weights.sum(dim=1)  # (N,)
    resultant = torch.einsum("nc,nch->nh", weights, unit)  # (N, HW): the weighted sum of the unit maps
    return (total.square() - resultant.square().sum(dim=-1)) / 2 / total.square().clamp_min(1)


def feature_cosine_distance(features: Tensor, eps: float = 1e-8, centered: bool = False) -> float:
    """Mean pairwise cosine distance between channels, ``1/C^2 sum_ij (1 - cos(X_i, X_j)) / 2``,
    per image and averaged over images. ``features``: ``(N, C, H, W)`` (or ``(C, H, W)``).
    A channel that is zero everywhere has cosine 0 with every channel (itself included). ``centered``:
    of the maps less their spatial means, over the channels that keep a spatial pattern (only shared patterns
    count, not a common offset; flat channels are the saturated and dead counts' business)."""
    return _cosine_distance(_flatten(features), eps, centered).mean().item()


def effective_rank(samples: Tensor, weights: Tensor | None = None, eps: float = 1e-12) -> float:
    """How many directions ``samples (N, D)`` spread over: ``exp(H(p))`` for ``p`` the eigenvalues of their covariance
    normalized to sum to 1 (Roy & Vetterli 2007; U-MAE, arXiv 2210.08344, uses it to measure MAE's dimensional
    collapse). ``D`` for isotropic samples, 1 when every sample lies on one line; unchanged by scaling and rotating.
    ``weights (N,)``: how much each sample counts (a bootstrap resample's draw counts). Computed in the samples'
    precision (float32 activations: float32, about twice as fast as float64 and as exact to 3 digits)."""
    x = samples if samples.dtype in (torch.float32, torch.float64) else samples.float()
    if not torch.isfinite(x).all():
        raise ValueError("samples hold nan or inf: the covariance and its eigenvalues are undefined")
    w = torch.ones(len(x), dtype=x.dtype, device=x.device) if weights is None else weights.to(x)
    mean = (w @ x) / w.sum()
    x = x - mean
    covariance = (x * w[:, None]).T @ x / (w.sum() - 1).clamp_min(1)
    eigenvalues = torch.linalg.eigvalsh(covariance).clamp_min(0)
    p = eigenvalues / eigenvalues.sum().clamp_min(eps)
    return torch.exp(-(p * p.clamp_min(eps).log()).sum()).item()


def layer_effective_rank(features: Tensor) -> float:
    """:func:`effective_rank` of a layer's channels ``(N, C, H, W)``, every position of every image a sample: how many
    channel directions the layer uses (a collapsed layer uses few)."""
    return effective_rank(features.permute(0, 2, 3, 1).reshape(-1, features.shape[1]))


@dataclass(frozen=True)
class LayerCollapse:
    """One layer's collapse statistics, one value per image, each ``(N,)`` float64: the feature
    cosine distance, raw and centered, and the fractions of dead, off and saturated channels (see
    :func:`layer_collapse`)."""

    name: str
    distance: Tensor
    centered_distance: Tensor
    dead: Tensor
    off: Tensor
    saturated: Tensor

    def summary(self) -> dict[str, float]:
        """Mean and standard deviation over images of each statistic: ``distance_mean``, ``distance_std``,
        ``dead_mean``, ... The std (with Bessel's correction) is NaN for a single image."""
        out = {}
        for stat in STATS:
            values = getattr(self, stat)
            out[f"{stat}_mean"] = values.mean().item()
            out[f"{stat}_std"] = values.std().item() if len(values) > 1 else float("nan")
        return out


def layer_collapse(features: Tensor, name: str = "") -> LayerCollapse:
    """Collapse statistics of one layer's activations ``(N, C, H, W)`` (or ``(C, H, W)``), per image.

    - distance, centered_distance: :func:`feature_cosine_distance` of the image, raw and centered;
    - dead: fraction of channels with ``|activation| < DEAD_TOL`` at every position;
    - off: fraction of channels with ``activation <= 0`` at every position (at or below GELU's floor);
    - saturated: fraction of channels that are not dead and whose map is constant up to
      ``std <= FLAT_TOL * RMS`` over positions: a map that carries no spatial information, as the
      uniformly lit maps of a collapsed layer. (Whether a channel sits in GELU's linear regime
      everywhere cannot be told from its output, and at random init nearly every channel is close to it.)

    The thresholds are in GELU output units (see ``DEAD_TOL``); the maps need 2 positions or more."""
    x = _flatten(features)  # (N, C, HW)
    if x.shape[-1] < 2:
        raise ValueError(f"saturation needs maps of 2 positions or more, got shape {tuple(features.shape)}")
    dead = x.abs().amax(dim=-1) < DEAD_TOL  # (N, C)
    flat = x.std(dim=-1, correction=0) <= FLAT_TOL * x.square().mean(dim=-1).sqrt()  # (N, C)
    off = x.amax(dim=-1) <= 0  # (N, C)
    saturated = flat & ~dead
    return LayerCollapse(name, _cosine_distance(x), _cosine_distance(x, centered=True), dead.double().mean(dim=-1),
                         off.double().mean(dim=-1), saturated.double().mean(dim=-1))


def collapse_by_layer(model: nn.Module, images: Tensor, layers: Sequence[str] | None = None,
                      batch_size: int = 8, point: str = "gelu") -> list[LayerCollapse]:
    """:func:`layer_collapse` of every block's MLP activations at ``point`` (or of ``layers``), in block
    order, for ``images (N, 3, H, W)`` (e.g. val images of distinct classes); each statistic holds one
    value per image. Images go through in batches of ``batch_size`` to bound memory."""
    batches = [[layer_collapse(feats, name)
                for name, feats in mlp_activations(model, images[i:i + batch_size], layers, point).items()]
               for i in range(0, len(images), batch_size)]
    return [LayerCollapse(parts[0].name, *(torch.cat([getattr(p, stat) for p in parts]) for stat in STATS))
            for parts in zip(*batches)]


def cosine_distance_by_layer(model: nn.Module, images: Tensor, layers: Sequence[str] | None = None,
                             batch_size: int = 8) -> list[tuple[str, float]]:
    """``[(layer name, feature cosine distance)]`` over ``images``, one entry per block in order: the
    mean over images of :func:`collapse_by_layer`'s distance."""
    by_layer = collapse_by_layer(model, images, layers, batch_size)
    return [(stats.name, stats.distance.mean().item()) for stats in by_layer]


def grn_change_by_layer(model: nn.Module, images: Tensor, batch_size: int = 8) -> dict[str, Tensor]:
    """How far each block's GRN moves what enters it, ``||GRN(x) - x|| / ||x||`` over an image's ``(4C, H, W)``
    activations: ``{GRN module name: (N,)}`` float64 in block order, for ``images (N, 3, H, W)``. 0 where GRN is the
    identity: at initialization (gamma = beta = 0) and wherever training left it there, which no other statistic
    of this module can tell from a GRN that acts. ``x`` is the block's GELU output, captured in the same pass."""
    inputs, outputs = find_mlp_activations(model, "gelu"), find_mlp_activations(model, "grn")
    if len(inputs) != len(outputs):
        raise ValueError(f"{type(model).__name__} has GRN in {len(outputs)} of its {len(inputs)} blocks: GRN's change "
                         "is measured where every block has one")
    change: dict[str, list[Tensor]] = {name: [] for name in outputs}
    for i in range(0, len(images), batch_size):
        features = mlp_activations(model, images[i:i + batch_size], inputs + outputs)
        for before, after in zip(inputs, outputs):
            x = features[before].flatten(1).double()
            change[after].append((features[after].flatten(1).double() - x).norm(dim=1) / x.norm(dim=1).clamp_min(1e-12))
    return {name: torch.cat(parts) for name, parts in change.items()}


def channel_maps(model: nn.Module, image: Tensor, layer: str | int, k: int = 64) -> Tensor:
    """The first ``k`` channels' activation maps ``(k, H, W)`` of one image ``(3, H, W)`` at ``layer``
    (a module name, or an index into :func:`find_mlp_activations`)."""
    if isinstance(layer, int):
        layer = find_mlp_activations(model)[layer]
    feats = mlp_activations(model, image.unsqueeze(0), [layer])[layer][0]
    return feats[:k]


# --------------------------------------------------------------------------------------------------
# The figure of the statistics above, for the reproduction report and notebook 4
# --------------------------------------------------------------------------------------------------
def stages(names: Sequence[str]) -> dict[str, list[int]]:
    """The block indices of each stage, ``{"stage 1": [0, 1], ...}``, read from layer names like "stages.2.0.act"
    (ours) or "stages.2.blocks.0.mlp.act" (timm)."""
    named = [".".join(name.split(".")[:2]) for name in names]
    return {f"stage {i + 1}": [b for b, stage in enumerate(named) if stage == name]
            for i, name in enumerate(dict.fromkeys(named))}


def mark_stages(ax: Axes, names: Sequence[str]) -> None:
    """Ticks at block indices 1..L and dotted lines at the boundaries of :func:`stages`."""
    for blocks in list(stages(names).values())[1:]:
        ax.axvline(blocks[0] + 0.5, color="0.6", lw=0.8, ls=":")
    ax.set_xticks(range(1, len(names) + 1))
    ax.set_xlabel("block (MLP layer), input to output; dotted lines: stage boundaries")
