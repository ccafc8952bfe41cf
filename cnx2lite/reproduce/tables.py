"""The report's four tables: each measures its rows (with bootstrap intervals), draws its figure and writes its
section of ``report.md``, beside the paper's numbers."""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import analysis, data
from ..analysis import plot_collapse_by_layer
from ..evaluation import KNN_K, KNN_TEMPERATURE, load_model
from ..stats import Estimate, bootstrap_accuracy, bootstrap_mean, paired_bootstrap
from ..train import RunResult
from .figures import plot_bars, plot_label_efficiency, plot_pretraining_knn
from .grid import Evaluator, shot_label


# The paper's ImageNet-1K fine-tuning top-1 (Woo et al. 2023), 800-epoch FCMAE unless noted.
PAPER = {
    "fcmae_vs_scratch": "V2-B: 84.3 supervised vs 84.6 FCMAE (+0.3); no low-label results in the paper",
    "codesign": "B: V1 83.8 -> 83.7 (-0.1), V2 84.3 -> 84.6 (+0.3); L: V1 84.3 -> 84.4 (+0.1), V2 84.5 -> 85.6 (+1.1)",
    "sparse": "B: sparse conv 83.7 vs dense conv 79.3 (+4.4)",
    "collapse": "Fig. 4: V1-FCMAE shows dead and saturated channels and low distance in deep layers; V2 does not",
}


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
    plot_bars(bars, output / "codesign.png", f"co-design: fine-tuned at K={k}", xlabel="block design")
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
