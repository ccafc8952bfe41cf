"""``cnx2lite demo`` (``make demo``): FCMAE pretraining pays off when labels are few,
in under 10 minutes on 2 CPU cores.

The label-efficient protocol of ``cnx2lite reproduce``, one cell of it:

1. FCMAE-pretrain convnextv2_atto on every Imagenette training image, labels ignored, with a kNN
   monitor of the encoder's features at every evaluation;
2. fine-tune it on 50 labeled images per class;
3. fine-tune the same model from random initialization on the same images and budget;
4. evaluate both on the whole val split and write ``<output>/report.md``: both top-1s, the paired
   bootstrap interval of their difference, the kNN curve and reconstructions of val images.

Images come from ``--data`` / ``$CNX2LITE_DATA_ROOT`` / ``<repo>/data``; Imagenette is downloaded
there when absent (and the demo fails with instructions when offline).
"""
from __future__ import annotations

import json
import math
import os
import shutil
import time
from pathlib import Path

import torch

from . import imagenette
from .amp import resolve_device
from .arguments import checked_arguments, checked_path
from .bootstrap import RESAMPLES, Estimate, hierarchical_accuracy, hierarchical_paired_difference
from .masking import effective_mask_ratio
from .report_folder import check_report_folder, claim_report_folder
from .reproduce.evaluation import Evaluator
from .reproduce.figures import plot_pretraining_knn
from .reproduce.grid import Grid, Scale, check_enough_images
from .reproduce.recipes import Recipe, sweep_trials
from .reproduce.records import RECORDS_FOLDER
from .reproduce.sweep import run_sweep, trial_names
from .rundir import RunDir
from .train.plots import plot_comparison

SHOTS = 50
PLANS = {
    # sized for 10 minutes on 2 CPU cores (8.7 measured on an AVX2 EPYC: pretraining 4.9, each fine-tuning 1.6); every
    # measurement in one process, so at the fastest precision of this CPU (bf16 without bf16 hardware: slower than fp32)
    "full": Scale("convnextv2_atto", 96, 4, 64, 256, shots=(SHOTS,), main_shot=SHOTS, finetune_epochs={SHOTS: 16},
                  eval_points=2, eval_amp="auto"),
    "quick": Scale("convnextv2_atto", 64, 1, 8, 64, shots=(4,), main_shot=4, finetune_epochs={4: 2}, num_classes=2,
                   images_per_class=8, val_images_per_class=4, eval_points=1, workers=0, preset="smoke",
                   eval_amp="auto"),
}


# Each arm's fine-tuning recipe, chosen by `cnx2lite demo --sweep` on the tuning split: reports/demo/sweep.md (both arms
# best at lr 1e-3 without RandAugment, erasing, drop path and label smoothing, the middle of the swept lrs).
COMMAND = "cnx2lite demo"
MANIFEST = "demo-runs.txt"  # the run folders a demo created under <output>/runs: the only ones a demo removes
RECIPES = {"fcmae": Recipe(1e-3, "none"), "scratch": Recipe(1e-3, "none")}


@checked_arguments
def run_demo(data_arg: str | None = None, output: str | os.PathLike = "runs/demo", quick: bool = False,
             threads: int | None = None, sweep: bool = False) -> Path:
    """Run the pretraining and both fine-tunings into ``output`` (the runs an earlier demo created there cleared
    first, nothing else: see :func:`_clear_own_runs`) and write the report. With ``sweep``, first choose each arm's
    recipe on the tuning split (``sweep.md``) and use those instead of :data:`RECIPES`."""
    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    output = checked_path(output, "output")
    check_report_folder(output, COMMAND, ("report.md", "*.png"))
    scale = PLANS["quick" if quick else "full"]
    folder = str(imagenette.find_or_download(data_arg))
    check_enough_images(scale, Path(folder))
    if (output / MANIFEST).is_file():  # an earlier demo's records, about to be cleared, may be of other images
        (output / RECORDS_FOLDER / "data.json").unlink(missing_ok=True)
    grid = Grid(scale, folder, output, recipes=RECIPES)
    claim_report_folder(output, COMMAND)  # every check passed
    k = scale.main_shot
    _clear_own_runs(output, _own_runs(grid, k))  # a fresh measurement
    chosen_by = "`cnx2lite demo --sweep`, an earlier run (the constant `cnx2lite.demo.RECIPES`)"
    if sweep:
        result = run_sweep(grid, k)
        (output / "sweep.md").write_text(result.section())
        grid.recipes = {init: result.chosen(init) for init in result.trials}
        chosen_by = "the sweep of this run ([sweep.md](sweep.md))"
        print(f"chosen recipes: {', '.join(f'{i}: {r.name}' for i, r in grid.recipes.items())}")
    ev = Evaluator(grid, resolve_device("auto"))
    fcmae, scratch = ev.finetuned(k, "fcmae"), ev.finetuned(k, "scratch")
    report = write_report(output, grid, ev, fcmae, scratch, time.perf_counter() - start, chosen_by)
    print(f"report: {report}")
    return report


def _clear_own_runs(output: Path, names: list[str]) -> None:
    """Remove the runs among ``names`` that an earlier demo created in ``output`` (listed in its :data:`MANIFEST`),
    each under its lock (a run another process trains is refused, not removed), with its record; then note which of
    ``names`` this demo will create. A run of the same name that the demo did not create (``reproduce`` names its
    runs alike) is never removed: training finds it and resumes it, or refuses it when its settings differ."""
    manifest = output / MANIFEST
    created = set(manifest.read_text().split()) if manifest.is_file() else set()
    for name in sorted(created & set(names)):
        run = RunDir(output / "runs" / name)
        if run.path.is_dir():
            with run.lock():
                shutil.rmtree(run.path)
        shutil.rmtree(output / RECORDS_FOLDER / name, ignore_errors=True)  # else the grid would reuse it
    output.mkdir(parents=True, exist_ok=True)
    new = {name for name in names if not (output / "runs" / name).exists()}
    manifest.write_text("".join(f"{name}\n" for name in sorted(created | new)))


def _own_runs(grid: Grid, k: int) -> list[str]:
    """Every run directory the demo may write: its pretraining, the sweep's trials, and both arms under any recipe
    the sweep can choose."""
    names = {grid.pretrain_name("v2", sparse=True, seed=0), *trial_names(grid, k)}
    names |= {grid.finetune_name(k, init, recipe=recipe) for init in RECIPES for recipe in sweep_trials(init)}
    return sorted(names)


def write_report(output: Path, grid: Grid, ev: Evaluator, fcmae: torch.Tensor, scratch: torch.Tensor,
                 total: float, chosen_by: str) -> Path:
    scale, k = grid.scale, grid.scale.main_shot
    pre, tuned, base = grid.pretrain(), grid.finetune(k, "fcmae"), grid.finetune(k, "scratch")
    plot_pretraining_knn({"FCMAE encoder": pre}, output / "pretraining_knn.png")
    plot_comparison({"FCMAE-pretrained": tuned.history, "from scratch": base.history}, "val_top1",
                    output / "val_top1.png", "val top-1 (%)", f"fine-tuning on {k} labeled images per class")
    shutil.copy(pre.run_dir / "reconstruction.png", output / "reconstruction.png")
    a, b = hierarchical_accuracy(fcmae), hierarchical_accuracy(scratch)  # one run each: images only
    diff = hierarchical_paired_difference(fcmae, scratch)
    train_images = json.loads((pre.run_dir / "config.json").read_text())["train_images"]
    masked = effective_mask_ratio(scale.img_size, pre.config["mask_ratio"])
    knn = pre.metric("knn_top1")
    rows = "\n".join(f"| {name} | {r.config['img_size']} px | {r.config['epochs']} | {r.history[-1]['step']} | "
                     f"{r.history[-1]['time_s'] / 60:.1f} min |"
                     for name, r in (("FCMAE pretraining", pre), ("fine-tune FCMAE", tuned),
                                     ("fine-tune scratch", base)))
    text = f"""# cnx2lite demo: FCMAE pretraining vs. training from scratch, with few labels

{scale.model} on {ev.folder.name} ({len(ev.classes)} classes): pretraining on all {train_images} training images, labels
ignored; fine-tuning on {k} labeled images per class; evaluation on all {len(ev.val_set)} val images.
Chance is {100 / len(ev.classes):.0f}%. Machine: {os.cpu_count()} CPU cores,
device {ev.device}, training autocast {pre.config['amp']}, evaluation autocast
{ev.precision}, seed 0. Total wall time: **{total / 60:.1f} min**.

## Result

| fine-tuning init | val top-1 (95% interval) |
|---|---|
| FCMAE-pretrained | {a} |
| from scratch | {b} |
| difference | {diff} |

{_one_run_reading(diff)}
Intervals: paired bootstrap over the val images ({RESAMPLES:,} resamples). What one run can show: whether these two
trained models differ on new images. What it cannot: whether the method wins when rerun; the interval covers which
val images were drawn, not another pretraining run, labeled subset or fine-tuning seed. `cnx2lite reproduce` replicates
the runs for that.

Both arms trained: final training loss FCMAE {tuned.metric('train_loss')[-1]:.3f},
scratch {base.metric('train_loss')[-1]:.3f}, against
{math.log(len(ev.classes)):.3f} for chance (ln {len(ev.classes)}).

![val top-1 during fine-tuning](val_top1.png)

## What ran

| run | image size | epochs | optimizer steps | training time |
|---|---|---|---|---|
{rows}

Pretraining uses {scale.img_size} px images: a {scale.img_size // 32}x{scale.img_size // 32} grid of 32 px cells, of
which FCMAE masks {masked:.3f} (the setting is {pre.config['mask_ratio']}; the visible cells are rounded down). Both
fine-tunings use the same labeled images (a seeded random pick from train/ less the tuning split), data order,
schedule and optimizer (AdamW, layer-wise lr decay {tuned.config['layer_decay']}); each arm's recipe (lr, and
RandAugment + random erasing + drop path + label smoothing or none of them) was chosen on the
tuning split by {chosen_by}: FCMAE {_recipe(tuned)}, scratch {_recipe(base)}.

While pretraining, a weighted kNN classifier on the encoder's pooled features ({pre.config['knn_images_per_class']}
labeled images per class as the memory bank) measured val top-1 {', '.join(f'{v:.1f}%' for v in knn)} at its
evaluations: the features learn
classes that no label told them about.

![kNN during pretraining](pretraining_knn.png)

FCMAE reconstructions after pretraining, val images of different classes (original / masked / reconstruction /
reconstruction with the visible patches pasted back):

![reconstructions](reconstruction.png)

Per-run curves, resolved configs, metrics and final checkpoints: `{output / 'runs'}`. The full grid (more label
budgets, V1 vs V2 blocks, sparse vs dense convolution, feature collapse): `cnx2lite reproduce --scale cpu`.
"""
    path = output / "report.md"
    path.write_text(text)
    return path


def _one_run_reading(diff: Estimate) -> str:
    """What a single run's difference says, in words that claim no more than one run shows."""
    if not diff.excludes_zero:
        return f"FCMAE - scratch: {diff} points, interval includes 0: these two models do not differ measurably."
    ahead = "ahead of" if diff.low > 0 else "behind"
    return (f"FCMAE - scratch: {diff} points: in this run the FCMAE-pretrained model is {ahead} the scratch "
            "model on new images (one run per arm: not yet a claim about the method).")


def _recipe(run) -> str:
    c = run.config
    regularized = c["rand_augment"] is not None
    return f"lr {c['lr']:g}, {'with' if regularized else 'without'} regularization"
