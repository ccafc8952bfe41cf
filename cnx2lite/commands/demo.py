"""cnx2lite demo: FCMAE vs scratch with few labels, in under 10 CPU minutes (see :mod:`cnx2lite.demo`)."""
from __future__ import annotations

import argparse

from .. import demo
from .flags import positive


def run(args: argparse.Namespace) -> int:
    demo.run_demo(args.data, args.output, args.quick, args.threads, args.sweep)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("demo",
                                 help="FCMAE vs. scratch with few labels, in under 10 CPU minutes, with a report",
                                 description=demo.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None,
                        help="data root (default: $CNX2LITE_DATA_ROOT, else <repo>/data; downloaded when absent)")
    parser.add_argument("--output", default="runs/demo",
                        help="output folder; the demo's own runs there are cleared first, no others "
                             "(default: runs/demo)")
    parser.add_argument("--quick", action="store_true",
                        help="a seconds-long run on 2 classes x 8 images (default: off)")
    parser.add_argument("--threads", type=positive(int), default=None, help="torch compute threads (default: torch's)")
    parser.add_argument("--sweep", action="store_true",
                        help="first choose each arm's fine-tuning recipe on a tuning split carved out of train/ "
                             "(6 recipes x 2 arms, about 10 more minutes on 2 CPU cores; default: the recipes an "
                             "earlier sweep chose)")
    parser.set_defaults(run=run)
