"""scripts/gpu_check.sh, the prepared device check, on a machine without a GPU: it reports the environment, says
there is no GPU and exits 0 (its CUDA parts are tests/test_cuda.py, skipped here)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA GPU is here: the script would run the full check")
def test_gpu_check_exits_0_without_a_gpu(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    done = subprocess.run(["bash", "scripts/gpu_check.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no CUDA GPU here" in done.stdout
    assert f"torch {torch.__version__}" in (tmp_path / "environment.txt").read_text()
