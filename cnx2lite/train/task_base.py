"""What the training loop in ``engine`` asks of a task, and evaluation, which drives a task over a val split.

A task builds the model and its training transform, chooses what the model sees of the run's images, computes a
micro-batch's loss, sums per-batch evaluation statistics that :func:`evaluate` adds up over processes (and scores that
need the whole split, like mIoU or AP), and draws its own figures into the run directory at the end of an epoch.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from ..amp import autocast
from ..checkpoints import load_pretrained
from ..models.convnextv2 import ConvNeXtV2
from .config import TrainConfig
from .distributed import Dist, all_reduce_sum, gather_lists
from .loader import move_to
from .run_data import RunData


class Task:
    """What every task shares: the run's image splits as they are, default batches, no frozen parameters, no scores
    beyond the summed statistics, no figures of its own."""

    name: str
    decay_grn_and_mask_token = False  # see cnx2lite.train.optim
    sample_kind = "images"  # what the training set holds, as the start of a run names it

    def __init__(self, config: TrainConfig) -> None:
        self.config = config
        self.weight_notes: list[str] = []  # what loading the pretrained weights changed (:meth:`load_encoder`)

    def build_model(self, num_classes: int) -> nn.Module:
        raise NotImplementedError

    def load_encoder(self, model: ConvNeXtV2, source: str) -> None:
        """``source``'s weights into ``model`` (its classifier left out), noting what the load changed. GRN is removed
        or added (the paper's "GRN at fine-tuning") only where the config names the block norm (``none`` from a GRN
        source, ``grn`` from one without): with ``auto`` the source's recorded block norm must be the model's, as
        every other architecture setting."""
        result = load_pretrained(model, source, skip_head=True, grn_change=self.config.block_norm != "auto")
        self.weight_notes = [f"weights: {note}" for note in result.notes]

    def notes(self) -> list[str]:
        """What a run of this task should say about its settings before it trains: what loading its weights
        changed."""
        return list(self.weight_notes)

    def train_transform(self) -> Callable:
        """The transform of a training image file (PIL image -> tensor)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, images: Tensor, targets: Any, seeds: Tensor) -> Tensor:
        """The mean loss of a micro-batch ``images (B, C, H, W)`` with its targets and per-sample seeds ``(B,)``."""
        raise NotImplementedError

    def eval_batch(self, model: nn.Module, images: Tensor, targets: Any, index: int) -> dict[str, float]:
        """Statistics of the ``index``-th val batch, summed over its images (:func:`evaluate` divides)."""
        raise NotImplementedError

    def datasets(self, run_data: RunData) -> tuple[Dataset, Dataset | None]:
        """What the model trains and scores on: the run's train and val images."""
        return run_data.train_set, run_data.val_set

    collate: Callable | None = None  # batches as torch's default_collate makes them

    def frozen_parameters(self, model: nn.Module, epoch: int) -> list[nn.Parameter]:
        return []

    def start_scoring(self, device: torch.device) -> None:
        """Before an evaluation: forget the scores of the last one."""

    def scores(self) -> dict[str, float]:
        """After an evaluation: the scores over the whole split (all processes), beyond the summed statistics."""
        return {}

    def save_figures(self, model: nn.Module, dataset: Dataset, folder: Path, epoch: int, last: bool) -> list[Path]:
        """The task's own figures of ``dataset`` in ``folder`` at the end of an epoch; the figures written."""
        return []


@torch.no_grad()
def evaluate(task: Task, model: nn.Module, loader: DataLoader, amp_dtype: torch.dtype | None,
             dist: Dist) -> dict[str, float]:
    """Mean val statistics of ``task.eval_batch`` over all processes (each process takes a strided share of the
    batches ``(images (B, C, H, W), targets)``) and the task's scores of the whole split; the model's train/eval mode
    is restored."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    task.start_scoring(device)
    sums: dict[str, float] = {}
    count = 0
    for index, (images, targets) in enumerate(loader):
        images, targets = images.to(device), move_to(targets, device)
        with autocast(device, amp_dtype):
            stats = task.eval_batch(model, images, targets, index * dist.world_size + dist.rank)
        for k, v in stats.items():
            sums[k] = sums.get(k, 0.0) + v
        count += len(images)
    keys = sorted(set(gather_lists(sorted(sums))))  # every process's: one that got no batch has none of its own
    totals = all_reduce_sum(torch.tensor([sums.get(k, 0.0) for k in keys] + [count], dtype=torch.float64,
                                         device=dist.device))
    model.train(was_training)
    return {**{k: totals[i].item() / max(totals[-1].item(), 1) for i, k in enumerate(keys)}, **task.scores()}
