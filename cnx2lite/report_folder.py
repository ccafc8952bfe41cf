"""The folder a command writes its report into (``reproduce``, ``demo``, ``collapse``), and whose it is.

A command claims its folder by a small file, :data:`CLAIM_FILE`, naming it, written once every check has passed and
before any other file. A folder is then the command's own, even when an earlier invocation was stopped before its
report: it finds its own files again. A folder holding any file the command would write, without the command's
claim, is someone else's (a user's notes, another command's report) and is refused, as is a folder another command
claimed or one inside a training run. Checking writes nothing, so a refused command leaves nothing behind.
"""
from __future__ import annotations

import fnmatch
from pathlib import Path

from .rundir import open_in_run, run_directory_of
from .writing import make_folder

CLAIM_FILE = ".cnx2lite-report"
REPORTING_COMMANDS = ("cnx2lite reproduce", "cnx2lite demo", "cnx2lite collapse")  # report.md titles: "# <command>"


def check_report_folder(output: Path, command: str, written: tuple[str, ...]) -> None:
    """Refuse ``output`` as ``command``'s report folder (one line naming ``--output``) when it is inside a training
    run, claimed by another command, holds any of the files ``command`` writes (``written``: globs) without its claim,
    or holds one as a link, claimed or not. A folder written before claims existed is its command's by the title of
    its ``report.md``."""
    if (run := run_directory_of(output)) is not None:
        raise ValueError(f"--output {output} is inside the training run {run}: choose another output folder")
    if output.exists() and not output.is_dir():
        raise ValueError(f"--output {output} is a file: give a folder")
    claim = output / CLAIM_FILE
    if claim.is_symlink() or (claim.exists() and not claim.is_file()):
        raise ValueError(f"--output {output}: its {CLAIM_FILE} is not a file this package wrote (a link or a folder): "
                         "remove it or choose another output folder")
    ours = sorted(path for path in output.iterdir()  # listed once; dangling links too (glob would skip them)
                  if any(fnmatch.fnmatch(path.name, pattern) for pattern in written)) if output.is_dir() else []
    if links := [path.name for path in ours if path.is_symlink()]:
        are, them = ("is a link", "it") if len(links) == 1 else ("are links", "them")
        raise ValueError(f"--output {output}: {', '.join(links[:4])} {are}, which {command} would write through, into "
                         f"the target; remove {them} or choose another output folder")
    owner = _read(claim).strip()
    if not owner and (title := _read(output / "report.md").partition("\n")[0]).startswith("# cnx2lite "):
        owner = next((c for c in REPORTING_COMMANDS if title.startswith(f"# {c}")), owner)  # written before claims
    if owner and owner != command:
        raise FileExistsError(f"--output {output} is the folder of {owner}: {command} would mix its files with that "
                              "command's; choose another output folder")
    if owner:
        return
    if ours:
        found = [path.name for path in ours]
        raise FileExistsError(f"--output {output} holds {', '.join(found[:4])} that {command} did not write: they "
                              "would be overwritten; choose another output folder")


def claim_report_folder(output: Path, command: str) -> None:
    """Create ``output`` if needed and mark it as ``command``'s (after :func:`check_report_folder`)."""
    make_folder(output, "the output folder", "choose another output folder (--output)")
    with open_in_run(output / CLAIM_FILE, "w") as claim:  # never through a link planted in its place
        claim.write(f"{command}\n")


def _read(path: Path) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read(200)
    except OSError:
        return ""
