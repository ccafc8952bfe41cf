"""The ``cnx2lite`` command: one subcommand per job, each in its own module here, and one error boundary for all.

A command module only parses flags, calls the library and prints; what can go wrong is mapped here, once:

* a user mistake (a bad value, a missing or unreadable file, data that does not fit, a run that cannot resume): the
  library raises ``ValueError`` or ``OSError`` (or ``ImportError`` for a missing optional package) naming the
  culprit, printed as one ``error:`` line, exit status 2;
* Ctrl-C outside training: one line, exit status 130 (a training run stops at a step boundary, saves and returns
  130 itself);
* a warning of the package's own (e.g. a class with fewer images than asked for): one ``warning:`` line, and the
  command goes on;
* anything else is a bug: one line naming the exception and the log file that holds its traceback, exit status 1;
  ``cnx2lite --debug ...`` raises it instead.
"""
from __future__ import annotations

import argparse
import datetime
import difflib
import errno
import os
import sys
import tempfile
import traceback
import warnings
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from .. import __version__
from ..allocator import keep_freed_memory
from ..data import DataNotFoundError
from ..rundir import RunDirLockedError
from ..writing import StdoutError, guarded_output
from . import bench, collapse, demo, export, probe, reproduce, train

USER_ERRORS = (ValueError, OSError, ImportError, RunDirLockedError)  # each message names its argument or file
EXIT_USAGE, EXIT_BUG, EXIT_INTERRUPTED = 2, 1, 130


class OneLineParser(argparse.ArgumentParser):
    """argparse's refusals as one ``error:`` line naming the command (not the whole usage first); exit status 2."""

    def error(self, message: str) -> None:
        self.exit(EXIT_USAGE, f"error: {self.prog}: {message} (see {self.prog} --help)\n")

    def parse_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None):
        """As argparse's, but an argument no flag takes is refused by the (sub)command it was given to: a flag it does
        not have with its nearest flags (``--weight_decay``: ``--weight-decay``), a value with the flag before it where
        that flag takes no value (``--cache-images false``)."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = self._innermost(parsed)
            given = list(sys.argv[1:] if args is None else args)
            if extras[0].startswith("-") and not command._negative_number_matcher.match(extras[0]):
                hint = _nearest_flags(command, "--" + extras[0].lstrip("-").split("=")[0])
            else:
                before = given[given.index(extras[0]) - 1] if extras[0] in given[1:] else None
                hint = _takes_no_value(command, before)
            command.error(f"unrecognized arguments: {' '.join(extras)}{hint}")
        return parsed

    def _innermost(self, parsed: argparse.Namespace) -> argparse.ArgumentParser:
        """The parser of the subcommand ``parsed`` ran (``cnx2lite bench train``'s), else this one."""
        parser = self
        while chosen := [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]:
            name = getattr(parsed, chosen[0].dest, None)
            if name not in chosen[0].choices:
                break
            parser = chosen[0].choices[name]
        return parser


def _nearest_flags(command: argparse.ArgumentParser, flag: str) -> str:
    """`` (did you mean --a or --b?)`` for a flag ``command`` does not have, else ``""``."""
    flags = [option for action in command._actions for option in action.option_strings if option.startswith("--")]
    near = difflib.get_close_matches(flag, flags, n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(near)}?)" if near else ""


def _takes_no_value(command: argparse.ArgumentParser, flag: str | None) -> str:
    """`` (--x takes no value; its opposite is --no-x)`` when ``flag`` is a switch of ``command``, else ``""``."""
    for action in (a for a in command._actions if flag in a.option_strings and a.nargs == 0):
        opposite = isinstance(action, argparse.BooleanOptionalAction) and not flag.startswith("--no-")
        return f" ({flag} takes no value" + (f"; its opposite is --no-{flag[2:]})" if opposite else ")")
    return ""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="cnx2lite",
        description="ConvNeXt V2 and FCMAE pretraining: demo, benchmarks, pretraining, fine-tuning, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"cnx2lite {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of any error (default: one line)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, reproduce, train, probe, collapse, export, bench):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    if sys.stdout is None:  # started with stdout closed (``>&-``): every print would vanish, results too
        print(f"error: {args.command}: stdout is closed, so what it prints would be lost; send it somewhere "
              "(> file, or > /dev/null to drop it)", file=sys.stderr)
        sys.exit(EXIT_USAGE)
    keep_freed_memory()  # a tensor-heavy process: reuse freed memory rather than fault it in again each step
    sys.exit(run_command(args))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    """The command line parsed; what ``--help`` or ``--version`` print reaches stdout, or a full stdout is named."""
    try:
        with guarded_output():
            try:
                return build_parser().parse_args(argv)
            except SystemExit:  # after --help, --version or a refused flag: flushed while stdout can be named
                if sys.stdout is not None:  # closed (``>&-``): argparse printed to stderr
                    sys.stdout.flush()
                raise
    except StdoutError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(EXIT_USAGE)


def run_command(args: argparse.Namespace) -> int:
    """Run the parsed command; every failure becomes one line on stderr and an exit status (see the module doc)."""
    with guarded_output():  # stdout's errors named, stderr's dropped (see guarded_output); restored on return
        return _run_guarded(args)


def _run_guarded(args: argparse.Namespace) -> int:
    try:
        with warnings.catch_warnings():  # restores the previous display when the command returns
            warnings.showwarning = _ours_on_one_line(warnings.showwarning)
            code = args.run(args) or 0
        sys.stdout.flush()  # an error the buffer held back is raised here, and named
        return code
    except KeyboardInterrupt:
        print(f"{args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except USER_ERRORS as e:
        if args.debug:
            raise
        message = _os_message(e, args) if _is_raw_os_error(e) else _from_config(e, args) + _message(e)
        print(f"error: {message}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as e:  # a bug: keep the traceback for the report, show one line
        if args.debug:
            raise
        log = _save_traceback(args.command)
        print(f"internal error in {args.command}: {type(e).__name__}: {_message(e)} (traceback: {log}; "
              f"cnx2lite --debug {args.command} ... shows it here)", file=sys.stderr)
        return EXIT_BUG


def _ours_on_one_line(show: Callable) -> Callable:
    """A ``warnings.showwarning`` that prints the package's own warnings as one ``warning:`` line on stderr and hands
    other libraries' to ``show``."""
    def show_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int, file=None,
                     line: str | None = None) -> None:
        if category.__module__.split(".")[0] == "cnx2lite":
            tqdm.write(f"warning: {message}", file=sys.stderr)  # above a progress bar, not through it
        else:
            show(message, category, filename, lineno, file, line)
    return show_warning


def _from_config(error: BaseException, args: argparse.Namespace) -> str:
    """``"config <file>: data: "`` when the images were not found where a replayed config's ``data`` field points (a
    relative path in a hand-edited file, read from another folder), else ``""``: the message names the path (as Path
    spells it: ``./images`` as ``images``), this names where it came from. A config without ``data`` reads
    ``$CNX2LITE_DATA_ROOT`` or the default, which are not the file's."""
    if isinstance(error, DataNotFoundError):
        for label, value in getattr(args, "paths_from_config", {}).items():
            if label.endswith(": data") and value:
                return f"{label}: "
    return ""


def _message(error: BaseException) -> str:
    """The error's message on one line (a message with instructions on several lines is joined). An error raised in a
    DataLoader worker arrives as the worker's whole traceback: its last line is the message."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if lines and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
        lines = [lines[-1].split(": ", 1)[-1]]  # "cnx2lite.images.CorruptImageError: cannot read image ..."
    return " ".join(lines) or type(error).__name__


# What a raw OSError from the file system means for the path it names (the library's own OSErrors say more).
OS_REASONS = {errno.EEXIST: "exists and is not a folder", errno.ENOTDIR: "has a file where a folder must be",
              errno.EISDIR: "is a folder where a file must be", errno.EACCES: "is not accessible (permission denied)",
              errno.EPERM: "is not accessible (operation not permitted)", errno.ENOENT: "does not exist",
              errno.EROFS: "is on a read-only file system", errno.ENOSPC: "cannot be written: the disk is full",
              errno.EDQUOT: "cannot be written: the disk quota is exceeded"}


def _is_raw_os_error(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno is not None and error.filename is not None


def _os_message(error: OSError, args: argparse.Namespace) -> str:
    """A raw OSError as the argument that named the path (the flag whose value is it or a folder above it, or the
    replayed config's field: ``args.paths_from_config``), the path and what is wrong with it, e.g. ``--output runs/x:
    exists and is not a folder``, or ``runs/x/curves.png (under --output runs): is a folder where a file must be``."""
    path = Path(os.fspath(error.filename)).absolute()
    named = {f"--{name.replace('_', '-')}": value for name, value in vars(args).items()
             if name not in ("command", "run")}
    named |= getattr(args, "paths_from_config", {})
    given = {label: Path(os.path.expanduser(os.fspath(value))).absolute() for label, value in named.items()
             if isinstance(value, (str, os.PathLike)) and value}
    closest = sorted((label for label, value in given.items() if value in (path, *path.parents)),
                     key=lambda label: -len(given[label].parts))
    reason = OS_REASONS.get(error.errno, error.strerror or "cannot be used")
    if not closest:
        return f"{error.filename}: {reason}"
    if given[closest[0]] == path:
        return f"{closest[0]} {error.filename}: {reason}"
    return f"{error.filename} (under {closest[0]} {named[closest[0]]}): {reason}"  # a file the command made there


def _save_traceback(command: str) -> Path:
    """Write the current exception's traceback to a log file (the user cache, else the temp folder)."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cnx2lite" / "errors"
    for folder in (cache, Path(tempfile.gettempdir())):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"cnx2lite-{command}-{stamp}-{os.getpid()}.log"
            path.write_text(traceback.format_exc())
            return path
        except OSError:
            continue
    return Path("(not saved: no writable folder)")
