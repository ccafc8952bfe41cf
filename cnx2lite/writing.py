"""Writing a file so that a failure never leaves half of it, and says in one line why it failed.

torch's writers (``torch.save``, TorchScript's and ``torch.export``'s savers) report a full disk or a read-only folder
as a RuntimeError from deep inside torch (``[enforce fail at inline_container.cc] unexpected pos``), which reads as a
bug; :func:`write_error` gives the OSError it stands for, naming the file. :func:`replaced_atomically` writes beside
the file and replaces it only once the write is whole. :func:`make_folder` creates a folder to write into, or says in
one line why it cannot. :func:`guarded_stdout` names stdout in the error a print to a full or closed stdout raises.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
from pathlib import Path
from typing import Iterator

from tqdm.auto import tqdm

FULL = 1 << 20  # bytes free under which a failed write is put down to a full disk


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
        os.replace(tmp, path)
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
        raise OSError(f"cannot create {what} {path} ({e.strerror}: {e.filename}): {way_out}") from None
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
    """``tqdm.write(message)`` (it keeps progress bars whole), or nothing once stdout's reader has gone (``... | head
    -1``): stdout then goes to /dev/null, and a training run goes on instead of stopping on a broken pipe."""
    try:
        tqdm.write(message)
    except BrokenPipeError:
        _stdout_to_devnull(sys.stdout)


class StdoutError(OSError):
    """stdout cannot take what a command prints (``> /dev/full``, a full disk behind ``> file``): not a run's file."""


@contextlib.contextmanager
def guarded_stdout() -> Iterator[None]:
    """``sys.stdout`` whose write errors say they are stdout's while the block runs: a broken pipe (the reader has
    gone, ``| head -1``) sends the rest to /dev/null quietly, any other error raises a :class:`StdoutError`. The
    stream is flushed before the block ends, so that an error its buffer held back is raised here, not at exit."""
    stream = sys.stdout
    sys.stdout = _GuardedStream(stream)
    try:
        yield
        sys.stdout.flush()
    finally:
        sys.stdout = stream


class _GuardedStream:
    """A text stream's ``write`` and ``flush`` as :func:`guarded_stdout` describes; everything else is the stream's."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def __getattr__(self, name: str):
        return getattr(self._stream, name)

    def write(self, text: str) -> int:
        return self._guarded(self._stream.write, text) or 0

    def flush(self) -> None:
        self._guarded(self._stream.flush)

    def _guarded(self, call, *args):
        try:
            return call(*args)
        except BrokenPipeError:
            _stdout_to_devnull(self._stream)
        except OSError as e:
            _stdout_to_devnull(self._stream)  # what the buffer holds can go nowhere: not again at exit
            raise StdoutError(f"cannot write to stdout ({e.strerror or e})") from None


def _stdout_to_devnull(stream) -> None:
    """Point ``stream``'s file descriptor at /dev/null (where it has one: not a notebook's or a test's capture)."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
