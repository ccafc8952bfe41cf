"""Exclusive use of a run directory: one training process writes it at a time.

Two runs writing one directory would each report success while their checkpoints and ``config.json``
mix. :func:`lock_run_dir` holds an exclusive ``flock`` on ``<run_dir>/.lock`` and writes the owner's pid
and host into it; a second run fails at once with one line naming that process. The kernel releases the
lock when its process dies (kill -9, a crash, a lost node), so there is no stale lock to detect and no
race between two runs taking one over: the file may stay behind, but only a held lock counts. Holding
the lock, the run removes the temporary files of checkpoint writes that a killed process left behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import socket
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".lock"


class RunDirLockedError(RuntimeError):
    """Another live process is training into this run directory."""


def create_run_dir(run_dir: Path) -> None:
    """Create ``run_dir`` (and its parents); an OSError in one line says why it cannot hold a run."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create the run directory {run_dir} ({e.strerror}: {e.filename}): choose another "
                      "output folder (--output) or name") from None
    if not os.access(run_dir, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write into the run directory {run_dir}: choose another output folder "
                              "(--output) or name")


@contextlib.contextmanager
def lock_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the duration of the block; raises :class:`RunDirLockedError` if another
    process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_NAME
    with open(path, "a+") as lock_file:
        try:
            fcntl.flock(lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock_file.seek(0)
            owner = " on ".join(lock_file.read().split(maxsplit=1)) or "?"
            raise RunDirLockedError(f"{run_dir} is in use by process {owner.strip()} (it holds {path}): wait for "
                                    "that run to end, or choose another name/output") from None
        lock_file.truncate(0)
        lock_file.write(f"{os.getpid()} {socket.gethostname()}\n")
        lock_file.flush()
        for orphan in run_dir.glob("*.tmp-*"):  # half-written checkpoints of a process killed while saving
            orphan.unlink(missing_ok=True)
        try:
            yield
        finally:
            lock_file.truncate(0)  # the lock itself goes with the file's closing
