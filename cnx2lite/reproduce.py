"""``cnx2lite reproduce``: the experiments the paper's claims rest on, at a scale that fits the machine.

Protocol (label-efficient, as SimCLR and DINO report 1% and 10% of ImageNet labels): pretraining
uses every training image with its label ignored; fine-tuning uses ``K`` labeled images per class;
evaluation uses the whole val split. Four tables, each row beside the paper's number:

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
from .amp import resolve_amp
from .evaluation import KNN_K, KNN_TEMPERATURE, load_model, predict, probe
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
        """Fine-tune on ``k`` labeled images per class from ``init``: 'scratch', 'fcmae' or 'fcmae-denseconv'.
        Pretrained encoders get the paper's layer-wise lr decay (0.9); from scratch, every layer trains at full lr."""
        name = f"finetune-{block}-{init}-k{shot_label(k)}-s{seed}"
        s = self.scale
        config = dataclasses.replace(
            self._common(name, seed, s.finetune_epochs[k], "finetune"), block=block, images_per_class=k or s.images_per_class,
            ema_decay=0.0, layer_decay=1.0 if init == "scratch" else FINETUNED_LAYER_DECAY,
            batch_size=min(s.batch_size, 32 if k is not None else s.batch_size))
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
    """Per-image correctness on the whole val split, for fine-tuned runs and frozen-encoder kNN."""

    def __init__(self, grid: Grid, device: torch.device) -> None:
        self.grid, self.device = grid, device
        self.amp_dtype = resolve_amp("auto", device)  # inference: bf16 where native, also at 96 px
        s = grid.scale
        folder = data.find_image_folder(Path(grid.folder))
        self.folder = folder
        self.transform = data.eval_transform(s.img_size)
        classes = data.build_dataset(folder, "train", num_classes=s.num_classes, images_per_class=1).classes
        self.classes = classes
        self.val_set = data.build_dataset(folder, "val", self.transform, classes=classes,
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

    def encoder(self, init: str, block: str = "v2"):
        if init == "scratch":
            return load_model("random", self.grid.scale.model, block)[0]
        return load_model(self.grid.pretrain(block, sparse=init == "fcmae").run_dir)[0]


# --------------------------------------------------------------------------------------------------
# Tables
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
        return {"table": self.table, "row": self.row, "metric": self.metric, "value": round(e.value, 2),
                "ci_low": round(e.low, 2), "ci_high": round(e.high, 2), "paper": self.paper}


def verdict(diff: Estimate, claim: str) -> str:
    """Whether a difference the paper predicts to be positive reproduced, from its interval."""
    if diff.low > 0:
        return f"**reproduces**: {claim} ({diff} points, interval excludes 0)"
    if diff.high < 0:
        return f"**contradicted at this budget**: the opposite of {claim} ({diff} points)"
    return f"**not shown at this budget**: {claim} is within noise ({diff} points, interval includes 0)"


def table_label_efficiency(ev: Evaluator) -> tuple[list[Row], list[str], dict]:
    rows, lines, curves = [], [], {"fine-tuned": {}, "kNN": {}}
    for k in ev.grid.scale.shots:
        label = shot_label(k)
        for probe_name, correct in (("fine-tuned", ev.finetuned), ("kNN", ev.knn)):
            fcmae, scratch = correct(k, "fcmae"), correct(k, "scratch")
            a, b, diff = bootstrap_accuracy(fcmae), bootstrap_accuracy(scratch), paired_bootstrap(fcmae, scratch)
            paper = PAPER["fcmae_vs_scratch"] if (k is None and probe_name == "fine-tuned") else ""
            rows += [Row("1", f"K={label} FCMAE", f"{probe_name} top-1", a),
                     Row("1", f"K={label} scratch", f"{probe_name} top-1", b),
                     Row("1", f"K={label} FCMAE - scratch", f"{probe_name} top-1", diff, paper)]
            curves[probe_name][label] = (a, b)
            lines.append(f"| {label} | {probe_name} | {a} | {b} | {diff} |")
    return rows, lines, curves


def table_codesign(ev: Evaluator) -> tuple[list[Row], list[str], Estimate]:
    k = ev.grid.scale.main_shot
    c = {(block, init): ev.finetuned(k, init, block).float() for block in ("v1", "v2") for init in ("scratch", "fcmae")}
    rows, lines = [], []
    for block in ("v1", "v2"):
        scratch, fcmae = bootstrap_accuracy(c[(block, "scratch")]), bootstrap_accuracy(c[(block, "fcmae")])
        gain = paired_bootstrap(c[(block, "fcmae")], c[(block, "scratch")])
        rows += [Row("2", f"{block.upper()} scratch", "fine-tuned top-1", scratch),
                 Row("2", f"{block.upper()} FCMAE", "fine-tuned top-1", fcmae),
                 Row("2", f"{block.upper()} FCMAE gain", "fine-tuned top-1", gain, PAPER["codesign"])]
        lines.append(f"| {block.upper()} | {scratch} | {fcmae} | {gain} |")
    # difference of the two gains, per seed and image: (V2 FCMAE - V2 scratch) - (V1 FCMAE - V1 scratch)
    extra = paired_bootstrap(c[("v2", "fcmae")] - c[("v2", "scratch")], c[("v1", "fcmae")] - c[("v1", "scratch")])
    rows.append(Row("2", "V2 gain - V1 gain", "fine-tuned top-1", extra, PAPER["codesign"]))
    return rows, lines, extra


def table_sparse(ev: Evaluator) -> tuple[list[Row], Estimate]:
    k = ev.grid.scale.main_shot
    sparse, dense = ev.finetuned(k, "fcmae"), ev.finetuned(k, "fcmae-denseconv")
    diff = paired_bootstrap(sparse, dense)
    rows = [Row("3", "sparse conv FCMAE", "fine-tuned top-1", bootstrap_accuracy(sparse)),
            Row("3", "dense conv FCMAE", "fine-tuned top-1", bootstrap_accuracy(dense)),
            Row("3", "sparse - dense", "fine-tuned top-1", diff, PAPER["sparse"])]
    return rows, diff


def collapse_images(ev: Evaluator, count: int = 16) -> Tensor:
    """``count`` val images ``(count, 3, H, W)``, classes alternating (the first of each class, then the second...)."""
    return torch.stack([ev.val_set[i][0] for i in data.distinct_class_order(ev.val_set.targets)[:count]])


COLLAPSE_STATS = (("distance", 1.0), ("dead", 100.0), ("saturated", 100.0))


def table_collapse(ev: Evaluator) -> tuple[list[Row], list[str], dict]:
    images = collapse_images(ev)
    supervised_model = load_model(ev.grid.finetune(None, "scratch", "v2").run_dir, classifier=True)[0]
    models = {"V1 FCMAE": ev.encoder("fcmae", "v1"), "V2 FCMAE": ev.encoder("fcmae", "v2"),
              "V2 random init": ev.encoder("scratch", "v2"), "V2 supervised (all labels)": supervised_model}
    stats = {label: analysis.collapse_by_layer(model.eval(), images) for label, model in models.items()}
    rows, lines = [], []
    for label, layers in stats.items():
        # each statistic averaged over blocks, per image (N,), then a bootstrap over the images
        distance, dead, saturated = (bootstrap_mean(torch.stack([getattr(layer, stat) for layer in layers]).mean(0)
                                                    * scale) for stat, scale in COLLAPSE_STATS)
        rows += [Row("4", label, "mean feature cosine distance", distance, PAPER["collapse"]),
                 Row("4", label, "dead channels (%)", dead), Row("4", label, "saturated channels (%)", saturated)]
        lines.append(f"| {label} | {distance.value:.3f} [{distance.low:.3f}, {distance.high:.3f}] | {dead} | "
                     f"{saturated} |")
    return rows, lines, stats



# --------------------------------------------------------------------------------------------------
# Figures and report
# --------------------------------------------------------------------------------------------------
def _errorbar(ax, x, estimates: list[Estimate], **style) -> None:
    values = [e.value for e in estimates]
    errors = [[e.value - e.low for e in estimates], [e.high - e.value for e in estimates]]
    ax.errorbar(x, values, yerr=errors, capsize=3, **style)


def plot_label_efficiency(curves: dict, path: Path) -> None:
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


def run_reproduce(scale_name: str, data_arg: str | None = None, output: str | os.PathLike | None = None,
                  seeds: int = 1) -> Path:
    """Train (or resume) the grid of ``scale_name`` and write report.md, results.csv and figures; returns the report."""
    scale = SCALES[scale_name]
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    output = Path(output or f"runs/reproduce-{scale_name}")
    output.mkdir(parents=True, exist_ok=True)
    folder = str(data.find_image_folder(data.resolve_data_root(data_arg)))
    grid = Grid(scale, folder, output, seeds)
    ev = Evaluator(grid, resolve_device("auto"))
    timings: list[tuple[str, float, float]] = []  # (table, training s of its new runs, wall s of this invocation)

    def timed(table: str, build):
        before, start = set(grid.results), time.perf_counter()
        value = build(ev)
        new = [n for n in grid.results if n not in before]
        timings.append((table, grid.seconds(new), time.perf_counter() - start))
        return value

    rows1, lines1, curves = timed("1 FCMAE vs scratch", table_label_efficiency)
    rows2, lines2, extra_gain = timed("2 co-design", table_codesign)
    rows3, sparse_diff = timed("3 sparse vs dense conv", table_sparse)
    rows4, lines4, collapse = timed("4 feature collapse", table_collapse)
    rows = rows1 + rows2 + rows3 + rows4

    with open(output / "results.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["table", "row", "metric", "value", "ci_low", "ci_high", "paper"])
        writer.writeheader()
        writer.writerows(r.csv() for r in rows)
    plot_label_efficiency(curves, output / "label_efficiency.png")
    k = shot_label(scale.main_shot)
    plot_bars({block: {init: next(r.estimate for r in rows2 if r.row == f"{block} {init}")
                       for init in ("scratch", "FCMAE")} for block in ("V1", "V2")},
              output / "codesign.png", f"co-design: fine-tuned at K={k}")
    plot_bars({"FCMAE encoder": {r.row: r.estimate for r in rows3[:2]}}, output / "sparse_vs_dense.png",
              f"sparse vs dense-conv FCMAE: fine-tuned at K={k}")
    analysis.plot_collapse_by_layer(collapse, title="feature collapse: MLP activations per block").savefig(
        output / "feature_collapse.png", dpi=100)
    pretrain_runs = {"V2 sparse": grid.pretrain("v2"), "V1 sparse": grid.pretrain("v1"),
                     "V2 dense conv": grid.pretrain("v2", sparse=False)}
    plot_pretraining_knn(pretrain_runs, output / "pretraining_knn.png")
    shutil.copy(grid.pretrain("v2").run_dir / "reconstruction.png", output / "reconstruction.png")
    report = write_report(output, scale_name, scale, seeds, ev, lines1, lines2, lines4, rows1, extra_gain,
                          sparse_diff, rows3, timings, pretrain_runs)
    print(f"report: {report}")
    return report


def write_report(output: Path, scale_name: str, scale: Scale, seeds: int, ev: Evaluator, lines1: list[str],
                 lines2: list[str], lines4: list[str], rows1: list[Row], extra_gain: Estimate, sparse_diff: Estimate,
                 rows3: list[Row], timings: list[tuple[str, float, float]], pretrain_runs: dict[str, RunResult]) -> Path:
    n_val, n_classes = len(ev.val_set), len(ev.classes)
    pre = json.loads((pretrain_runs["V2 sparse"].run_dir / "config.json").read_text())
    train_images = pre["train_images"]
    k = shot_label(scale.main_shot)
    gains = {r.row.split()[0]: r.estimate for r in rows1 if r.row.endswith("FCMAE - scratch") and r.metric.startswith("fine")}
    knn_gains = {r.row.split()[0]: r.estimate for r in rows1 if r.row.endswith("FCMAE - scratch") and r.metric.startswith("kNN")}
    claims1 = "\n".join(f"- {shot}, fine-tuned: {verdict(gains[shot], 'FCMAE init beats scratch')}; kNN: "
                        f"{verdict(knn_gains[shot], 'FCMAE features beat random ones')}" for shot in gains)
    times = "\n".join(f"| {table} | {train_s / 60:.1f} min | {wall_s / 60:.1f} min |" for table, train_s, wall_s in timings)
    total_train = sum(t for _, t, _ in timings) / 60
    knn_text = ", ".join(f"{label} {run.metric('knn_top1')[-1]:.1f}%" for label, run in pretrain_runs.items()
                         if run.metric("knn_top1"))
    text = f"""# cnx2lite reproduce --scale {scale_name}

Written by `cnx2lite reproduce --scale {scale_name} --seeds {seeds}` from the numbers it measured; nothing here is
hand-written. {scale.model} at {scale.img_size} px on {ev.folder.name}: {n_classes} classes. Pretraining: {train_images}
training images, labels ignored, {scale.pretrain_epochs} epochs, mask ratio {pre['mask_ratio']}. Fine-tuning: K labeled
images per class, epochs {', '.join(f'K={shot_label(s)}: {e}' for s, e in scale.finetune_epochs.items())}; pretrained
encoders with layer-wise lr decay {FINETUNED_LAYER_DECAY}, scratch without. Evaluation: all {n_val} val images.
Fine-tuning seeds: {seeds} (pretraining: one run, seed 0). Intervals: 95% paired bootstrap over the val images and
the fine-tuning seeds ({RESAMPLES:,} resamples; the pretraining run is not resampled); each difference is the first
minus the second. Machine: {os.cpu_count()} CPU cores, device {ev.device}, autocast
{str(ev.amp_dtype).removeprefix('torch.')}.

## 1. FCMAE vs scratch, by labeled images per class

| K | probe | FCMAE top-1 | scratch top-1 | FCMAE - scratch |
|---|---|---|---|---|
{chr(10).join(lines1)}

{claims1}

Paper: {PAPER['fcmae_vs_scratch']}. kNN: k={KNN_K}, temperature {KNN_TEMPERATURE}, cosine similarity of pooled,
layer-normalized features; the memory bank is the same K labeled images per class. kNN top-1 at the end of pretraining
(bank of {pre['knn_images_per_class']} images per class): {knn_text}.

![label efficiency](label_efficiency.png)

![kNN during pretraining](pretraining_knn.png)

## 2. Co-design: FCMAE with V1 and V2 blocks (fine-tuned at K={k})

| block | scratch | FCMAE | FCMAE gain |
|---|---|---|---|
{chr(10).join(lines2)}

V2 gain minus V1 gain: {verdict(extra_gain, 'FCMAE helps V2 more than V1')}.
Paper: {PAPER['codesign']}.

![co-design](codesign.png)

## 3. Sparse vs dense convolution in the FCMAE encoder (fine-tuned at K={k})

Sparse: {rows3[0].estimate}; dense conv on the zero-filled image: {rows3[1].estimate}.
{verdict(sparse_diff, 'the sparse encoder beats dense convolution')}. Paper: {PAPER['sparse']}.

![sparse vs dense](sparse_vs_dense.png)

## 4. Feature collapse

Per-block MLP activations (after GELU) of {len(collapse_images(ev))} val images of distinct classes at {scale.img_size} px.
Distance: mean pairwise channel cosine distance averaged over blocks, 95% bootstrap interval over the images.
Dead: channels that never activate; saturated: channels that are constant over positions (definitions in
`cnx2lite.analysis`); averaged over blocks.

| encoder | mean distance | dead channels (%) | saturated channels (%) |
|---|---|---|---|
{chr(10).join(lines4)}

Paper: {PAPER['collapse']}.

![feature collapse](feature_collapse.png)

FCMAE reconstructions of val images (V2, end of pretraining):

![reconstructions](reconstruction.png)

## Run times (measured on this machine; training time summed over resumes)

| table | training of its runs | wall time of this invocation (training, if it ran here, and evaluation) |
|---|---|---|
{times}

Training in all: {total_train:.1f} min. Per-run metrics, curves and checkpoints: `{output / 'runs'}` (not committed).
"""
    path = output / "report.md"
    path.write_text(text)
    return path


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
    parser.add_argument("--seeds", type=int, default=1, help="fine-tuning seeds per cell (default: 1)")
    parser.add_argument("--data", default=None, help="data root (default: $CNX2LITE_DATA_ROOT, else <repo>/data)")
    parser.add_argument("--output", default=None, help="output folder (default: runs/reproduce-<scale>); "
                        "runs resume there")
    parser.set_defaults(run=run)
