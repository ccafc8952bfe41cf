"""Shared fixtures and helpers for the test suite."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("CNX2LITE_DATA_ROOT", REPO.parent / "shared" / "data"))

# `make test` runs the suite in several processes (pytest-xdist): they share the cores out, one thread each on 2
# cores (two threads each spent twice the CPU time spinning), and the processes a test starts inherit that share
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
THREADS = max(1, min(2, os.cpu_count() or 1) // WORKERS)
if WORKERS > 1:
    os.environ.setdefault("OMP_NUM_THREADS", str(THREADS))
torch.set_num_threads(THREADS)


def randomize_(module: nn.Module, scale: float = 0.1, seed: int = 0) -> nn.Module:
    """Perturb every parameter so zero-initialized ones (GRN gamma/beta, biases) take part."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return module


def write_images(folder: Path, count: int, size: int, rng: np.random.Generator, tint: np.ndarray | None = None) -> None:
    """``count`` PNGs of uniform noise in [0, 135) per channel, plus ``tint``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 135, (size, size, 3)) + (0 if tint is None else tint)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")


def make_image_folder(root: Path, classes: int = 2, train: int = 8, val: int = 4, size: int = 64,
                      tinted: bool = True) -> Path:
    """ImageFolder of noise; with ``tinted``, class k is tinted by hue k (learnable), else the classes look alike."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for k in range(classes):
            write_images(root / split / f"class{k}", n, size, rng, np.eye(3)[k % 3] * 120 if tinted else None)
    return root


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
