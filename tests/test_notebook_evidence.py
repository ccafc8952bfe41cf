"""The notebooks' evidence: numbers, figures and run settings of the committed cpu report."""
from __future__ import annotations

import csv

import pytest

from cnx2lite.notebook import evidence


def test_measured_reads_the_committed_report():
    with open(evidence.REPORT / "results.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["row"] == "K=50 FCMAE - scratch" and r["metric"] == "kNN top-1")
    got = evidence.measured(1, "K=50 FCMAE - scratch", "kNN top-1")
    assert (got.value, got.low, got.high) == (float(row["value"]), float(row["ci_low"]), float(row["ci_high"]))
    assert got.low <= got.value <= got.high and str(got).startswith(f"{got.value:.1f} [")
    with pytest.raises(KeyError, match="table 1 has"):
        evidence.measured(1, "no such row")
    assert str(evidence.Measured(0.4597, 0.4545, 0.4653)) == "0.460 [0.455, 0.465]"
    assert evidence.report_figure("label_efficiency").is_file()
    with pytest.raises(FileNotFoundError, match="figures:"):
        evidence.report_figure("nothing")


def test_the_report_s_run_settings_come_from_its_committed_records():
    config = evidence.report_run_config("pretrain-v2-p0")
    assert config["task"] == "pretrain" and config["name"] == "pretrain-v2-p0" and 0 < config["mask_ratio"] < 1
    with pytest.raises(FileNotFoundError, match="its runs: .*pretrain-v2-p0"):
        evidence.report_run_config("pretrain-v2")
