"""What a run logs, rank 0 writing: its rows (one per logging window, one per epoch) in ``metrics.csv``, their
``curves.png`` and, optionally, TensorBoard: the same rows as scalars, the gradient norm, the lr, and the task's figures
as images, in ``<run_dir>/tensorboard`` (``tensorboard --logdir runs``). ``tensorboard=True`` needs the ``tensorboard``
package; asked for without it, the run stops before it starts. :func:`read_metrics` reads a ``metrics.csv`` back.
"""
from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np

from ..images import load_image
from ..rundir import RunDir, run_subfolder
from .plots import plot_curves

SKIPPED = ("kind", "epoch", "step", "time_s")  # the x axis and bookkeeping, not curves


def read_metrics(path: Path) -> list[dict]:
    """A ``metrics.csv`` (:meth:`~cnx2lite.rundir.RunDir.write_metrics`) as :attr:`RunResult.history` rows: numbers
    as floats, empty cells as None."""
    with open(path, newline="") as f:
        return [{key: (value if key == "kind" else float(value) if value else None) for key, value in row.items()}
                for row in csv.DictReader(f)]


def last_epoch(history: list[dict]) -> float | None:
    """The last epoch a run's history logged; None before the first."""
    epochs = [row["epoch"] for row in history if row["kind"] == "epoch"]
    return epochs[-1] if epochs else None


def check_available() -> None:
    """Raise one clear line when the tensorboard package is missing."""
    if importlib.util.find_spec("tensorboard") is None:
        raise ValueError("tensorboard=True (--tensorboard) needs the tensorboard package: pip install tensorboard "
                         "(or cnx2lite[tensorboard]); metrics.csv and curves.png are written either way")


class TensorBoardLog:
    """TensorBoard's writer for a run's folder; a resumed run purges the events logged after the step it resumes
    from (the steps it trains again)."""

    def __init__(self, folder: Path, resumed_at: int = 0) -> None:
        from torch.utils.tensorboard import SummaryWriter

        # the rows at the checkpoint's own step were logged before it was saved: events from the next step on go
        self.writer = SummaryWriter(str(folder), purge_step=resumed_at + 1 if resumed_at else None)

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


class RunLog:
    """The rows of one run (:attr:`history`) and where they are kept: ``metrics.csv`` and ``curves.png`` in the run
    directory, and TensorBoard when asked for. Only the process that ``writes`` (rank 0) writes anything."""

    def __init__(self, run_dir: RunDir, title: str, writes: bool, tensorboard: bool = False) -> None:
        if tensorboard:
            check_available()  # before any work
        self.run_dir, self.title, self.writes = run_dir, title, writes
        self.history: list[dict] = []
        self.tensorboard: TensorBoardLog | None = None
        self._tensorboard_asked = tensorboard

    def open(self, step: int = 0) -> None:
        """Open TensorBoard's writer at ``step`` (where the run starts or resumes), once the run directory is known to
        be this run's."""
        if self._tensorboard_asked and self.writes:
            self.tensorboard = TensorBoardLog(run_subfolder(self.run_dir.path, "tensorboard"), step)  # not a link

    @property
    def logs_to_tensorboard(self) -> bool:
        return self.tensorboard is not None

    def scalar(self, tag: str, value: float, step: int) -> None:
        """A value that only TensorBoard shows (e.g. the gradient norm); nothing without it."""
        if self.tensorboard is not None:
            self.tensorboard.scalar(tag, value, step)

    def image(self, tag: str, path: Path, step: int) -> None:
        """A figure the run wrote, also in TensorBoard; nothing without it."""
        if self.tensorboard is not None:
            self.tensorboard.image(tag, path, step)

    def restore(self, history: list[dict], finished: bool = False) -> None:
        """Continue from a checkpoint's rows (``metrics.csv`` rewritten to them: rows logged after it are gone); a
        ``finished`` run's record is left as it is."""
        self.history = list(history)
        if not finished:
            self._write()

    def add(self, row: dict) -> None:
        self.history.append(row)
        self._write()
        if self.tensorboard is not None:
            self.tensorboard.row(row)

    def mean_train_loss(self, epoch: int) -> float | None:
        """The mean loss of the logging windows that ended in epoch ``epoch`` (1-based); None without any."""
        losses = [r["train_loss"] for r in self.history if r["kind"] == "train" and epoch - 1 < r["epoch"] <= epoch]
        return sum(losses) / len(losses) if losses else None

    def _write(self) -> None:
        if self.writes:
            self.run_dir.write_metrics(self.history)
            if any(r["kind"] == "epoch" for r in self.history):
                plot_curves(self.history, self.run_dir.path / "curves.png", title=self.title)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()
