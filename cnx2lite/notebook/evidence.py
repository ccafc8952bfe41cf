"""What the notebooks show as evidence: the committed ``cnx2lite reproduce --scale cpu`` report.

The report (``reports/cpu/``: ``results.csv``, ``report.md``, figures, ``feature_collapse.csv``: table 4's per-block
curves, and ``records/``: every run's settings and metrics) is committed, so every notebook can quote measured
numbers, their intervals and the settings that produced them anywhere, CI included. Its grid is replicated (several
pretraining runs per pretrained arm, several fine-tuning seeds per run), and its intervals resample runs, seeds and
images. The models a notebook computes on are another matter: :mod:`.shared_runs`.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..arguments import checked_arguments
from ..bootstrap import Estimate, RunSpread
from ..data import REPO
from ..reproduce.report_rows import verdict as report_verdict

REPORT = REPO / "reports" / "cpu"


@dataclass(frozen=True)
class Measured:
    """One number of the report with its 95% bootstrap interval (over pretraining runs, fine-tuning seeds and val
    images), the paper's counterpart, ``runs``: the value of each single run it averages (a pretraining run and
    fine-tuning seed; none for a difference the report gives no per-run values of), and ``replicated``: whether its
    interval covers reruns (several runs per arm) or the images of single runs only."""

    value: float
    low: float
    high: float
    paper: str = ""
    runs: tuple[float, ...] = ()
    replicated: bool = True

    def __str__(self) -> str:
        """Percentages with one decimal, values below 1 (distances, fractions) with three."""
        digits = 3 if max(abs(self.value), abs(self.low), abs(self.high)) < 1 else 1
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    @property
    def estimate(self) -> Estimate:
        """As the report's :class:`~cnx2lite.bootstrap.Estimate` (for its figures)."""
        return Estimate(self.value, self.low, self.high, RunSpread(self.runs) if self.runs else None)

    def __neg__(self) -> Measured:
        """The difference the other way round (second minus first): value, interval and runs negated."""
        return Measured(-self.value, -self.high, -self.low, self.paper, tuple(-v for v in self.runs), self.replicated)

    @checked_arguments
    def verdict(self, claim: str) -> str:
        """What this difference's 95% interval says of ``claim`` (the paper's direction: a difference above 0), in the
        report's own words (:func:`~cnx2lite.reproduce.report_rows.verdict`), without its Markdown: ``reproduces``,
        ``contradicted at this budget`` or ``not shown at this budget``; for a row of single runs, what these runs
        show."""
        digits = 3 if max(abs(self.value), abs(self.low), abs(self.high)) < 1 else 1
        words = report_verdict(Estimate(self.value, self.low, self.high), claim, is_replicated=self.replicated,
                               unit="", digits=digits)
        return words.replace("**", "")


@lru_cache(maxsize=None)
def _rows() -> tuple[dict[str, str], ...]:
    with open(REPORT / "results.csv", newline="") as f:
        return tuple(csv.DictReader(f))


def _measured(r: dict[str, str]) -> Measured:
    return Measured(float(r["value"]), float(r["ci_low"]), float(r["ci_high"]), r["paper"],
                    tuple(float(v) for v in r["runs"].split()), r["replicated"] == "1")


@checked_arguments
def measured(table: int, row: str, metric: str = "fine-tuned top-1") -> Measured:
    """The report's number for ``(table, row, metric)``, e.g. ``measured(1, "K=50 FCMAE - scratch")``."""
    for r in _rows():
        if (int(r["table"]), r["row"], r["metric"]) == (table, row, metric):
            return _measured(r)
    known = [f"{r['table']}/{r['row']}/{r['metric']}" for r in _rows() if int(r["table"]) == table]
    raise KeyError(f"no ({table}, {row!r}, {metric!r}) in {REPORT / 'results.csv'}; table {table} has: {known}")


@checked_arguments
def measured_rows(table: int, metric: str = "fine-tuned top-1") -> dict[str, Measured]:
    """Every row of a table for one metric, in the report's order: ``{row: Measured}`` (empty for a table the report
    does not have yet). A table written from its finished rows (5) holds only those."""
    return {r["row"]: _measured(r) for r in _rows() if (int(r["table"]), r["metric"]) == (table, metric)}


@lru_cache(maxsize=None)
def _collapse_rows() -> tuple[dict[str, str], ...]:
    with open(REPORT / "feature_collapse.csv", newline="") as f:
        return tuple(csv.DictReader(f))


def _collapse(encoder: str, stat: str, img_size: int, point: str) -> list[tuple[int, str, Measured]]:
    """``(block, layer name, Measured)`` of ``feature_collapse.csv`` for one curve, in block order (0: the mean)."""
    key = (encoder, stat, img_size, point)
    found = [(int(r["block"]), r["layer"], Measured(float(r["value"]), float(r["low"]), float(r["high"]),
                                                    runs=tuple(float(v) for v in r["run_values"].split())))
             for r in _collapse_rows() if (r["encoder"], r["stat"], int(r["img_size"]), r["point"]) == key]
    if not found:
        known = sorted({(r["encoder"], r["stat"], int(r["img_size"]), r["point"]) for r in _collapse_rows()})
        raise KeyError(f"no ({encoder!r}, {stat!r}, {img_size}, {point!r}) in {REPORT / 'feature_collapse.csv'}; "
                       f"it has (encoder, stat, img_size, point): {known}")
    return sorted(found, key=lambda row: row[0])


@checked_arguments
def collapse_mean(encoder: str, stat: str, img_size: int, point: str = "gelu") -> Measured:
    """Table 4's mean over blocks of a collapse statistic, from the report's ``feature_collapse.csv``, e.g.
    ``collapse_mean("V1 FCMAE", "saturated", 96)``. ``encoder``: one of the report's (``"V1 FCMAE"``, ``"V2 FCMAE"``,
    ``"V2 random init"``, ``"V2 supervised (all labels)"``) or its contrast ``"V2 FCMAE - V1 FCMAE"``; ``stat``:
    ``distance``, ``centered_distance``, ``effective_rank`` (a share of the channels), ``off``, ``saturated`` or
    ``dead`` (shares of the channels); ``img_size``: 96 or 224 px; ``point``: after ``"gelu"`` or ``"grn"``."""
    block, _, mean = _collapse(encoder, stat, img_size, point)[0]
    if block != 0:
        raise KeyError(f"{REPORT / 'feature_collapse.csv'} has no mean over blocks for ({encoder!r}, {stat!r}, "
                       f"{img_size}, {point!r})")
    return mean


@checked_arguments
def collapse_curve(encoder: str, stat: str, img_size: int, point: str = "gelu") -> dict[str, Measured]:
    """One encoder's per-block curve of a collapse statistic, as the report's figures draw it: ``{layer name (e.g.
    "stages.2.0.act"): Measured}`` in block order, input to output, each the mean over the encoder's runs with its 95%
    interval over runs and images and ``runs`` each run's value. Arguments as :func:`collapse_mean`; a contrast has
    no per-block curve (KeyError)."""
    curve = {layer: m for block, layer, m in _collapse(encoder, stat, img_size, point) if block > 0}
    if not curve:
        raise KeyError(f"{REPORT / 'feature_collapse.csv'} has no per-block curve for ({encoder!r}, {stat!r}, "
                       f"{img_size}, {point!r}), only its mean over blocks")
    return curve


def finetune_epochs() -> str:
    """The report's fine-tuning epochs per K as it states them, e.g. ``"K=10: 100, K=50: 30, K=all: 4"``."""
    text = " ".join((REPORT / "report.md").read_text().split())
    found = re.search(r"epochs (K=\S+ \d+(?:, K=\S+ \d+)*)", text)
    if found is None:
        raise ValueError(f"{REPORT / 'report.md'} does not state its fine-tuning epochs ('epochs K=...: N, ...')")
    return found.group(1)


@checked_arguments
def report_section(table: int) -> str | None:
    """The report's section of table ``table`` as markdown, its heading to the next one, its figure lines left out
    (:func:`report_figure` shows them); None while the table is not trained yet (the report names it then)."""
    text = (REPORT / "report.md").read_text()
    found = re.search(rf"^## {table}\b.*?(?=^## |\Z)", text, re.M | re.S)
    if found is None:
        raise ValueError(f"{REPORT / 'report.md'} has no section of table {table}")
    if "\n\nNot trained yet." in found.group(0):
        return None
    return re.sub(r"^!\[[^\]]*\]\([^)]*\)\n\n?", "", found.group(0), flags=re.M).rstrip() + "\n"


@checked_arguments
def report_figure(name: str) -> Path:
    """The path of a committed report figure, e.g. ``report_figure("label_efficiency")``."""
    path = REPORT / f"{name}.png"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in the report; figures: {sorted(p.stem for p in REPORT.glob('*.png'))}")
    return path


@checked_arguments
def report_run_config(name: str) -> dict:
    """The settings of the report's run ``name`` (e.g. ``"pretrain-v2-p0"``), from its committed record."""
    path = REPORT / "records" / name / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in the report; its runs: "
                                f"{sorted(p.parent.name for p in (REPORT / 'records').glob('*/config.json'))}")
    return json.loads(path.read_text())
