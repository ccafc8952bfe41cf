"""What every table of the report is made of: its rows (an estimate with the paper's number beside it), its section,
its spec (the cells it trains, how it is measured), and the words a difference's interval allows."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from torch import Tensor

from ..bootstrap import (
    Estimate,
    RunSpread,
    hierarchical_paired_difference,
)
from .evaluation import Evaluator
from .grid import Cell, Grid, Scale

# The paper's ImageNet-1K fine-tuning top-1 (Woo et al. 2023), 800-epoch FCMAE unless noted.
PAPER_SPARSE_CONV, PAPER_DENSE_CONV = 83.7, 79.3  # its Table 1: V1-B's FCMAE encoder, sparse vs dense convolution
PAPER_SPARSE_GAIN = PAPER_SPARSE_CONV - PAPER_DENSE_CONV
# its co-design table: supervised -> FCMAE fine-tuned top-1 of V1 and V2 blocks, base and large
PAPER_CODESIGN = {"B": {"V1": (83.8, 83.7), "V2": (84.3, 84.6)}, "L": {"V1": (84.3, 84.4), "V2": (84.5, 85.6)}}
PAPER = {
    "fcmae_vs_scratch": "V2-B: 84.3 supervised (300 epochs) vs 84.6 FCMAE (800 pretraining + 100 fine-tuning "
                        "epochs), +0.3; no low-label results in the paper",
    "codesign": "; ".join(f"{size}: " + ", ".join(f"{block} {a} -> {b} ({b - a:+.1f})"
                                                  for block, (a, b) in arms.items())
                          for size, arms in PAPER_CODESIGN.items()),
    "sparse": f"V1-B, before GRN (Table 1 of the paper, FCMAE design): sparse conv {PAPER_SPARSE_CONV} vs dense conv "
              f"{PAPER_DENSE_CONV} ({PAPER_SPARSE_GAIN:+.1f})",
    "collapse": "Fig. 4: V1-FCMAE shows dead and saturated channels and low distance in deep layers; V2 does not",
}
RESULTS_COLUMNS = ("table", "row", "metric", "value", "ci_low", "ci_high", "runs", "replicated", "paper")
LOSS_OF_TRAINING = 0.9  # a run trains when its last epoch's loss is below this fraction of chance, ln(classes)


@dataclass
class Row:
    """One number of ``results.csv``; ``replicated``: whether its interval covers reruns (every arm it draws on has
    several runs), what the words of :func:`verdict` and of the notebooks' quotes depend on."""

    table: str
    row: str
    metric: str
    estimate: Estimate
    replicated: bool
    paper: str = ""

    def csv(self) -> dict:
        e = self.estimate
        return {"table": self.table, "row": self.row, "metric": self.metric, "value": round(e.value, 4),
                "ci_low": round(e.low, 4), "ci_high": round(e.high, 4),
                "runs": "" if e.runs is None else " ".join(f"{v:.4g}" for v in e.runs.values),
                "replicated": int(self.replicated), "paper": self.paper}


@dataclass
class Table:
    rows: list[Row]
    section: str  # markdown


def no_runs(grid: Grid) -> list[str]:
    return []


@dataclass(frozen=True)
class TableSpec:
    """A table: its title, the cells it reads (each trained before any table is measured), how it is measured, and
    the names of runs of its own that are no cell's (the transfer runs). ``partial``: each row compares one cell
    with the first, so the table is written once the first and any other cell are finished (a grid trained over
    several sittings shows its finished rows), naming the cells still to train."""

    title: str
    cells: Callable[[Scale], list[Cell]]
    build: Callable[[Evaluator, Path], Table]
    own_runs: Callable[[Grid], list[str]] = no_runs
    partial: bool = False

    def ready(self, grid: Grid) -> bool:
        """Whether the table can be written now: its cells finished (``partial``: the first and any other) and its
        own runs recorded; a table with neither (the transfer table of a scale without one) has nothing to show."""
        done, own = [grid.cell_finished(cell) for cell in self.cells(grid.scale)], self.own_runs(grid)
        cells_ready = all(done) or (self.partial and done[0] and any(done[1:]))
        return bool(done or own) and cells_ready and all(grid.records.has_run(name) for name in own)


def replicated(*corrects: Tensor) -> bool:
    """Whether every arm ``(P, S, N)`` has more than one run: only then do intervals cover reruns."""
    return all(c.shape[0] * c.shape[1] > 1 for c in corrects)


def difference(a: Tensor, b: Tensor, paired: bool = False) -> Estimate:
    """Accuracy of ``a`` minus ``b`` (``(P, S, N)`` each; scratch ``(1, S, N)``): the interval draws each arm's
    pretraining runs on their own (pretraining run p of one arm has no partner in the other), the fine-tuning seeds
    once for both (seed ``s`` of every run of both arms fine-tuned on the same labeled images in the same order) and
    the images once; ``runs`` holds run ``(p, s)`` of ``a`` minus run ``(p, s)`` of ``b`` (scratch: seed ``s``).
    ``paired``: run ``(p, s)`` of both arms started from the same pretraining run (GRN removed at fine-tuning from
    GRN's own encoders), so the runs are drawn together too."""
    estimate = hierarchical_paired_difference(a, b, paired_runs=paired, paired_seeds=True)
    per_run = (a.double().mean(dim=2) - b.double().mean(dim=2)) * 100.0  # (P, S); a single scratch run broadcasts
    return Estimate(estimate.value, estimate.low, estimate.high, RunSpread(per_run.flatten().tolist()))


def shown(e: Estimate, digits: int = 1, unit: str = "") -> str:
    """``value [low, high]`` and, for replicated runs, each run's range: ``32.1 [30.0, 34.2]; runs 31.0..33.5``."""
    text = f"{e.value:.{digits}f} [{e.low:.{digits}f}, {e.high:.{digits}f}]{unit}"
    if e.runs is not None and len(e.runs) > 1:
        text += f"; runs {min(e.runs.values):.{digits}f}..{max(e.runs.values):.{digits}f}"
    return text


def verdict(diff: Estimate, claim: str, is_replicated: bool, unit: str = " points", digits: int = 1,
            paper: float | None = None) -> str:
    """Whether a difference the paper predicts to be positive reproduced. Only an interval over reruns can say so;
    with one run per arm it says what these runs show. ``paper``: the paper's own difference; an interval below it
    rules an effect of that size out at this scale, which "not shown" alone would hide."""
    numbers = shown(diff, digits, unit)
    if not is_replicated:
        side = "higher" if diff.low > 0 else "lower" if diff.high < 0 else "within noise"
        return (f"**one run per arm, intervals over images only**: {claim}: {side} for these runs ({numbers}); "
                f"whether it holds when rerun is not measured")
    ruled_out = (f"; the paper's {paper:+.{digits}f}{unit} lies above the interval: an effect that large is ruled out "
                 "at this scale" if paper is not None and diff.high < paper else "")
    if not diff.excludes_zero:
        return (f"**not shown at this budget**: {claim}: the difference is within the run-to-run and image noise "
                f"({numbers}){ruled_out}")
    if diff.low > 0:
        return f"**reproduces**: {claim} (interval over runs and images excludes 0: {numbers}){ruled_out}"
    return f"**contradicted at this budget**: the opposite of {claim} ({numbers}){ruled_out}"


def knn_ends(runs: list) -> str:
    """The kNN monitor's last value of pretraining runs: one value, or their range."""
    values = [v[-1] for v in (run.metric("knn_top1") for run in runs) if v]
    if not values:
        return "not measured"
    return f"{values[0]:.1f}%" if len(values) == 1 else f"{min(values):.1f}..{max(values):.1f}%"


def pretraining_runs(ev: Evaluator, block: str = "v2", sparse: bool = True) -> list:
    return [ev.grid.pretrain(block, sparse, seed) for seed in range(ev.grid.scale.pretrain_seeds)]


def runs_described(ev: Evaluator, init: str) -> str:
    s = ev.grid.scale
    if init == "scratch":
        return f"{s.finetune_seeds} fine-tuning seed(s)"
    return f"{s.pretrain_seeds} pretraining run(s) x {s.finetune_seeds} fine-tuning seed(s)"
