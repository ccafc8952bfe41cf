"""The ``cnx2lite`` command: one subcommand per job, each registered by the module that does it."""
from __future__ import annotations

import argparse
import sys

from . import __version__, bench, demo, evaluation, export, reproduce
from .allocator import keep_freed_memory
from .train import commands as train_commands


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cnx2lite",
        description="ConvNeXt V2 and FCMAE pretraining: demo, benchmarks, pretraining, fine-tuning, evaluation.",
    )
    parser.add_argument("--version", action="version", version=f"cnx2lite {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (demo, reproduce, train_commands, evaluation, export, bench):
        module.register(commands)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    keep_freed_memory()  # a tensor-heavy process: reuse freed memory rather than fault it in again each step
    sys.exit(args.run(args) or 0)
