"""Writing a file so that a failure never leaves half of it, and says in one line why it failed.

torch's writers (``torch.save``, TorchScript's and ``torch.export``'s savers) report a full disk or a read-only folder
as a RuntimeError from deep inside torch (``[enforce fail at inline_container.cc] unexpected pos``), which reads as a
bug; :func:`write_error` gives the OSError it stands for, naming the file. :func:`replaced_atomically` writes beside
the file and replaces it only once the write is whole. :func:`make_folder` creates a folder to write into, or says in
one line why it cannot. :func:`guarded_output` names stdout in the error a print to a full stdout raises.
"""
from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

FULL = 1 << 20  # bytes free under which a failed write is put down to a full disk
TEMPORARY_NAME = re.compile(r"\..+\.tmp-\d+(\.[^.]*)?")  # what replaced_atomically writes before the rename


def write_error(path: Path, error: BaseException) -> OSError:
    """The OSError a failed write of ``path`` stands for: a read-only or unwritable folder, a full disk, else the
    writer's own first line."""
    folder = path.parent
    if os.path.isdir(folder) and os.statvfs(folder).f_flag & os.ST_RDONLY:
        code, reason = errno.EROFS, "the folder is on a read-only file system"
    elif not os.access(folder, os.W_OK | os.X_OK):
        code, reason = errno.EACCES, "the folder is not writable"
    elif shutil.disk_usage(folder).free < FULL:
        code, reason = errno.ENOSPC, "the disk is full"
    elif isinstance(error, OSError) and error.errno:  # e.g. a quota: its reason, not the name of the file it hit
        code, reason = error.errno, error.strerror or os.strerror(error.errno)
    else:
        code, reason = errno.EIO, (str(error).strip().splitlines() or [type(error).__name__])[0]
    return OSError(code, f"cannot write {path}: {reason}", str(path))


@contextlib.contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write; once the block succeeds it replaces ``path``
    (fsynced, the rename made durable), so a crash at any moment leaves the old file or the whole new one. When the
    block fails the temporary file is removed, ``path`` is left as it was, and a RuntimeError of torch's writers
    becomes :func:`write_error`'s OSError, as does an OSError about the temporary file: either way the error names
    ``path``, never the temporary file. The temporary file is hidden and keeps ``path``'s suffix
    (``.model.tmp-<pid>.pt2``: some writers check it), so one a killed process left matches no ``*.pt2`` of the
    user's."""
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")
    try:
        try:
            yield tmp
        except RuntimeError as e:
            raise write_error(path, e) from e
        except OSError as e:
            if e.filename is None or Path(os.fsdecode(e.filename)) != tmp:
                raise
            raise write_error(path, e) from e
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.replace(tmp, path)
        except OSError as e:  # e.g. a folder where the file goes: about path, which the error names alone
            raise OSError(e.errno, e.strerror, str(path)) from None
    finally:
        with contextlib.suppress(OSError):  # none left (a read-only folder refuses even that unlink), or an orphan
            tmp.unlink()
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # make the rename itself durable
    finally:
        os.close(fd)


def make_folder(path: Path, what: str, way_out: str) -> None:
    """Create the folder ``path`` (and its parents) and check that it can be written into; an OSError in one line says
    why it cannot, naming ``what`` it is for (``"the run directory"``) and the ``way_out``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        culprit = Path(e.filename or path)
        reason = ("a link to nowhere" if culprit.is_symlink() and not culprit.exists() else e.strerror)
        raise OSError(f"cannot create {what} {path} ({reason}: {e.filename}): {way_out}") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write into {what} {path}: {way_out}")


def check_folder_creatable(path: Path, flag: str) -> None:
    """Refuse, creating nothing, a folder that cannot be made or written: the nearest existing path above it (or it)
    must be a writable folder. One ValueError naming ``flag`` (e.g. ``--records``)."""
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"{flag} {path} cannot be a folder ({existing} is a file): choose another folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag} {path} cannot be written ({existing} is read-only or not writable): choose another "
                         "folder")


def check_free_space(path: Path, needed: int) -> None:
    """Refuse a write of about ``needed`` bytes to ``path`` when its disk has less free: some of torch's writers
    abort the whole process (``std::terminate``) when the disk fills, instead of raising."""
    folder = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise OSError(f"cannot write {path}: about {needed / 2**20:.0f} MiB needed, {free / 2**20:.0f} MiB free on "
                      "its disk")


def print_line(message: str) -> None:
    """``tqdm.write(message)`` (it keeps progress bars whole), flushed: a log line reaches a file or pipe when it is
    written, and a stdout that cannot take it (``> /dev/full``) fails here, not after the run has written its files.
    Nothing once stdout's reader has gone (``... | head -1``): stdout then goes to /dev/null, and a training run goes
    on instead of stopping on a broken pipe."""
    try:
        tqdm.write(message)
        sys.stdout.flush()
    except BrokenPipeError:
        to_devnull(sys.stdout)


class StdoutError(OSError):
    """stdout cannot take what a command prints (``> /dev/full``, a full disk behind ``> file``): not a run's file."""


@contextlib.contextmanager
def guarded_output() -> Iterator[None]:
    """``sys.stdout`` and ``sys.stderr`` guarded while the block runs. stdout: a broken pipe (the reader has gone,
    ``| head -1``) sends the rest to /dev/null quietly, any other write error raises a :class:`StdoutError`, which
    names stdout (not a run's file); the block should flush stdout before it ends, so that an error the buffer held
    back, or one a caller swallowed (argparse's ``--help`` does), is raised inside it. stderr: what cannot be
    written (``2> /dev/full``) is dropped, so that a warning or a progress bar never stops a run."""
    streams = sys.stdout, sys.stderr  # None where the process started with it closed: left so
    guarded = [None if stream is None else _GuardedStream(stream, raises=stream is streams[0]) for stream in streams]
    sys.stdout, sys.stderr = guarded
    try:
        yield
    finally:
        sys.stdout, sys.stderr = streams
        for stream in guarded:
            if stream is not None:
                with contextlib.suppress(StdoutError):  # the block's own flush has raised it where it mattered
                    stream.flush()


class _GuardedStream:
    """A text stream's ``write`` and ``flush`` as :func:`guarded_output` describes (``raises``: stdout's way);
    everything else is the stream's."""

    def __init__(self, stream, raises: bool) -> None:
        self._stream, self._raises = stream, raises
        self._error: StdoutError | None = None  # a write's error, raised again by the next flush

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text) or 0

    def flush(self) -> None:
        self._guarded(self._stream.flush)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _guarded(self, call, *args):
        try:
            return call(*args)
        except OSError as e:
            to_devnull(self._stream)  # what the buffer holds can go nowhere: not again at exit either
            if self._raises and not isinstance(e, BrokenPipeError):
                self._error = StdoutError(f"cannot write to stdout ({e.strerror or e})")
                raise self._error from None


def to_devnull(stream) -> None:
    """Point ``stream``'s file descriptor at /dev/null (where it has one: not a notebook's or a test's capture)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
