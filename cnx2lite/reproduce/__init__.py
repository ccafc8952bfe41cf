"""``cnx2lite reproduce``: the experiments the paper's claims rest on, at a scale that fits the machine.

Protocol (label-efficient, as SimCLR and DINO report 1% and 10% of ImageNet labels): pretraining
uses every training image with its label ignored; fine-tuning uses ``K`` labeled images per class, a random pick per
seed from train/ less a tuning split; each init's fine-tuning recipe is chosen on that tuning split first, with the
same trials for every init (:mod:`.sweep`); evaluation uses the val split (all of it at the cpu and gpu scales).
Four tables, each row beside the paper's number:

1. FCMAE vs scratch at every ``K``: kNN top-1 of the frozen encoder (memory bank: the ``K``
   labeled images per class) and fine-tuned top-1;
2. the co-design 2x2 at the main ``K``: V1/V2 blocks x scratch/FCMAE (the paper: FCMAE helps V2
   much more than V1);
3. sparse vs dense-conv FCMAE encoder at the main ``K``;
4. feature collapse of V1-FCMAE, V2-FCMAE, a random init and a supervised model: per-layer channel
   cosine distance and the fractions of dead and saturated channels, at the training resolution, on
   val images of distinct classes.

Every difference carries a paired bootstrap 95% interval over the val images (:mod:`.stats`);
with ``--seeds N`` every fine-tuning runs N times (pretraining once, seed 0) and per-image
correctness is averaged over seeds first. Runs live in ``<output>/runs/<name>`` and resume: a
re-run skips what is finished and continues what was interrupted. ``report.md``, ``results.csv`` and
the figures are written from the measured numbers only.

The package: :mod:`.grid` (scales, runs, per-image correctness), :mod:`.tables` (the four tables),
:mod:`.figures` (their figures); this module writes ``report.md`` and ``results.csv`` and is the command.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from pathlib import Path

from .. import data
from ..argtypes import positive
from ..stats import RESAMPLES
from ..train.distributed import resolve_device
from .grid import FINETUNED_LAYER_DECAY, SCALES, Evaluator, Grid, shot_label
from .sweep import run_sweep
from .tables import TABLES


def run_reproduce(scale_name: str, data_arg: str | None = None, output: str | os.PathLike | None = None,
                  seeds: int = 1) -> Path:
    """Train (or resume) the grid of ``scale_name`` and write report.md, results.csv and figures; returns the report."""
    if scale_name not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(map(repr, SCALES))}; got {scale_name!r}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    scale = SCALES[scale_name]
    output = Path(output or f"runs/reproduce-{scale_name}")
    output.mkdir(parents=True, exist_ok=True)
    grid = Grid(scale, str(data.find_image_folder(data.resolve_data_root(data_arg))), output, seeds)
    start = time.perf_counter()
    sweep = run_sweep(grid, scale.main_shot)  # each init's recipe, chosen on the tuning split, for every table
    grid.recipes = {init: sweep.chosen(init) for init in sweep.trials}
    times = [f"| recipe sweep | {grid.seconds(list(grid.results)) / 60:.1f} min | "
             f"{(time.perf_counter() - start) / 60:.1f} min |"]
    ev = Evaluator(grid, resolve_device("auto"))
    tables = []
    for name, build in TABLES.items():
        before, start = set(grid.results), time.perf_counter()
        tables.append(build(ev, output))
        trained = grid.seconds([n for n in grid.results if n not in before])  # runs this table added
        times.append(f"| {name} | {trained / 60:.1f} min | {(time.perf_counter() - start) / 60:.1f} min |")

    with open(output / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["table", "row", "metric", "value", "ci_low", "ci_high", "paper"])
        writer.writeheader()
        writer.writerows(row.csv() for table in tables for row in table.rows)
    pre = json.loads((grid.pretrain("v2").run_dir / "config.json").read_text())
    epochs = ", ".join(f"K={shot_label(s)}: {e}" for s, e in scale.finetune_epochs.items())
    total = grid.seconds(list(grid.results)) / 60
    text = f"""# cnx2lite reproduce --scale {scale_name}

Written by `cnx2lite reproduce --scale {scale_name} --seeds {seeds}` from the numbers it measured; nothing here is
hand-written. {scale.model} at {scale.img_size} px on {ev.folder.name}: {len(ev.classes)} classes. Pretraining:
{pre['train_images']} training images, labels ignored, {scale.pretrain_epochs} epochs, mask ratio {pre['mask_ratio']}.
Fine-tuning: K labeled images per class (a random pick per seed), epochs {epochs}; every init with layer-wise lr
decay {FINETUNED_LAYER_DECAY}. Evaluation: {len(ev.val_set)} val images. Fine-tuning seeds: {seeds}
(pretraining: one run, seed 0). Intervals: 95% paired bootstrap over the val images and the fine-tuning seeds
({RESAMPLES:,} resamples; the pretraining run is not resampled); each difference is the first minus the second.
Machine: {os.cpu_count()} CPU cores, device {ev.device}, evaluation autocast {str(ev.amp_dtype).removeprefix('torch.')}.

{sweep.section()}
{chr(10).join(table.section for table in tables)}
## Run times (measured on this machine; training time summed over resumes)

| table | training of the runs it added | wall time of this invocation (training, if it ran here, and evaluation) |
|---|---|---|
{chr(10).join(times)}

Training in all: {total:.1f} min. Per-run metrics, curves and checkpoints: `{output / 'runs'}` (not committed).
"""
    report = output / "report.md"
    report.write_text(text)
    print(f"report: {report}")
    return report


def run(args: argparse.Namespace) -> int:
    try:
        run_reproduce(args.scale, args.data, args.output, args.seeds)
    except (data.DataNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("reproduce interrupted: run it again to continue where it stopped", file=sys.stderr)
        return 130
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("reproduce", help="train the paper's ablation grid at a scale and write a report",
                                 description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", default="cpu", choices=tuple(SCALES),
                        help="smoke (CI, seconds), cpu (2 cores, about an hour), gpu (224 px) (default: cpu)")
    parser.add_argument("--seeds", type=positive(int), default=1, help="fine-tuning seeds per cell (default: 1)")
    parser.add_argument("--data", default=None, help="data root (default: $CNX2LITE_DATA_ROOT, else <repo>/data)")
    parser.add_argument("--output", default=None, help="output folder (default: runs/reproduce-<scale>); "
                        "runs resume there")
    parser.set_defaults(run=run)
