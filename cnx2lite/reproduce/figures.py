"""The report's figures, drawn from measured estimates with their 95% intervals and, for replicated runs, each run's
own number as a dot (no pyplot state)."""
from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from ..bootstrap import Estimate
from ..train import RunResult


def _errorbar(ax, x, estimates: list[Estimate], **style) -> None:
    values = [e.value for e in estimates]
    errors = [[e.value - e.low for e in estimates], [e.high - e.value for e in estimates]]
    ax.errorbar(x, values, yerr=errors, capsize=3, **style)


def _run_dots(ax, x, estimates: list[Estimate], color=None) -> None:
    """Each run's own number beside its estimate (nothing for a single run)."""
    for xi, e in zip(x, estimates):
        if e.runs is not None and len(e.runs) > 1:
            ax.scatter([xi] * len(e.runs), e.runs.values, s=9, color=color or "k", alpha=0.45, zorder=3, linewidths=0)


def plot_label_efficiency(curves: dict, path: Path) -> None:
    """Top-1 against K for FCMAE and scratch, fine-tuned (solid) and kNN (dashed), with 95% intervals."""
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    for probe_name, ls in (("fine-tuned", "-"), ("kNN", "--")):
        labels = list(curves[probe_name])
        x = range(len(labels))
        for i, (init, marker) in enumerate((("FCMAE", "o"), ("scratch", "s"))):
            shifted = [v + (0.04 if i else -0.04) for v in x]
            estimates = [curves[probe_name][k][i] for k in labels]
            _errorbar(ax, shifted, estimates, marker=marker, ls=ls, label=f"{init}, {probe_name}")
            _run_dots(ax, shifted, estimates, ax.lines[-1].get_color())
        ax.set_xticks(list(x), [f"K={k}" for k in labels])
    ax.set(xlabel="labeled images per class", ylabel="val top-1 (%)",
           title="FCMAE vs scratch (95% intervals; dots: single runs)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def plot_bars(groups: dict[str, dict[str, Estimate]], path: Path, title: str, xlabel: str = "") -> None:
    """Grouped bars with 95% intervals: ``{group: {bar label: estimate}}``, groups along x (named ``xlabel``)."""
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    bars = list(next(iter(groups.values())))
    width = 0.8 / len(bars)
    for j, bar in enumerate(bars):
        x = [i + (j - (len(bars) - 1) / 2) * width for i in range(len(groups))]
        estimates = [groups[g][bar] for g in groups]
        ax.bar(x, [e.value for e in estimates], width, label=bar)
        _errorbar(ax, x, estimates, fmt="none", ecolor="k")
        _run_dots(ax, x, estimates)
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set(xlabel=xlabel, ylabel="val top-1 (%)", title=title)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def differences_figure(rows: dict[str, tuple[Estimate | None, float | None]], title: str, xlabel: str,
                       paper_label: str = "paper (ConvNeXt V2-B, ImageNet-1K)", dpi: int = 100) -> Figure:
    """A dot plot of differences, one row each, ``{label: (measured, paper)}``: the measured difference with its 95%
    interval (its value above it) and each run's own (small dots), and the paper's (an open diamond), either of them
    ``None`` where a row has only the other; the dashed line is 0, so a row reads "which side, and is 0 inside its
    interval"."""
    fig = Figure(figsize=(7.5, 1.5 + 0.42 * len(rows)), dpi=dpi, layout="constrained")
    ax = fig.subplots()
    measured = [(y, e) for y, (e, _) in enumerate(rows.values()) if e is not None]
    papers = [(y, p) for y, (_, p) in enumerate(rows.values()) if p is not None]
    keys = {}  # legend entries, measured first
    for y, e in measured:
        keys["measured, 95% interval (dots: single runs)"] = ax.errorbar(
            e.value, y, xerr=[[e.value - e.low], [e.high - e.value]], fmt="o", color="#1a73e8", capsize=3)
        ax.annotate(str(e), (e.value, y), xytext=(0, 6), textcoords="offset points", ha="center", fontsize=7)
        if e.runs is not None and len(e.runs) > 1:
            ax.scatter(e.runs.values, [y] * len(e.runs), s=9, color="k", alpha=0.45, zorder=3, linewidths=0)
    if papers:
        keys[paper_label] = ax.plot([p for _, p in papers], [y for y, _ in papers], "D", ls="none", mfc="white",
                                    mec="#e8710a", mew=2, ms=6)[0]
    ax.axvline(0, color="#5f6368", lw=1, ls="--")
    ends = [0.0, *(e.low for _, e in measured), *(e.high for _, e in measured), *(p for _, p in papers)]
    ax.set_xlim(min(ends) - 0.5, max(ends) + 0.8)
    ax.set_yticks(range(len(rows)), list(rows), fontsize=8)
    ax.set_ylim(len(rows) - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.legend(list(keys.values()), list(keys), fontsize=8, loc="outside lower center", ncols=2, frameon=False)
    return fig


def plot_pretraining_knn(results: dict[str, RunResult], path: Path) -> None:
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for label, result in results.items():
        ax.plot(*result.series("knn_top1"), marker="o", label=label)
    ax.set(xlabel="pretraining epoch", ylabel="kNN val top-1 (%)", title="kNN monitor during FCMAE pretraining")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
