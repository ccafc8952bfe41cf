"""What the subcommands share on the command line: value types (a bad value is refused by argparse in one line naming
the flag) and the flags several commands take, spelled and documented once."""
from __future__ import annotations

import argparse
import math
from typing import Any, Callable

from .. import data


def positive(kind: type) -> Callable[[str], int | float]:
    """``type=positive(int)``: a finite number > 0 (nan and inf refused)."""
    def parse(text: str):
        value = kind(text)
        if not 0 < value < math.inf:
            raise argparse.ArgumentTypeError(f"must be {'a finite number ' if kind is float else ''}> 0, got {text}")
        return value
    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value"
    return parse


def or_none(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``type=or_none(positive(int))``: ``none`` (any case) is None, as a setting's default "all" is spelled on every
    command; anything else goes to ``parse``."""
    def parse_or_none(text: str):
        return None if text.lower() == "none" else parse(text)
    parse_or_none.__name__ = parse.__name__  # argparse names the type in "invalid int value"
    return parse_or_none


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


class Distinct(argparse.Action):
    """``nargs="+", action=Distinct``: a list of things to measure, each once (``--point gelu gelu`` would repeat every
    measurement and write its rows twice), in the order given."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        setattr(namespace, self.dest, list(dict.fromkeys(values)))


def add_data_flags(parser: argparse.ArgumentParser, dataset: bool = True) -> None:
    """``--data`` (the data root) and, with ``dataset``, ``--dataset`` (the image folder under it)."""
    parser.add_argument("--data", default=None, help="data root (default: $CNX2LITE_DATA_ROOT, else <repo>/data)")
    if dataset:
        parser.add_argument("--dataset", default=data.DEFAULT_DATASET,
                            help="image folder name under the root (default: imagenette)")


def add_device_flag(parser: argparse.ArgumentParser, type: Callable[[str], object] = str) -> None:
    parser.add_argument("--device", default="auto", type=type,
                        help="auto, cpu, cuda, cuda:N (default: auto: cuda if available, else cpu)")


def add_loader_flags(parser: argparse.ArgumentParser, batch_size: int) -> None:
    """``--batch-size`` and ``--num-workers`` of an evaluation loader."""
    parser.add_argument("--batch-size", type=positive(int), default=batch_size,
                        help=f"images per batch (default: {batch_size})")
    parser.add_argument("--num-workers", type=non_negative_int, default=0, help="DataLoader workers (default: 0)")
