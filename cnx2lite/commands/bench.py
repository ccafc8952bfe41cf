"""cnx2lite bench model | fcmae | train: speed and memory against a reference, measured in one run (see
:mod:`cnx2lite.bench`)."""
from __future__ import annotations

import argparse

import torch

from .. import bench
from ..amp import resolve_device
from ..models import VARIANTS
from ..train import preset_names
from .flags import Distinct, add_data_flags, add_device_flag, image_size, non_negative_int, positive


def _device(text: str) -> torch.device:
    try:
        return resolve_device(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _timing(args: argparse.Namespace) -> dict:
    return dict(model=args.model, img_size=args.img_size, batch_size=args.batch_size, iters=args.iters,
                warmup=args.warmup, device=args.device, amp=args.amp)


def run_model(args: argparse.Namespace) -> int:
    bench.bench_model(**_timing(args), channels_last=args.channels_last)
    return 0


def run_fcmae(args: argparse.Namespace) -> int:
    bench.bench_fcmae(**_timing(args), mask_ratio=args.mask_ratio, backends=args.backends)
    return 0


def run_train(args: argparse.Namespace) -> int:
    bench.bench_train(args.tasks, args.preset, args.data, args.steps, args.iters, args.warmup, args.batch_size)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="speed/memory benchmarks against a reference", description=bench.__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    for name, func, helptext in (
        ("model", run_model, "dense ConvNeXt V2: ours vs timm, training and inference img/s"),
        ("fcmae", run_fcmae, "FCMAE training step per sparse backend: img/s and memory vs dense"),
    ):
        sub = kinds.add_parser(name, help=helptext, description=helptext)
        sub.add_argument("--model", default="convnextv2_atto", choices=list(VARIANTS), metavar="NAME",
                         help="variant (default: convnextv2_atto); one of " + ", ".join(VARIANTS))
        sub.add_argument("--img-size", type=image_size, default=224,
                         help="square image size in pixels, a multiple of 32 (default: 224)")
        sub.add_argument("--batch-size", type=positive(int), default=32, help="images per step (default: 32)")
        sub.add_argument("--iters", type=positive(int), default=5, help="timed repeats per side (default: 5)")
        sub.add_argument("--warmup", type=non_negative_int, default=2, help="untimed repeats first (default: 2)")
        add_device_flag(sub, type=_device)
        default_amp = ["fp32", "auto"] if name == "model" else ["auto"]
        sub.add_argument("--amp", nargs="+", action=Distinct, default=default_amp, choices=("auto", "bf16", "fp32"),
                         metavar="AMP",
                         help="autocast precision, one or several of auto, bf16, fp32; auto is what training uses: "
                              "bf16 on a GPU or a CPU with native bf16, fp16 on older GPUs, else fp32; several are "
                              f"timed in the same run and compared side by side (default: {' '.join(default_amp)})")
        sub.set_defaults(run=func)
    kinds.choices["model"].add_argument("--channels-last", action="store_true",
                                        help="channels_last memory format for both models and the input (default: off)")
    train = kinds.add_parser("train", help="pretraining and fine-tuning steps with data loading: default vs "
                                           "the reference path", description=bench.bench_train.__doc__)
    train.add_argument("--tasks", nargs="+", action=Distinct, default=["pretrain", "finetune"],
                       choices=("pretrain", "finetune"), metavar="TASK",
                       help="pretrain, finetune or both (default: both)")
    presets = preset_names("finetune")
    train.add_argument("--preset", default="cpu", choices=presets, metavar="NAME",
                       help=f"the preset whose steps are timed (default: cpu); one of {', '.join(presets)}")
    add_data_flags(train, dataset=False)
    train.add_argument("--batch-size", type=positive(int), default=None,
                       help="images per step (default: the preset's; lower it for a folder of few images)")
    train.add_argument("--steps", type=positive(int), default=15, help="optimizer steps per timed block (default: 15)")
    train.add_argument("--iters", type=positive(int), default=3, help="timed blocks per side (default: 3)")
    train.add_argument("--warmup", type=non_negative_int, default=3, help="untimed steps first (default: 3)")
    train.set_defaults(run=run_train)
    fcmae = kinds.choices["fcmae"]
    fcmae.add_argument("--mask-ratio", type=float, default=0.6, help="masked fraction of patches (default: 0.6)")
    fcmae.add_argument("--backends", nargs="+", action=Distinct, default=None, metavar="NAME",
                       help="backends to compare (default: every available one)")
