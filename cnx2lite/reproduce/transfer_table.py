"""Table 6 of the report: transfer to dense tasks (the paper's Sec. 5, COCO Mask R-CNN and ADE20K UperNet) at the
grid's scale, on composites of the data's photos (:mod:`cnx2lite.dense.composites`): segmentation and detection from
four inits of the same architecture, each transferred ``seeds`` times. Run ``s`` starts from a run of the table's
own trained as the tables' pretraining run ``s mod P`` (or, supervised, their K=all run of seed ``s mod S``):
:func:`init_run`.

Every run is scored per evaluation composite (each image's own mIoU, box AP and mask AP), so the intervals resample
the runs and the images; the split-level scores that pool all images (what ``metrics.csv`` logs) are given beside."""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from ..bootstrap import hierarchical_bootstrap_mean, hierarchical_contrast
from ..rundir import RunResult, load_checkpoint
from ..train import TrainConfig, load_config, load_preset
from ..train.loader import eval_loader, move_to
from ..train.run_data import build_run_data
from ..train.tasks import build_task
from .evaluation import Evaluator
from .figures import plot_bars
from .grid import TUNE_FRACTION, Cell, Grid, Scale, arch_options
from .recipes import decay_suffix
from .report_rows import Row, Table, shown, verdict

TASKS = ("segment", "detect")
INITS = {"fcmae": "V2 FCMAE", "fcmae-v1": "V1 FCMAE", "supervised": "V2 supervised", "scratch": "random init"}
IMAGE_SCORES = {"segment": ("mIoU",), "detect": ("box AP", "mask AP")}  # the columns of a task's image scores
SPLIT_SCORES = {"segment": ("val_miou",), "detect": ("val_box_ap", "val_mask_ap")}
CLAIMS = (("fcmae", "scratch", "FCMAE beats a random init"),
          ("fcmae", "supervised", "FCMAE beats supervised pretraining"),
          ("fcmae", "fcmae-v1", "V2 FCMAE beats V1 FCMAE"))


def transfer_cells(scale: Scale) -> list[Cell]:
    """None: the table reads no cell of the others; its runs start from runs of its own (:func:`init_run`)."""
    return []


def transfer_runs(scale: Scale) -> Iterator[tuple[str, str, int]]:
    """``(task, init, seed)`` of every transfer run, seed by seed, both tasks of an init together: a piece that stops
    leaves at most one init run (:func:`init_run`) with transfer runs still to train from it, the one a later piece on
    another machine, without its checkpoint, must train again (and match its record)."""
    if scale.transfer is not None:
        for seed in range(scale.transfer.seeds):
            yield from ((task, init, seed) for init in INITS for task in TASKS)


def transfer_name(grid: Grid, task: str, init: str, seed: int) -> str:
    """A transfer run's name; a random init's carries the layer decay it trains with (:func:`scratch_decay`), so a
    later sweep choosing another one names another run instead of meeting this one's record."""
    decay = scratch_decay(grid) if init == "scratch" else None
    return f"transfer-{task}-{init}{'' if decay is None else decay_suffix(decay)}-s{seed}"


def scratch_decay(grid: Grid) -> float | None:
    """The layer decay a random init transfers with: the one the sweep chose for scratch (it has no pretrained
    layers to keep); None before the sweep has chosen (the dense preset's)."""
    scratch = grid.recipes.get("scratch")
    return None if scratch is None else scratch.layer_decay


def transfer_names(grid: Grid) -> list[str]:
    """Every run of the table: the transfer runs and the runs their inits come from."""
    inits = (init_run(grid, init, seed) for _, init, seed in transfer_runs(grid.scale))
    return [transfer_name(grid, *run) for run in transfer_runs(grid.scale)] + list(dict.fromkeys(
        source[0] for source in inits if source is not None))


def init_run(grid: Grid, init: str, seed: int) -> tuple[str, TrainConfig] | None:
    """The run the backbone of ``init`` at ``seed`` comes from, ``(name, config)`` (None: a random init): the table's
    own ``transfer-init-<name>``, trained with the settings of the tables' run ``<name>`` (pretraining run ``seed mod
    P``, or the supervised K=all run of seed ``seed mod S``). Not that run itself: records keep no weights, and the
    run trained again on another machine would not be the recorded one (:meth:`.Records.check_same` refuses it)."""
    s = grid.scale
    if init == "scratch":
        return None
    if init == "supervised":
        name, config = grid.finetune_config(None, "scratch", "v2", seed % s.finetune_seeds, None, False, 0)
    else:
        name, config = grid.pretrain_config("v1" if init == "fcmae-v1" else "v2", True, seed % s.pretrain_seeds)
    return f"transfer-init-{name}", dataclasses.replace(config, name=f"transfer-init-{name}")


def transfer_config(grid: Grid, task: str, init: str, seed: int) -> TrainConfig:
    """The run: the scale's model on composites of train/ photos (less the tuning split), scored on composites of the
    val/ photos the other tables score on, from ``init``'s weights, with the dense preset's recipe (layer decay 0.9;
    a random init with the layer decay the sweep chose for scratch: it has no pretrained layers to keep)."""
    s, t = grid.scale, grid.scale.transfer
    source, epochs = init_run(grid, init, seed), t.epochs[task]
    decay = scratch_decay(grid) if init == "scratch" else None
    return load_preset(
        s.preset, task=task, model=s.model, img_size=t.img_size, data=grid.folder, seed=seed,
        output=str(grid.output / "runs"), name=transfer_name(grid, task, init, seed), resume="auto",
        num_classes=s.num_classes, images_per_class=s.images_per_class, val_images_per_class=s.val_images_per_class,
        tune_fraction=TUNE_FRACTION, composites=t.composites[task], val_composites=t.val_composites,
        batch_size=t.batch_size, head_channels=t.head_channels, epochs=epochs, num_workers=s.workers,
        eval_every=-(-epochs // s.eval_points), keep_last=1, progress=False,
        pretrained=None if source is None else str(grid.output / "runs" / source[0]),
        **({} if decay is None else {"layer_decay": decay}),
        **arch_options("v1" if init == "fcmae-v1" else "v2"))


def run_transfer(grid: Grid, task: str, init: str, seed: int, weights: bool = False) -> RunResult:
    """Train (or find, or read from its record) one transfer run; its init's run is trained first when it must be."""
    name, config = transfer_name(grid, task, init, seed), transfer_config(grid, task, init, seed)
    source = init_run(grid, init, seed)
    if source is not None and not grid.available(name, config, weights):
        grid.run(*source, weights=True)
    return grid.run(name, config, weights)


def image_scores(ev: Evaluator, task: str, init: str, seed: int) -> Tensor:
    """``(N, M)`` each evaluation composite's scores (:data:`IMAGE_SCORES`) of one run: recorded, else measured on
    its weights and recorded."""
    t = ev.grid.scale.transfer
    name = transfer_name(ev.grid, task, init, seed)
    key = f"image-scores-{t.val_composites}x{t.img_size}px@{ev.val_id}"
    scores = ev.grid.records.measured(name, key)
    if scores is None:
        run = run_transfer(ev.grid, task, init, seed, weights=True)
        scores = ev.grid.records.keep_measured(name, key, _score_images(run.run_dir, task, ev.device))
    return scores


@torch.no_grad()
def _score_images(run_dir: Path, task: str, device: torch.device) -> Tensor:
    """The task's image scores of a run's newest weights on its evaluation composites (made again from its config)."""
    config = dataclasses.replace(load_config(run_dir / "config.json", task), pretrained=None)  # weights come next
    dense = build_task(config)
    _, val_set = dense.datasets(build_run_data(config, task, dense.train_transform()))
    model = dense.build_model(len(val_set.classes))
    model.load_state_dict(load_checkpoint(run_dir)["model"])
    model.to(device).eval()
    loader = eval_loader(val_set, config.batch_size, 0, 1, 0, collate_fn=dense.collate)
    return torch.cat([dense.image_scores(model, images.to(device), move_to(targets, device))
                      for images, targets in loader])


def transfer_measurements(ev: Evaluator) -> Iterator[tuple[str, Callable[[], object]]]:
    """``(run name, measure)`` of every transfer run: its image scores."""
    for task, init, seed in transfer_runs(ev.grid.scale):
        yield transfer_name(ev.grid, task, init, seed), functools.partial(image_scores, ev, task, init, seed)


def table_transfer(ev: Evaluator, output: Path) -> Table:
    t = ev.grid.scale.transfer
    rows, lines, claims, split_lines, bars = [], [], [], [], {}
    for task in TASKS:
        scores = {init: torch.stack([image_scores(ev, task, init, seed) for seed in range(t.seeds)])
                  for init in INITS}  # (S, N, M) per init
        scored = ~torch.stack(list(scores.values())).isnan().any(dim=(0, 1))  # (N, M): images every run can score
        for m, metric in enumerate(IMAGE_SCORES[task]):
            values = {init: s[:, scored[:, m], m][None].double() for init, s in scores.items()}  # (1, S, N')
            estimates = {init: hierarchical_bootstrap_mean(v) for init, v in values.items()}
            label = f"{task}: image {metric}"
            rows += [Row("6", f"{task} {INITS[init]}", f"image {metric}", e, t.seeds > 1)
                     for init, e in estimates.items()]
            lines.append(f"| {label} ({int(scored[:, m].sum())} images) | "
                         + " | ".join(shown(e) for e in estimates.values()) + " |")
            for a, b, claim in CLAIMS:
                diff = hierarchical_contrast([values[a], values[b]], (1, -1))
                rows.append(Row("6", f"{task} {INITS[a]} - {INITS[b]}", f"image {metric}", diff, t.seeds > 1))
                claims.append(f"- {label}: {verdict(diff, claim, t.seeds > 1)}")
            bars[label] = {INITS[init]: e for init, e in estimates.items()}
        for key in SPLIT_SCORES[task]:
            ends = {init: [run_transfer(ev.grid, task, init, seed).metric(key)[-1] for seed in range(t.seeds)]
                    for init in INITS}
            split_lines.append(f"| {task}: {key} | " + " | ".join(_spread(v) for v in ends.values()) + " |")
    plot_bars(bars, output / "transfer.png", "transfer to dense tasks (synthetic composites)")
    header = " | ".join(INITS.values())
    s = ev.grid.scale
    section = f"""## 6. Transfer to dense tasks (synthetic composites)

The paper's second case for FCMAE: UperNet segmentation (ADE20K) and Mask R-CNN detection (COCO) on the pretrained
backbone. Neither data set is here, so both tasks run on composites with exact labels: shapes cut from photos of one
class pasted on a photo of another (`cnx2lite transfer`; a synthetic task). {s.model} at {t.img_size} px; per task
{', '.join(f'{task} {t.composites[task]} training composites x {t.epochs[task]} epochs' for task in TASKS)}, batch
{t.batch_size}, head width {t.head_channels}, layer decay 0.9; {t.val_composites} evaluation composites made from the
val photos, the same for every run. Inits: V2 and V1 FCMAE, V2 supervised (from scratch with every label) and a random
init; {t.seeds} transfer run(s) each, run s from a run of this table's own trained as the tables' pretraining run s
mod {s.pretrain_seeds} (supervised: as table 1's K=all scratch run of seed s mod {s.finetune_seeds}); its own, because
the tables' runs are kept as records without weights, and one trained again elsewhere would not be the same run.

Each cell: the mean over runs and composites of each composite's own score [95% interval over runs, then images];
runs: the lowest and highest run.

| score | {header} |
|---|{'---|' * len(INITS)}
{chr(10).join(lines)}

{chr(10).join(claims)}

Split-level scores (pixels or detections of all composites pooled, as `metrics.csv` logs them), lowest..highest run:

| score | {header} |
|---|{'---|' * len(INITS)}
{chr(10).join(split_lines)}

The paper reports these transfers on COCO and ADE20K with ConvNeXt V2-B/L/H (its Tables 6 and 7): other data, other
scale; its numbers are not quoted here until checked against the paper.

![transfer](transfer.png)
"""
    return Table(rows, section)


def _spread(values: list[float]) -> str:
    return f"{values[0]:.1f}" if len(values) == 1 else f"{min(values):.1f}..{max(values):.1f}"
