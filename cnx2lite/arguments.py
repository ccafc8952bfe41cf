"""Arguments given to the public API, checked where they enter, in one place.

:func:`typed` turns a value into its declared type (``'int'``, ``'float | None'``, ``'bool'``), or refuses it naming the
parameter: a config's fields and the parameters of a public function (:func:`checked_arguments`) alike. A string is
never a bool (``use_ema="no"`` is truthy), a bool never a number. :func:`checked_path` takes a ``str`` or
``os.PathLike`` of ``str``; anything else (bytes, a number, a config object where its file was meant) is refused
naming the parameter, instead of by pathlib's TypeError from deep inside the call.
"""
from __future__ import annotations

import functools
import inspect
import numbers
import os
import re
from pathlib import Path
from typing import Any, Callable, TypeVar

import numpy as np

SIMPLE_KINDS = {"bool", "int", "float", "str", "None"}  # what checked_arguments converts; other annotations pass
PATH_KINDS = {"os.PathLike", "Path"}
URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")  # https://, s3://, file://
F = TypeVar("F", bound=Callable)


def checked_path(value: Any, name: str) -> Path:
    """``value`` as a Path with ``~`` expanded; a ValueError naming ``name`` when it is not a text path, or empty (an
    unset ``$VAR`` in a script)."""
    return Path(_path_text(value, name))


def _path_text(value: Any, name: str) -> str:
    """:func:`checked_path` as text: a str keeps what a Path drops (a trailing '/' that says 'a folder')."""
    if isinstance(value, (str, os.PathLike)) and isinstance(os.fspath(value), str):
        if not os.fspath(value):
            raise ValueError(f"{name} is an empty path: give a path, or leave it out")
        return expand_user(os.fspath(value), name)
    raise ValueError(f"{name} must be a path (a str or os.PathLike); got {type(value).__name__} {value!r:.80}")


def check_folder_name(value: Any, name: str, where: str) -> str:
    """``value`` when it is one folder name (what a run's or a notebook's folder is called); else a ValueError naming
    ``name`` and ``where`` the folder goes: a '/', '..' or '\\' would put it, and what deletes or overwrites it,
    somewhere else."""
    if (not isinstance(value, str) or value.strip() in ("", ".", "..") or value != value.strip() or "/" in value
            or "\\" in value or value.startswith("~") or not value.isprintable() or len(os.fsencode(value)) > 255):
        raise ValueError(f"{name} must be one folder name (no '/' or '\\', not '.' or '..', not starting with '~' (a "
                         f"shell reads it as a home folder), no spaces around it, no control characters, at most 255 "
                         f"bytes): {where}; got {value!r}")
    return value


def expand_user(path: str, name: str) -> str:
    """``path`` with a leading ``~`` or ``~user`` expanded; a ValueError naming ``name`` for a user this system does
    not have (pathlib raises a bare RuntimeError, ``os.path`` leaves the ``~`` in the path), or for a URL (nothing is
    fetched from one: it would be read as a folder named ``https:``)."""
    if URL.match(path):
        raise ValueError(f"{name} {path}: a URL, and paths are read from disk only: download the file first (a "
                         "released model is fetched by its name, e.g. convnextv2_atto.fcmae)")
    expanded = os.path.expanduser(path)
    if expanded.startswith("~"):
        user = expanded[1:].split(os.sep, 1)[0]
        raise ValueError(f"{name} {path}: no user {user!r} to expand '~{user}' (its home folder is unknown here)")
    return expanded


def typed(name: str, annotation: str, value: Any) -> Any:
    """``value`` as the declared type (``'int'``, ``'float | None'``, ...), or a ValueError naming ``name``.
    Numpy scalars, integral floats for an int and paths for a string are accepted as what they hold; a fractional
    number for an int (``epochs=2.5``), a bool for a number, a string for a bool or a number for a string is refused."""
    kinds = {kind.strip() for kind in annotation.split("|")}
    if value is None and "None" in kinds:
        return None
    if isinstance(value, (bool, np.bool_)):
        if "bool" in kinds:
            return bool(value)
    elif isinstance(value, numbers.Integral) and kinds & {"int", "float"}:
        return int(value) if "int" in kinds else float(value)
    elif isinstance(value, numbers.Real) and "float" in kinds:
        return float(value)
    elif isinstance(value, numbers.Real) and "int" in kinds and float(value).is_integer():
        return int(value)
    elif isinstance(value, (str, os.PathLike)) and "str" in kinds:
        return os.fspath(value)  # a path given as a Path
    elif isinstance(value, (tuple, list)) and (of := [kind for kind in kinds if kind.startswith("tuple[")]):
        element = of[0].removeprefix("tuple[").partition(",")[0]  # img_size and betas: ranges are checked by callers
        return tuple(typed(f"{name}[{i}]", element, v) for i, v in enumerate(value))
    raise ValueError(f"{name} must be {annotation.replace(' | ', ' or ')}, got {value!r} ({type(value).__name__})")


def checked_arguments(function: F) -> F:
    """Check a public function's arguments by its annotations as it is called: a parameter declared with only
    ``bool``/``int``/``float``/``str``/``None`` (or tuples of them) goes through :func:`typed`, one that takes a path
    through :func:`checked_path` (``~`` expanded, a str kept a str); any other annotation passes as it is."""
    signature = inspect.signature(function)
    checks = {}
    for name, parameter in signature.parameters.items():
        kinds = {kind.strip() for kind in str(parameter.annotation).split("|")}
        if kinds & PATH_KINDS and kinds <= SIMPLE_KINDS | PATH_KINDS:
            checks[name] = _path_check(name, "None" in kinds)
        elif parameter.annotation is not inspect.Parameter.empty and all(_simple(kind) for kind in kinds):
            checks[name] = functools.partial(typed, name, str(parameter.annotation))

    @functools.wraps(function)
    def checked(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        for name, check in checks.items():
            if name in bound.arguments:
                bound.arguments[name] = check(bound.arguments[name])
        return function(*bound.args, **bound.kwargs)

    return checked


def _simple(kind: str) -> bool:
    """A kind :func:`typed` converts: bool, int, float, str, None, or a tuple of them (``tuple[int, int]``)."""
    return kind in SIMPLE_KINDS or (kind.startswith("tuple[") and all(
        element.strip() in SIMPLE_KINDS for element in kind.removeprefix("tuple[").removesuffix("]").split(",")))


def _path_check(name: str, optional: bool) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value is None and optional:
            return None
        expanded = _path_text(value, name)  # '~' expanded here, so no function writes into a folder named '~'
        return expanded if isinstance(value, str) else Path(expanded)
    return check
