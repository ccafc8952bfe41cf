"""Each arm's fine-tuning recipe chosen on the tuning split.

A baseline gets at least the tuning effort the method gets: every init (FCMAE-pretrained, scratch) fine-tunes with each
recipe of :func:`~.recipes.sweep_trials` (the same lrs and regularizations for all; a random init also tries each
without layer decay) on ``K`` labeled images per class, scored on the tuning split carved out of ``train/`` (never
``val/``), and keeps its best. A choice at the edge of the swept lrs is reported as such: the best may lie outside the
sweep.
"""
from __future__ import annotations

from dataclasses import dataclass

from .grid import TUNE_FRACTION, Grid, shot_label
from .recipes import FINETUNED_LAYER_DECAY, SWEEP, SWEEP_LRS, Recipe, sweep_trials


@dataclass
class Trial:
    recipe: Recipe
    tune_top1: float  # on the tuning split, in percent
    train_loss: float  # of the last epoch


@dataclass
class SweepResult:
    k: int | None
    trials: dict[str, list[Trial]]  # init -> its trials, in sweep order

    def chosen(self, init: str) -> Recipe:
        return max(self.trials[init], key=lambda t: t.tune_top1).recipe

    def at_edge(self, init: str) -> bool:
        return self.chosen(init).lr in (min(SWEEP_LRS), max(SWEEP_LRS))

    def section(self) -> str:
        """A markdown section: every trial's tuning-split top-1 per init, the chosen recipe marked."""
        inits = list(self.trials)
        header = "| recipe | " + " | ".join(f"{init}: tune top-1 (train loss)" for init in inits) + " |"
        lines = [header, "|---|" + "---|" * len(inits)]
        for recipe in dict.fromkeys(t.recipe for init in inits for t in self.trials[init]):  # in sweep order
            cells = []
            for init in inits:
                trial = next((t for t in self.trials[init] if t.recipe == recipe), None)
                mark = " **chosen**" if recipe == self.chosen(init) else ""
                cells.append("not tried" if trial is None else f"{trial.tune_top1:.1f}% ({trial.train_loss:.3f}){mark}")
            lines.append(f"| {recipe.name} | " + " | ".join(cells) + " |")
        edges = [init for init in inits if self.at_edge(init)]
        edge_note = (f"At the edge of the swept lrs ({', '.join(f'{lr:g}' for lr in SWEEP_LRS)}): "
                     f"{', '.join(edges)}; the best lr may lie outside the sweep." if edges else
                     "No chosen lr sits at the edge of the swept lrs.")
        extra = [init for init in inits if len(self.trials[init]) > len(SWEEP)]
        decay = (f" Layer-wise lr decay {FINETUNED_LAYER_DECAY:g} in every recipe" + (
            f"; {' and '.join(extra)} also tried each without it ('-ld1', layer decay 1.0): decay keeps a "
            f"pretrained encoder's early layers near their weights, and a random init may train better without it"
            if extra else "") + ".")
        return (f"## Fine-tuning recipes, chosen on the tuning split\n\nK = {shot_label(self.k)} labeled images per "
                f"class; every init tried the same {len(SWEEP)} recipes (lr x regularization; 'paper': RandAugment, "
                f"random erasing 0.25, drop path 0.1, label smoothing 0.1; 'none': none of them), scored on the "
                f"tuning split ({TUNE_FRACTION:.0%} of every class of train/, never trained on; val/ is not looked "
                f"at).{decay} One run per trial, seed 0.\n\n" + "\n".join(lines) + f"\n\n{edge_note}\n")


def trial_names(grid: Grid, k: int | None, inits: tuple[str, ...] = ("fcmae", "scratch")) -> list[str]:
    """The run directory names of the sweep's trials."""
    return [grid.finetune_name(k, init, recipe=recipe, tune=True) for init in inits for recipe in sweep_trials(init)]


def run_sweep(grid: Grid, k: int | None, inits: tuple[str, ...] = ("fcmae", "scratch")) -> SweepResult:
    """Train (or find) every trial of the sweep for every init and collect their tuning-split scores."""
    trials = {}
    for init in inits:
        trials[init] = []
        for recipe in sweep_trials(init):
            run = grid.finetune(k, init, recipe=recipe, tune=True)
            trials[init].append(Trial(recipe, run.final_top1, run.metric("train_loss")[-1]))
    return SweepResult(k, trials)
