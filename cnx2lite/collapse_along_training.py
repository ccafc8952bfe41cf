"""Feature collapse along pretraining (the budget curve): :func:`cnx2lite.collapse_curves.measure` at every epoch
that all runs of an encoder kept a snapshot of, and how far GRN moves its input by then
(:func:`cnx2lite.collapse.grn_change_by_layer`: does GRN act at all at this budget?), with their CSV, figure, and
what changed from the first kept epoch to the last (the budget question in numbers)."""
from __future__ import annotations

import csv
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from .bootstrap import Estimate, Resampled, hierarchical_bootstrap_mean
from .collapse import grn_change_by_layer
from .collapse_curves import (
    FIGURE_STATS,
    LABELS,
    POSITIONS,
    STATS,
    Curves,
    estimate,
    has_point,
    interval,
    measure,
    number,
)

Runs = dict[str, Sequence[Mapping[int, Callable[[], nn.Module]]]]  # each encoder's runs, each {epoch: load the model}
GRN_CHANGE = "GRN's change of its input, ||GRN(x) - x|| / ||x||"


def _common_epochs(label_runs: Sequence[Mapping[int, Callable[[], nn.Module]]]) -> list[int]:
    return sorted(set.intersection(*(set(r) for r in label_runs)))


def measure_along_training(runs: Runs, images: Tensor, points: Sequence[str] = ("gelu",), resamples: int = 1000,
                           rank_resamples: int = 50, positions: int = POSITIONS, batch_size: int = 16, seed: int = 0,
                           progress: Callable[[str], None] = print
                           ) -> tuple[dict[int, list[Curves]], dict[str, dict[int, Estimate]]]:
    """:func:`measure` at each of ``points`` and GRN's change of its input, at every epoch that all runs of an encoder
    kept a snapshot of; ``runs`` maps each encoder to its runs, each ``{epoch: load the model}``, and each snapshot is
    loaded once. Returns ``{epoch: [Curves of each encoder and point with that epoch]}`` and ``{encoder: {epoch: GRN's
    change, the mean over blocks and runs [95% interval over runs, then images]}}`` (encoders with GRN only: it starts
    as the identity, 0). Every epoch is measured on the same images and image resamples, so curves and contrasts
    compare across epochs."""
    epochs = {label: _common_epochs(label_runs) for label, label_runs in runs.items()}
    by_epoch: dict[int, list[Curves]] = {}
    grn_change: dict[str, dict[int, Estimate]] = {}
    for epoch in sorted(set().union(*epochs.values())):
        encoders = {label: [r[epoch]() for r in label_runs] for label, label_runs in runs.items()
                    if epoch in epochs[label]}
        progress(f"[collapse] epoch {epoch}")
        by_epoch[epoch] = [curves for point in points for curves in measure(
            encoders, images, point, resamples, rank_resamples, positions, batch_size, seed, progress=lambda _: None)]
        for label, models in encoders.items():
            if has_point(models[0], "grn"):
                per_run = [torch.stack(list(grn_change_by_layer(m, images, batch_size).values())).mean(dim=0)
                           for m in models]  # (N,) each: the mean over blocks, per image
                grn_change.setdefault(label, {})[epoch] = hierarchical_bootstrap_mean(torch.stack(per_run)[:, None])
    return by_epoch, grn_change


def write_along_training_csv(by_epoch: Mapping[int, Sequence[Curves]], path: Path,
                             grn_change: Mapping[str, Mapping[int, Estimate]] | None = None) -> None:
    """One row per (epoch, resolution, point, encoder, statistic): the mean over blocks and runs, its 95% interval,
    each run's value; ``grn_change`` (:func:`measure_along_training`'s second result) as statistic ``grn_change`` at
    point grn."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "img_size", "point", "encoder", "runs", "stat", "value", "low", "high",
                         "run_values"])
        size = next(c.img_size for curves in by_epoch.values() for c in curves)
        rows = [(epoch, c.img_size, c.point, c.label, c.runs, stat, estimate([c], stat))
                for epoch, curves in by_epoch.items() for c in curves for stat in STATS]
        rows += [(epoch, size, "grn", label, len(e.runs), "grn_change", e)
                 for label, epochs in (grn_change or {}).items() for epoch, e in epochs.items()]
        for *row, e in rows:
            writer.writerow([*row, f"{e.value:.5f}", f"{e.low:.5f}", f"{e.high:.5f}",
                             " ".join(f"{v:.5f}" for v in e.runs.values)])


def plot_along_training(by_epoch: Mapping[int, Sequence[Curves]], title: str = "",
                        grn_change: Mapping[str, Mapping[int, Estimate]] | None = None) -> Figure:
    """Per statistic of ``FIGURE_STATS`` a panel against pretraining epochs: one line per encoder and point, the mean
    over blocks and runs, with its 95% band over runs and images; a fifth panel for ``grn_change``, a sixth for the
    legend (beside the curves, never over them)."""
    fig = Figure(figsize=(15, 7), layout="constrained")
    axes = fig.subplots(2, 3).flatten()
    colors: dict[str, str] = {}
    for ax, stat in zip(axes, (*FIGURE_STATS, "grn_change")):
        series: dict[tuple[str, str], list[tuple[int, Estimate]]] = {}
        if stat == "grn_change":
            for label, epochs in (grn_change or {}).items():
                series[(label, "grn")] = sorted(epochs.items())
        else:
            for epoch, curves in by_epoch.items():
                for c in curves:
                    series.setdefault((c.label, c.point), []).append((epoch, estimate([c], stat)))
        for (label, point), points in series.items():
            color = colors.setdefault(label, f"C{len(colors)}")
            x = [epoch for epoch, _ in points]
            ax.plot(x, [e.value for _, e in points], color=color, marker="o", ms=3,
                    ls="-" if point == "gelu" else "--", label=label if point == "gelu" else f"{label}, after GRN")
            ax.fill_between(x, [e.low for _, e in points], [e.high for _, e in points], color=color, alpha=0.18, lw=0)
        ax.set_ylabel(f"{GRN_CHANGE if stat == 'grn_change' else LABELS[stat]}, mean over blocks", fontsize=8)
        ax.set_xlabel("pretraining epochs")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[-1].legend(handles, labels, loc="center", fontsize=9, title="solid: after GELU; dashed: after GRN")
    axes[-1].axis("off")
    if title:
        fig.suptitle(title)
    return fig


def _first_and_last(by_epoch: Mapping[int, Sequence[Curves]], label: str, point: str) -> list[tuple[int, Curves]]:
    """``[(epoch, curves)]`` of ``label`` at ``point``: at its first kept epoch, and at its last."""
    kept = [(epoch, c) for epoch, curves in sorted(by_epoch.items()) for c in curves
            if (c.label, c.point) == (label, point)]
    return [kept[0], kept[-1]]


def _change(first: Curves, last: Curves) -> Curves:
    """Each run's statistics at ``last`` minus at ``first``, on the same image draws: a change paired by run and by
    image."""
    return dataclasses.replace(last, stats={name: Resampled(last.stats[name].value - first.stats[name].value,
                                                            last.stats[name].draws - first.stats[name].draws)
                                            for name in last.stats})


def _compared(difference: Estimate, first: str, second: str) -> str:
    """The words a 95% interval of ``first``'s change minus ``second``'s allows (a fall is a negative change)."""
    if difference.low > 0:
        return f"{first}'s change above {second}'s"
    if difference.high < 0:
        return f"{first}'s change below {second}'s"
    return "not told apart"


def markdown_along_training(by_epoch: Mapping[int, Sequence[Curves]], figure: str,
                            grn_change: Mapping[str, Mapping[int, Estimate]] | None = None) -> str:
    """The budget question in numbers: per encoder and point, each statistic (mean over blocks) at its first and last
    kept epoch and the change between them (each run's, paired by run and image: every epoch is measured on the same
    images and image resamples), with its 95% interval; then each pair of encoders' changes contrasted, with the
    words the interval allows."""
    series = list(dict.fromkeys((c.label, c.point) for curves in by_epoch.values() for c in curves))
    ends = {key: _first_and_last(by_epoch, *key) for key in series}
    changes = {key: _change(first, last) for key, [(_, first), (_, last)] in ends.items()}
    single = all(first.runs == 1 for [(_, first), _] in ends.values())
    header = " | ".join(LABELS[s] for s in STATS) + " |"
    lines = [f"### {ends[series[0]][0][1].img_size} px: from the first kept epoch to the last", "",
             "Each cell: the mean over blocks at the first kept epoch -> at the last, and the change [95% interval "
             "over runs and images, each epoch on the same images]."
             + (" One run per encoder: the intervals are over images only, and say what these runs show, not what "
                "pretraining again would." if single else ""), "",
             "| encoder | after | runs | epochs | " + header, "|---|---|---|---|" + "---|" * len(STATS)]
    for (label, point), [(e0, first), (e1, last)] in ends.items():
        cells = [f"{number(estimate([first], stat).value)} -> {number(estimate([last], stat).value)}: "
                 f"{interval(estimate([changes[label, point]], stat), '+')}" for stat in STATS]
        lines.append(f"| {label} | {point.upper()} | {first.runs} | {e0} -> {e1} | " + " | ".join(cells) + " |")
    pairs = [(a, b) for i, a in enumerate(series) for b in series[i + 1:]  # same point, same first and last epochs
             if a[1] == b[1] and [e for e, _ in ends[a]] == [e for e, _ in ends[b]]]
    if pairs:
        lines += ["", "Changes contrasted (the first encoder's change minus the second's):", "",
                  "| contrast | after | " + header, "|---|---|" + "---|" * len(STATS)]
        for a, b in pairs:
            contrasts = [estimate([changes[a], changes[b]], stat, (1.0, -1.0)) for stat in STATS]
            lines.append(f"| {a[0]} - {b[0]} | {a[1].upper()} | "
                         + " | ".join(f"{interval(e, '+')}: {_compared(e, a[0], b[0])}" for e in contrasts) + " |")
    for label, epochs in (grn_change or {}).items():
        (e0, first), (e1, last) = min(epochs.items()), max(epochs.items())
        lines += ["", f"{label}: {GRN_CHANGE} {interval(first)} at epoch {e0}, {interval(last)} at epoch {e1}."]
    return "\n".join([*lines, "", f"![collapse along pretraining]({figure})", ""])
