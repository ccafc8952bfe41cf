"""The package's own code on a notebook's page: what a cell teaches, read from the module that runs it.

:func:`show_source` prints a function, class or method as the installed package holds it, headed by the file and
line it comes from, so the code a learner reads is the code that trains, and a stored notebook whose code changed no
longer matches it (the cells that show code are checked by nbval).
"""
from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

from IPython.display import Code

import cnx2lite

__all__ = ["show_source"]


def show_source(obj: object, start: str | None = None, stop: str | None = None) -> Code:
    """The source of ``obj`` (function, class or method of ``cnx2lite``), syntax-highlighted, headed by
    ``# cnx2lite/<module>.py`` (no line number: an edit elsewhere in the file leaves a stored output true).
    ``start`` / ``stop``: show only the lines from the first one containing ``start`` up to (not including) the next
    one after it containing ``stop``, to put one step of a long function on the page; a marker that is not in the
    source is a ``ValueError`` (the code moved on)."""
    lines = inspect.getsourcelines(inspect.unwrap(obj))[0]
    begin, end = 0, len(lines)
    if start is not None:
        begin = _line_with(lines, start, 0, obj)
    if stop is not None:
        end = _line_with(lines, stop, begin + 1, obj)
    path = Path(inspect.getsourcefile(obj)).resolve().relative_to(Path(cnx2lite.__file__).resolve().parents[1])
    header = f"# {path.as_posix()}\n"
    return Code(header + textwrap.dedent("".join(lines[begin:end])), language="python")


def _line_with(lines: list[str], marker: str, after: int, obj: object) -> int:
    for index in range(after, len(lines)):
        if marker in lines[index]:
            return index
    raise ValueError(f"{getattr(obj, '__qualname__', obj)!s} has no line with {marker!r} (after line {after})")
