"""cnx2lite pretrain | finetune | transfer | eval | download: command-line front ends of cnx2lite.train.

Every TrainConfig field is a flag (--base-lr 1e-3, --no-norm-pix-loss); flags override the
--preset, or --config runs/<name>/config.json, which replays a run's settings. Runs go to
<output>/<name>; --resume auto continues the newest checkpoint there.
Multi-GPU or multi-node: torchrun --nproc_per_node=N [--nnodes ...] -m cnx2lite pretrain ...
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import warnings

from .. import data, imagenette
from ..train.config import FIELDS, TrainConfig, fields_for, resolve_batch_and_lr
from ..train.config_checks import DENSE_TASKS, PATH_FIELDS
from ..train.config_files import ReplayWarning, load_config, replayed_images_differ
from ..train.presets import load_preset, preset_names
from .flags import add_data_flags, add_device_flag, add_loader_flags, image_size, or_none

HIDDEN = ("task",)


def _add_field(parser: argparse.ArgumentParser, name: str) -> None:
    f = FIELDS[name]
    flag = "--" + name.replace("_", "-")
    annotation = str(f.type)
    default = TrainConfig.__dataclass_fields__[name].default
    help_text = f"{f.metadata['help']} (default: {default!r}, or the preset's)"
    options: dict = {"default": argparse.SUPPRESS, "help": help_text}
    if annotation == "bool":
        options["action"] = argparse.BooleanOptionalAction
    elif annotation == "int | tuple[int, int]":  # one size (square) or H W
        options.update(nargs="+", type=int, metavar="PX")
    elif annotation.startswith("tuple"):
        options.update(nargs=2, type=float, metavar=("B1", "B2"))
    else:
        kind = {"int": int, "float": float, "str": str}[annotation.split(" |")[0]]
        options["type"] = or_none(kind) if "None" in annotation else kind
        options["metavar"] = kind.__name__.upper()
    parser.add_argument(flag, **options)


def add_config_flags(parser: argparse.ArgumentParser, task: str) -> None:
    """``--preset`` and one flag per config field that applies to ``task``."""
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--preset", default="cpu", choices=preset_names(task), metavar="NAME",
                       help=f"starting config (default: 'cpu'); one of {', '.join(preset_names(task))}")
    start.add_argument("--config", default=None, metavar="PATH",
                       help="start from a run's saved config.json instead of a preset, replaying it exactly "
                            "(flags still override; give another --name, or --resume auto) (default: none)")
    parser.add_argument("--show-config", action="store_true",
                        help="print the config (preset + flags) as JSON and exit (default: off)")
    for name in fields_for(task):
        if name not in HIDDEN:
            _add_field(parser, name)


def config_from_args(args: argparse.Namespace, task: str) -> TrainConfig:
    overrides = {k: getattr(args, k) for k in FIELDS if k not in HIDDEN and hasattr(args, k)}
    if args.config is None:
        return load_preset(args.preset, task=task, **overrides)
    config = load_config(args.config, task, **overrides)
    # a path the replay takes from the file, not from a flag, is named as the config's in an error about it
    args.paths_from_config = {f"config {args.config}: {name}": getattr(config, name) for name in PATH_FIELDS
                              if getattr(args, name, None) is None}
    return config


def run_training(args: argparse.Namespace) -> int:
    from ..train.engine import Trainer
    from ..train.plots import SCORES

    task = args.task if args.command == "transfer" else args.command
    config = config_from_args(args, task)  # a bad value: the message names the flag and what it accepts
    if args.show_config:
        resolve_batch_and_lr(config, int(os.environ.get("WORLD_SIZE", "1")))  # the launch's checks, as a run makes
        print(json.dumps(config.to_dict(), indent=2))
        return 0
    trainer = Trainer(config)
    given = {k: v for k, v in vars(args).items() if k in FIELDS}
    # the same settings on other images: a new experiment, said so (a resume refuses other images by itself)
    if (args.config is not None and not trainer.resumes
            and (note := replayed_images_differ(args.config, trainer.data.fingerprint, given))):
        warnings.warn(ReplayWarning(note), stacklevel=1)
    result = trainer.run()
    if result.interrupted:  # 130 for Ctrl-C, 143 for SIGTERM, as a shell reports a process a signal ended
        print(f"{task}: interrupted, checkpoint {result.checkpoint} saved; continue with --resume auto",
              file=sys.stderr)
        return 128 + (trainer.stop.signal or signal.SIGINT)
    summary = f"done: run dir {result.run_dir}, checkpoint {result.checkpoint}"
    if result.final_top1 is not None:
        summary += f", val top-1 {result.final_top1:.2f}% (best {result.best_top1:.2f}%)"
    if result.final_ema_top1 is not None:
        summary += f", EMA top-1 {result.final_ema_top1:.2f}%"
    if task in DENSE_TASKS:
        summary += "".join(f", val {SCORES[k]} {values[-1]:.2f}%" for k in SCORES if k.startswith("val_")
                           if (values := result.metric(k)))
    print(summary)
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ..train.api import evaluate_checkpoint

    r = evaluate_checkpoint(args.checkpoint, args.data, args.dataset, args.ema, args.batch_size, args.device,
                            args.num_workers, args.img_size)
    print(f"{args.checkpoint}{' (EMA)' if args.ema else ''}: top-1 {r['top1']:.2f}%, top-5 {r['top5']:.2f}%, "
          f"loss {r['loss']:.4f} on {r['images']} val images")
    return 0


def run_download(args: argparse.Namespace) -> int:
    folder = imagenette.download_imagenette(data.resolve_data_root(args.data), size=args.size)
    print(f"Imagenette is in {folder}; train with --data {folder}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    for task, helptext in (("pretrain", "FCMAE pretraining of a ConvNeXt V2 encoder"),
                           ("finetune", "fine-tune a classifier (from --pretrained, or from scratch)")):
        parser = commands.add_parser(task, help=helptext, description=f"{helptext}.\n\n{__doc__}", formatter_class=fmt)
        add_config_flags(parser, task)
        parser.set_defaults(run=run_training)

    helptext = "transfer the encoder to a dense task: segmentation (UperNet) or detection (Mask R-CNN)"
    parser = commands.add_parser(
        "transfer", help=helptext, formatter_class=fmt,
        description=f"{helptext}, trained and scored on composites of the data's photos (a synthetic task with exact "
                    f"labels: regions cut from photos of one class pasted on a photo of another).\n\n{__doc__}")
    parser.add_argument("--task", required=True, choices=DENSE_TASKS,
                        help="segment (per-pixel classes, mIoU) or detect (instances, box and mask AP) (required)")
    add_config_flags(parser, "segment")  # both tasks take the same settings
    parser.set_defaults(run=run_training)

    parser = commands.add_parser("eval", help="top-1/top-5 of a fine-tuning checkpoint on a folder's val split",
                                 description="Evaluate a fine-tuning checkpoint on <data>/val with its classes.")
    parser.add_argument("--checkpoint", required=True, help="a finetune run's directory (its newest checkpoint) or "
                        "one of its checkpoint-<step>.pt files (required)")
    add_data_flags(parser)
    parser.add_argument("--ema", action="store_true", help="evaluate the EMA weights (default: off)")
    add_loader_flags(parser, batch_size=64)
    parser.add_argument("--img-size", type=image_size, default=None,
                        help="eval image size (default: the training size)")
    add_device_flag(parser)
    parser.set_defaults(run=run_eval)

    parser = commands.add_parser("download", help="download Imagenette into the data root",
                                 description="Download and extract Imagenette (torchvision) into the data root.")
    parser.add_argument("dataset", choices=("imagenette",), help="what to download (only: imagenette)")
    add_data_flags(parser, dataset=False)
    parser.add_argument("--size", default="320px", choices=tuple(imagenette.IMAGENETTE_DIRS),
                        help="image size of the archive (default: 320px)")
    parser.set_defaults(run=run_download)
