"""cnx2lite reproduce: the paper's ablation grid at a scale, trained in pieces, and its report (see
:mod:`cnx2lite.reproduce`)."""
from __future__ import annotations

import argparse

from .. import reproduce
from ..reproduce.grid import SCALES
from .flags import add_data_flags, positive


def run(args: argparse.Namespace) -> int:
    reproduce.run_reproduce(args.scale, args.data, args.output, args.seeds, args.pretrain_seeds, args.hours,
                             args.records)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("reproduce", help="train the paper's ablation grid at a scale and write a report",
                                 description=reproduce.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="cpu", choices=tuple(SCALES),
                        help="smoke (CI, seconds), cpu (2 cores, about 26 hours of training for the six tables, in "
                             "pieces), gpu (224 px) (default: cpu)")
    parser.add_argument("--seeds", type=positive(int), default=None,
                        help="fine-tuning seeds per pretraining run and cell (default: the scale's, cpu: 3)")
    parser.add_argument("--pretrain-seeds", type=positive(int), default=None,
                        help="pretraining runs per pretrained arm (default: the scale's, cpu: 2)")
    parser.add_argument("--hours", type=positive(float), default=None,
                        help="start no run after this many hours; run the command again to go on (default: no limit)")
    add_data_flags(parser, dataset=False)
    parser.add_argument("--output", default=None, help="output folder (default: runs/reproduce-<scale>); "
                        "runs resume there")
    parser.add_argument("--records", default=None, help="folder of the finished runs' records, small files to "
                        "commit; a grid goes on from them without checkpoints (default: <output>/records)")
    parser.set_defaults(run=run)
