"""cnx2lite collapse: feature collapse block by block (the paper's Fig. 4) for several encoders, each from one or more
runs, on the same val images at one or more resolutions, with 95% intervals over the runs and the images."""
from __future__ import annotations

import argparse
import functools
import itertools
import re
import warnings
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .. import collapse, collapse_along_training, collapse_curves, data
from ..amp import resolve_device
from ..arguments import checked_path, expand_user
from ..factory import load_model
from ..image_files import refuse_output_inside
from ..report_folder import check_report_folder, claim_report_folder
from ..rundir import RunDir, resolve_checkpoint
from ..writing import check_folder_creatable
from .flags import Distinct, add_data_flags, add_device_flag, image_size, non_negative_int, positive

RANDOM = "random"


def collapse_size(text: str) -> int:
    """``type=collapse_size``: an image size whose last stage still has 2x2 positions (a spatial statistic needs 2)."""
    value = image_size(text)
    if value < 64:
        raise argparse.ArgumentTypeError(f"must be 64 or more (the last stage's map is {value // 32}x{value // 32} "
                                         f"there, and the measures compare positions), got {text}")
    return value


def parse_encoder(text: str) -> tuple[str, list[str]]:
    """``"LABEL=SOURCE[,SOURCE...]"`` -> ``(label, sources)``; a source is anything ``load_model`` reads, or
    ``random`` / ``random:v1`` / ``random:v2`` (a random init of that block style)."""
    label, sep, sources = text.partition("=")
    names = [s.strip() for s in sources.split(",")]
    if not sep or not label.strip() or not all(names):
        raise argparse.ArgumentTypeError(f"must be LABEL=SOURCE[,SOURCE...], e.g. 'V2 FCMAE=runs/pretrain-v2-p0,"
                                         f"runs/pretrain-v2-p1' or 'V2 random init=random:v2,random:v2'; got {text!r}")
    for name in names:
        if name.startswith(RANDOM) and name not in (RANDOM, f"{RANDOM}:v1", f"{RANDOM}:v2"):
            raise argparse.ArgumentTypeError(f"a random source is random, random:v1 or random:v2; got {name!r}")
    try:  # '~' expanded in every path (--along-training reads the folders themselves)
        names = [name if name.startswith(RANDOM) else expand_user(name, "source") for name in names]
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    trained = [_weights_file(name) for name in names if not name.startswith(RANDOM)]  # random: seeds differ
    if len(set(trained)) != len(trained):
        raise argparse.ArgumentTypeError(f"{label.strip()!r} names a source twice: each run counts once in the "
                                         f"intervals; got {text!r}")
    return label.strip(), names


def _weights_file(source: str) -> str:
    """What ``source`` loads, however spelled: a run folder, its newest checkpoint and a path through ``..`` alike."""
    try:
        return str(Path(resolve_checkpoint(source)).resolve())
    except (OSError, ValueError):  # a released name, or a source load_model refuses later with its own message
        return source


def load_encoders(specs: list[tuple[str, list[str]]], model: str | None,
                  device: torch.device) -> dict[str, list[nn.Module]]:
    """Every run of every encoder, loaded up front (a bad source fails before any measuring); the ``i``-th random
    source of an encoder is a random init from seed ``i``."""
    encoders = {}
    for label, sources in specs:
        runs = []
        for seed, source in enumerate(sources):
            name, _, block = source.partition(":")
            net, _ = load_model(name, model, block or None, seed) if name == RANDOM else load_model(source, model)
            runs.append(net.to(device).eval())
        refuse_repeated_runs(label, sources, runs)
        encoders[label] = runs
    return encoders


def refuse_repeated_runs(label: str, sources: list[str], runs: list[nn.Module]) -> None:
    """Refuse an encoder whose runs hold the same weights twice (a run and its last snapshot, or a copy of its
    folder): the intervals would count one run as two."""
    for (i, first), (j, second) in itertools.combinations(enumerate(runs), 2):
        if same_weights(first, second):
            raise ValueError(f"--encoder {label!r}: {sources[i]} and {sources[j]} hold the same weights (a run and a "
                             "snapshot or copy of it?): each run counts once in the intervals")


def same_weights(first: nn.Module, second: nn.Module) -> bool:
    """Whether two models hold equal weights, whatever files they came from."""
    a, b = first.state_dict(), second.state_dict()
    return a.keys() == b.keys() and all(a[k].shape == b[k].shape and torch.equal(a[k], b[k]) for k in a)


def same_runs(first: list[nn.Module], second: list[nn.Module]) -> bool:
    """Whether two encoders hold the same runs in any order (neither repeats a run: :func:`refuse_repeated_runs`)."""
    return len(first) == len(second) and all(any(same_weights(a, b) for b in second) for a in first)


# The files a collapse writes, and so the only ones it clears from --output before writing (a stale figure of an
# earlier collapse would sit beside new numbers; a user's own collapse-notes.md stays).
COMMAND = "cnx2lite collapse"
PER_LAYER = re.compile(r"collapse(\.csv|\.md|-\d+px\.png)")  # what a collapse writes, and what a rerun replaces
ALONG_TRAINING = re.compile(r"collapse-along-training-\d+px\.(csv|md|png)")  # what one --along-training writes
WRITTEN_GLOBS = ("collapse.csv", "collapse.md", "collapse-*px.png", "collapse-along-training-*px.*")


def check_output(output: Path) -> Path:
    """``--output`` as a folder for this command's files (:func:`~cnx2lite.report_folder.check_report_folder`): never
    a file, anything inside a training run, or a folder holding files of the same names that collapse did not write;
    and writable, known before minutes of measuring, not after."""
    check_report_folder(output, COMMAND, WRITTEN_GLOBS)
    check_folder_creatable(output, "--output")
    return output


def write_outputs(output: Path, files: dict[str, Callable[[Path], object]], replaced: re.Pattern) -> None:
    """Once everything is measured: clear the files of an earlier collapse of the same kind (``replaced``: a figure
    of a size not measured this time would be stale) from ``output``, then write each file (``{name: writer(path)}``).
    The other kind's report stays; a refused or failed measurement leaves the earlier results as they were."""
    claim_report_folder(output, COMMAND)
    for old in (p for p in output.iterdir() if replaced.fullmatch(p.name) and p.is_file()):
        old.unlink()
    for name, write in files.items():
        write(output / name)


class FewerImagesWarning(UserWarning):
    """The val split holds fewer images than ``--images``: all of them are measured (one ``warning:`` line)."""


def val_images(folder: Path, size: int, count: int, in_chans: int, device: torch.device) -> torch.Tensor:
    """:func:`collapse_curves.val_images` on ``device``, saying when the split holds fewer than ``--images``; at
    least 2 (the intervals resample the images)."""
    images = collapse_curves.val_images(folder, size, count, in_chans=in_chans)
    if len(images) < 2:
        raise ValueError(f"--images {count}: {len(images)} val image(s) of {folder} to measure; the intervals "
                         "resample the images and need at least 2")
    if len(images) < count:
        warnings.warn(f"--images {count}: the val split of {folder} has {len(images)} images; measuring all of them",
                      FewerImagesWarning, stacklevel=2)
    return images.to(device)


def input_channels(models: list[nn.Module]) -> int:
    """The ``in_chans`` every encoder takes (refused when they differ: one image set is fed to all)."""
    channels = {model.in_chans for model in models}
    if len(channels) > 1:
        raise ValueError(f"--encoder: the encoders take different input channels ({sorted(channels)}): measure them "
                         "in separate runs")
    return channels.pop()


def run_along_training(args: argparse.Namespace, folder: Path, output: Path, device: torch.device) -> int:
    """Every encoder's runs measured at each epoch they kept a snapshot of (``--keep-every-epochs``)."""
    runs: dict[str, list] = {}
    for label, sources in args.encoder:
        label_runs = []
        for source in sources:
            snapshots = RunDir(source).snapshots() if Path(source).is_dir() else {}
            if not snapshots:
                raise ValueError(f"--along-training: {source} is not a run directory with snapshot-epoch-<E>.pt files "
                                 "(train it with --keep-every-epochs N)")
            label_runs.append({epoch: (lambda path=path: load_model(path, args.model)[0].to(device).eval())
                               for epoch, path in snapshots.items()})
        runs[label] = label_runs
    last_common = {}  # each run at its encoder's last common epoch: equal weights there are one run twice
    for label, sources in args.encoder:
        common = set.intersection(*(set(r) for r in runs[label]))
        if not common:
            raise ValueError(f"--along-training: the runs of {label!r} kept no snapshot at a common epoch "
                             f"({'; '.join(', '.join(map(str, sorted(r))) for r in runs[label])})")
        last_common[label] = [run[max(common)]() for run in runs[label]]
        refuse_repeated_runs(label, sources, last_common[label])
    for (first, a), (second, b) in itertools.combinations(last_common.items(), 2):  # each pair's changes contrasted
        if same_runs(a, b):
            raise ValueError(f"--encoder {first!r} and {second!r} hold the same runs, so their changes differ by "
                             "nothing; compare encoders of different runs")
    in_chans = input_channels([model for models in last_common.values() for model in models])
    del last_common  # measure_along_training loads each epoch's weights as it goes
    files: dict[str, Callable[[Path], object]] = {}
    for size in args.img_size:
        images = val_images(folder, size, args.images, in_chans, device)
        by_epoch, grn = collapse_along_training.measure_along_training(
            runs, images, args.point, args.resamples, args.rank_resamples, args.positions, args.batch_size, args.seed)
        figure = collapse_along_training.plot_along_training(
            by_epoch, f"collapse along pretraining, {len(images)} val images at {size} px", grn)
        files[f"collapse-along-training-{size}px.csv"] = functools.partial(
            collapse_along_training.write_along_training_csv, by_epoch, grn_change=grn)
        files[f"collapse-along-training-{size}px.png"] = lambda path, figure=figure: figure.savefig(path, dpi=100)
        report = collapse_along_training.markdown_along_training(by_epoch, f"collapse-along-training-{size}px.png", grn)
        files[f"collapse-along-training-{size}px.md"] = lambda path, report=report: path.write_text(report)
    write_outputs(output, files, ALONG_TRAINING)
    print(f"wrote {', '.join(files)} in {output}")
    return 0


def run_collapse(args: argparse.Namespace) -> int:
    if args.along_training and args.contrast:
        raise ValueError("--contrast is not measured with --along-training: compare the encoders' curves")
    labels = [label for label, _ in args.encoder]
    if len(set(labels)) != len(labels):
        raise ValueError(f"--encoder labels must differ; got {', '.join(labels)}")
    device = resolve_device(args.device)
    encoders = {} if args.along_training else load_encoders(args.encoder, args.model, device)
    sources = {label: names for label, names in args.encoder}
    for first, second in args.contrast:
        missing = [label for label in (first, second) if label not in labels]
        if missing:
            raise ValueError(f"--contrast names {', '.join(map(repr, missing))}, not an --encoder label "
                             f"({', '.join(map(repr, labels))})")
        if first == second:
            raise ValueError(f"--contrast {first} {second}: an encoder against itself differs by nothing; give two "
                             "different --encoder labels")
        if same_runs(encoders[first], encoders[second]):  # 'random' twice: seed 0 both times
            raise ValueError(f"--contrast {first} {second}: both encoders load the same weights "
                             f"({','.join(map(str, sources[first]))}), so they differ by nothing; contrast encoders "
                             "of different sources")
    folder = data.find_image_folder(data.resolve_data_root(args.data), args.dataset)
    output = checked_path(args.output, "--output")  # '~' expanded, as every path the package takes
    refuse_output_inside(output, [folder / split for split in data.SPLITS], "--output")
    output = check_output(output)
    if args.along_training:
        return run_along_training(args, folder, output, device)
    curves, files, ceilings = [], {}, {}
    in_chans = input_channels([model for runs in encoders.values() for model in runs])
    narrowest = [min(dims) for dims in zip(*(model.dims for runs in encoders.values() for model in runs))]
    for size in args.img_size:
        images = val_images(folder, size, args.images, in_chans, device)
        ceilings[size] = collapse_curves.rank_ceilings(narrowest, len(images), size, args.positions)  # true for all
        measured = [c for point in args.point for c in collapse_curves.measure(
            encoders, images, point, args.resamples, args.rank_resamples, args.positions, args.batch_size,
            args.seed)]
        if not measured:
            raise ValueError("--point grn: none of the encoders has GRN (V1 blocks, or another --block-norm); add "
                             "--point gelu")
        figure = collapse_curves.plot_curves(measured, title=f"MLP activations per block, {len(images)} val images at "
                                             f"{size} px: mean over runs, 95% band over runs and images")
        files[f"collapse-{size}px.png"] = lambda path, figure=figure: figure.savefig(path, dpi=100)
        curves += measured
    report = collapse_curves.markdown(curves, args.contrast, list(files), ceilings)
    write_outputs(output, {**files, "collapse.csv": lambda path: collapse_curves.write_csv(curves, args.contrast, path),
                           "collapse.md": lambda path: path.write_text(report)}, PER_LAYER)
    print(report)
    print(f"wrote collapse.csv, collapse.md and {', '.join(files)} in {output}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "collapse", help="feature collapse block by block (Fig. 4) for several encoders, with intervals",
        description=__doc__ + "\n\n" + collapse_curves.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoder", type=parse_encoder, action="append", required=True, metavar="LABEL=SOURCES",
                        help="an encoder and its runs, comma-separated: run directories, checkpoints, released names "
                        "(convnextv2_atto.fcmae), saved folders, or random / random:v1 / random:v2 (seed = its place "
                        "in the list); repeat for each encoder (required)")
    parser.add_argument("--contrast", nargs=2, action="append", default=[], metavar=("A", "B"),
                        help="also give A - B over blocks with its interval and verdict (repeatable)")
    parser.add_argument("--along-training", action="store_true",
                        help="measure each encoder's runs (run directories) at every epoch they kept a snapshot of "
                        "(trained with --keep-every-epochs N): the budget curve")
    parser.add_argument("--model", default=None, help="variant for random inits and foreign files (default: the "
                        "run's, else convnextv2_atto)")
    add_data_flags(parser)
    parser.add_argument("--images", type=positive(int), default=500,
                        help="val images, classes alternating (default: 500)")
    parser.add_argument("--img-size", type=collapse_size, nargs="+", action=Distinct, default=[224], metavar="PX",
                        help="resolutions to measure at, multiples of 32 from 64 (default: 224)")
    parser.add_argument("--point", nargs="+", action=Distinct, choices=collapse.POINTS, default=list(collapse.POINTS),
                        help="where in each block: after GELU (the paper's) and/or after GRN (V2 blocks) "
                        "(default: gelu grn)")
    parser.add_argument("--resamples", type=positive(int), default=1000,
                        help="bootstrap resamples of the runs and images (default: 1000)")
    parser.add_argument("--rank-resamples", type=positive(int), default=50,
                        help="of those, how many the effective rank is recomputed on (default: 50)")
    parser.add_argument("--positions", type=positive(int), default=collapse_curves.POSITIONS,
                        help="positions per image that sample the effective rank "
                        f"(default: {collapse_curves.POSITIONS})")
    parser.add_argument("--seed", type=non_negative_int, default=0, help="seed of the resamples (default: 0)")
    parser.add_argument("--batch-size", type=positive(int), default=16, help="images per batch (default: 16)")
    parser.add_argument("--output", default="collapse", help="folder for collapse.csv, collapse.md and the figures "
                        "(default: ./collapse)")
    add_device_flag(parser)
    parser.set_defaults(run=run_collapse)
