"""Feature collapse along pretraining (the budget curve): :func:`cnx2lite.collapse_curves.measure` at every epoch
that all runs of an encoder kept a snapshot of, with its CSV and figure."""
from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from matplotlib.figure import Figure
from torch import Tensor, nn

from .bootstrap import Estimate
from .collapse_curves import FIGURE_STATS, LABELS, POSITIONS, STATS, Curves, estimate, measure


def measure_along_training(runs: dict[str, Sequence[Mapping[int, Callable[[], nn.Module]]]], images: Tensor,
                           point: str = "gelu", resamples: int = 1000, rank_resamples: int = 50,
                           positions: int = POSITIONS, batch_size: int = 16, seed: int = 0,
                           progress: Callable[[str], None] = print) -> dict[int, list[Curves]]:
    """:func:`measure` at every epoch that all runs of an encoder kept a snapshot of: ``runs`` maps each encoder to
    its runs, each ``{epoch: load the model}``. Returns ``{epoch: [Curves of each encoder with that epoch]}``; every
    epoch is measured on the same images and image resamples, so curves and contrasts compare across epochs."""
    epochs = {label: sorted(set.intersection(*(set(r) for r in label_runs))) for label, label_runs in runs.items()}
    by_epoch: dict[int, list[Curves]] = {}
    for epoch in sorted(set().union(*epochs.values())):
        encoders = {label: [r[epoch]() for r in label_runs] for label, label_runs in runs.items()
                    if epoch in epochs[label]}
        progress(f"[collapse] epoch {epoch}")
        by_epoch[epoch] = measure(encoders, images, point, resamples, rank_resamples, positions, batch_size, seed,
                                  progress=lambda _: None)
    return by_epoch


def write_along_training_csv(by_epoch: Mapping[int, Sequence[Curves]], path: Path) -> None:
    """One row per (epoch, resolution, point, encoder, statistic): the mean over blocks and runs, its 95% interval,
    each run's value."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["epoch", "img_size", "point", "encoder", "runs", "stat", "value", "low", "high",
                         "run_values"])
        for epoch, curves in by_epoch.items():
            for c in curves:
                for stat in STATS:
                    e = estimate([c], stat)
                    writer.writerow([epoch, c.img_size, c.point, c.label, c.runs, stat, f"{e.value:.5f}",
                                     f"{e.low:.5f}", f"{e.high:.5f}", " ".join(f"{v:.5f}" for v in e.runs.values)])


def plot_along_training(by_epoch: Mapping[int, Sequence[Curves]], title: str = "") -> Figure:
    """Per statistic of ``FIGURE_STATS`` a panel against pretraining epochs: one line per encoder and point, the mean
    over blocks and runs, with its 95% band over runs and images."""
    fig = Figure(figsize=(11, 7), layout="constrained")
    axes = fig.subplots(2, 2, sharex=True).flatten()
    series: dict[tuple[str, str], list[tuple[int, Estimate]]] = {}
    for ax, stat in zip(axes, FIGURE_STATS):
        series.clear()
        for epoch, curves in by_epoch.items():
            for c in curves:
                series.setdefault((c.label, c.point), []).append((epoch, estimate([c], stat)))
        for i, ((label, point), points) in enumerate(series.items()):
            x = [epoch for epoch, _ in points]
            ax.plot(x, [e.value for _, e in points], color=f"C{i}", marker="o", ms=3,
                    ls="-" if point == "gelu" else "--", label=label if point == "gelu" else f"{label}, after GRN")
            ax.fill_between(x, [e.low for _, e in points], [e.high for _, e in points], color=f"C{i}", alpha=0.18,
                            lw=0)
        ax.set_ylabel(f"{LABELS[stat]}, mean over blocks")
        ax.set_xlabel("pretraining epochs")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return fig
