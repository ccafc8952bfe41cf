"""The notebooks' run scale, from ``$CNX2LITE_SCALE``: how much each notebook computes."""
from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")
SCALES = ("smoke", "cpu", "gpu")


def scale() -> str:
    """The notebooks' run scale from ``$CNX2LITE_SCALE``: ``smoke`` (seconds, for CI), ``cpu`` (the
    default: meaningful on a laptop) or ``gpu`` (the real sizes)."""
    value = os.environ.get("CNX2LITE_SCALE", "cpu").strip().lower() or "cpu"
    if value not in SCALES:
        raise ValueError(f"CNX2LITE_SCALE must be one of {', '.join(SCALES)}; got {value!r}")
    return value


def pick(*, smoke: T, cpu: T, gpu: T) -> T:
    """The value for the current :func:`scale`, e.g. ``pick(smoke=64, cpu=224, gpu=224)``."""
    return {"smoke": smoke, "cpu": cpu, "gpu": gpu}[scale()]
