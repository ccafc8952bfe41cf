"""A run directory and everything a training run keeps in it, with one owner: :class:`RunDir`.

::

    <run_dir>/.lock                 flock: one training process writes here at a time
    <run_dir>/config.json           the resolved config and what the data gave
    <run_dir>/metrics.csv           one row per logging window ("train") and per epoch ("epoch")
    <run_dir>/checkpoint-<step>.pt  atomic writes, newest by step, the last ``keep_last`` kept
    <run_dir>/snapshot-epoch-<E>.pt  weights and config every ``keep_every_epochs`` epochs, never pruned

(The engine adds ``curves.png``, a task its own figures, e.g. FCMAE's ``reconstructions/``.)

Readers outside training take a path that is a checkpoint file or a run directory (its newest
checkpoint): :func:`resolve_checkpoint`, :func:`load_checkpoint`. Checkpoints hold tensors and plain
containers only and are read with ``weights_only=True``.

The lock is an exclusive ``flock`` on ``.lock``, which names the owner's pid and host: a second run
fails at once with one line naming that process. The kernel releases the lock when its process
dies (kill -9, a crash, a lost node), so there is no stale lock to detect and no race between two
runs taking one over. Holding the lock, a run removes the temporary files of writes that
a killed process left behind.
"""
from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import json
import os
import re
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Callable, Iterator, Mapping, Sequence

import torch

from .torch_files import read_torch_file
from .writing import TEMPORARY_NAME, make_folder, replaced_atomically

LOCK_NAME = ".lock"
CHECKPOINT_PATTERN = re.compile(r"checkpoint-(\d+)\.pt$")
SNAPSHOT_PATTERN = re.compile(r"snapshot-epoch-(\d+)\.pt$")
METRIC_COLUMNS = ("kind", "epoch", "step", "train_loss", "lr", "img_per_s", "val_loss", "val_top1", "val_top5",
                  "ema_top1", "ema_top5", "knn_top1", "time_s")
RUN_TASKS = ("pretrain", "finetune", "segment", "detect")  # what a run's config.json may name as its task


class RunDirLockedError(RuntimeError):
    """Another live process is training into this run directory."""


class RunDir:
    """The files of one run under ``path``. Only the process that trains (rank 0) writes."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)

    def check_creatable(self) -> None:
        """Raise the OSError :meth:`create` would (a file in the way, a folder that cannot be written), creating
        nothing: a run that is refused later leaves no folder behind."""
        self._refuse_link()
        if (outer := run_directory_of(self.path.parent)) is not None:  # its files would count as that run's
            raise ValueError(f"output {self.path.parent} is inside the training run {outer}: choose an output folder "
                             "outside every run")
        existing = self.path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise NotADirectoryError(f"cannot create the run directory {self.path} ({existing} is a file): choose "
                                     "another output folder (--output) or name")
        if not os.access(existing, os.W_OK | os.X_OK):
            if existing == self.path:  # a resume, or a run folder made beforehand: nothing is to be created
                raise PermissionError(f"run folder {self.path} is not writable (permission denied): make it "
                                      "writable, or choose another output folder (--output) or name")
            raise PermissionError(f"cannot write into {existing} to create the run directory {self.path}: choose "
                                  "another output folder (--output) or name")
        others = sorted(name for name in os.listdir(self.path) if name != LOCK_NAME
                        and not TEMPORARY_NAME.fullmatch(name)) if existing == self.path else []  # a run's own
        if others and not _holds_run(self.path):  # a saved model, a user's folder: the run would overwrite it
            raise FileExistsError(f"{self.path} holds files that are not a training run's ({', '.join(others[:3])}"
                                  f"{', ...' if len(others) > 3 else ''}): choose another name or output folder")

    def create(self) -> None:
        """Create the directory (and its parents); an OSError in one line says why it cannot hold a run."""
        self._refuse_link()
        make_folder(self.path, "the run directory", "choose another output folder (--output) or name")

    def _refuse_link(self) -> None:
        """A run folder is a folder of its own, never a link to one: a link would put the run outside ``--output``
        (or make it another run's)."""
        if self.path.is_symlink():
            raise ValueError(f"{self.path} is a symbolic link (to {os.readlink(self.path)}): a run folder must be a "
                             "folder of its own; remove the link or choose another name")

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory's lock for the duration of the block; raises :class:`RunDirLockedError` if another
        process holds it. A run directory this call created is removed again if the block fails before writing
        anything into it, with the parent folders it made for it (a refused run leaves nothing behind)."""
        made = [p for p in (self.path, *self.path.parents) if not p.exists()]  # innermost first
        self.create()
        path = self.path / LOCK_NAME
        try:
            lock_file = _open_nofollow(path, "a+")
        except OSError as e:
            raise RunDirLockedError(f"cannot open the lock file {path} ({e.strerror or e}): "
                                    "choose another output") from None
        with lock_file:
            try:
                fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock_file.seek(0)
                owner = " on ".join(lock_file.read().split(maxsplit=1)).strip() or "?"
                raise RunDirLockedError(f"{self.path} is in use by process {owner} (it holds {path}): wait for that "
                                        "run to end, or choose another name/output") from None
            except OSError as e:  # e.g. ENOLCK: a network filesystem without lock support
                raise RunDirLockedError(f"cannot lock {path} ({e.strerror}): this filesystem does not support flock "
                                        "locks; put the output on one that does") from None
            try:  # written past Python's buffer: a full disk fails here, not again when the file closes
                lock_file.truncate(0)
                os.write(lock_file.fileno(), f"{os.getpid()} {socket.gethostname()}\n".encode())
            except OSError as e:  # a full disk: say which file, and leave no folder holding only the lock
                if made:
                    shutil.rmtree(self.path, ignore_errors=True)
                raise OSError(e.errno, f"cannot write {path}: {e.strerror}", str(path)) from None
            for orphan in self.path.iterdir():  # half-written files of a process killed while saving
                if TEMPORARY_NAME.fullmatch(orphan.name):
                    orphan.unlink(missing_ok=True)
            if links := sorted(p for p in self.path.iterdir() if p.is_symlink()):  # before the run rewrites any file
                raise planted_link(links[0])
            try:
                yield
            except BaseException:
                if made and set(os.listdir(self.path)) <= {LOCK_NAME}:
                    path.unlink()
                    for folder in made:  # the run folder, then the parents this call made for it, while empty
                        with contextlib.suppress(OSError):
                            folder.rmdir()
                raise
            finally:
                lock_file.truncate(0)  # the lock itself goes with the file's closing

    # --------------------------------------------------------------------------------------------- config, metrics
    def write_config(self, info: Mapping) -> None:
        with open_in_run(self.path / "config.json", "w") as f:
            f.write(json.dumps(info, indent=2) + "\n")

    def write_metrics(self, history: Sequence[Mapping]) -> None:
        """``metrics.csv`` holding ``history`` (rewritten whole: a resumed run keeps one consistent file): the
        :data:`METRIC_COLUMNS`, with the columns of a task's own metrics (e.g. ``val_miou``) before ``time_s``."""
        own = dict.fromkeys(k for row in history for k in row if k not in METRIC_COLUMNS)
        with open_in_run(self.path / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, [*METRIC_COLUMNS[:-1], *own, METRIC_COLUMNS[-1]])
            writer.writeheader()
            writer.writerows(history)

    # --------------------------------------------------------------------------------------------- checkpoints
    def checkpoint_path(self, step: int) -> Path:
        """``<run_dir>/checkpoint-<step, 8 digits>.pt``."""
        return self.path / f"checkpoint-{step:08d}.pt"

    def checkpoints(self) -> list[Path]:
        """The ``checkpoint-<step>.pt`` files, oldest step first (temporary and set-aside files ignored)."""
        return [path for _, path in self.numbered(CHECKPOINT_PATTERN)]

    def latest_checkpoint(self) -> Path | None:
        """The checkpoint with the highest step, or None."""
        found = self.checkpoints()
        return found[-1] if found else None

    def save_checkpoint(self, state: Mapping, step: int, keep_last: int) -> Path:
        """Write ``state`` as the checkpoint of ``step`` (atomically), then delete all but the newest ``keep_last``."""
        if keep_last < 1:
            raise ValueError(f"keep_last must be >= 1, got {keep_last!r}")
        path = self.checkpoint_path(step)
        _save_atomically(state, path)
        for old in self.checkpoints()[:-keep_last]:
            old.unlink()
        return path

    def save_snapshot(self, state: Mapping, epoch: int) -> Path:
        """Write ``state`` (weights and config: what :func:`load_checkpoint` readers need) as ``snapshot-epoch-<epoch,
        4 digits>.pt``: kept along training, never pruned, never resumed from."""
        path = self.path / f"snapshot-epoch-{epoch:04d}.pt"
        _save_atomically(state, path)
        return path

    def snapshots(self) -> dict[int, Path]:
        """``{epoch: path}`` of the snapshots kept along training, in epoch order."""
        return dict(self.numbered(SNAPSHOT_PATTERN))

    def numbered(self, pattern: re.Pattern) -> list[tuple[int, Path]]:
        """``(number, path)`` of the run's files ``pattern`` names, in number order. A symlink among them (a run never
        makes one: reading or pruning it would reach outside the run) raises an OSError naming it, a folder so named
        (a run never makes one either) a ValueError."""
        if not self.path.is_dir():
            return []
        found = sorted((int(m.group(1)), self.path / name) for name in os.listdir(self.path)
                       if (m := pattern.fullmatch(name)))
        for _, path in found:
            if path.is_symlink():
                raise planted_link(path)
            if path.is_dir():
                raise ValueError(f"{path} in the run folder is a folder named like a run's file: remove or rename it")
        return found

    def newest_readable_checkpoint(self, log: Callable[[str], None] = print) -> tuple[Path, dict] | tuple[None, None]:
        """The newest checkpoint that loads, or ``(None, None)`` if there is none. Damaged newer ones (truncated by a
        full disk or a crash) are renamed ``*.unreadable``, saying which and why, so that one bad file neither loses
        the run nor outranks (and prunes) the checkpoints saved after it. Raises a ValueError when none loads; a file
        that cannot be opened (permissions, an I/O error) raises its OSError: it may be intact, so it is left alone."""
        found = self.checkpoints()
        for path in reversed(found):
            try:
                return path, load_checkpoint(path)
            except ValueError as e:
                log(f"skipping unreadable checkpoint {path}: {e}")
                os.replace(path, f"{path}.unreadable")
        if found:
            raise ValueError(f"no checkpoint in {self.path} can be read (renamed *.unreadable): start a new run "
                             "(another name or output)")
        return None, None


def planted_link(path: Path) -> OSError:
    """The error for a symlink found where a run keeps its own files."""
    return OSError(f"{path} is a symbolic link: a run folder holds only its run's own files; remove the link")


@contextlib.contextmanager
def open_in_run(path: Path, mode: str, **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` (``"w"`` or ``"wb"``) for a file of the run directory, written whole or not at all (a
    reader, a second run checking the folder or a crash never meets half a ``config.json``) and never through a
    symlink planted in its place (which would overwrite the link's target, outside the run): OSError naming the
    file. Every file a run writes goes through here (or :func:`_save_atomically`), figures included."""
    if path.is_symlink():
        raise planted_link(path)
    with replaced_atomically(path) as tmp, _open_nofollow(tmp, mode, **kwargs) as f:
        yield f


def _open_nofollow(path: Path, mode: str, **kwargs) -> IO:
    write = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    flags = {"w": write, "wb": write, "a+": os.O_RDWR | os.O_CREAT | os.O_APPEND}[mode]
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW, 0o644)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise planted_link(path) from None
        raise
    return os.fdopen(fd, mode, **kwargs)


def run_subfolder(run: Path, name: str) -> Path:
    """``run/name``, created if needed; a symlink planted there (the run's writes would land outside it) raises an
    OSError naming it."""
    folder = run / name
    if folder.is_symlink():
        raise planted_link(folder)
    folder.mkdir(exist_ok=True)
    return folder


def run_directory_of(path: str | os.PathLike) -> Path | None:
    """The training run folder that holds ``path`` (``path`` itself or a folder above it, links resolved): one with a
    checkpoint, a snapshot or a run's ``config.json`` (a ``.lock`` alone says nothing: pytest's temp folders have
    one); None outside every run. What must not be written into by anything but its run (exports, saved models)."""
    path = Path(os.path.expanduser(path)).resolve()  # an unknown ~user's path is no run's
    return next((folder for folder in (path, *path.parents) if _holds_run(folder)), None)


def _holds_run(folder: Path) -> bool:
    try:
        if not folder.is_dir():
            return False
        if any(p.fullmatch(name) for name in os.listdir(folder) for p in (CHECKPOINT_PATTERN, SNAPSHOT_PATTERN)):
            return True  # links among them too: the folder is a run's whatever it holds
        config = folder / "config.json"
        return config.is_file() and json.loads(config.read_text()).get("task") in RUN_TASKS
    except (OSError, ValueError, AttributeError):  # unreadable, not JSON, JSON but not an object
        return False


def _save_atomically(state: Mapping, path: Path) -> None:
    """``torch.save`` through :func:`~cnx2lite.writing.replaced_atomically`: the old file or the whole new one."""
    with replaced_atomically(path) as tmp, open(tmp, "wb") as f:
        torch.save(dict(state), f)


def resolve_checkpoint(path: str | os.PathLike) -> str:
    """``path`` itself, or for a run directory its newest checkpoint."""
    if not os.path.isdir(path):
        return os.fspath(path)
    newest = RunDir(path).latest_checkpoint()
    if newest is None:
        raise FileNotFoundError(f"{os.fspath(path)} is a directory without checkpoint-<step>.pt files: pass a run "
                                "directory that holds checkpoints, or a checkpoint file")
    return os.fspath(newest)


def load_checkpoint(path: str | os.PathLike) -> dict:
    """A training checkpoint (tensors and plain containers only), from its file or its run directory (the newest
    checkpoint there). Raises a ValueError naming a file that cannot be read."""
    return read_torch_file(resolve_checkpoint(path))


@dataclass
class RunResult:
    """What a run left behind. Accuracies are val top-1 in percent (None when pretraining)."""

    run_dir: Path
    history: list[dict]
    checkpoint: Path | None
    interrupted: bool = False
    config: dict = field(default_factory=dict)

    @property
    def final_top1(self) -> float | None:
        return next(reversed(self.metric("val_top1")), None)

    @property
    def best_top1(self) -> float | None:
        return max(self.metric("val_top1"), default=None)

    @property
    def final_ema_top1(self) -> float | None:
        return next(reversed(self.metric("ema_top1")), None)

    def metric(self, key: str) -> list[float]:
        """The per-epoch values of ``key`` (e.g. ``"val_top1"``), in order."""
        return self.series(key)[1]

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """``(epochs, values)`` of ``key`` at the epochs that recorded it."""
        rows = [r for r in self.history if r["kind"] == "epoch" and r.get(key) is not None]
        return [r["epoch"] for r in rows], [r[key] for r in rows]
