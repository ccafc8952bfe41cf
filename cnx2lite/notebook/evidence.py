"""What the notebooks show as evidence: the committed ``cnx2lite reproduce --scale cpu`` report.

The report (``reports/cpu/``: ``results.csv``, ``report.md``, figures, and ``records/``: every run's settings and
metrics) is committed, so every notebook can quote measured numbers, their intervals and the settings that produced
them anywhere, CI included. The models a notebook computes on are another matter: :mod:`.shared_runs`.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..data import REPO

REPORT = REPO / "reports" / "cpu"


@dataclass(frozen=True)
class Measured:
    """One number of the report with its 95% bootstrap interval (over val images), and the paper's counterpart."""

    value: float
    low: float
    high: float
    paper: str = ""

    def __str__(self) -> str:
        """Percentages with one decimal, values below 1 (distances, fractions) with three."""
        digits = 3 if max(abs(self.value), abs(self.low), abs(self.high)) < 1 else 1
        return f"{self.value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"


@lru_cache(maxsize=None)
def _rows() -> tuple[dict[str, str], ...]:
    with open(REPORT / "results.csv", newline="") as f:
        return tuple(csv.DictReader(f))


def measured(table: int, row: str, metric: str = "fine-tuned top-1") -> Measured:
    """The report's number for ``(table, row, metric)``, e.g. ``measured(1, "K=50 FCMAE - scratch")``."""
    for r in _rows():
        if (int(r["table"]), r["row"], r["metric"]) == (table, row, metric):
            return Measured(float(r["value"]), float(r["ci_low"]), float(r["ci_high"]), r["paper"])
    known = [f"{r['table']}/{r['row']}/{r['metric']}" for r in _rows() if int(r["table"]) == table]
    raise KeyError(f"no ({table}, {row!r}, {metric!r}) in {REPORT / 'results.csv'}; table {table} has: {known}")


def finetune_epochs() -> str:
    """The report's fine-tuning epochs per K as it states them, e.g. ``"K=10: 100, K=50: 40, K=all: 4"``."""
    text = " ".join((REPORT / "report.md").read_text().split())
    found = re.search(r"epochs (K=\S+ \d+(?:, K=\S+ \d+)*)", text)
    if found is None:
        raise ValueError(f"{REPORT / 'report.md'} does not state its fine-tuning epochs ('epochs K=...: N, ...')")
    return found.group(1)


def report_figure(name: str) -> Path:
    """The path of a committed report figure, e.g. ``report_figure("label_efficiency")``."""
    path = REPORT / f"{name}.png"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in the report; figures: {sorted(p.stem for p in REPORT.glob('*.png'))}")
    return path


def report_run_config(name: str) -> dict:
    """The settings of the report's run ``name`` (e.g. ``"pretrain-v2-p0"``), from its committed record."""
    path = REPORT / "records" / name / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is not in the report; its runs: "
                                f"{sorted(p.parent.name for p in (REPORT / 'records').glob('*/config.json'))}")
    return json.loads(path.read_text())
