"""The anatomy of FCMAE for notebook 5: the V1 and V2 blocks (:func:`plot_block_diagrams`), parameters per part
(:func:`parameter_counts`, :func:`plot_parameter_budget`), the decoder step by step (:func:`decoder_steps`) and
where the ``cpu`` preset departs from the paper's recipe (:func:`recipe_table`)."""
from __future__ import annotations

import matplotlib
import torch
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch
from torch import Tensor

from ..fcmae import FCMAE
from ..masking import mask_grid, num_visible
from ..reproduce import SCALES
from ..train import TrainConfig, load_preset

# --------------------------------------------------------------------------------------------------
# Anatomy
# --------------------------------------------------------------------------------------------------
BLOCK_STEPS = (  # (label, parameters for channel width C, in V1, in V2)
    ("7x7 depthwise conv", "49C + C", True, True),
    ("LayerNorm", "2C", True, True),
    ("Linear C -> 4C", "4C^2 + 4C", True, True),
    ("GELU", "0", True, True),
    ("GRN (global response norm)", "2 x 4C", False, True),
    ("Linear 4C -> C", "4C^2 + C", True, True),
    ("LayerScale (x gamma, init 1e-6)", "C", True, False),
    ("+ input (residual, drop path)", "0", True, True),
)
SHARED_COLOR, V2_COLOR, V1_COLOR = "#dbe9f6", "#b7e1b0", "#f6c8a8"


def plot_block_diagrams() -> Figure:
    """The ConvNeXt V1 and V2 blocks side by side, top to bottom, with each layer's parameter count."""
    fig = Figure(figsize=(8.5, 5.6), layout="constrained")
    ax = fig.subplots()
    ax.set_xlim(0, 10)
    ax.set_ylim(-0.6, len(BLOCK_STEPS) + 0.4)
    ax.set_axis_off()
    for x, version in ((0.3, "V1"), (5.3, "V2")):
        ax.text(x + 2.2, len(BLOCK_STEPS) + 0.1, f"ConvNeXt {version} block", ha="center", fontsize=11,
                weight="bold")
        previous = None
        for k, (label, params, in_v1, in_v2) in enumerate(BLOCK_STEPS):
            y = len(BLOCK_STEPS) - 1 - k
            present = in_v1 if version == "V1" else in_v2
            if not present:
                ax.text(x + 2.35, y + 0.05, "(nothing here)", ha="left", va="center", fontsize=8, color="0.5")
                continue
            color = SHARED_COLOR if in_v1 and in_v2 else (V2_COLOR if in_v2 else V1_COLOR)
            ax.add_patch(FancyBboxPatch((x, y - 0.3), 4.4, 0.65, boxstyle="round,pad=0.02", fc=color, ec="0.3"))
            ax.text(x + 0.15, y + 0.02, label, va="center", fontsize=9)
            ax.text(x + 4.3, y + 0.02, params, va="center", ha="right", fontsize=8, color="0.25")
            if previous is not None:
                ax.annotate("", (x + 2.2, y + 0.37), (x + 2.2, previous - 0.32),
                            arrowprops=dict(arrowstyle="->", color="0.3", lw=1))
            previous = y
    ax.legend(handles=[Patch(fc=SHARED_COLOR, ec="0.3", label="in both"),
                       Patch(fc=V2_COLOR, ec="0.3", label="V2 adds (after GELU)"),
                       Patch(fc=V1_COLOR, ec="0.3", label="V1 only (V2 drops it)")],
              loc="lower center", ncol=3, fontsize=9, bbox_to_anchor=(0.5, -0.1))
    ax.set_title("One block on an (N, C, H, W) map; right-hand numbers: parameters for width C")
    return fig


def _count(*modules: torch.nn.Module | torch.nn.Parameter) -> int:
    return sum(m.numel() if isinstance(m, torch.nn.Parameter) else sum(p.numel() for p in m.parameters())
               for m in modules)


def parameter_counts(model: FCMAE) -> dict[str, int]:
    """Parameters per part of an FCMAE, in forward order: the encoder's stem and stages (each stage after the
    first with the downsampling layer in front of it), then the decoder's projection, mask token, blocks and
    prediction head. The values add up to ``sum(p.numel() for p in model.parameters())``."""
    enc = model.encoder
    counts = {"encoder stem": _count(enc.downsample_layers[0])}
    for i, stage in enumerate(enc.stages):
        extra = () if i == 0 else (enc.downsample_layers[i],)
        counts[f"encoder stage {i + 1} ({len(stage)} blocks, C={enc.dims[i]})"] = _count(stage, *extra)
    dim = model.proj.out_channels
    counts[f"decoder proj (1x1 conv {enc.dims[-1]} -> {dim})"] = _count(model.proj)
    counts["decoder mask token"] = _count(model.mask_token)
    counts[f"decoder blocks ({len(model.decoder)} V2 block, C={dim})"] = _count(model.decoder)
    counts[f"decoder pred (1x1 conv {dim} -> {model.pred.out_channels})"] = _count(model.pred)
    return counts


def plot_parameter_budget(budgets: dict[str, dict[str, int]], title: str) -> Figure:
    """One horizontal stacked bar per FCMAE (``{label: parameter_counts(model)}``): encoder parts in blues,
    decoder parts in oranges, in millions of parameters."""
    fig = Figure(figsize=(9, 1.2 + 0.9 * len(budgets)), layout="constrained")
    ax = fig.subplots()
    blues, oranges = matplotlib.colormaps["Blues"], matplotlib.colormaps["Oranges"]
    for row, (label, counts) in enumerate(budgets.items()):
        left, n_enc = 0.0, sum(k.startswith("encoder") for k in counts)
        for k, (part, count) in enumerate(counts.items()):
            encoder = part.startswith("encoder")
            color = blues(0.3 + 0.6 * k / max(n_enc - 1, 1)) if encoder else oranges(0.3 + 0.15 * (k - n_enc))
            name = part.split(" (")[0]
            ax.barh(row, count / 1e6, left=left, color=color, ec="white",
                    label=name if row == 0 else None)
            left += count / 1e6
        ax.text(left + 0.05, row, f"{left:.2f} M", va="center", fontsize=9)
    ax.set_yticks(range(len(budgets)), list(budgets))
    ax.invert_yaxis()
    ax.set(xlabel="parameters (millions)", title=title)
    ax.set_xlim(0, ax.get_xlim()[1] * 1.08)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
    return fig


@torch.no_grad()
def decoder_steps(model: FCMAE, imgs: Tensor, mask: Tensor) -> list[tuple[str, tuple[int, ...], int]]:
    """The FCMAE forward pass on ``imgs (N, 3, H, W)`` with ``mask (N, h, w)`` as ``(step, output shape,
    parameters)``: the sparse encoder, then the decoder one operation at a time, down to the patches."""
    latent = model.forward_encoder(imgs, mask)  # (N, C4, h, w)
    projected = model.proj(latent)  # (N, D, h, w)
    masked = mask.unsqueeze(1).to(projected.dtype)
    tokens = projected * (1 - masked) + model.mask_token * masked
    decoded = model.decoder(tokens)
    pred = model.pred(decoded)  # (N, p*p*3, h, w)
    patches = pred.flatten(2).transpose(1, 2)  # (N, L, p*p*3)
    return [("image", tuple(imgs.shape), 0),
            ("sparse encoder (visible cells only)", tuple(latent.shape), _count(model.encoder)),
            ("proj: 1x1 conv to the decoder width", tuple(projected.shape), _count(model.proj)),
            ("mask token written at the masked cells", tuple(tokens.shape), _count(model.mask_token)),
            ("decoder: ConvNeXt V2 block(s)", tuple(decoded.shape), _count(model.decoder)),
            ("pred: 1x1 conv to 32*32*3 pixels per cell", tuple(pred.shape), _count(model.pred)),
            ("as patches (N, cells, pixels) for the loss", tuple(patches.shape), 0)]


def mask_grid_label(img_size: int, mask_ratio: float) -> str:
    """``"3x3 (6 masked, 3 visible)"`` for the FCMAE mask grid of ``img_size`` pixels at ``mask_ratio``."""
    h, w = mask_grid(img_size)
    visible = num_visible(h * w, mask_ratio)
    return f"{h}x{w} ({h * w - visible} masked, {visible} visible)"


def recipe_table() -> list[tuple[str, str, str, str]]:
    """FCMAE pre-training settings, as rows ``(setting, cpu preset, reproduce --scale cpu, in1k-atto preset)``,
    read from the library: ``load_preset(..., task="pretrain")`` and ``cnx2lite.reproduce.SCALES["cpu"]``."""
    cpu, paper = load_preset("cpu", task="pretrain"), load_preset("in1k-atto", task="pretrain")
    rep = SCALES["cpu"]
    rep_config = load_preset(rep.preset, task="pretrain", img_size=rep.img_size, batch_size=rep.batch_size,
                             decoder_dim=rep.decoder_dim, epochs=rep.pretrain_epochs)
    columns = [(cpu, cpu.batch_size, f"{cpu.num_classes} classes x {cpu.images_per_class}"),
               (rep_config, rep.batch_size, "all of Imagenette train"),
               (paper, paper.global_batch, "ImageNet-1K (1.28 M)")]

    def peak_lr(c: TrainConfig, batch: int) -> float:
        return c.lr if c.lr is not None else c.base_lr * batch / 256

    return [("model", *(c.model for c, _, _ in columns)),
            ("image size (px)", *(str(c.img_size) for c, _, _ in columns)),
            ("mask grid (32 px cells)", *(mask_grid_label(c.img_size, c.mask_ratio) for c, _, _ in columns)),
            ("decoder width x depth", *(f"{c.decoder_dim} x {c.decoder_depth}" for c, _, _ in columns)),
            ("epochs", *(str(c.epochs) for c, _, _ in columns)),
            ("warmup epochs", *(f"{c.warmup_epochs:g}" for c, _, _ in columns)),
            ("effective batch", *(str(b) for _, b, _ in columns)),
            ("peak lr", *(f"{peak_lr(c, b):.2e}" for c, b, _ in columns)),
            ("lr per 256 images", *(f"{peak_lr(c, b) * 256 / b:.2e}" for c, b, _ in columns)),
            ("training images", *(images for _, _, images in columns))]
