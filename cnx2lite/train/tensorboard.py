"""Optional TensorBoard logging beside ``metrics.csv`` (rank 0 only): the same rows as scalars, the gradient norm,
the lr, and the task's figures as images, in ``<run_dir>/tensorboard`` (``tensorboard --logdir runs``).
``tensorboard=True`` needs the ``tensorboard`` package; asked for without it, the run stops before it starts.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from ..images import load_image

SKIPPED = ("kind", "epoch", "step", "time_s")  # the x axis and bookkeeping, not curves


def check_available() -> None:
    """Raise one clear line when the tensorboard package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ValueError("tensorboard=True (--tensorboard) needs the tensorboard package: pip install tensorboard "
                         "(or cnx2lite[tensorboard]); metrics.csv and curves.png are written either way")


class TensorBoardLog:
    def __init__(self, folder: Path) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def row(self, row: dict) -> None:
        """A metrics row: ``train/<column>`` for logging windows, ``epoch/<column>`` for epochs, at its step."""
        group = "train" if row["kind"] == "train" else "epoch"
        for key, value in row.items():
            if key not in SKIPPED and isinstance(value, (int, float)):
                self.writer.add_scalar(f"{group}/{key}", value, row["step"])

    def scalar(self, tag: str, value: float, step: int) -> None:
        self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, path: Path, step: int) -> None:
        """A PNG the run wrote (e.g. the FCMAE reconstructions) as an image ``(H, W, 3)``."""
        self.writer.add_image(tag, np.asarray(load_image(path)), step, dataformats="HWC")

    def close(self) -> None:
        self.writer.close()
