"""The fine-tuning recipes the sweep (:mod:`.sweep`) chooses among: peak lr x regularization for every init, and for
a random init each of them again without layer-wise lr decay."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

FINETUNED_LAYER_DECAY = 0.9  # the paper's fine-tuning of atto..nano
REGULARIZATION = {  # the fine-tuning augmentation and regularization a recipe takes
    "paper": dict(rand_augment="rand-m9-mstd0.5-inc1", reprob=0.25, drop_path=0.1, label_smoothing=0.1),
    "none": dict(rand_augment=None, reprob=0.0, drop_path=0.0, label_smoothing=0.0),
}
SWEEP_LRS = (2.5e-4, 1e-3, 4e-3)


@dataclass(frozen=True)
class Recipe:
    """A fine-tuning recipe of the sweep: peak lr, regularization (one of :data:`REGULARIZATION`) and layer-wise lr
    decay. Every recipe warms up over the first eighth of its epochs. The name leaves the layer decay out where it is
    :data:`FINETUNED_LAYER_DECAY`, so runs of the recipes that had no other keep their names."""

    lr: float
    regularization: str = "paper"
    layer_decay: float = FINETUNED_LAYER_DECAY

    @property
    def name(self) -> str:
        return f"lr{self.lr:g}-{self.regularization}{decay_suffix(self.layer_decay)}"

    def settings(self, epochs: int) -> dict:
        return dict(lr=self.lr, warmup_epochs=max(1, epochs // 8), layer_decay=self.layer_decay,
                    **REGULARIZATION[self.regularization])


def decay_suffix(layer_decay: float) -> str:
    """What a run's name adds for its layer decay: nothing for :data:`FINETUNED_LAYER_DECAY` (so runs from before
    the sweep chose decays keep their names), ``-ld<decay>`` for any other."""
    return "" if layer_decay == FINETUNED_LAYER_DECAY else f"-ld{layer_decay:g}"


SWEEP = tuple(Recipe(lr, reg) for reg in REGULARIZATION for lr in SWEEP_LRS)  # the trials of every init


def sweep_trials(init: str) -> tuple[Recipe, ...]:
    """The recipes ``init`` tries: :data:`SWEEP`, and for a random init ("scratch") each of them again with layer decay
    1.0. Layer decay keeps a pretrained encoder's early layers near their weights (atto's stem at 0.9^12, 0.28 of the
    head's lr, in the grid's "single" mode); a random init has nothing there to keep and may train better without
    it: the baseline gets that choice too."""
    if init != "scratch":
        return SWEEP
    return SWEEP + tuple(dataclasses.replace(recipe, layer_decay=1.0) for recipe in SWEEP)
