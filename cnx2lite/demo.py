"""``cnx2lite demo``: the main job of ``make demo`` (a placeholder sanity run until training lands)."""
from __future__ import annotations

import argparse

import torch

from .fcmae import FCMAE


def run(args: argparse.Namespace) -> int:
    torch.manual_seed(0)
    model = FCMAE("convnextv2_atto", decoder_dim=128)
    imgs = torch.randn(2, 3, 64, 64)
    loss, _, mask = model(imgs)
    print(f"FCMAE sanity run: loss {loss.item():.4f}, {int(mask.sum())} of {mask.numel()} cells masked")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("demo", help="run the demo job", description=__doc__)
    parser.set_defaults(run=run)
