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
            ax.scatter([xi] * len(e.runs), e.runs.values, s=14, color=color or "k", alpha=0.6, zorder=3,
                       linewidths=0)


def _k_ticks(labeled: dict[str, float]) -> tuple[list[float], list[str]]:
    """One tick per distinct number of labeled images per class, labelled with every K that stands there and, where
    it is not the K itself (K=all, or a K the folder cannot fill), that number: "10", "50/all\\n(40)"."""
    at: dict[float, list[str]] = {}
    for k, per_class in labeled.items():
        at.setdefault(round(per_class, 6), []).append(k)
    shown = {v: f"{v:.0f}" if v >= 100 else f"{v:.3g}" for v in at}  # 852, 40, 9.5
    labels = ["/".join(ks) + ("" if ks == [shown[v]] else f"\n({shown[v]})") for v, ks in at.items()]
    return list(at), labels


def plot_label_efficiency(curves: dict, labeled: dict[str, float], path: Path, all_note: str = "") -> None:
    """Top-1 against K (log axis) for FCMAE and scratch, fine-tuned (solid) and kNN (dashed), with 95% intervals:
    ``curves[probe][K label] = (FCMAE, scratch)``, ``labeled[K label]`` the labeled images per class it stands for
    (fewer than K where the folder holds fewer).
    K=all stands apart, unjoined and hollow (its runs train other epochs, ``all_note``)."""
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    for probe_name, ls in (("fine-tuned", "-"), ("kNN", "--")):
        finite = [k for k in curves[probe_name] if k != "all"]
        for i, (init, marker) in enumerate((("FCMAE", "o"), ("scratch", "s"))):
            color, label = f"C{2 * (probe_name == 'kNN') + i}", f"{init}, {probe_name}"
            for part in (finite, [k for k in curves[probe_name] if k == "all"]):
                if part:
                    x = [labeled[k] * (0.96 if i == 0 else 1.04) for k in part]  # side by side, not over each other
                    estimates = [curves[probe_name][k][i] for k in part]
                    hollow = {"mfc": "white"} if part[0] == "all" else {}  # apart where K=all is a finite K's place
                    _errorbar(ax, x, estimates, marker=marker, ls=ls, color=color, label=label, **hollow)
                    _run_dots(ax, x, estimates, color)
                    label = None  # one legend entry per line
    ax.set_xscale("log")
    ax.set_xticks(*_k_ticks(labeled))
    ax.minorticks_off()
    ax.set(xlabel="labeled images per class, K (log scale)", ylabel="val top-1 (%)",
           title="FCMAE vs scratch (95% intervals; dots: single runs)")
    if all_note:
        ax.annotate(all_note, (0.99, 0.02), xycoords="axes fraction", ha="right", va="bottom", fontsize=7)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
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


def _off_axis(rows: list[tuple[Estimate | None, float | None]]) -> dict[int, int]:
    """Rows whose measured interval would squeeze the figure: with at least two other measured rows, drawing the row
    would make the axis more than three times what every other number (and 0) spans. ``{row: +1 (right) or -1
    (left)}``; drawn at the axis' edge, such an outlier leaves the others readable."""
    off = {}
    measured = [y for y, (e, _) in enumerate(rows) if e is not None]
    for y in measured if len(measured) >= 3 else ():
        e, paper = rows[y]
        others = [0.0, *(x for i, (o, p) in enumerate(rows) if i != y
                         for x in ((o.low, o.high) if o is not None else ()) + ((p,) if p is not None else ())),
                  *((paper,) if paper is not None else ())]
        low, high = min(others), max(others)
        if max(high, e.high) - min(low, e.low) > 3 * (high - low):
            off[y] = 1 if e.low > high else -1 if e.high < low else 0
    return {y: side for y, side in off.items() if side}


def differences_figure(rows: dict[str, tuple[Estimate | None, float | None]], title: str, xlabel: str,
                       paper_label: str = "paper (ConvNeXt V2-B, ImageNet-1K: other model, data and budget)",
                       dpi: int = 100) -> Figure:
    """A dot plot of differences, one row each, ``{label: (measured, paper)}``: the measured difference with its 95%
    interval (its value above it) and each run's own (small dots), and the paper's (an open diamond), either of them
    ``None`` where a row has only the other; the dashed line is 0, so a row reads "which side, and is 0 inside its
    interval". A row far off every other (:func:`_off_axis`) is an arrow at the axis' edge with its numbers."""
    fig = Figure(figsize=(7.5, 1.5 + 0.42 * len(rows)), dpi=dpi, layout="constrained")
    ax = fig.subplots()
    off = _off_axis(list(rows.values()))
    measured = [(y, e) for y, (e, _) in enumerate(rows.values()) if e is not None and y not in off]
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
    for y, side in off.items():  # at the edge, pointing the way the row lies, its numbers beside the arrow
        edge = ax.get_xlim()[side > 0]
        ax.plot(edge, y, ">" if side > 0 else "<", color="#1a73e8", ms=9, clip_on=False)
        ax.annotate(f"{rows[list(rows)[y]][0]}: off the axis", (edge, y), xytext=(-12 * side, 0),
                    textcoords="offset points", ha="right" if side > 0 else "left", va="center", fontsize=7)
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
    chance = {100 / len(r.config["classes"]) for r in results.values() if r.config.get("classes")}  # the kNN's
    if len(chance) == 1:
        ax.axhline(chance.pop(), color="#5f6368", lw=1, ls="--", label="chance")
    ax.set_ylim(bottom=0)  # a flat curve looks flat
    ax.set(xlabel="pretraining epoch", ylabel="kNN val top-1 (%)", title="kNN monitor during FCMAE pretraining")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)
