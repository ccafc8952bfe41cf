"""Shared fixtures and helpers for the test suite."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CNX2LITE_DATA_ROOT", REPO.parent / "shared" / "data"))

torch.set_num_threads(min(2, os.cpu_count() or 1))


def randomize_(module: nn.Module, scale: float = 0.1, seed: int = 0) -> nn.Module:
    """Perturb every parameter so zero-initialized ones (GRN gamma/beta, biases) take part."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return module


@pytest.fixture
def one_thread():
    """Tiny models step faster on one thread, and much faster when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def shared_data() -> Path:
    """The shared real-image folder; tests using it skip when it is absent."""
    if not (SHARED_DATA / "imagenette").is_dir():
        pytest.skip(f"real images not found at {SHARED_DATA} (set CNX2LITE_DATA_ROOT)")
    return SHARED_DATA
