"""A path given to the public API, checked where it enters: a ``str`` or ``os.PathLike`` of ``str``. Anything else
(bytes, a number, a config object where its file was meant) is refused naming the parameter, instead of by pathlib's
TypeError from deep inside the call."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def checked_path(value: Any, name: str) -> Path:
    """``value`` as a Path with ``~`` expanded; a ValueError naming ``name`` when it is not a text path, or empty (an
    unset ``$VAR`` in a script)."""
    if isinstance(value, (str, os.PathLike)) and isinstance(os.fspath(value), str):
        if not os.fspath(value):
            raise ValueError(f"{name} is an empty path: give a path, or leave it out")
        return Path(value).expanduser()
    raise ValueError(f"{name} must be a path (a str or os.PathLike); got {type(value).__name__} {value!r:.80}")
