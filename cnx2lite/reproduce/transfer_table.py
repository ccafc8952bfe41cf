"""Table 6 of the report: transfer to dense tasks (the paper's Sec. 6, COCO Mask R-CNN and ADE20K UperNet) at the
grid's scale, on composites of the data's photos (:mod:`cnx2lite.dense.composites`): segmentation and detection from
four inits of the same architecture, each transferred ``seeds`` times. Run ``s`` starts from a run of the table's
own trained as the tables' pretraining run ``s mod P`` (or, supervised, their K=all run of seed ``s mod S``):
:func:`init_run`.

Every run is scored as the paper scores, over the whole evaluation split (mIoU and pixel accuracy pool the pixels of
all composites, COCO's AP ranks the detections of all of them together), and each score is recomputed on bootstrap
weightings of the composites (:mod:`cnx2lite.dense.split_scores`), the same for every run, so the intervals resample
the runs and the images (:func:`cnx2lite.bootstrap.resampled_contrast`)."""
from __future__ import annotations

import dataclasses
import functools
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import Tensor

from ..bootstrap import Estimate, Resampled, RunSpread, image_counts, resampled_contrast
from ..dense.composites import CompositeDataset
from ..rundir import RunResult, load_checkpoint
from ..train import TrainConfig, load_config, load_preset
from ..train.loader import eval_loader, move_to
from ..train.run_data import build_run_data
from ..train.task_base import Task
from ..train.tasks import build_task
from .evaluation import Evaluator
from .figures import plot_bars
from .grid import TUNE_FRACTION, Cell, Grid, Scale, arch_options
from .recipes import decay_suffix
from .report_rows import Row, Table, shown, verdict

TASKS = ("segment", "detect")
INITS = {"fcmae": "V2 FCMAE", "fcmae-v1": "V1 FCMAE", "supervised": "V2 supervised", "scratch": "random init"}
SPLIT_SCORES = {"segment": ("mIoU", "pixel accuracy"), "detect": ("box AP", "mask AP")}  # resampled_scores' columns
RESAMPLES = 1000  # image weightings each split score is recomputed on
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


def split_scores(ev: Evaluator, task: str, init: str, seed: int) -> Tensor:
    """``(1 + RESAMPLES, M)`` one run's split scores (:data:`SPLIT_SCORES`) on its evaluation composites, then on each
    bootstrap weighting of them: recorded, else measured on its weights and recorded."""
    t = ev.grid.scale.transfer
    name = transfer_name(ev.grid, task, init, seed)
    key = (f"split-scores-{t.val_composites}x{t.img_size}px-{RESAMPLES}resamples-float32@{ev.val_id}-"
           f"{composites_id(ev.grid, task)}")
    scores = ev.grid.records.measured(name, key)
    if scores is None:
        run = run_transfer(ev.grid, task, init, seed, weights=True)
        scores = ev.grid.records.keep_measured(name, key, _score_split(run.run_dir, task, ev.device))
    return scores


def _evaluation_composites(config: TrainConfig, task: str) -> tuple[Task, CompositeDataset]:
    """The task of a run of ``config`` and its evaluation composites, as the run makes them."""
    dense = build_task(config)
    return dense, dense.datasets(build_run_data(config, task, dense.train_transform()))[1]


@functools.cache
def composites_id(grid: Grid, task: str) -> str:
    """A short hash of the evaluation composites' labels as this machine draws them (each one's semantic map), in
    the key of every split-score record: scores of composites drawn otherwise (another Pillow's rasterization of the
    same shapes) are never paired with these. Draws them once per grid and task, photos decoded: seconds."""
    _, composites = _evaluation_composites(dataclasses.replace(transfer_config(grid, task, "fcmae", 0),
                                                               pretrained=None), task)
    digest = hashlib.sha256()
    for index in range(len(composites)):
        digest.update(composites.compose(index)[1].tobytes())
    return digest.hexdigest()[:10]


@torch.no_grad()
def _score_split(run_dir: Path, task: str, device: torch.device) -> Tensor:
    """The task's split scores of a run's newest weights on its evaluation composites (made again from its config,
    scored in float32), as they are and on :data:`RESAMPLES` weightings (:func:`image_counts`, seed 0: the same for
    every run)."""
    config = dataclasses.replace(load_config(run_dir / "config.json", task), pretrained=None)  # weights come next
    dense, val_set = _evaluation_composites(config, task)
    model = dense.build_model(len(val_set.classes))
    model.load_state_dict(load_checkpoint(run_dir)["model"])
    model.to(device).eval()
    loader = eval_loader(val_set, config.batch_size, 0, 1, 0, collate_fn=dense.collate)
    statistics = [dense.image_statistics(model, images.to(device), move_to(targets, device))
                  for images, targets in loader]
    weights = torch.cat([torch.ones(1, len(val_set), dtype=torch.float64), image_counts(len(val_set), RESAMPLES)])
    return dense.resampled_scores(statistics, weights)


def transfer_measurements(ev: Evaluator) -> Iterator[tuple[str, Callable[[], object]]]:
    """``(run name, measure)`` of every transfer run: its split scores."""
    for task, init, seed in transfer_runs(ev.grid.scale):
        yield transfer_name(ev.grid, task, init, seed), functools.partial(split_scores, ev, task, init, seed)


def _estimate(arms: list[Resampled], weights: tuple[float, ...], runs: Tensor) -> Estimate:
    """Run s of every init is one block (the same training composites in the same order): drawn together."""
    value, low, high = (v.item() for v in resampled_contrast(arms, weights, paired_runs=True))
    return Estimate(value, low, high, RunSpread(runs.tolist()))


def table_transfer(ev: Evaluator, output: Path) -> Table:
    t = ev.grid.scale.transfer
    rows, lines, claims, bars = [], [], [], {}
    for task in TASKS:
        scores = {init: torch.stack([split_scores(ev, task, init, seed) for seed in range(t.seeds)]).double()
                  for init in INITS}  # (S, 1 + B, M) per init
        for m, metric in enumerate(SPLIT_SCORES[task]):
            arms = {init: Resampled(runs[:, 0, m], runs[:, 1:, m].T) for init, runs in scores.items()}  # (S,), (B, S)
            estimates = {init: _estimate([arm], (1.0,), arm.value) for init, arm in arms.items()}
            label = f"{task}: {metric}"
            rows += [Row("6", f"{task} {INITS[init]}", metric, e, t.seeds > 1) for init, e in estimates.items()]
            lines.append(f"| {label} | " + " | ".join(shown(e) for e in estimates.values()) + " |")
            for a, b, claim in CLAIMS:  # runs: seed s of a minus seed s of b (the same training composites)
                diff = _estimate([arms[a], arms[b]], (1.0, -1.0), arms[a].value - arms[b].value)
                rows.append(Row("6", f"{task} {INITS[a]} - {INITS[b]}", metric, diff, t.seeds > 1))
                claims.append(f"- {label}: {verdict(diff, claim, t.seeds > 1)}")
            bars[label] = {INITS[init]: e for init, e in estimates.items()}
    plot_bars(bars, output / "transfer.png", "transfer to dense tasks (synthetic composites)")
    header = " | ".join(INITS.values())
    s = ev.grid.scale
    recipe = {task: transfer_config(ev.grid, task, "fcmae", 0) for task in TASKS}
    scratch = scratch_decay(ev.grid)
    scratch_note = ("" if scratch in (None, recipe["segment"].layer_decay)
                    else f" (the random init: {scratch:g}, what the sweep chose for scratch)")
    sources = {"pretraining": s.pretrain_seeds, "supervised": s.finetune_seeds}
    shared = "".join(f" The {t.seeds} transfer runs of a {kind} init start from {n} {kind} run(s): some share their "
                     "weights, so the interval over runs holds only part of the spread of rerunning the "
                     f"{kind} itself." for kind, n in sources.items() if t.seeds > n)
    schedule = ", ".join(f"{task} {t.composites[task]} training composites x {t.epochs[task]} epochs" for task in TASKS)
    steps = ", ".join(f"{ev.grid.records.run(transfer_name(ev.grid, task, 'fcmae', 0)).metric('step')[-1]:.0f} steps "
                      f"per {task} run" for task in TASKS)  # as the runs took them
    section = f"""## 6. Transfer to dense tasks (synthetic composites)

The paper's second case for FCMAE: UperNet segmentation (ADE20K) and Mask R-CNN detection (COCO) on the pretrained
backbone. Neither data set is here, so both tasks run on composites with exact labels: shapes cut from photos of one
class pasted on a photo of another (`cnx2lite transfer`; a synthetic task). {s.model} at {t.img_size} px; per task
{schedule}, batch {t.batch_size} ({steps}: a short budget next to the paper's schedules), head width
{t.head_channels}; {t.val_composites} evaluation composites made from the val photos, the same for every run. Inits:
V2 and V1 FCMAE, V2 supervised (from scratch with every label) and a random init; {t.seeds} transfer run(s) each, run
s from a run of this table's own trained as the tables' pretraining run s mod {s.pretrain_seeds} (supervised: as table
1's K=all scratch run of seed s mod {s.finetune_seeds}); its own, because the tables' runs are kept as records without
weights, and one trained again elsewhere would not be the same run.{shared}

Every init transfers with one recipe, tuned for none of them (but for the random init's layer decay): lr
{recipe['segment'].lr:g} (segment) and {recipe['detect'].lr:g} (detect), layer decay
{recipe['segment'].layer_decay:g}{scratch_note}
and the same short schedule; a random init usually needs a longer one, so "FCMAE beats a random init" holds at this
equal budget only.
The supervised init learned the very classes the composites paste, from the same train photos (the paper's
supervised encoder learned ImageNet's classes, not COCO's or ADE20K's): this tilts its comparison towards supervised
pretraining. The photo behind a composite's pasted regions shows an object that is no instance, so any detection of it
counts as a false positive, for every init alike.

Each score is the split's, as the paper's (mIoU and pixel accuracy over the pixels of all composites, COCO's AP over
the detections of all of them), the mean over runs [95% interval over runs, then composites: the score recomputed on
{RESAMPLES} bootstrap weightings of the composites, the same for every run, and the runs drawn once for every init:
run s of each trained on the same composites in the same order; the normal interval; composites draw their photos
with replacement, so two may share one, which the interval treats as independent]; runs: the lowest and highest run
(for a difference: run s of one init minus run s of the other).

| score | {header} |
|---|{'---|' * len(INITS)}
{chr(10).join(lines)}

{chr(10).join(claims)}

The paper reports these transfers on COCO and ADE20K with ConvNeXt V2-B/L/H (its Tables 6 and 7): other data, other
scale; its numbers are not quoted here until checked against the paper.

![transfer](transfer.png)
"""
    return Table(rows, section)
