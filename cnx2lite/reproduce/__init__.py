"""``cnx2lite reproduce``: the experiments the paper's claims rest on, at a scale that fits the machine.

Protocol (label-efficient, as SimCLR and DINO report 1% and 10% of ImageNet labels): pretraining
uses every training image with its label ignored; fine-tuning uses ``K`` labeled images per class, a random pick per
seed from train/ less a tuning split; each init's fine-tuning recipe is chosen on that tuning split first, with the
same trials for every init (:mod:`.sweep`); evaluation uses the val split (all of it at the cpu and gpu scales).
Six tables, each row beside the paper's number:

1. FCMAE vs scratch at every ``K``: kNN top-1 of the frozen encoder (memory bank: the ``K``
   labeled images per class) and fine-tuned top-1; with every label both arms train as many epochs;
2. the co-design 2x2 at the main ``K``: V1/V2 blocks x scratch/FCMAE (the paper: FCMAE helps V2
   more than V1, ImageNet-1K fine-tuned top-1 +0.3 vs -0.1 at Base, +1.1 vs +0.1 at Large);
3. sparse vs dense-conv FCMAE encoder at the main ``K``, with V1 blocks (as the paper ran it) and V2;
4. feature collapse block by block (:mod:`cnx2lite.collapse_curves`) of V1-FCMAE, V2-FCMAE, random inits and a
   supervised model, at the training resolution and at 224 px, on val images of alternating classes;
5. the GRN ablation of the paper's Table 2 at the main ``K``: what follows the MLP's GELU (GRN, nothing, LRN,
   BatchNorm, LayerNorm, SE, CBAM, GRN's other aggregations) and GRN in pretraining only or fine-tuning only;
6. transfer to dense tasks (:mod:`.transfer_table`): UperNet segmentation and Mask R-CNN detection on composites of
   the photos, from V2 FCMAE, V1 FCMAE, supervised and random inits (trained after every other table's runs).

Replication: every pretrained arm pretrains ``--pretrain-seeds`` times and every cell fine-tunes ``--seeds`` times from
each pretraining run (scratch: ``--seeds`` times); intervals come from the hierarchical bootstrap over pretraining
runs, fine-tuning seeds and val images (:mod:`cnx2lite.bootstrap`), and a verdict says "reproduces" only when the
interval over runs excludes 0. With one run per arm the report says its intervals cover the images only.

Runs live in ``<output>/runs/<name>`` and resume: every run of every table trains first, in table order; a re-run
skips what is finished and continues what was interrupted. ``--hours`` stops starting runs after that much time, so a
grid longer than a sitting trains in pieces; the report then holds the tables whose runs are finished (the GRN table
from its finished rows) and names the others. Every finished run and what is measured on it is kept in
``--records`` (default ``<output>/records``, :mod:`.records`): small files to commit, so that a grid can go on on
another machine without the checkpoints, and the report can be written again from them alone. ``report.md``,
``results.csv`` and the figures are written from the measured numbers only.

The package: :mod:`.grid` (scales, runs), :mod:`.records` (what a finished run leaves to commit), :mod:`.evaluation`
(per-image correctness), :mod:`.sweep` (the recipes), :mod:`.tables` (the tables and sanity checks; tables 4-6 in
their own modules), :mod:`.figures`
(their figures); this module writes ``report.md`` and ``results.csv`` and is the command.
"""
from __future__ import annotations

import csv
import dataclasses
import os
import sys
import time
from pathlib import Path

from .. import data
from ..amp import resolve_device
from ..arguments import checked_path
from ..bootstrap import RESAMPLES
from ..image_files import refuse_output_inside
from ..masking import effective_mask_ratio
from ..report_folder import check_report_folder, claim_report_folder
from ..train.run_log import read_metrics
from .evaluation import Evaluator
from .grid import SCALES, BudgetSpent, Cell, Grid, Scale, check_enough_images, shot_label
from .recipes import FINETUNED_LAYER_DECAY
from .records import RECORDS_FOLDER, Records
from .report_rows import RESULTS_COLUMNS
from .sweep import run_sweep, trial_names
from .tables import TABLES, measurements, record_finished_runs, sanity_section
from .transfer_table import run_transfer, transfer_runs

# what a report folder holds: report.md, results.csv and the tables' figures and CSVs
REPORT_FILES = ("report.md", "results.csv", "*.png", "feature_collapse.csv")
COMMAND = "cnx2lite reproduce"


def run_reproduce(scale_name: str, data_arg: str | None = None, output: str | os.PathLike | None = None,
                  seeds: int | None = None, pretrain_seeds: int | None = None, hours: float | None = None,
                  records: str | os.PathLike | None = None) -> Path:
    """Train (or resume) the grid of ``scale_name`` and write report.md, results.csv and figures; returns the report.
    ``seeds`` / ``pretrain_seeds`` override the scale's replication; ``hours`` bounds this invocation's training;
    ``records``: where finished runs are recorded (default ``<output>/records``)."""
    if scale_name not in SCALES:
        raise ValueError(f"scale must be one of {', '.join(map(repr, SCALES))}; got {scale_name!r}")
    for name, value in (("seeds", seeds), ("pretrain_seeds", pretrain_seeds), ("hours", hours)):
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be > 0, got {value}")
    scale = SCALES[scale_name]
    scale = dataclasses.replace(scale, finetune_seeds=seeds or scale.finetune_seeds,
                                pretrain_seeds=pretrain_seeds or scale.pretrain_seeds)
    output = checked_path(output or f"runs/reproduce-{scale_name}", "output")
    check_report_folder(output, COMMAND, REPORT_FILES)
    start = time.perf_counter()
    deadline = None if hours is None else time.monotonic() + hours * 3600
    records = Records(checked_path(records, "records") if records else output / RECORDS_FOLDER)
    records.check_writable()  # before any training, creating nothing
    folder = data.find_image_folder(data.resolve_data_root(data_arg))
    for setting, path in (("--output", output), ("--records", records.root)):  # never among the images it reads
        refuse_output_inside(path, [folder], setting)
    check_enough_images(scale, folder)
    grid = Grid(scale, str(folder), output, deadline=deadline, records=records)  # records of these images only
    claim_report_folder(output, COMMAND)  # every check passed
    if scale.finetune_seeds == 1:
        print("reproduce: one fine-tuning seed: the scratch arms have one run each, so their intervals cover the val "
              "images only, not reruns", file=sys.stderr)
    ev = Evaluator(grid, resolve_device("auto"))
    sections, times, stopped = _train(grid, hours, ev)
    record_finished_runs(ev)  # before any table: what this machine trained outlives its checkpoints
    built, tables = [], []
    for spec in TABLES:
        if grid.recipes and spec.ready(grid):
            try:
                tables.append(spec.build(ev, output))
                built.append(spec)
            except BudgetSpent:  # a record without its measurements: its weights must be trained again first
                pass
    pending = [spec.title for spec in TABLES if spec not in built]
    if built:  # the runs behind the measured tables, each cell once, in table order
        cells = [c for spec in built for c in spec.cells(scale) if grid.cell_finished(c)]
        sections.append(sanity_section(ev, list(dict.fromkeys(cells))))
    sections += [table.section for table in tables]
    sections += [f"## {title}\n\nNot trained yet.\n" for title in pending]

    with open(output / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, RESULTS_COLUMNS)
        writer.writeheader()
        writer.writerows(row.csv() for table in tables for row in table.rows)
    report = output / "report.md"
    report.write_text(_header(scale_name, scale, grid, ev, stopped) + "\n".join(sections) + f"""
## Run times (each run on the machine it trained on, summed over its resumes)

| part | training of its runs (a run shared by tables counts for the first) |
|---|---|
{chr(10).join(times)}

Training in all: {_total_minutes(records.root):.1f} min over every run recorded in `{records.root.name}/`; this
invocation's wall time, evaluation included: {(time.perf_counter() - start) / 60:.1f} min.
""")
    print(f"report: {report}")
    return report


def _train(grid: Grid, hours: float | None, ev: Evaluator) -> tuple[list[str], list[str], str]:
    """The recipe sweep, then every table's runs (:func:`_training_order`), until done or ``grid.deadline``, each run
    measured as soon as it finishes; returns the sweep's section (none if it did not finish), the run-time lines, and
    what the report says of a spent budget."""
    sections, stopped = [], ""
    try:
        sweep = run_sweep(grid, grid.scale.main_shot)  # each init's recipe, chosen on the tuning split, for every table
        grid.recipes = {init: sweep.chosen(init) for init in sweep.trials}
        todo = measurements(ev)  # by run name: the tables' runs are named after the chosen recipes

        def measure(name: str) -> None:
            for measurement in todo.get(name, ()):
                measurement()

        grid.after_run = measure
        sections.append(sweep.section())
        for cell, pretrain_seed, seed in _training_order(grid):  # every table's runs before measuring any table
            grid.finetune(cell.k, cell.init, cell.block, seed, pretrain_seed=pretrain_seed, tuned=cell.tuned)
        for task, init, seed in transfer_runs(grid.scale):  # each from an init run of its own (transfer_table)
            run_transfer(grid, task, init, seed)
    except BudgetSpent:
        print(f"reproduce: the --hours {hours:g} budget is spent; run the same command again to continue",
              file=sys.stderr)
        stopped = (f"\n**This invocation stopped at its `--hours {hours:g}` budget**: the tables below are those "
                   "whose runs had finished (the GRN table: its finished rows); the command above, which has no "
                   "budget, trains the rest.\n")
    return sections, _run_times(grid), stopped


def _training_order(grid: Grid) -> list[tuple[Cell, int, int]]:
    """Every fine-tuning run of every table as ``(cell, pretraining seed, fine-tuning seed)``, grouped by the
    pretraining run it starts from, groups in table order of first use (scratch runs stay with the group before them).
    A piece that stops then leaves at most one pretraining with fine-tuning runs still to train: the one a later piece
    on another machine, without its checkpoint, must train again (and match its record)."""
    groups: dict[str, int] = {}
    keyed, group = [], 0
    for cell in dict.fromkeys(cell for spec in TABLES for cell in spec.cells(grid.scale)):
        for pretrain_seed, seeds in grid.origins(cell.init):
            if cell.init != "scratch":
                group = groups.setdefault(grid.pretrain_name(cell.block, cell.init == "fcmae", pretrain_seed),
                                          len(groups))
            keyed += [(group, cell, pretrain_seed, seed) for seed in seeds]
    return [(cell, pretrain_seed, seed) for _, cell, pretrain_seed, seed in sorted(keyed, key=lambda run: run[0])]


def _run_times(grid: Grid) -> list[str]:
    """Training minutes of the sweep and of each table's runs (a run shared by tables counts for the first), over
    every run known here or from its record, wherever it trained."""
    claimed: set[str] = set()

    def minutes(names: list[str]) -> float:
        names = [name for name in dict.fromkeys(names) if name not in claimed]
        claimed.update(names)
        runs = [grid.results.get(name) or (grid.records.run(name) if grid.records.has_run(name) else None)
                for name in names]
        return sum(run.history[-1]["time_s"] for run in runs if run is not None and run.history) / 60

    lines = [f"| recipe sweep | {minutes(trial_names(grid, grid.scale.main_shot)):.1f} min |"]
    if grid.recipes:  # the tables' run names follow the chosen recipes
        for spec in TABLES:
            names = [n for c in spec.cells(grid.scale) for n in grid.cell_names(c)] + spec.own_runs(grid)
            lines.append(f"| {spec.title} | {minutes(names):.1f} min |")
    return lines


def _header(scale_name: str, scale: Scale, grid: Grid, ev: Evaluator, stopped: str) -> str:
    pre = grid.pretrain("v2").config if grid.records.has_run(grid.pretrain_name("v2", True, 0)) else {}
    ratio = pre.get("mask_ratio", 0.6)
    epochs = ", ".join(f"K={shot_label(s)}: {e}" for s, e in scale.finetune_epochs.items())
    if scale.finetune_seeds > 1:  # every arm has several runs (scratch: its seeds)
        p = scale.pretrain_seeds
        intervals = (f"95% hierarchical bootstrap ({RESAMPLES:,} resamples): pretraining runs, then fine-tuning seeds, "
                     f"then val images; in a difference each arm's pretraining runs are drawn on their own, the "
                     f"fine-tuning seeds once for both (seed s of every arm fine-tunes on the same labeled images in "
                     f"the same order) and the images once; it is the first minus the second. With {p} pretraining "
                     f"runs per arm the run level rests on their disagreement alone ({p - 1}/{p} of its variance on "
                     f"average); the crossed levels count the run-by-image disagreement more than once, which widens "
                     f"the intervals (both: `cnx2lite/bootstrap.py`). Each verdict reads its own 95% interval, not "
                     f"corrected for the report's many comparisons: about one in twenty differences that are truly 0 "
                     f"would still exclude 0")
    else:
        intervals = (f"95% bootstrap ({RESAMPLES:,} resamples) with one fine-tuning seed: the scratch arms have one "
                     f"run each, so their intervals and every difference with them cover the val images only: they "
                     f"say whether these trained models differ on new images, not whether the method wins when rerun")
    decays = (", ".join(f"{init} {recipe.layer_decay:g}" for init, recipe in grid.recipes.items()) + " (the sweep's "
              "choice; every other pretrained init as fcmae)" if grid.recipes else f"{FINETUNED_LAYER_DECAY:g}")
    return f"""# cnx2lite reproduce --scale {scale_name}

Written by `cnx2lite reproduce --scale {scale_name} --pretrain-seeds {scale.pretrain_seeds} --seeds \
{scale.finetune_seeds}` from the numbers it measured; nothing here is hand-written.

- Model and data: {scale.model} at {scale.img_size} px on {ev.folder.name}, {len(ev.classes)} classes; evaluation on
  {len(ev.val_set)} val images.
- Pretraining: {pre.get('train_images', 'every')} training images, labels ignored, {scale.pretrain_epochs} epochs,
  mask ratio {ratio}; at {scale.img_size} px the visible cells round down, so
  {effective_mask_ratio(scale.img_size, ratio):.3f} of each image is masked.
- Fine-tuning: K labeled images per class, a random pick per seed from train/ less the tuning split; epochs {epochs};
  layer-wise lr decay {decays}.
- Replication: {scale.pretrain_seeds} pretraining run(s) per pretrained arm x {scale.finetune_seeds} fine-tuning
  seed(s) each; scratch: {scale.finetune_seeds} seed(s).
- Intervals: {intervals}.
- Machine: {os.cpu_count()} CPU cores, device {ev.device}; training autocast {pre.get('amp', '-')}, every val
  measurement under {ev.precision} autocast, whichever CPU made it (the records' keys name it).
{stopped}
"""


def _total_minutes(records: Path) -> float:
    """Training time of every recorded run (each run's metrics.csv, summed over its resumes)."""
    histories = [read_metrics(metrics) for metrics in records.glob("*/metrics.csv")]
    return sum(history[-1]["time_s"] for history in histories if history) / 60
