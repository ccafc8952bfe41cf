"""cnx2lite probe: kNN and linear-probe top-1 of a frozen encoder, with a bootstrap interval over the val images."""
from __future__ import annotations

import argparse
import warnings

from .. import data, transforms
from ..amp import AMP_MODES, resolve_amp, resolve_device
from ..bootstrap import bootstrap_accuracy
from ..factory import load_model
from ..models.convnextv2 import BLOCK_STYLES
from ..probes import KNN_K, KNN_TEMPERATURE, PROBE_METHODS, ProbeWarning, extract_features, probe_features
from .flags import (
    Distinct,
    add_data_flags,
    add_device_flag,
    add_loader_flags,
    image_size,
    non_negative_int,
    or_none,
    positive,
)


def run_probe(args: argparse.Namespace) -> int:
    device = resolve_device(args.device)
    if args.seed is not None and args.checkpoint != "random":
        warnings.warn(ProbeWarning(f"--seed {args.seed} does not apply to --checkpoint {args.checkpoint}: it seeds "
                                   "--checkpoint random's initialization; the probes themselves draw nothing"))
    encoder, config = load_model(args.checkpoint, args.model, args.block, args.seed or 0)
    size = args.img_size or config.get("img_size", 224)
    folder = data.find_image_folder(data.resolve_data_root(args.data), args.dataset)
    transform = transforms.eval_transform(size, in_chans=encoder.in_chans)
    train_set = data.build_dataset(folder, "train", transform, num_classes=args.num_classes,
                                   images_per_class=args.images_per_class, warn_short=False)
    if len(train_set.classes) < 2:  # every image would be "right"
        raise ValueError(f"a probe needs at least 2 classes; {folder / 'train'} gives {train_set.classes} "
                         f"(--num-classes {args.num_classes})")
    val_set = data.build_dataset(folder, "val", transform, classes=train_set.classes,
                                 images_per_class=args.val_images_per_class, warn_short=False)
    data.warn_left_out_classes(folder, "val", train_set.classes, beside="train")  # a val/ class train/ lacks
    knn_flags = [f"--{name} {value}" for name, value in (("k", args.k), ("temperature", args.temperature))
                 if value is not None]  # given, whatever their values
    if knn_flags and "knn" not in args.method:
        verb, noun = ("does", "it is") if len(knn_flags) == 1 else ("do", "they are")
        warnings.warn(ProbeWarning(f"{' and '.join(knn_flags)} {verb} not apply to --method linear: {noun} the kNN "
                                   "probe's"))
    for split, flag in ((train_set, "--images-per-class"), (val_set, "--val-images-per-class")):
        if split.short is not None:
            warnings.warn(data.ShortClassWarning(split.short.message(flag)))
    amp_dtype = resolve_amp(args.amp, device)
    encoder.to(device)
    features = [extract_features(encoder, split, args.batch_size, device, amp_dtype, args.num_workers)
                for split in (train_set, val_set)]
    for method in args.method:
        result = probe_features(method, *features[0], *features[1], len(train_set.classes), args.k or KNN_K,
                                args.temperature or KNN_TEMPERATURE)
        top1 = bootstrap_accuracy(result.correct)
        print(f"{args.checkpoint}: {result} at {size} px, 95% interval [{top1.low:.1f}, {top1.high:.1f}]")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "probe", help="kNN / linear-probe top-1 of a frozen encoder (any checkpoint, or a random init)",
        description="Judge an encoder without fine-tuning: pooled, layer-normalized features of the labeled train "
                    "split are the kNN memory bank / the linear probe's training set, the val split the queries.")
    parser.add_argument("--checkpoint", required=True, help="a run directory, a checkpoint file (cnx2lite, official "
                        "or timm), or 'random' for a random initialization (required)")
    parser.add_argument("--method", nargs="+", action=Distinct, choices=PROBE_METHODS, default=list(PROBE_METHODS),
                        help="probe(s) to run (default: knn linear)")
    parser.add_argument("--model", default=None, help="variant, e.g. convnextv2_atto (default: the run's, else atto)")
    parser.add_argument("--block", default=None, choices=BLOCK_STYLES, help="block style (default: the run's, else v2)")
    add_data_flags(parser)
    parser.add_argument("--num-classes", type=or_none(positive(int)), default=None,
                        help="use the first K classes (default: all)")
    parser.add_argument("--images-per-class", type=or_none(positive(int)), default=None,
                        help="labeled train images per class (default: all)")
    parser.add_argument("--val-images-per-class", type=or_none(positive(int)), default=None,
                        help="val images per class (default: all)")
    parser.add_argument("--img-size", type=image_size, default=None, help="image size (default: the run's, else 224)")
    parser.add_argument("--k", type=positive(int), default=None, help=f"kNN neighbours (default: {KNN_K})")
    parser.add_argument("--temperature", type=positive(float), default=None,
                        help=f"kNN vote temperature (default: {KNN_TEMPERATURE})")
    parser.add_argument("--seed", type=non_negative_int, default=None,
                        help="seed of --checkpoint random's initialization (default: 0)")
    add_loader_flags(parser, batch_size=128)
    add_device_flag(parser)
    parser.add_argument("--amp", default="auto", choices=AMP_MODES, help="autocast (default: auto)")
    parser.set_defaults(run=run_probe)
