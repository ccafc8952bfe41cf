"""The notebooks' evidence: numbers and figures of the committed cpu report, and the reproduction's runs."""
from __future__ import annotations

import csv

import pytest
import torch

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


def test_trained_run_is_found_only_with_a_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv(evidence.RUNS_ENV, str(tmp_path))
    assert evidence.trained_run("pretrain-v2") is None
    (tmp_path / "pretrain-v2").mkdir()
    assert evidence.trained_run("pretrain-v2") is None  # a run that never saved
    torch.save({}, tmp_path / "pretrain-v2" / "checkpoint-00000001.pt")
    assert evidence.trained_run("pretrain-v2") == tmp_path / "pretrain-v2"
