"""The folder a command writes its report into (``reproduce``, ``demo``, ``collapse``), and whose it is.

A command claims its folder by a small file, :data:`CLAIM_FILE`, naming it, written once every check has passed and
before any other file. A folder is then the command's own, even when an earlier invocation was stopped before its
report: it finds its own files again. A folder holding any file the command would write, without the command's
claim, is someone else's (a user's notes, another command's report) and is refused, as is a folder another command
claimed or one inside a training run. Checking writes nothing, so a refused command leaves nothing behind.
"""
from __future__ import annotations

from pathlib import Path

from .rundir import run_directory_of
from .writing import make_folder

CLAIM_FILE = ".cnx2lite-report"


def check_report_folder(output: Path, command: str, written: tuple[str, ...], report_start: str | None = None) -> None:
    """Refuse ``output`` as ``command``'s report folder (one line naming ``--output``) when it is inside a training
    run, claimed by another command, or holds any of the files ``command`` writes (``written``: globs) without its
    claim. ``report_start``: how the command's ``report.md`` begins, which marks a folder written before claims
    existed as its own."""
    if (run := run_directory_of(output)) is not None:
        raise ValueError(f"--output {output} is inside the training run {run}: choose another output folder")
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file: give a folder")
    owner = _read(output / CLAIM_FILE).strip()
    if owner and owner != command:
        raise FileExistsError(f"--output {output} is the folder of {owner}: {command} would mix its files with that "
                              "command's; choose another output folder")
    if owner or (report_start and _read(output / "report.md").startswith(report_start)):
        return
    found = sorted({path.name for pattern in written for path in output.glob(pattern)})
    if found:
        raise FileExistsError(f"--output {output} holds {', '.join(found[:4])} that {command} did not write: they "
                              "would be overwritten; choose another output folder")


def claim_report_folder(output: Path, command: str) -> None:
    """Create ``output`` if needed and mark it as ``command``'s (after :func:`check_report_folder`)."""
    make_folder(output, "the output folder", "choose another output folder (--output)")
    (output / CLAIM_FILE).write_text(f"{command}\n")


def _read(path: Path) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read(200)
    except OSError:
        return ""
