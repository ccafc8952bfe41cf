"""``cnx2lite reproduce``: the experiments the paper's claims rest on, at a scale that fits the machine.

Protocol (label-efficient, as SimCLR and DINO report 1% and 10% of ImageNet labels): pretraining
uses every training image with its label ignored; fine-tuning uses ``K`` labeled images per class;
evaluation uses the val split (all of it at the cpu and gpu scales). Four tables, each row beside the paper's number:

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
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import Tensor

from . import analysis, data
from .analysis import plot_collapse_by_layer
from .amp import resolve_amp
from .argtypes import positive
from .evaluation import KNN_K, KNN_TEMPERATURE, load_model, predict, probe
from .models import ConvNeXtV2
from .stats import RESAMPLES, Estimate, bootstrap_accuracy, bootstrap_mean, paired_bootstrap
from .train import RunResult, TrainConfig, load_preset, train
from .train.distributed import resolve_device


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
    workers: int = 1
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
# The paper's ImageNet-1K fine-tuning top-1 (Woo et al. 2023), 800-epoch FCMAE unless noted.
PAPER = {
    "fcmae_vs_scratch": "V2-B: 84.3 supervised vs 84.6 FCMAE (+0.3); no low-label results in the paper",
    "codesign": "B: V1 83.8 -> 83.7 (-0.1), V2 84.3 -> 84.6 (+0.3); L: V1 84.3 -> 84.4 (+0.1), V2 84.5 -> 85.6 (+1.1)",
    "sparse": "B: sparse conv 83.7 vs dense conv 79.3 (+4.4)",
    "collapse": "Fig. 4: V1-FCMAE shows dead and saturated channels and low distance in deep layers; V2 does not",
}


FINETUNED_LAYER_DECAY = 0.9  # the paper's fine-tuning of atto..nano; scratch trains every layer at the full lr


def shot_label(k: int | None) -> str:
    return "all" if k is None else str(k)


class Grid:
    """Runs of the grid by name; each is trained (or resumed, or found finished) on first use."""

    def __init__(self, scale: Scale, folder: str, output: Path, seeds: int) -> None:
        self.scale, self.folder, self.output, self.seeds = scale, folder, output, seeds
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

    def finetune(self, k: int | None, init: str, block: str = "v2", seed: int = 0) -> RunResult:
        """Fine-tune on ``k`` labeled images per class (None: all) from ``init``: 'scratch', 'fcmae' or
        'fcmae-denseconv'. Pretrained encoders get layer-wise lr decay; from scratch, every layer trains at full lr.
        With few labels, batches of at most 32 give more optimizer steps per image."""
        name = f"finetune-{block}-{init}-k{shot_label(k)}-s{seed}"
        s = self.scale
        config = dataclasses.replace(
            self._common(name, seed, s.finetune_epochs[k], "finetune"), block=block,
            images_per_class=k or s.images_per_class, ema_decay=0.0,
            layer_decay=1.0 if init == "scratch" else FINETUNED_LAYER_DECAY,
            batch_size=s.batch_size if k is None else min(s.batch_size, 32))
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


# --------------------------------------------------------------------------------------------------
# Tables: each measures its rows, draws its figure and writes its report section
# --------------------------------------------------------------------------------------------------
@dataclass
class Row:
    table: str
    row: str
    metric: str
    estimate: Estimate
    paper: str = ""

    def csv(self) -> dict:
        e = self.estimate
        return {"table": self.table, "row": self.row, "metric": self.metric, "value": round(e.value, 4),
                "ci_low": round(e.low, 4), "ci_high": round(e.high, 4), "paper": self.paper}


@dataclass
class Table:
    rows: list[Row]
    section: str  # markdown


def knn_end(run: RunResult) -> str:
    """The kNN monitor's last value of a pretraining run."""
    values = run.metric("knn_top1")
    return f"{values[-1]:.1f}%" if values else "not measured"


def verdict(diff: Estimate, claim: str, unit: str = "points", digits: int = 1) -> str:
    """Whether a difference the paper predicts to be positive reproduced, from its interval."""
    shown = f"{diff.value:.{digits}f} [{diff.low:.{digits}f}, {diff.high:.{digits}f}]{' ' + unit if unit else ''}"
    if not diff.excludes_zero:
        return f"**not shown at this budget**: {claim} is within noise ({shown}, interval includes 0)"
    if diff.low > 0:
        return f"**reproduces**: {claim} ({shown}, interval excludes 0)"
    return f"**contradicted at this budget**: the opposite of {claim} ({shown})"


def table_label_efficiency(ev: Evaluator, output: Path) -> Table:
    rows, lines, claims = [], [], []
    curves: dict[str, dict[str, tuple[Estimate, Estimate]]] = {"fine-tuned": {}, "kNN": {}}
    for k in ev.grid.scale.shots:
        label = shot_label(k)
        for probe_name, correct, claim in (("fine-tuned", ev.finetuned, "FCMAE init beats scratch"),
                                           ("kNN", ev.knn, "FCMAE features beat random ones")):
            fcmae, scratch = correct(k, "fcmae"), correct(k, "scratch")
            a, b, diff = bootstrap_accuracy(fcmae), bootstrap_accuracy(scratch), paired_bootstrap(fcmae, scratch)
            paper = PAPER["fcmae_vs_scratch"] if (k is None and probe_name == "fine-tuned") else ""
            rows += [Row("1", f"K={label} FCMAE", f"{probe_name} top-1", a),
                     Row("1", f"K={label} scratch", f"{probe_name} top-1", b),
                     Row("1", f"K={label} FCMAE - scratch", f"{probe_name} top-1", diff, paper)]
            curves[probe_name][label] = (a, b)
            lines.append(f"| {label} | {probe_name} | {a} | {b} | {diff} |")
            claims.append(f"- K={label}, {probe_name}: {verdict(diff, claim)}")
    plot_label_efficiency(curves, output / "label_efficiency.png")
    pretrained = ev.grid.pretrain("v2")
    plot_pretraining_knn({"V2 sparse": pretrained}, output / "pretraining_knn.png")
    bank = pretrained.config["knn_images_per_class"]
    section = f"""## 1. FCMAE vs scratch, by labeled images per class

| K | probe | FCMAE top-1 | scratch top-1 | FCMAE - scratch |
|---|---|---|---|---|
{chr(10).join(lines)}

{chr(10).join(claims)}

Paper: {PAPER['fcmae_vs_scratch']}. kNN: k={KNN_K}, temperature {KNN_TEMPERATURE}, cosine similarity of pooled,
layer-normalized features; its memory bank is the same K labeled images per class, and "scratch" is the random init.
The kNN monitor during pretraining (bank: up to {bank} labeled images per class) ended at
{pretrained.metric('knn_top1')[-1]:.1f}%; tables 2 and 3 give it for the V1 and dense-conv runs.

![label efficiency](label_efficiency.png)

![kNN during pretraining](pretraining_knn.png)
"""
    return Table(rows, section)


def table_codesign(ev: Evaluator, output: Path) -> Table:
    k = ev.grid.scale.main_shot
    c = {(block, init): ev.finetuned(k, init, block).float() for block in ("v1", "v2") for init in ("scratch", "fcmae")}
    rows, lines, bars = [], [], {}
    for block in ("v1", "v2"):
        scratch, fcmae = bootstrap_accuracy(c[(block, "scratch")]), bootstrap_accuracy(c[(block, "fcmae")])
        gain = paired_bootstrap(c[(block, "fcmae")], c[(block, "scratch")])
        name = block.upper()
        rows += [Row("2", f"{name} scratch", "fine-tuned top-1", scratch),
                 Row("2", f"{name} FCMAE", "fine-tuned top-1", fcmae),
                 Row("2", f"{name} FCMAE gain", "fine-tuned top-1", gain, PAPER["codesign"])]
        lines.append(f"| {name} | {scratch} | {fcmae} | {gain} |")
        bars[name] = {"scratch": scratch, "FCMAE": fcmae}
    # the interaction, per seed and image: (V2 FCMAE - V2 scratch) - (V1 FCMAE - V1 scratch)
    extra = paired_bootstrap(c[("v2", "fcmae")] - c[("v2", "scratch")], c[("v1", "fcmae")] - c[("v1", "scratch")])
    rows.append(Row("2", "V2 gain - V1 gain", "fine-tuned top-1", extra, PAPER["codesign"]))
    plot_bars(bars, output / "codesign.png", f"co-design: fine-tuned at K={k}")
    section = f"""## 2. Co-design: FCMAE with V1 and V2 blocks (fine-tuned at K={k})

| block | scratch | FCMAE | FCMAE gain |
|---|---|---|---|
{chr(10).join(lines)}

V2 gain minus V1 gain: {verdict(extra, 'FCMAE helps V2 more than V1')}.
Paper: {PAPER['codesign']}. kNN monitor at the end of pretraining: V1 {knn_end(ev.grid.pretrain("v1"))},
V2 {knn_end(ev.grid.pretrain("v2"))}.

![co-design](codesign.png)
"""
    return Table(rows, section)


def table_sparse(ev: Evaluator, output: Path) -> Table:
    k = ev.grid.scale.main_shot
    sparse_correct, dense_correct = ev.finetuned(k, "fcmae"), ev.finetuned(k, "fcmae-denseconv")
    sparse, dense = bootstrap_accuracy(sparse_correct), bootstrap_accuracy(dense_correct)
    diff = paired_bootstrap(sparse_correct, dense_correct)
    rows = [Row("3", "sparse conv FCMAE", "fine-tuned top-1", sparse),
            Row("3", "dense conv FCMAE", "fine-tuned top-1", dense),
            Row("3", "sparse - dense", "fine-tuned top-1", diff, PAPER["sparse"])]
    plot_bars({"FCMAE encoder": {"sparse conv": sparse, "dense conv": dense}}, output / "sparse_vs_dense.png",
              f"sparse vs dense-conv FCMAE: fine-tuned at K={k}")
    section = f"""## 3. Sparse vs dense convolution in the FCMAE encoder (fine-tuned at K={k})

Sparse: {sparse}; dense conv on the zero-filled image: {dense}.
{verdict(diff, 'the sparse encoder beats dense convolution')}. Paper: {PAPER['sparse']}.
kNN monitor at the end of pretraining: sparse {knn_end(ev.grid.pretrain("v2"))}, dense conv
{knn_end(ev.grid.pretrain("v2", sparse=False))}.

![sparse vs dense](sparse_vs_dense.png)
"""
    return Table(rows, section)


COLLAPSE_STATS = (("distance", 1.0), ("dead", 100.0), ("saturated", 100.0))  # statistic, scale (fractions -> %)


def table_collapse(ev: Evaluator, output: Path, count: int = 16) -> Table:
    """Feature collapse on ``count`` val images, classes alternating (the first of each class, then the second...)."""
    images = torch.stack([ev.val_set[i][0] for i in data.distinct_class_order(ev.val_set.targets)[:count]])
    supervised = load_model(ev.grid.finetune(None, "scratch", "v2").run_dir, classifier=True)[0]
    models = {"V1 FCMAE": ev.encoder("fcmae", "v1"), "V2 FCMAE": ev.encoder("fcmae", "v2"),
              "V2 random init": ev.encoder("scratch", "v2"), "V2 supervised (all labels)": supervised}
    stats = {label: analysis.collapse_by_layer(model.eval(), images) for label, model in models.items()}
    per_image = {label: {stat: torch.stack([getattr(layer, stat) for layer in layers]).mean(0) * scale  # (images,)
                         for stat, scale in COLLAPSE_STATS} for label, layers in stats.items()}  # block means
    rows, lines = [], []
    for label, values in per_image.items():
        distance, dead, saturated = (bootstrap_mean(values[stat]) for stat, _ in COLLAPSE_STATS)
        rows += [Row("4", label, "mean feature cosine distance", distance, PAPER["collapse"]),
                 Row("4", label, "dead channels (%)", dead), Row("4", label, "saturated channels (%)", saturated)]
        lines.append(f"| {label} | {distance.value:.3f} [{distance.low:.3f}, {distance.high:.3f}] | {dead} | "
                     f"{saturated} |")
    # the claim: V2 FCMAE's channels are more diverse than V1 FCMAE's, paired over the same images
    diff = bootstrap_mean(per_image["V2 FCMAE"]["distance"] - per_image["V1 FCMAE"]["distance"])
    rows.append(Row("4", "V2 FCMAE - V1 FCMAE", "mean feature cosine distance", diff, PAPER["collapse"]))
    plot_collapse_by_layer(stats, title="feature collapse: MLP activations per block").savefig(
        output / "feature_collapse.png", dpi=100)
    shutil.copy(ev.grid.pretrain("v2").run_dir / "reconstruction.png", output / "reconstruction.png")
    section = f"""## 4. Feature collapse

Per-block MLP activations (after GELU) of {len(images)} val images of distinct classes at {ev.grid.scale.img_size} px.
Distance: mean pairwise channel cosine distance; dead: channels that never activate; saturated: channels constant
over positions (definitions in `cnx2lite.analysis`). Each is averaged over blocks, with a 95% bootstrap interval over
the images.

| encoder | mean distance | dead channels (%) | saturated channels (%) |
|---|---|---|---|
{chr(10).join(lines)}

V2 FCMAE minus V1 FCMAE, mean distance: {verdict(diff, "GRN keeps V2's channels more diverse", "", 3)}.
Paper: {PAPER['collapse']}.

![feature collapse](feature_collapse.png)

FCMAE reconstructions of val images (V2, end of pretraining):

![reconstructions](reconstruction.png)
"""
    return Table(rows, section)


TABLES = {"1 FCMAE vs scratch": table_label_efficiency, "2 co-design": table_codesign,
          "3 sparse vs dense conv": table_sparse, "4 feature collapse": table_collapse}


# --------------------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------------------
def _errorbar(ax, x, estimates: list[Estimate], **style) -> None:
    values = [e.value for e in estimates]
    errors = [[e.value - e.low for e in estimates], [e.high - e.value for e in estimates]]
    ax.errorbar(x, values, yerr=errors, capsize=3, **style)


def plot_label_efficiency(curves: dict, path: Path) -> None:
    """Top-1 against K for FCMAE and scratch, fine-tuned (solid) and kNN (dashed), with 95% intervals."""
    fig = Figure(figsize=(6, 3.8), layout="constrained")
    ax = fig.subplots()
    for probe_name, ls in (("fine-tuned", "-"), ("kNN", "--")):
        labels = list(curves[probe_name])
        x = range(len(labels))
        for i, (init, marker) in enumerate((("FCMAE", "o"), ("scratch", "s"))):
            _errorbar(ax, [v + (0.04 if i else -0.04) for v in x], [curves[probe_name][k][i] for k in labels],
                      marker=marker, ls=ls, label=f"{init}, {probe_name}")
        ax.set_xticks(list(x), [f"K={k}" for k in labels])
    ax.set(xlabel="labeled images per class", ylabel="val top-1 (%)",
           title="FCMAE vs scratch (95% bootstrap intervals)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def plot_bars(groups: dict[str, dict[str, Estimate]], path: Path, title: str) -> None:
    """Grouped bars with 95% intervals: ``{group: {bar label: estimate}}``."""
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    bars = list(next(iter(groups.values())))
    width = 0.8 / len(bars)
    for j, bar in enumerate(bars):
        x = [i + (j - (len(bars) - 1) / 2) * width for i in range(len(groups))]
        estimates = [groups[g][bar] for g in groups]
        ax.bar(x, [e.value for e in estimates], width, label=bar)
        _errorbar(ax, x, estimates, fmt="none", ecolor="k")
    ax.set_xticks(range(len(groups)), list(groups))
    ax.set(ylabel="val top-1 (%)", title=title)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


def plot_pretraining_knn(results: dict[str, RunResult], path: Path) -> None:
    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    for label, result in results.items():
        ax.plot(*result.series("knn_top1"), marker="o", label=label)
    ax.set(xlabel="pretraining epoch", ylabel="kNN val top-1 (%)", title="kNN monitor during FCMAE pretraining")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=100)


# --------------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------------
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
    ev = Evaluator(grid, resolve_device("auto"))
    tables, times = [], []
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
Fine-tuning: K labeled images per class, epochs {epochs}; pretrained encoders with layer-wise lr decay
{FINETUNED_LAYER_DECAY}, scratch without. Evaluation: {len(ev.val_set)} val images. Fine-tuning seeds: {seeds}
(pretraining: one run, seed 0). Intervals: 95% paired bootstrap over the val images and the fine-tuning seeds
({RESAMPLES:,} resamples; the pretraining run is not resampled); each difference is the first minus the second.
Machine: {os.cpu_count()} CPU cores, device {ev.device}, evaluation autocast {str(ev.amp_dtype).removeprefix('torch.')}.

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
