"""The reproduction's grid: how big each run is (:class:`Scale`), the runs by name, trained or resumed on first use
(:class:`Grid`), and their per-image correctness on the val split (:class:`Evaluator`)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .. import data
from ..amp import resolve_amp
from ..evaluation import load_model, predict, probe
from ..models import ConvNeXtV2
from ..train import RunResult, TrainConfig, load_preset, train


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
    preset: str = "cpu"  # recipe and runtime (amp: see the cpu preset) the runs start from


SCALES = {
    # CI: seconds, checks that every table is produced, not the claims.
    "smoke": Scale("convnextv2_atto", 64, 1, 8, 64, shots=(4, None), main_shot=4, finetune_epochs={4: 2, None: 1},
                   num_classes=2, images_per_class=8, val_images_per_class=4, eval_points=1, workers=0,
                   preset="smoke"),
    # 2 CPU cores: atto at 96 px (a 3x3 grid of 32 px cells, 3 visible at ratio 0.6) on all of Imagenette.
    "cpu": Scale("convnextv2_atto", 96, 8, 64, 256, shots=(10, 50, None), main_shot=50,
                 finetune_epochs={10: 100, 50: 40, None: 4}),
    # one GPU: the paper's 224 px.
    "gpu": Scale("convnextv2_atto", 224, 100, 128, 512, shots=(10, 50, None), main_shot=50,
                 finetune_epochs={10: 200, 50: 100, None: 50}, workers=8, preset="imagenette-gpu"),
}
FINETUNED_LAYER_DECAY = 0.9  # the paper's fine-tuning of atto..nano, for every arm: one optimizer for all
TUNE_FRACTION = 0.1  # of every class of train/, carved out to choose recipes on (never val/); no labeled subset uses it
REGULARIZATION = {  # the fine-tuning augmentation and regularization a recipe takes
    "paper": dict(rand_augment="rand-m9-mstd0.5-inc1", reprob=0.25, drop_path=0.1, label_smoothing=0.1),
    "none": dict(rand_augment=None, reprob=0.0, drop_path=0.0, label_smoothing=0.0),
}
SWEEP_LRS = (2.5e-4, 1e-3, 4e-3)


@dataclass(frozen=True)
class Recipe:
    """A fine-tuning recipe of the sweep: peak lr and regularization (one of :data:`REGULARIZATION`). Every recipe warms
    up over the first eighth of its epochs; layer-wise lr decay is :data:`FINETUNED_LAYER_DECAY` for every run."""

    lr: float
    regularization: str = "paper"

    @property
    def name(self) -> str:
        return f"lr{self.lr:g}-{self.regularization}"

    def settings(self, epochs: int) -> dict:
        return dict(lr=self.lr, warmup_epochs=max(1, epochs // 8), **REGULARIZATION[self.regularization])


SWEEP = tuple(Recipe(lr, reg) for reg in REGULARIZATION for lr in SWEEP_LRS)  # the same trials for every arm


def shot_label(k: int | None) -> str:
    return "all" if k is None else str(k)


class Grid:
    """Runs of the grid by name; each is trained (or resumed, or found finished) on first use."""

    def __init__(self, scale: Scale, folder: str, output: Path, seeds: int,
                 recipes: dict[str, Recipe] | None = None) -> None:
        self.scale, self.folder, self.output, self.seeds = scale, folder, output, seeds
        self.recipes = dict(recipes or {})  # init -> its fine-tuning recipe (chosen by the sweep); else the preset's
        self.results: dict[str, RunResult] = {}

    def _common(self, name: str, seed: int, epochs: int, task: str) -> TrainConfig:
        s = self.scale
        return load_preset(s.preset, task=task, model=s.model, img_size=s.img_size, data=self.folder, seed=seed,
                           output=str(self.output / "runs"), name=name, resume="auto", num_classes=s.num_classes,
                           val_images_per_class=s.val_images_per_class, batch_size=s.batch_size, epochs=epochs,
                           num_workers=s.workers, eval_every=-(-epochs // s.eval_points), keep_last=1,
                           progress=False)

    def pretrain(self, block: str = "v2", sparse: bool = True) -> RunResult:
        """FCMAE on every training image (labels ignored), seed 0."""
        name = f"pretrain-{block}" + ("" if sparse else "-denseconv")
        s = self.scale
        config = dataclasses.replace(self._common(name, 0, s.pretrain_epochs, "pretrain"), block=block,
                                     sparse_encoder=sparse, images_per_class=s.images_per_class,
                                     decoder_dim=s.decoder_dim, recon_every=s.pretrain_epochs)
        return self._run(name, config)

    def finetune(self, k: int | None, init: str, block: str = "v2", seed: int = 0, recipe: Recipe | None = None,
                 tune: bool = False) -> RunResult:
        """Fine-tune on ``k`` labeled images per class (None: all) from ``init``: 'scratch', 'fcmae' or
        'fcmae-denseconv', with ``recipe`` (default: the one chosen for ``init``, else the preset's, with layer-wise
        lr decay for every init). The labeled images are a random pick per seed from train/ less the tuning split;
        ``tune`` scores on the tuning split instead of val/ (the sweep). With few labels, batches of at most 32 give
        more optimizer steps per image."""
        recipe = recipe or self.recipes.get(init) or self.recipes.get(init.removesuffix("-denseconv"))
        name = (f"finetune-{block}-{init}-k{shot_label(k)}-s{seed}" + (f"-{recipe.name}" if recipe else "")
                + ("-tune" if tune else ""))
        s, epochs = self.scale, self.scale.finetune_epochs[k]
        config = dataclasses.replace(
            self._common(name, seed, epochs, "finetune"), block=block, images_per_class=k or s.images_per_class,
            ema_decay=0.0, layer_decay=FINETUNED_LAYER_DECAY, image_selection="random", tune_fraction=TUNE_FRACTION,
            eval_split="tune" if tune else "val", batch_size=s.batch_size if k is None else min(s.batch_size, 32),
            **(recipe.settings(epochs) if recipe else {}))
        if init != "scratch":
            config.pretrained = str(self.pretrain(block, sparse=init == "fcmae").run_dir)
        return self._run(name, config)

    def _run(self, name: str, config: TrainConfig) -> RunResult:
        if name not in self.results:
            print(f"[reproduce] {name}", flush=True)
            result = train(config)
            if result.interrupted:
                raise KeyboardInterrupt
            self.results[name] = result
        return self.results[name]

    def seconds(self, names: list[str]) -> float:
        return sum(self.results[n].history[-1]["time_s"] for n in names if self.results[n].history)


class Evaluator:
    """Per-image correctness on the val split, for fine-tuned runs and frozen-encoder kNN."""

    def __init__(self, grid: Grid, device: torch.device) -> None:
        self.grid, self.device = grid, device
        self.amp_dtype = resolve_amp("auto", device)  # inference: bf16 where native, also at 96 px
        s = grid.scale
        self.folder = data.find_image_folder(Path(grid.folder))
        self.transform = data.eval_transform(s.img_size)
        # the training runs' classes, in their label order (one image per class is enough to list them)
        self.classes = data.build_dataset(self.folder, "train", num_classes=s.num_classes, images_per_class=1).classes
        self.val_set = data.build_dataset(self.folder, "val", self.transform, classes=self.classes,
                                          images_per_class=s.val_images_per_class)
        self.cache: dict[tuple, Tensor] = {}

    def finetuned(self, k: int | None, init: str, block: str = "v2") -> Tensor:
        """``(seeds, N)`` correctness of the fine-tuned runs (trained on first use, evaluated once)."""
        key = (k, init, block)
        if key not in self.cache:
            rows = []
            for seed in range(self.grid.seeds):
                model = load_model(self.grid.finetune(k, init, block, seed).run_dir, classifier=True)[0]
                logits, labels = predict(model.to(self.device), self.val_set, 128, self.device, self.amp_dtype)
                rows.append(logits.argmax(dim=1).eq(labels))
            self.cache[key] = torch.stack(rows)
        return self.cache[key]

    def knn(self, k: int | None, init: str, block: str = "v2") -> Tensor:
        """``(1, N)`` kNN correctness of a frozen encoder ('fcmae' or 'scratch' = random init), bank: ``k`` per class."""
        encoder = self.encoder(init, block)
        bank = data.build_dataset(self.folder, "train", self.transform, classes=self.classes,
                                  images_per_class=k or self.grid.scale.images_per_class)
        result = probe(encoder.to(self.device), bank, self.val_set, len(self.classes), "knn", 128, self.device,
                       self.amp_dtype)
        return result.correct[None]

    def encoder(self, init: str, block: str = "v2") -> ConvNeXtV2:
        """A frozen encoder: the FCMAE run's ('fcmae', 'fcmae-denseconv') or a random init ('scratch')."""
        if init == "scratch":
            return load_model("random", self.grid.scale.model, block)[0]
        return load_model(self.grid.pretrain(block, sparse=init == "fcmae").run_dir)[0]
