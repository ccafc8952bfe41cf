"""Feature collapse block by block over several encoders, as the paper's Fig. 4, with intervals over runs and images.

An *encoder* is a label and one or more runs of it: ``"V2 FCMAE"`` = its pretraining runs, ``"V2 random init"`` =
a few random initializations. Every run sees the same ``N`` val images at each resolution (the encoder is fully
convolutional, so one trained at 96 px can be measured at 224 px too). Per block, a curve gives the mean over an
encoder's runs of a statistic of :mod:`cnx2lite.collapse`; its 95% interval resamples the runs, then the images
(:func:`cnx2lite.bootstrap.resampled_contrast`: the normal interval, centred on the value), one image draw shared by
every encoder so that a difference between two encoders is paired by image:

- per-image statistics, averaged over the images: the feature cosine distance raw and centered, and the fractions of
  off (never positive), saturated (spatially constant) and dead channels;
- the effective rank of the channel covariance as a share of the block's channels, a statistic of all images
  together, recomputed on the first ``rank_resamples`` image resamples (an eigendecomposition each: the cost of
  the whole measurement); its samples are ``positions`` positions drawn per image (the same for every run), which
  bounds both its cost and the rank it can reach (``N * positions``).

Images go ``pixels -> encoder -> block activations (N, 4C, H, W) -> per-block statistics (runs, blocks)``; the
figure and the markdown table are drawn from the stored :class:`Curves` alone.
"""
from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from . import collapse, data, transforms
from .bootstrap import Estimate, Resampled, RunSpread, image_counts, resampled_contrast
from .models.convnextv2 import architecture

PER_IMAGE_STATS = collapse.STATS  # one value per image, averaged
STATS = (*PER_IMAGE_STATS, "effective_rank")
LABELS = {"distance": "feature cosine distance", "centered_distance": "centered cosine distance",
          "effective_rank": "effective rank / channels", "off": "off channels (share)",
          "saturated": "saturated channels (share)", "dead": "dead channels (share)"}
FIGURE_STATS = ("distance", "centered_distance", "effective_rank", "off")
POSITIONS = 8  # positions per image that sample the effective rank


@dataclass(frozen=True)
class Curves:
    """One encoder's per-block statistics at one resolution and point: ``stats[name]`` holds ``value`` ``(P, L)``
    for its ``P`` runs and ``L`` blocks and ``draws`` ``(B, P, L)`` on the shared image resamples."""

    label: str
    point: str
    img_size: int
    layers: tuple[str, ...]
    stats: dict[str, Resampled]

    @property
    def runs(self) -> int:
        return next(iter(self.stats.values())).value.shape[0]


def val_images(folder: Path, size: int, count: int, classes: Sequence[str] | None = None, in_chans: int = 3
               ) -> Tensor:
    """The first ``count`` val images of ``folder`` in alternating-class order (the first of each class, then the
    second, ...), at ``size`` px with the evaluation transform: ``(N, in_chans, size, size)``. ``classes``: the label
    order (default: all class folders)."""
    val = data.build_dataset(folder, "val", transforms.eval_transform(size, in_chans=in_chans), classes=classes)
    return torch.stack([val[i][0] for i in data.distinct_class_order(val.targets)[:count]])


def _sampled_positions(images: int, positions: int, size: int, seed: int) -> Tensor:
    """``(images, min(positions, size))`` distinct position indices per image out of ``size``, fixed by ``seed``."""
    order = torch.rand(images, size, generator=torch.Generator().manual_seed(seed)).argsort(dim=1)
    return order[:, :min(positions, size)]


@torch.no_grad()
def has_point(model: nn.Module, point: str) -> bool:
    """Whether ``model`` has a block activation at ``point`` (after GRN: V2 blocks only)."""
    try:
        collapse.find_mlp_activations(model, point)
    except ValueError:
        return False
    return True


def run_statistics(model: nn.Module, images: Tensor, rank_counts: Tensor, point: str = "gelu",
                   positions: int = POSITIONS, batch_size: int = 16, seed: int = 0) -> dict:
    """What :func:`measure_run` resamples, measured once on ``images (N, 3, H, W)``: ``{"layers": [L names], <each
    per-image stat>: (N, L), "effective_rank": (L,), "effective_rank_draws": (R, L)}``, the effective rank's draws on
    the image weightings ``rank_counts (R, N)``; ``positions`` per image sample it. ``{"layers": []}`` when the model
    has nothing at ``point``. Small enough to keep where the model is not (see :mod:`cnx2lite.reproduce.records`)."""
    if not has_point(model, point):
        return {"layers": []}
    model.eval()
    per_image: dict[str, list[list[Tensor]]] = {}  # layer -> one (n,) tensor per stat, per batch
    samples: dict[str, list[Tensor]] = {}  # layer -> (n * positions, C) rows, per batch
    chosen: dict[str, Tensor] = {}
    for start in range(0, len(images), batch_size):
        for index, (name, feats) in enumerate(collapse.mlp_activations(model, images[start:start + batch_size],
                                                                       point=point).items()):
            stats = collapse.layer_collapse(feats, name)
            per_image.setdefault(name, []).append([getattr(stats, stat) for stat in PER_IMAGE_STATS])
            if name not in chosen:  # the same positions for every run: drawn from the layer's index and the seed
                chosen[name] = _sampled_positions(len(images), positions, feats[0, 0].numel(),
                                                  1_000_003 * (seed + 1) + 7919 * index)  # not image_counts' seed
            rows = feats.flatten(2).transpose(1, 2)  # (n, HW, C)
            picked = chosen[name][start:start + len(feats)]
            samples.setdefault(name, []).append(rows.gather(1, picked[..., None].expand(-1, -1, rows.shape[2]))
                                                .flatten(0, 1))
    layers = list(per_image)
    out: dict = {"layers": layers}
    for i, stat in enumerate(PER_IMAGE_STATS):
        out[stat] = torch.stack([torch.cat([batch[i] for batch in per_image[name]]) for name in layers], dim=1)
    ranks, rank_draws = [], []
    for name in layers:
        rows = torch.cat(samples[name])  # (N * k, C), image-major
        owner = torch.arange(len(images)).repeat_interleave(len(rows) // len(images))
        channels = rows.shape[1]
        ranks.append(collapse.effective_rank(rows) / channels)
        rank_draws.append(torch.tensor([collapse.effective_rank(rows, weights[owner]) / channels
                                        for weights in rank_counts]))
    out["effective_rank"] = torch.tensor(ranks, dtype=torch.float64)
    out["effective_rank_draws"] = torch.stack(rank_draws, dim=1).double()
    return out


def resample_run(statistics: Mapping, counts: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """:func:`run_statistics` as ``{stat: (value (L,), draws (B, L))}``, the per-image ones on the image weightings
    ``counts (B, N)`` (the effective rank's draws as measured)."""
    out = {}
    for stat in PER_IMAGE_STATS:
        resampled = Resampled.mean_of(statistics[stat][None], counts)
        out[stat] = (resampled.value[0], resampled.draws[:, 0])
    out["effective_rank"] = (statistics["effective_rank"], statistics["effective_rank_draws"])
    return out


def measure_run(model: nn.Module, images: Tensor, counts: Tensor, point: str = "gelu", positions: int = POSITIONS,
                rank_resamples: int = 50, batch_size: int = 16,
                seed: int = 0) -> tuple[list[str], dict[str, tuple[Tensor, Tensor]]]:
    """The per-block statistics of one run on ``images (N, 3, H, W)``: ``(layer names, {stat: (value (L,), draws (B,
    L))})``, the draws on the image weightings ``counts (B, N)`` (the effective rank's on the first
    ``rank_resamples``). ``positions`` per image sample the effective rank."""
    statistics = run_statistics(model, images, counts[:rank_resamples], point, positions, batch_size, seed)
    return statistics["layers"], resample_run(statistics, counts)


def curves_of(label: str, point: str, img_size: int, runs: Sequence[Mapping], counts: Tensor) -> Curves | None:
    """One encoder's :class:`Curves` from its runs' :func:`run_statistics` (None when they have nothing at
    ``point``); every run must be measured on the same images, ``counts`` their weightings."""
    if not all(run["layers"] for run in runs):
        if any(run["layers"] for run in runs):
            raise ValueError(f"encoder {label!r} mixes runs with and without GRN: give them separate labels")
        return None
    if len({tuple(run["layers"]) for run in runs}) > 1:
        raise ValueError(f"encoder {label!r} mixes runs of different depths: one variant per label")
    measured = [resample_run(run, counts) for run in runs]
    stats = {stat: Resampled(torch.stack([m[stat][0] for m in measured]),
                             torch.stack([m[stat][1] for m in measured], dim=1)) for stat in STATS}
    return Curves(label, point, img_size, tuple(runs[0]["layers"]), stats)


def measure(encoders: dict[str, Sequence[nn.Module]], images: Tensor, point: str = "gelu", resamples: int = 1000,
            rank_resamples: int = 50, positions: int = POSITIONS, batch_size: int = 16, seed: int = 0,
            progress: Callable[[str], None] = print) -> list[Curves]:
    """:func:`run_statistics` of every run of every encoder (``{label: [run 1's model, run 2's, ...]}``) on ``images
    (N, 3, H, W)``, on one shared set of image resamples. Encoders without a GRN are skipped for ``point="grn"``."""
    counts = shared_counts(len(images), resamples, rank_resamples, seed)
    curves = []
    for label, runs in encoders.items():
        kinds = {_architecture(m) for m in runs if hasattr(m, "dims")}
        if len(kinds) > 1:  # averaged as reruns, V1 and V2 blocks (Fig. 4's very contrast) would pass for one encoder
            raise ValueError(f"encoder {label!r} mixes runs of {len(kinds)} architectures ({'; '.join(sorted(kinds))}):"
                             " a label's runs are reruns of one encoder; give each architecture its own label")
        measured = []
        for index, model in enumerate(runs):
            progress(f"[collapse] {label}, run {index + 1} of {len(runs)}, after {point}, {images.shape[-1]} px")
            measured.append(run_statistics(model, images, counts[:rank_resamples], point, positions, batch_size,
                                           seed))
        found = curves_of(label, point, images.shape[-1], measured, counts) if measured else None
        if found is not None:
            curves.append(found)
    return curves


def _architecture(model: nn.Module) -> str:
    """What a ConvNeXt V2's weights are the weights of: its widths, depths and block options, in one line."""
    options = ", ".join(f"{k}={v}" for k, v in architecture(model).items())
    return f"dims {list(model.dims)}, depths {list(model.depths)}, {options}"


def shared_counts(images: int, resamples: int = 1000, rank_resamples: int = 50, seed: int = 0) -> Tensor:
    """The image weightings ``(resamples, images)`` every encoder is measured on (:func:`image_counts`)."""
    if min(resamples, rank_resamples) < 2:
        raise ValueError(f"resamples and rank_resamples must be >= 2, got {resamples} and {rank_resamples}: the "
                         "interval of one resample has no width")
    if rank_resamples > resamples:
        raise ValueError(f"rank_resamples ({rank_resamples}) must be at most resamples ({resamples}): the effective "
                         "rank is recomputed on the first of them")
    return image_counts(images, resamples, seed)


# ----------------------------------------------------------------------------------------------------- reporting
def _intervals(curves: Sequence[Curves], weights: Sequence[float], stat: str, block_mean: bool,
               blocks: Sequence[int] | None = None) -> tuple[Tensor, ...]:
    """``(value, low, high)`` per block ``(L,)``, or of the mean over blocks ``(1,)`` (over ``blocks`` only)."""
    arms = [c.stats[stat] for c in curves]
    if blocks is not None:
        arms = [Resampled(a.value[..., list(blocks)], a.draws[..., list(blocks)]) for a in arms]
    if block_mean:
        arms = [Resampled(a.value.mean(dim=-1, keepdim=True), a.draws.mean(dim=-1, keepdim=True)) for a in arms]
    return resampled_contrast(arms, weights)


def estimate(curves: Sequence[Curves], stat: str, weights: Sequence[float] = (1.0,),
             blocks: Sequence[int] | None = None) -> Estimate:
    """The mean over blocks (all, or ``blocks``) of ``stat``, ``sum(weights[i] * curves[i])`` (one encoder, or a
    contrast such as ``(1, -1)``), with its 95% interval over runs and images; for one encoder, ``runs`` holds each
    run's value."""
    value, low, high = (t[0].item() for t in _intervals(curves, weights, stat, True, blocks))
    per_block = curves[0].stats[stat].value if blocks is None else curves[0].stats[stat].value[..., list(blocks)]
    runs = RunSpread(per_block.mean(dim=-1).tolist()) if len(curves) == 1 else None
    return Estimate(value, low, high, runs)


def write_csv(curves: Sequence[Curves], contrasts: Sequence[tuple[str, str]], path: Path) -> None:
    """One row per (resolution, point, encoder or contrast, statistic, block; block 0 = the mean over blocks):
    the mean over runs, its 95% interval and each run's value."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["img_size", "point", "encoder", "runs", "stat", "block", "layer", "value", "low", "high",
                         "run_values"])
        for c in curves:
            for stat in STATS:
                for block_mean in (True, False):
                    value, low, high = _intervals([c], (1.0,), stat, block_mean)
                    per_run = c.stats[stat].value.mean(dim=-1, keepdim=True) if block_mean else c.stats[stat].value
                    names = ["mean over blocks"] if block_mean else list(c.layers)
                    for i, name in enumerate(names):
                        writer.writerow([c.img_size, c.point, c.label, c.runs, stat, 0 if block_mean else i + 1, name,
                                         f"{value[i]:.5f}", f"{low[i]:.5f}", f"{high[i]:.5f}",
                                         " ".join(f"{v:.5f}" for v in per_run[:, i].tolist())])
        for a, b, pair in _contrast_pairs(curves, contrasts):
            for stat in STATS:
                e = estimate(pair, stat, (1.0, -1.0))
                writer.writerow([a.img_size, a.point, f"{a.label} - {b.label}", f"{a.runs}, {b.runs}", stat, 0,
                                 "mean over blocks", f"{e.value:.5f}", f"{e.low:.5f}", f"{e.high:.5f}", ""])


def _contrast_pairs(curves: Sequence[Curves], contrasts: Sequence[tuple[str, str]]):
    """``(a, b, [a, b])`` for each contrast label pair measured at the same resolution and point."""
    for c in curves:
        for first, second in contrasts:
            if c.label == first:
                for d in curves:
                    if d.label == second and (d.img_size, d.point) == (c.img_size, c.point):
                        yield c, d, [c, d]


def verdict(difference: Estimate, first: str) -> str:
    """The words a 95% interval of ``first - second`` allows."""
    if difference.low > 0:
        return f"{first} higher"
    if difference.high < 0:
        return f"{first} lower"
    return "not told apart"


def number(x: float, sign: str = "") -> str:
    """Three decimals, or two significant digits where those would show a share like 7e-5 as 0.000."""
    return f"{x:{sign}.3f}" if x == 0 or abs(x) >= 5e-4 else f"{x:{sign}.1e}"


def interval(e: Estimate, sign: str = "") -> str:
    """``value [low, high]``, each as :func:`number` writes it."""
    return f"{number(e.value, sign)} [{number(e.low, sign)}, {number(e.high, sign)}]"


def rank_ceilings(dims: Sequence[int], images: int, size: int, positions: int = POSITIONS) -> dict[int, float]:
    """``{stage: the most "effective rank / channels" can be}`` where the sample bounds it below 1: a stage's MLP has
    ``4 x dim`` channels, and ``images`` x ``positions`` (at most its map's) centered rows span ``rows - 1`` of them."""
    ceilings = {}
    for stage, dim in enumerate(dims, start=1):
        rows = images * min(positions, (size // 2 ** (stage + 1)) ** 2)
        if rows - 1 < 4 * dim:
            ceilings[stage] = (rows - 1) / (4 * dim)
    return ceilings


def markdown(curves: Sequence[Curves], contrasts: Sequence[tuple[str, str]], figures: Sequence[str],
             ceilings: Mapping[int, Mapping[int, float]] | None = None) -> str:
    """The tables (mean over blocks per encoder and statistic; each contrast with its verdict), per size the stages
    whose effective rank the sample bounds (``ceilings[size]``: :func:`rank_ceilings`), and figures."""
    lines = []
    for size in sorted({c.img_size for c in curves}):
        lines += [f"### {size} px", "", "| encoder | after | runs | " + " | ".join(LABELS[s] for s in STATS) + " |",
                  "|---|---|---|" + "---|" * len(STATS)]
        for c in (c for c in curves if c.img_size == size):
            cells = []
            for stat in STATS:
                e = estimate([c], stat)
                spread = f" (runs {number(e.runs.min)}..{number(e.runs.max)})" if c.runs > 1 else ""
                cells.append(f"{interval(e)}{spread}")
            lines.append(f"| {c.label} | {c.point.upper()} | {c.runs} | " + " | ".join(cells) + " |")
        pairs = [(a, b, pair) for a, b, pair in _contrast_pairs(curves, contrasts) if a.img_size == size]
        if pairs:
            lines += ["", "| contrast (mean over blocks) | after | " + " | ".join(LABELS[s] for s in STATS) + " |",
                      "|---|---|" + "---|" * len(STATS)]
            for a, b, pair in pairs:
                cells = []
                for stat in STATS:
                    e = estimate(pair, stat, (1.0, -1.0))
                    cells.append(f"{interval(e, '+')}: {verdict(e, a.label)}")
                lines.append(f"| {a.label} - {b.label} | {a.point.upper()} | " + " | ".join(cells) + " |")
        if (ceiling := (ceilings or {}).get(size)):
            lines += ["", "Effective rank / channels cannot exceed what the sample spans here, whatever the encoder: "
                      "at most " + ", ".join(f"{value:.3f} in stage {stage}" for stage, value in ceiling.items())
                      + " (sampled rows - 1 over channels; a bootstrap draw repeats some rows); more --images"
                      " (or --positions, where a stage's map has more) lift it."]
        lines.append("")
    lines += [f"![collapse curves]({name})" for name in figures]
    return "\n".join(lines) + "\n"


def plot_curves(curves: Sequence[Curves], title: str = "") -> Figure:
    """Per statistic of ``FIGURE_STATS`` a panel against block index: one line per encoder (solid after GELU, dashed
    after GRN), the mean over its runs, with its 95% band over runs and images."""
    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).flatten()
    colors = {label: f"C{i}" for i, label in enumerate(dict.fromkeys(c.label for c in curves))}
    for ax, stat in zip(axes, FIGURE_STATS):
        for c in curves:
            value, low, high = _intervals([c], (1.0,), stat, False)
            x = range(1, len(c.layers) + 1)
            name = c.label if c.point == "gelu" else f"{c.label}, after GRN"
            ax.plot(x, value, color=colors[c.label], ls="-" if c.point == "gelu" else "--", marker="o", ms=3,
                    label=f"{name} ({c.runs} run{'s' if c.runs > 1 else ''})")
            ax.fill_between(x, low, high, color=colors[c.label], alpha=0.18, lw=0)
        collapse.mark_stages(ax, list(curves[0].layers))
        ax.set_ylabel(LABELS[stat])
        ax.grid(alpha=0.3)
    axes[0].axhline(0.5, color="0.4", lw=0.8, ls=":")
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize=8, loc="outside lower center", ncols=4)  # off the curves
    for ax in axes[:2]:
        ax.xaxis.label.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig
