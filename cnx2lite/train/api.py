"""The Python entry points the CLI and the notebooks call: one line per run."""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from .. import data, transforms
from ..amp import resolve_device
from ..arguments import checked_arguments
from ..factory import load_model
from ..rundir import RunResult
from .config import TrainConfig, check_overrides, fit_overrides
from .config_checks import DENSE_TASKS, check_img_size, check_ranges
from .engine import Trainer
from .loader import eval_loader
from .presets import load_preset
from .tasks import classification_stats


def _config(task: str, config: TrainConfig | str, overrides: dict[str, Any]) -> TrainConfig:
    if overrides.get("task", task) != task:  # the function is the task
        raise ValueError(f"task {overrides['task']!r} given to {task}(): it runs task={task!r} only")
    if isinstance(config, str):
        return load_preset(config, **{**overrides, "task": task})
    if not isinstance(config, TrainConfig):  # a path to a run's config.json is load_config's to read
        raise ValueError(f"config must be a preset name or a TrainConfig, got {config!r} ({type(config).__name__}); "
                         f"a run's config.json: {task}(load_config(path, {task!r}), ...)")
    if config.task != task:
        raise ValueError(f"task {config.task!r} given to {task}(): it runs task={task!r} only")
    check_overrides(task, overrides)
    return dataclasses.replace(config, **fit_overrides(config.to_dict(), overrides))


def train(config: TrainConfig) -> RunResult:
    """Run (or resume) the training ``config`` describes (its ``task``); see :class:`Trainer`."""
    return Trainer(config).run()


def pretrain(config: TrainConfig | str = "smoke", **overrides: Any) -> RunResult:
    """FCMAE pretraining: ``pretrain("cpu", epochs=5)`` or ``pretrain(load_preset(...))``."""
    return Trainer(_config("pretrain", config, overrides)).run()


def finetune(config: TrainConfig | str = "smoke", **overrides: Any) -> RunResult:
    """Fine-tuning (from ``pretrained=<checkpoint>``, or from scratch without it)."""
    return Trainer(_config("finetune", config, overrides)).run()


def transfer(task: str, config: TrainConfig | str = "smoke", **overrides: Any) -> RunResult:
    """Transfer to a dense task, ``"segment"`` (UperNet) or ``"detect"`` (Mask R-CNN), on composites of the data's
    photos: ``transfer("segment", "cpu", pretrained="runs/pretrain-convnextv2_atto")``."""
    if task not in DENSE_TASKS:
        raise ValueError(f"task must be one of {', '.join(map(repr, DENSE_TASKS))}; got {task!r}")
    return Trainer(_config(task, config, overrides)).run()


@torch.no_grad()
@checked_arguments
def evaluate_checkpoint(checkpoint: str | os.PathLike, data_root: str | os.PathLike | None = None,
                        dataset: str = data.DEFAULT_DATASET, use_ema: bool = False, batch_size: int = 64,
                        device: str = "auto", num_workers: int = 0, img_size: int | None = None,
                        images_per_class: int | None = None) -> dict[str, float]:
    """Top-1/top-5 (percent) and loss of a fine-tuning checkpoint on the val split of ``data_root``'s
    image folder, with the checkpoint's classes in its label order. ``img_size`` defaults to the
    training size."""
    check_ranges(batch_size=batch_size, num_workers=num_workers, images_per_class=images_per_class)
    if img_size is not None:
        check_img_size(img_size)
    model, config = load_model(checkpoint, classifier=True, use_ema=use_ema)  # its variant, block and GRN
    size = img_size or config["img_size"]
    folder = data.find_image_folder(data.resolve_data_root(data_root), dataset, split="val")
    val_set = data.build_dataset(folder, "val", transforms.eval_transform(size, in_chans=config.get("in_chans", 3)),
                                 classes=config["classes"],
                                 images_per_class=images_per_class)
    data.warn_left_out_classes(folder, "val", config["classes"])
    dev = resolve_device(device)
    model.to(dev).eval()
    sums, count = {}, 0
    for images, targets in eval_loader(val_set, batch_size, 0, 1, num_workers):
        for k, v in classification_stats(model(images.to(dev)), targets.to(dev)).items():
            sums[k] = sums.get(k, 0.0) + v
        count += len(images)
    return {"top1": sums["val_top1"] / count, "top5": sums["val_top5"] / count, "loss": sums["val_loss"] / count,
            "images": count}
