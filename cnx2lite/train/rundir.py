"""Exclusive use of a run directory: one training process writes it at a time.

Two runs writing one directory would each report success while their checkpoints and ``config.json``
mix. :func:`lock_run_dir` creates ``<run_dir>/.lock`` atomically (``O_CREAT | O_EXCL``) holding the
owner's pid and host; a second run fails with one line naming that process. A lock left by a process
that died without cleaning up (kill -9, a crash) is detected on the same host, since that pid no
longer runs, and taken over. Holding the lock, the run also removes the temporary files of checkpoint
writes that such a process left behind.
"""
from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path
from typing import Iterator

LOCK_NAME = ".lock"


class RunDirLockedError(RuntimeError):
    """Another live process is training into this run directory."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _owner(path: Path) -> tuple[int, str] | None:
    """``(pid, host)`` from a lock file, or None if it is unreadable (being written, or garbage)."""
    try:
        pid, host = path.read_text().split(maxsplit=1)
        return int(pid), host.strip()
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def lock_run_dir(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir``'s lock for the duration of the block; raises :class:`RunDirLockedError` if another live
    process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    path, host = run_dir / LOCK_NAME, socket.gethostname()
    for _ in range(3):  # a stale lock is removed, then taken on the next try
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(path)
            if owner is not None and owner[1] == host and not _alive(owner[0]):
                path.unlink(missing_ok=True)  # its process is gone
                continue
            who = f"process {owner[0]} on {owner[1]}" if owner else "another process"
            raise RunDirLockedError(f"{run_dir} is in use by {who} (lock file {path}): wait for that run to end, or "
                                    "choose another name/output; delete the lock file only if that process is "
                                    "gone") from None
        with os.fdopen(fd, "w") as f:
            f.write(f"{os.getpid()} {host}\n")
        for orphan in run_dir.glob("*.tmp-*"):  # half-written checkpoints of a process killed while saving
            orphan.unlink(missing_ok=True)
        break
    else:
        raise RunDirLockedError(f"could not take the lock {path}: other processes keep taking it over")
    try:
        yield
    finally:
        if _owner(path) == (os.getpid(), host):
            path.unlink(missing_ok=True)
