"""The reproduction's grid: how big each run is (:class:`Scale`), the runs by name, trained, resumed or read from
their records on first use (:class:`Grid`)."""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .. import data
from ..allocator import release_freed_memory
from ..layers import BLOCK_NORMS, GRN_AGGREGATIONS
from ..models.convnextv2 import BLOCK_STYLES, default_block_norm
from ..rundir import RunDir
from ..train import RunResult, TrainConfig, load_preset, train
from ..train.run_data import fingerprint
from ..train.run_log import last_epoch, read_metrics
from ..writing import print_line
from .recipes import FINETUNED_LAYER_DECAY, Recipe
from .records import RECORDS_FOLDER, Records

# what the GRN table puts in GRN's place, at the cpu and gpu scales (arch_options names)
GRN_ALTERNATIVES = ("v2-none", "v2-lrn", "v2-bn", "v2-ln", "v2-se", "v2-cbam", "v2-l1", "v2-mean")


@dataclass(frozen=True)
class TransferScale:
    """How big the transfer table's runs are (:mod:`.transfer_table`): per task (segment, detect) its epochs and
    training composites; every init is transferred ``seeds`` times."""

    img_size: int
    epochs: dict[str, int]
    composites: dict[str, int]
    val_composites: int
    batch_size: int
    head_channels: int
    seeds: int = 2


@dataclass(frozen=True)
class Scale:
    """How big every run of the grid is. ``shots``: labeled images per class (None = all)."""

    model: str
    img_size: int
    pretrain_epochs: int
    batch_size: int
    decoder_dim: int
    shots: tuple[int | None, ...]
    main_shot: int  # K of tables 2 and 3
    finetune_epochs: dict[int | None, int]
    num_classes: int | None = None  # None: every class of the data
    images_per_class: int | None = None  # pretraining images per class (None: all)
    val_images_per_class: int | None = None
    eval_points: int = 4  # evaluations per run (the curves)
    workers: int = 2  # DataLoader workers, at the lowest CPU priority (see cnx2lite.train.loader)
    eval_amp: str = "bf16"  # autocast of val measurements: pinned, so that records of several CPUs are one precision
    preset: str = "cpu"  # recipe and runtime (amp: see the cpu preset) the runs start from
    pretrain_seeds: int = 1  # pretraining runs per pretrained arm
    finetune_seeds: int = 1  # fine-tuning runs per pretraining run (and per scratch cell)
    collapse_images: int = 500  # val images of the feature-collapse curves
    collapse_sizes: tuple[int, ...] = (224,)  # resolutions they are measured at
    collapse_rank_resamples: int = 50  # image resamples the effective rank is recomputed on (its interval)
    grn_archs: tuple[str, ...] = GRN_ALTERNATIVES  # what the GRN table puts in GRN's place (arch_options names)
    transfer: TransferScale | None = None  # the transfer table's runs (None: no transfer table)


SCALES = {
    # CI: seconds, checks that every table is produced, not the claims.
    "smoke": Scale("convnextv2_atto", 64, 1, 8, 64, shots=(4, None), main_shot=4, finetune_epochs={4: 2, None: 1},
                   num_classes=2, images_per_class=8, val_images_per_class=4, eval_points=1, workers=0,
                   preset="smoke", collapse_images=4, collapse_sizes=(64,), collapse_rank_resamples=3,
                   grn_archs=("v2-none", "v2-cbam"),
                   transfer=TransferScale(64, {"segment": 1, "detect": 1}, {"segment": 8, "detect": 8}, 4, 4, 32,
                                          seeds=1)),
    # 2 CPU cores: atto at 96 px (a 3x3 grid of 32 px cells, 3 visible at ratio 0.6) on all of Imagenette.
    # Replicated: 2 pretraining runs per pretrained arm x 3 fine-tuning seeds: 8.7 hours of recorded training for the
    # sweep and tables 1-4, 11.4 more for the GRN table (the report's run times), about 6 for the transfer table.
    "cpu": Scale("convnextv2_atto", 96, 8, 64, 256, shots=(10, 50, None), main_shot=50,
                 finetune_epochs={10: 100, 50: 30, None: 4}, pretrain_seeds=2, finetune_seeds=3,
                 collapse_sizes=(96, 224),
                 # 128 px (stage maps 32 to 4 cells across); Mask R-CNN trains about 3x slower per composite than
                 # UperNet here (5.2 vs 15.3 a second on 2 cores)
                 transfer=TransferScale(128, {"segment": 6, "detect": 6}, {"segment": 2000, "detect": 1000}, 500, 16,
                                        128)),
    # one GPU: the paper's 224 px.
    "gpu": Scale("convnextv2_atto", 224, 100, 128, 512, shots=(10, 50, None), main_shot=50,
                 finetune_epochs={10: 200, 50: 100, None: 50}, workers=8, preset="imagenette-gpu"),
}
TUNE_FRACTION = 0.1  # of every class of train/, carved out to choose recipes on (never val/); no labeled subset uses it


def shot_label(k: int | None) -> str:
    return "all" if k is None else str(k)


def arch_options(arch: str) -> dict:
    """The model options of an architecture name of the grid: a block style, then optionally what follows the MLP's
    GELU (a block norm) or GRN's aggregation: ``"v2"``, ``"v1"``, ``"v2-bn"``, ``"v2-l1"``, ``"v1-grn"``."""
    block, _, variant = arch.partition("-")
    if block not in BLOCK_STYLES or (variant and variant not in BLOCK_NORMS and variant not in GRN_AGGREGATIONS):
        raise ValueError(f"unknown grid architecture {arch!r}: a block style ({', '.join(BLOCK_STYLES)}), then "
                         f"optionally -<block norm> ({', '.join(BLOCK_NORMS)}) or -<GRN aggregation>")
    options = {"block": block}
    if variant in BLOCK_NORMS:
        options["block_norm"] = variant
    elif variant:
        options["grn_aggregation"] = variant
    return options


@dataclass(frozen=True)
class Cell:
    """One cell of a table: the fine-tuned runs that share ``k``, ``init`` and ``block`` (an architecture name of
    :func:`arch_options`), one per (pretraining run, fine-tuning seed) of :meth:`Grid.origins`. ``tuned``: the
    architecture fine-tuned, when it is not the pretrained one (GRN removed or added at fine-tuning)."""

    k: int | None
    init: str  # 'scratch', 'fcmae' or 'fcmae-denseconv'
    block: str = "v2"
    tuned: str | None = None


class BudgetSpent(Exception):
    """The invocation's training budget (``deadline``) ran out before a run that has not finished."""


class Grid:
    """Runs of the grid by name; each is trained (or resumed, or found finished, or read from its record) on first
    use. Runs train into ``output/runs``; every finished run is recorded in ``records`` (default
    ``output/records``, see :mod:`.records`). With a ``deadline`` (``time.monotonic()`` seconds) no run starts after
    it: :class:`BudgetSpent` instead, and a later invocation goes on from there."""

    def __init__(self, scale: Scale, folder: str, output: Path, recipes: dict[str, Recipe] | None = None,
                 deadline: float | None = None, records: Records | None = None) -> None:
        self.scale, self.folder, self.output, self.deadline = scale, folder, output, deadline
        self.records = records or Records(output / RECORDS_FOLDER)
        self.records.check_data(data_fingerprint(Path(folder)))
        self.recipes = dict(recipes or {})  # init -> its fine-tuning recipe (chosen by the sweep); else the preset's
        self.results: dict[str, RunResult] = {}
        self.after_run: Callable[[str], None] | None = None  # called with a run's name once it is trained or found

    def _common(self, name: str, seed: int, epochs: int, task: str) -> TrainConfig:
        s = self.scale
        return load_preset(s.preset, task=task, model=s.model, img_size=s.img_size, data=self.folder, seed=seed,
                           output=str(self.output / "runs"), name=name, resume="auto", num_classes=s.num_classes,
                           val_images_per_class=s.val_images_per_class, batch_size=s.batch_size, epochs=epochs,
                           num_workers=s.workers, eval_every=-(-epochs // s.eval_points), keep_last=1,
                           progress=False)

    def pretrain(self, block: str = "v2", sparse: bool = True, seed: int = 0, weights: bool = False) -> RunResult:
        """FCMAE on every training image (labels ignored; the tuning split's too, as any unlabeled image).
        ``weights``: the run's checkpoint is needed (a recorded run without one trains again)."""
        return self.run(*self.pretrain_config(block, sparse, seed), weights=weights)

    @staticmethod
    def pretrain_name(block: str, sparse: bool, seed: int) -> str:
        return f"pretrain-{block}" + ("" if sparse else "-denseconv") + f"-p{seed}"

    def pretrain_config(self, block: str, sparse: bool, seed: int) -> tuple[str, TrainConfig]:
        name = self.pretrain_name(block, sparse, seed)
        s = self.scale
        return name, dataclasses.replace(self._common(name, seed, s.pretrain_epochs, "pretrain"), **arch_options(block),
                                         sparse_encoder=sparse, images_per_class=s.images_per_class,
                                         decoder_dim=s.decoder_dim, recon_every=s.pretrain_epochs)

    def finetune(self, k: int | None, init: str, block: str = "v2", seed: int = 0, recipe: Recipe | None = None,
                 tune: bool = False, pretrain_seed: int = 0, tuned: str | None = None,
                 weights: bool = False) -> RunResult:
        """Fine-tune on ``k`` labeled images per class (None: all) from ``init``: 'scratch', 'fcmae' or
        'fcmae-denseconv' (pretraining run ``pretrain_seed``), with ``recipe`` (default: the one chosen for ``init``,
        else the preset's with :data:`.recipes.FINETUNED_LAYER_DECAY`). The labeled images are a random pick per
        seed from train/ less the tuning split; ``tune`` scores on the tuning split instead of val/ (the sweep). With
        few labels, batches of at most 32 give more optimizer steps per image. Scratch with every label trains for the
        pretraining's epochs too (:meth:`epochs`). ``tuned``: fine-tune that architecture instead of ``block``'s.
        ``weights``: as for :meth:`pretrain`."""
        name, config = self.finetune_config(k, init, block, seed, recipe, tune, pretrain_seed, tuned)
        if init != "scratch" and not self.available(name, config, weights):  # it trains: its init must be there
            self.pretrain(block, sparse=init == "fcmae", seed=pretrain_seed, weights=True)
        return self.run(name, config, weights)

    def finetune_config(self, k: int | None, init: str, block: str, seed: int, recipe: Recipe | None, tune: bool,
                         pretrain_seed: int, tuned: str | None = None) -> tuple[str, TrainConfig]:
        recipe = self._recipe(init, recipe)
        name = self.finetune_name(k, init, block, seed, recipe, tune, pretrain_seed, tuned)
        s, epochs = self.scale, self.epochs(k, init)
        options = arch_options(tuned or block)
        if tuned:  # GRN removed or added at fine-tuning: loading changes GRN only where the block norm is named
            options.setdefault("block_norm", default_block_norm(options["block"]))
        config = dataclasses.replace(
            self._common(name, seed, epochs, "finetune"), **options,
            images_per_class=k or s.images_per_class,
            ema_decay=0.0, image_selection="random", tune_fraction=TUNE_FRACTION,
            eval_split="tune" if tune else "val", batch_size=s.batch_size if k is None else min(s.batch_size, 32),
            **(recipe.settings(epochs) if recipe else {"layer_decay": FINETUNED_LAYER_DECAY}))
        if init != "scratch":
            config.pretrained = str(self.output / "runs" / self.pretrain_name(block, init == "fcmae", pretrain_seed))
        return name, config

    def _recipe(self, init: str, recipe: Recipe | None) -> Recipe | None:
        return recipe or self.recipes.get(init) or self.recipes.get(init.removesuffix("-denseconv"))

    def finetune_name(self, k: int | None, init: str, block: str = "v2", seed: int = 0, recipe: Recipe | None = None,
                      tune: bool = False, pretrain_seed: int = 0, tuned: str | None = None) -> str:
        """The run directory name of :meth:`finetune` with these arguments."""
        recipe = self._recipe(init, recipe)
        origin = init if init == "scratch" else f"{init}-p{pretrain_seed}"
        if tuned:
            origin = f"{origin}-from-{block}"
        return (f"finetune-{tuned or block}-{origin}-k{shot_label(k)}-s{seed}" + (f"-{recipe.name}" if recipe else "")
                + ("-tune" if tune else ""))

    def cell_names(self, cell: Cell) -> list[str]:
        """The run directory names of ``cell``'s runs and of the pretraining runs they start from."""
        origins = self.origins(cell.init)
        names = [self.finetune_name(cell.k, cell.init, cell.block, seed, pretrain_seed=p, tuned=cell.tuned)
                 for p, seeds in origins for seed in seeds]
        if cell.init != "scratch":
            names += [self.pretrain_name(cell.block, cell.init == "fcmae", p) for p, _ in origins]
        return names

    def epochs(self, k: int | None, init: str) -> int:
        """Fine-tuning epochs of a cell. With every label (K=all) both arms get the same training budget: scratch
        trains for the FCMAE arm's pretraining plus fine-tuning epochs (the paper's comparison at K=all is also
        at unequal schedules: 800 + 100 FCMAE epochs vs 300 supervised)."""
        epochs = self.scale.finetune_epochs[k]
        return epochs + self.scale.pretrain_epochs if (k is None and init == "scratch") else epochs

    def origins(self, init: str) -> list[tuple[int, list[int]]]:
        """The ``(pretraining seed, fine-tuning seeds)`` of a cell's runs: one group per pretraining run, a single
        group for scratch (it has no pretraining run to vary)."""
        seeds = list(range(self.scale.finetune_seeds))
        return [(0, seeds)] if init == "scratch" else [(p, seeds) for p in range(self.scale.pretrain_seeds)]

    def cell_runs(self, cell: Cell) -> list[list[RunResult]]:
        """Every run of ``cell`` (trained or resumed on first use), ``[pretraining run][fine-tuning seed]``."""
        return [[self.finetune(cell.k, cell.init, cell.block, seed, pretrain_seed=p, tuned=cell.tuned)
                 for seed in seeds] for p, seeds in self.origins(cell.init)]

    def cell_finished(self, cell: Cell) -> bool:
        """Whether every run of ``cell`` (and its pretraining) has finished or is recorded, without training."""
        configs = [self.finetune_config(cell.k, cell.init, cell.block, seed, None, False, p, cell.tuned)
                   for p, seeds in self.origins(cell.init) for seed in seeds]
        if cell.init != "scratch":
            configs += [self.pretrain_config(cell.block, cell.init == "fcmae", p) for p, _ in self.origins(cell.init)]
        return all(self.available(name, config, weights=False) for name, config in configs)

    def available(self, name: str, config: TrainConfig, weights: bool) -> bool:
        """Whether run ``name`` needs no training: finished here, or (``weights`` not needed) recorded."""
        return _finished(config) or (not weights and self.records.has_run(name, config.to_dict()))

    def run(self, name: str, config: TrainConfig, weights: bool = False) -> RunResult:
        """Run ``name``: known already, or read from its record (weights not needed, not finished here), or found
        finished here and recorded (its record with its checkpoint: no Trainer built), or trained (resumed, or found
        finished but not recorded); a run trained here is recorded; then :attr:`after_run` measures it. Its ``config``
        is always its config.json's, so a run reads alike from here or from its record."""
        known = self.results.get(name)
        if known is not None and (known.checkpoint is not None or not weights):
            return known
        finished = _finished(config)
        if not finished and not weights and self.records.has_run(name, config.to_dict()):
            self.results[name] = self.records.run(name)
            return self.results[name]
        checkpoint = RunDir(Path(config.output) / config.name).latest_checkpoint() if finished else None
        if checkpoint is not None and self.records.has_run(name, config.to_dict()):  # found finished here, recorded:
            record = self.records.run(name)  # no model to build nor checkpoint to read (a Trainer would do both)
            known = RunResult(checkpoint.parent, record.history, checkpoint, config=record.config)
        else:
            if self.deadline is not None and time.monotonic() > self.deadline and not finished:
                raise BudgetSpent(f"the training budget of this invocation is spent before {name}")
            self.records.has_run(name, config.to_dict())  # a record of other settings: refused before training again
            print_line(f"[reproduce] {name}")
            known = train(config)
            release_freed_memory()  # the run's image cache and activations: kept by this process otherwise
            if known.interrupted:
                raise KeyboardInterrupt
            self.records.keep_run(known, figure=name == self.pretrain_name("v2", True, 0))  # the one a report shows
            known.config = self.records.run(name).config
        self.results[name] = known
        if self.after_run is not None:
            self.after_run(name)
            release_freed_memory()
        return known

    def finished_here(self, name: str) -> bool:
        """Whether run ``name`` finished in this grid's ``output/runs`` and still has its weights there."""
        if not self.records.has_run(name):
            return False
        folder = self.output / "runs" / name
        epochs = _last_epoch(folder / "metrics.csv")
        return (epochs is not None and epochs >= self.records.run(name).config["epochs"]
                and RunDir(folder).latest_checkpoint() is not None)

    def seconds(self, names: list[str]) -> float:
        return sum(self.results[n].history[-1]["time_s"] for n in names if self.results[n].history)


def check_enough_images(scale: Scale, folder: Path) -> None:
    """Refuse, before anything trains, a folder whose classes the scale uses hold fewer training images than one batch
    of its pretraining, or of a fine-tuning on its fewest labels (the train split less the tuning split): the runs
    would fail one by one, with advice a grid cannot follow."""
    train = folder / "train"
    classes = data.list_classes(train)  # images loose beside the class folders are refused, as training does
    counts = [len(data.list_images(train / name, confined=True)) for name in classes[:scale.num_classes]]
    pretraining = sum(min(n, scale.images_per_class or n) for n in counts)
    fewest = min((k for k in scale.shots if k is not None), default=None)
    fit = [n - max(1, round(TUNE_FRACTION * n)) for n in counts]
    finetuning = sum(min(n, fewest or n) for n in fit)
    for images, batch, what in ((pretraining, scale.batch_size, "pretraining"),
                                (finetuning, min(scale.batch_size, 32), f"fine-tuning on K={shot_label(fewest)}")):
        if images < batch:
            raise ValueError(f"--data {folder}: the {len(counts)} classes this scale uses hold {images} training "
                             f"image(s) for {what}, fewer than one batch ({batch}); give a folder with more images")


def data_fingerprint(folder: Path) -> str:
    """Which images ``folder`` holds: :func:`~cnx2lite.train.run_data.fingerprint` of its train/ and val/ splits."""
    return "-".join(fingerprint(data.build_dataset(folder, split), folder) for split in data.SPLITS
                    if (folder / split).is_dir())


def _finished(config: TrainConfig) -> bool:
    """Whether the run ``config`` describes has logged its last epoch (read from its metrics.csv, nothing trained)."""
    epochs = _last_epoch(Path(config.output) / config.name / "metrics.csv")
    return epochs is not None and epochs >= config.epochs


def _last_epoch(metrics: Path) -> float | None:
    """The last epoch a run's ``metrics.csv`` logged; None before the first (or without the file)."""
    return last_epoch(read_metrics(metrics)) if metrics.is_file() else None
