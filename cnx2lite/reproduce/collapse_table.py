"""Table 4 of the report: feature collapse block by block (:mod:`cnx2lite.collapse_curves`) of the grid's encoders."""
from __future__ import annotations

import functools
import shutil
from collections.abc import Callable
from pathlib import Path

from torch import nn

from .. import collapse, collapse_curves
from ..factory import load_model
from .evaluation import Evaluator
from .grid import Cell, Scale
from .report_rows import PAPER, Row, Table, runs_described, verdict


# ----------------------------------------------------------------------------------------------- 4. feature collapse
def collapse_cells(scale: Scale) -> list[Cell]:
    return [Cell(scale.main_shot, "fcmae", "v1"), Cell(scale.main_shot, "fcmae", "v2"), Cell(None, "scratch", "v2")]


def table_collapse(ev: Evaluator, output: Path) -> Table:
    """Feature collapse block by block (:mod:`cnx2lite.collapse_curves`) of every pretraining run, random inits (one per
    pretraining seed) and the supervised runs (every seed of scratch at K=all), on ``collapse_images`` val images of
    alternating classes at each of ``collapse_sizes``, after GELU and after GRN."""
    s = ev.grid.scale
    encoders = _encoders(ev)
    contrasts = [("V2 FCMAE", "V1 FCMAE")]
    curves, figures = [], []
    for size in s.collapse_sizes:
        images = collapse_curves.val_images(ev.folder, size, s.collapse_images, ev.classes).to(ev.device)
        counts = collapse_curves.shared_counts(len(images), rank_resamples=s.collapse_rank_resamples)
        measured = []
        for point in collapse.POINTS:
            for label, runs in encoders.items():
                statistics = [ev.collapse_statistics(name, load, images, point, counts[:s.collapse_rank_resamples])
                              for name, load in runs]
                found = collapse_curves.curves_of(label, point, size, statistics, counts)
                measured += [found] if found is not None else []
        figures.append(f"feature_collapse_{size}px.png")
        collapse_curves.plot_curves(measured, title=f"feature collapse, {len(images)} val images at {size} px "
                                    "(mean over runs, 95% band over runs and images)").savefig(output / figures[-1],
                                                                                             dpi=100)
        curves += measured
    collapse_curves.write_csv(curves, contrasts, output / "feature_collapse.csv")
    rows, claims = [], []
    for c in (c for c in curves if c.point == "gelu"):
        where = f" at {c.img_size} px" if len(s.collapse_sizes) > 1 else ""
        rows += [Row("4", f"{c.label}{where}", COLLAPSE_METRICS[stat], collapse_curves.estimate([c], stat),
                     c.runs > 1, PAPER["collapse"] if stat == "distance" else "") for stat in COLLAPSE_METRICS]
    by_stage = []
    for size in s.collapse_sizes:
        v2, v1 = (next(c for c in curves if (c.label, c.point, c.img_size) == (label, "gelu", size))
                  for label in ("V2 FCMAE", "V1 FCMAE"))
        for stat in ("distance", "effective_rank"):
            diff, both = collapse_curves.estimate([v2, v1], stat, (1.0, -1.0)), v2.runs > 1 and v1.runs > 1
            rows.append(Row("4", f"V2 FCMAE - V1 FCMAE at {size} px", COLLAPSE_METRICS[stat], diff, both,
                            PAPER["collapse"] if stat == "distance" else ""))
            claims.append(f"- {COLLAPSE_METRICS[stat]}, V2 FCMAE minus V1 FCMAE at {size} px: "
                          f"{verdict(diff, CLAIM, both, '', 3)}")
            cells = []
            for stage, blocks in collapse.stages(v2.layers).items():
                diff = collapse_curves.estimate([v2, v1], stat, (1.0, -1.0), blocks)
                rows.append(Row("4", f"V2 FCMAE - V1 FCMAE at {size} px, {stage}", COLLAPSE_METRICS[stat], diff,
                                both))
                cells.append(collapse_curves.interval(diff, "+"))
            by_stage.append(f"| {COLLAPSE_METRICS[stat]} at {size} px | " + " | ".join(cells) + " |")
    stage_names = list(collapse.stages(curves[0].layers))
    shutil.copy(ev.grid.pretrain("v2").run_dir / "reconstruction.png", output / "reconstruction.png")
    section = f"""## 4. Feature collapse

Each block's MLP activations (after GELU, as the paper's Fig. 4; for V2 blocks also after GRN) on {s.collapse_images}
val images of alternating classes, at {" and ".join(f"{size} px" for size in s.collapse_sizes)} (the training
resolution is {s.img_size} px; the encoders are fully convolutional). Per block: the feature cosine distance, raw (the
paper's) and with each channel map's spatial mean removed (centered: only shared spatial patterns count), the
effective rank of the channel covariance as a share of the channels (U-MAE's measure of MAE's dimensional collapse;
sampled at {collapse_curves.POSITIONS} positions per image), and the shares of off channels (never positive in an
image: parked at or below GELU's floor), saturated channels (constant over positions) and dead ones (|activation| <
1e-3 everywhere). Every number is the mean over blocks and runs with a 95% interval that resamples the runs, then the
images (the normal interval, centred on the value; the effective rank on {s.collapse_rank_resamples} resamples; it
grows with the samples, so compare encoders with it at this count of images and positions); per-block values with
their intervals are in `feature_collapse.csv`, per-block curves in the figures. The supervised reference is scratch
at K=all ({runs_described(ev, "scratch")}).

{collapse_curves.markdown(curves, contrasts, figures)}
V1 and V2 blocks differ in two ways: V2 adds GRN and drops V1's LayerScale (a learned per-channel scale that starts
at 1e-6), so a difference between them is the blocks', not GRN's alone; the GRN table (5) holds the arm that parts
them (V2 blocks without GRN). The paper's claim, on the distance it plots and on the effective rank:

{chr(10).join(claims)}

The same differences stage by stage (the paper sees V1's collapse in the deeper layers; a mean over blocks can hide
a sign that changes with depth), each the mean over the stage's blocks [95% interval over runs, then images]:

| V2 FCMAE - V1 FCMAE | {" | ".join(stage_names)} |
|---|{"---|" * len(stage_names)}
{chr(10).join(by_stage)}

Paper: {PAPER['collapse']}.

FCMAE reconstructions of val images (V2, first pretraining run, end of pretraining):

![reconstructions](reconstruction.png)
"""
    return Table(rows, section)


def _encoders(ev: Evaluator) -> dict[str, list[tuple[str, Callable[[], nn.Module]]]]:
    """Each encoder of the table: its runs as ``(the name they are recorded under, load the model)``."""
    s = ev.grid.scale
    encoders = {label: [(ev.encoder_name(init, block, p), functools.partial(ev.encoder, init, block, p))
                        for p in range(s.pretrain_seeds)]
                for label, init, block in (("V1 FCMAE", "fcmae", "v1"), ("V2 FCMAE", "fcmae", "v2"),
                                           ("V2 random init", "scratch", "v2"))}
    encoders["V2 supervised (all labels)"] = [(ev.grid.finetune_name(None, "scratch", seed=seed),
                                               functools.partial(_supervised, ev, seed))
                                              for seed in range(s.finetune_seeds)]
    return encoders


def collapse_measurements(ev: Evaluator) -> list[tuple[str, Callable[[], None]]]:
    """``(run name, measure it)`` for every encoder run of the table: its statistics at every size and point,
    recorded (:meth:`Evaluator.collapse_statistics`)."""
    s = ev.grid.scale
    images = functools.cache(lambda size: collapse_curves.val_images(ev.folder, size, s.collapse_images, ev.classes))

    def measure(name: str, load: Callable[[], nn.Module]) -> None:
        for size in s.collapse_sizes:
            counts = collapse_curves.shared_counts(len(images(size)), rank_resamples=s.collapse_rank_resamples)
            for point in collapse.POINTS:
                ev.collapse_statistics(name, load, images(size).to(ev.device), point,
                                       counts[:s.collapse_rank_resamples])

    return [(name, functools.partial(measure, name, load)) for runs in _encoders(ev).values() for name, load in runs]


def _supervised(ev: Evaluator, seed: int) -> nn.Module:
    """Fine-tuning seed ``seed`` of scratch at K=all, the supervised reference (its weights: trained if needed)."""
    return load_model(ev.grid.finetune(None, "scratch", seed=seed, weights=True).run_dir, classifier=True)[0]


CLAIM = "V2 blocks (GRN, no LayerScale) keep FCMAE less collapsed than V1 blocks"
COLLAPSE_METRICS = {"distance": "feature cosine distance", "centered_distance": "centered cosine distance",
                    "effective_rank": "effective rank / channels", "off": "off channels (share)"}
