"""scripts/gpu_evidence.sh, the prepared GPU evidence run, in its tiny CPU version: every step runs (pretraining V1 and
V2, collapse curves, kNN, K-shot fine-tuning), each exits 0, and what comes back fits the device tool's limits (at most
8 files, 16 MiB each, 2 folders down) and is readable by the package."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnx2lite.factory import load_model

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: the script would run the full version")
def test_the_tiny_version_runs_every_step_and_fits_what_comes_back(tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(["bash", "scripts/gpu_evidence.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size < 16 * 2**20 for p in files)
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)
    report = (out / "report.md").read_text()
    steps = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in report.splitlines()
             if line.startswith("| ") and line.count("|") == 4 and line.split("|")[2].strip().isdigit()}
    assert steps == {name: "0" for name in ("pretrain-v1", "pretrain-v2", "collapse", "knn-v1", "finetune-v1",
                                            "knn-v2", "finetune-v2")}, report
    assert "| V2 FCMAE - V1 FCMAE | GELU |" in report and "not measured" not in report and "not trained" not in report
    assert (out / "collapse-64px.png").is_file()
    assert {r["run"] for r in csv.DictReader(open(out / "pretrain_metrics.csv"))} == {"pretrain-v1", "pretrain-v2"}
    for block in ("v1", "v2"):
        encoder, _ = load_model(out / f"encoder-{block}")
        assert encoder.block == block
