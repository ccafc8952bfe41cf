"""argparse value types shared by the subcommands: a bad value is refused by argparse in one line naming the flag."""
from __future__ import annotations

import argparse
from typing import Callable


def positive(kind: type) -> Callable[[str], int | float]:
    """``type=positive(int)``: a number > 0 (also refuses nan)."""
    def parse(text: str):
        value = kind(text)
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


def image_size(text: str) -> int:
    """``type=image_size``: a positive multiple of 32, the model's total stride (one mask cell per 32x32 patch)."""
    value = int(text)
    if value <= 0 or value % 32:
        raise argparse.ArgumentTypeError(f"must be a positive multiple of 32 (the model's stride), got {text}")
    return value


def non_negative_int(text: str) -> int:
    """``type=non_negative_int``: an int >= 0."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value
