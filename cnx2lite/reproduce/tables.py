"""The report's tables 1-3 and the registry of all six (4: :mod:`.collapse_table`, 5: :mod:`.grn_table`, 6:
:mod:`.transfer_table`): each names
the cells it needs (trained first, see :mod:`cnx2lite.reproduce`), measures its rows with hierarchical bootstrap
intervals (pretraining runs, then fine-tuning seeds, then val images; :mod:`cnx2lite.bootstrap`), draws its figure and
writes its section of ``report.md``, beside the paper's numbers. The last section checks that the runs behind the
tables are sane."""
from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path

from ..bootstrap import (
    Estimate,
    hierarchical_accuracy,
    hierarchical_contrast,
)
from ..probes import KNN_TEMPERATURE
from .collapse_table import collapse_cells, collapse_measurements, table_collapse
from .evaluation import Evaluator
from .figures import differences_figure, plot_label_efficiency, plot_pretraining_knn
from .grid import Cell, Scale, shot_label
from .grn_table import grn_cells, table_grn
from .report_rows import (
    LOSS_OF_TRAINING,
    PAPER,
    PAPER_CODESIGN,
    PAPER_SPARSE_GAIN,
    Row,
    Table,
    TableSpec,
    difference,
    knn_ends,
    pretraining_runs,
    replicated,
    runs_described,
    shown,
    verdict,
)
from .transfer_table import table_transfer, transfer_cells, transfer_measurements, transfer_names

IMAGENET_TRAIN_IMAGES = 1_281_167  # ImageNet-1K's training split, what the paper pretrains on


# ------------------------------------------------------------------------------------------------- 1. FCMAE vs scratch
def label_efficiency_cells(scale: Scale) -> list[Cell]:
    shots = sorted(scale.shots, key=lambda k: k != scale.main_shot)  # the main K first: the other tables use it
    return [Cell(k, init) for k in shots for init in ("fcmae", "scratch")]


def table_label_efficiency(ev: Evaluator, output: Path) -> Table:
    rows, lines, claims = [], [], []
    curves: dict[str, dict[str, tuple[Estimate, Estimate]]] = {"fine-tuned": {}, "kNN": {}}
    s = ev.grid.scale
    for k in s.shots:
        label = shot_label(k)
        fine_tuned_claim = "FCMAE init beats scratch" if k is not None else (
            f"FCMAE ({s.pretrain_epochs} pretraining + {ev.grid.epochs(None, 'fcmae')} fine-tuning epochs) beats "
            f"scratch ({ev.grid.epochs(None, 'scratch')} epochs)")
        for probe_name, correct, claim in (("fine-tuned", ev.finetuned, fine_tuned_claim),
                                           ("kNN", ev.knn, "FCMAE features beat random ones (a sanity check: the "
                                                           "paper reports no kNN)")):
            fcmae, scratch = correct(k, "fcmae"), correct(k, "scratch")
            a, b, diff = hierarchical_accuracy(fcmae), hierarchical_accuracy(scratch), difference(fcmae, scratch)
            paper = PAPER["fcmae_vs_scratch"] if (k is None and probe_name == "fine-tuned") else ""
            both = replicated(fcmae, scratch)
            rows += [Row("1", f"K={label} FCMAE", f"{probe_name} top-1", a, replicated(fcmae)),
                     Row("1", f"K={label} scratch", f"{probe_name} top-1", b, replicated(scratch)),
                     Row("1", f"K={label} FCMAE - scratch", f"{probe_name} top-1", diff, both, paper)]
            curves[probe_name][label] = (a, b)
            lines.append(f"| {label} | {probe_name} | {shown(a)} | {shown(b)} | {shown(diff)} |")
            claims.append(f"- K={label}, {probe_name}: {verdict(diff, claim, both)}")
    labeled = {shot_label(k): len(ev.labeled(k, 0)) / len(ev.classes) for k in s.shots}  # per class, as trained
    plot_label_efficiency(curves, labeled, output / "label_efficiency.png", all_note=(
        f"K=all: FCMAE {s.pretrain_epochs} + {ev.grid.epochs(None, 'fcmae')} epochs, scratch "
        f"{ev.grid.epochs(None, 'scratch')}") if None in s.shots else "")
    pretrained = pretraining_runs(ev)
    plot_pretraining_knn({f"V2 sparse, run {i}": run for i, run in enumerate(pretrained)},
                         output / "pretraining_knn.png")
    bank = pretrained[0].config["knn_images_per_class"]
    neighbours = ", ".join(f"K={shot_label(k)}: k={ev.knn_neighbours(k)}" for k in s.shots)
    all_epochs = (f"With every label (K=all) both arms train as many epochs: FCMAE {s.pretrain_epochs} pretraining + "
                  f"{ev.grid.epochs(None, 'fcmae')} fine-tuning, scratch {ev.grid.epochs(None, 'scratch')}, though "
                  f"FCMAE's pretraining epochs see no label: {ev.grid.epochs(None, 'fcmae')} labeled epochs to "
                  f"scratch's {ev.grid.epochs(None, 'scratch')}; the paper compares 800 + 100 FCMAE epochs with 300 "
                  f"supervised ones, on {IMAGENET_TRAIN_IMAGES / pretrained[0].config['train_images']:.0f}x more "
                  f"images at 224 px, with "
                  f"V2-B (89M parameters, this is Atto: 3.7M)." if None in s.shots else "")
    section = f"""## 1. FCMAE vs scratch, by labeled images per class

FCMAE: {runs_described(ev, 'fcmae')} per K; scratch: {runs_described(ev, 'scratch')}, seed s fine-tuning on the same
K labeled images per class as FCMAE's seed s. Each cell: top-1 [95% hierarchical interval]; runs: the lowest and
highest single run (for the difference: FCMAE run (p, s) minus scratch seed s).

| K | probe | FCMAE top-1 | scratch top-1 | FCMAE - scratch |
|---|---|---|---|---|
{chr(10).join(lines)}

{chr(10).join(claims)}

{all_epochs} Paper: {PAPER['fcmae_vs_scratch']}. kNN: temperature {KNN_TEMPERATURE}, cosine similarity of pooled,
layer-normalized features; its memory bank is fine-tuning seed s's K labeled images per class ({neighbours}
neighbours: never more than K), and "scratch" is a random init (one per pretraining seed). The kNN monitor during
pretraining (bank: up to {bank} labeled images per class) ended at {knn_ends(pretrained)}.

![label efficiency](label_efficiency.png)

![kNN during pretraining](pretraining_knn.png)
"""
    return Table(rows, section)


# ------------------------------------------------------------------------------------------------------ 2. co-design
def codesign_cells(scale: Scale) -> list[Cell]:
    return [Cell(scale.main_shot, init, block) for block in ("v2", "v1") for init in ("fcmae", "scratch")]


def table_codesign(ev: Evaluator, output: Path) -> Table:
    k = ev.grid.scale.main_shot
    c = {(block, init): ev.finetuned(k, init, block) for block in ("v1", "v2") for init in ("scratch", "fcmae")}
    rows, lines, gains = [], [], {}
    paper_gain = {block: b - a for block, (a, b) in PAPER_CODESIGN["B"].items()}
    for block in ("v1", "v2"):
        scratch, fcmae = hierarchical_accuracy(c[(block, "scratch")]), hierarchical_accuracy(c[(block, "fcmae")])
        gain = difference(c[(block, "fcmae")], c[(block, "scratch")])
        name = block.upper()
        rows += [Row("2", f"{name} scratch", "fine-tuned top-1", scratch, replicated(c[(block, "scratch")])),
                 Row("2", f"{name} FCMAE", "fine-tuned top-1", fcmae, replicated(c[(block, "fcmae")])),
                 Row("2", f"{name} FCMAE gain", "fine-tuned top-1", gain,
                     replicated(c[(block, "fcmae")], c[(block, "scratch")]), PAPER["codesign"])]
        lines.append(f"| {name} | {shown(scratch)} | {shown(fcmae)} | {shown(gain)} |")
        gains[f"FCMAE gain, {name} blocks"] = (gain, paper_gain[name])
    # the interaction: (V2 FCMAE - V2 scratch) - (V1 FCMAE - V1 scratch), each arm's pretraining runs drawn on their
    # own, the fine-tuning seeds (the labeled images) once for all four
    arms = [c[("v2", "fcmae")], c[("v2", "scratch")], c[("v1", "fcmae")], c[("v1", "scratch")]]
    extra = hierarchical_contrast([arm * 100.0 for arm in arms], (1, -1, -1, 1), paired_seeds=True)
    rows.append(Row("2", "V2 gain - V1 gain", "fine-tuned top-1", extra, replicated(*arms), PAPER["codesign"]))
    gains["V2 gain minus V1 gain"] = (extra, paper_gain["V2"] - paper_gain["V1"])
    differences_figure(gains, f"co-design: FCMAE's gain over scratch, fine-tuned at K={k}",
                       "FCMAE's top-1 minus scratch's (points; > 0: FCMAE better)",
                       paper_label="paper (V1-B and V2-B, ImageNet-1K: other models, data and budget)"
                       ).savefig(output / "codesign.png")
    section = f"""## 2. Co-design: FCMAE with V1 and V2 blocks (fine-tuned at K={k})

FCMAE: {runs_described(ev, 'fcmae')} per block; scratch: {runs_described(ev, 'scratch')}. V1 blocks fine-tune with the
recipe the sweep chose for V2 (same init).

| block | scratch | FCMAE | FCMAE gain |
|---|---|---|---|
{chr(10).join(lines)}

V2 gain minus V1 gain: {verdict(extra, 'FCMAE helps V2 more than V1', replicated(*arms))}.
Paper: {PAPER['codesign']}. kNN monitor at the end of pretraining: V1 {knn_ends(pretraining_runs(ev, "v1"))},
V2 {knn_ends(pretraining_runs(ev, "v2"))}.

![co-design](codesign.png)
"""
    return Table(rows, section)


# --------------------------------------------------------------------------------------------- 3. sparse vs dense
def sparse_cells(scale: Scale) -> list[Cell]:
    return [Cell(scale.main_shot, init, block) for block in ("v1", "v2") for init in ("fcmae", "fcmae-denseconv")]


def table_sparse(ev: Evaluator, output: Path) -> Table:
    k = ev.grid.scale.main_shot
    rows, lines, claims, differences = [], [], [], {}
    for block in ("v1", "v2"):  # V1 first: the paper ran this ablation before GRN
        sparse_correct, dense_correct = ev.finetuned(k, "fcmae", block), ev.finetuned(k, "fcmae-denseconv", block)
        sparse, dense = hierarchical_accuracy(sparse_correct), hierarchical_accuracy(dense_correct)
        diff = difference(sparse_correct, dense_correct)
        name = block.upper()
        both = replicated(sparse_correct, dense_correct)
        rows += [Row("3", f"{name} sparse conv FCMAE", "fine-tuned top-1", sparse, replicated(sparse_correct)),
                 Row("3", f"{name} dense conv FCMAE", "fine-tuned top-1", dense, replicated(dense_correct)),
                 Row("3", f"{name} sparse - dense", "fine-tuned top-1", diff, both,
                     PAPER["sparse"] if block == "v1" else "")]
        lines.append(f"| {name} | {shown(sparse)} | {shown(dense)} | {shown(diff)} | "
                     f"{knn_ends(pretraining_runs(ev, block))} | {knn_ends(pretraining_runs(ev, block, False))} |")
        reading = verdict(diff, "the sparse encoder beats dense convolution", both,
                          paper=PAPER_SPARSE_GAIN if block == "v1" else None)
        claims.append(f"- {name}: {reading}")
        differences[f"{name} blocks"] = (diff, PAPER_SPARSE_GAIN if block == "v1" else None)
    differences_figure(differences, f"sparse vs dense-conv FCMAE encoder, fine-tuned at K={k}",
                       "sparse minus dense-conv top-1 (points; > 0: sparse better)",
                       paper_label="paper (ConvNeXt V1-B, ImageNet-1K: other model, data and budget)"
                       ).savefig(output / "sparse_vs_dense.png")
    section = f"""## 3. Sparse vs dense convolution in the FCMAE encoder (fine-tuned at K={k})

Each arm: {runs_described(ev, 'fcmae')}. Dense conv: the same encoder convolving the zero-filled image. The paper ran
this ablation with V1 blocks (its FCMAE design study precedes GRN); V2 is added here.

| block | sparse conv | dense conv | sparse - dense | kNN monitor, sparse | kNN monitor, dense |
|---|---|---|---|---|---|
{chr(10).join(lines)}

{chr(10).join(claims)}

Paper: {PAPER['sparse']}.

![sparse vs dense](sparse_vs_dense.png)
"""
    return Table(rows, section)


# -------------------------------------------------------------------------------------------------------- sanity
def sanity_section(ev: Evaluator, cells: list[Cell]) -> str:
    """Checks that the runs behind the tables are fit to compare: each passes or says FAILS with its numbers."""
    s, chance = ev.grid.scale, math.log(len(ev.classes))
    checks = []
    for cell in cells:
        losses = [run.metric("train_loss")[-1] for runs in ev.grid.cell_runs(cell) for run in runs]
        ok = max(losses) < LOSS_OF_TRAINING * chance
        arch = cell.block.upper() + (f" -> {cell.tuned.upper()}" if cell.tuned else "")
        checks.append(f"- {'ok' if ok else 'FAILS'}: {arch} {cell.init} at K={shot_label(cell.k)} "
                      f"trains: last-epoch training loss {min(losses):.3f}..{max(losses):.3f} vs chance {chance:.3f} "
                      f"(limit {LOSS_OF_TRAINING:.0%} of it)")
    shots = [k for k in s.shots if Cell(k, "fcmae") in cells and Cell(k, "scratch") in cells]
    for probe_name, correct in (("fine-tuned", ev.finetuned), ("kNN", ev.knn)):
        for init in ("fcmae", "scratch"):
            values = [correct(k, init).double().mean().item() * 100 for k in shots]
            ok = all(a <= b for a, b in zip(values, values[1:]))
            checks.append(f"- {'ok' if ok else 'FAILS'}: {probe_name} {init} does not fall as K grows: " + ", ".join(
                f"K={shot_label(k)} {v:.1f}%" for k, v in zip(shots, values)))
    neighbours = [(k, ev.knn_neighbours(k)) for k in s.shots]
    ok = all(k is None or n <= k for k, n in neighbours)
    checks.append(f"- {'ok' if ok else 'FAILS'}: kNN uses k <= K neighbours: " + ", ".join(
        f"K={shot_label(k)}: k={n}" for k, n in neighbours))
    return "## Sanity checks\n\n" + "\n".join(checks) + "\n"


def measurements(ev: Evaluator) -> dict[str, list[Callable[[], object]]]:
    """What the tables take of each run's weights, by run name: fine-tuned top-1 per val image, table 1's kNN of the
    V2 encoders (pretrained or random), table 4's collapse statistics. Each is measured once, when its run finishes
    (:attr:`Grid.after_run`) or by :func:`record_finished_runs`, and kept in the records."""
    grid, s = ev.grid, ev.grid.scale
    todo: dict[str, list[Callable[[], object]]] = {}
    for cell in dict.fromkeys(cell for spec in TABLES for cell in spec.cells(s)):
        for p, seeds in grid.origins(cell.init):
            for seed in seeds:
                name = grid.finetune_name(cell.k, cell.init, cell.block, seed, pretrain_seed=p, tuned=cell.tuned)
                todo.setdefault(name, []).append(
                    functools.partial(ev.val_correct, cell.k, cell.init, cell.block, seed, p, cell.tuned))
    for p in range(s.pretrain_seeds):
        for init in ("fcmae", "scratch"):
            todo.setdefault(ev.encoder_name(init, "v2", p), []).extend(
                functools.partial(ev.knn_correct, k, init, "v2", p) for k in s.shots)
    for name, measure in (*collapse_measurements(ev), *transfer_measurements(ev)):
        todo.setdefault(name, []).append(measure)
    return todo


def record_finished_runs(ev: Evaluator) -> None:
    """Measure and record :func:`measurements` of every run finished here with its weights, and of the random inits,
    tables finished or not: a later sitting on another machine then needs none of these checkpoints."""
    for name, todo in measurements(ev).items():
        if name.startswith("random-") or ev.grid.finished_here(name):
            for measure in todo:
                measure()


TABLES = (
    TableSpec("1 FCMAE vs scratch", label_efficiency_cells, table_label_efficiency),
    TableSpec("2 co-design", codesign_cells, table_codesign),
    TableSpec("3 sparse vs dense conv", sparse_cells, table_sparse),
    TableSpec("4 feature collapse", collapse_cells, table_collapse),
    TableSpec("5 GRN ablation", grn_cells, table_grn, partial=True),
    TableSpec("6 transfer to dense tasks", transfer_cells, table_transfer, transfer_names),
)
