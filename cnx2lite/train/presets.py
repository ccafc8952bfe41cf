"""The training presets and the paper's recipes: ``load_preset("smoke", task="pretrain", epochs=2)`` ->
:class:`~cnx2lite.train.config.TrainConfig`.

Presets per task: ``smoke`` (seconds, CI), ``cpu`` (a laptop: 20-30 min per run on 2 CPU cores), ``imagenette-gpu``
(one GPU, Imagenette at 224 px) and ``in1k-<size>`` (the paper's ImageNet-1K recipes, Woo et al. 2023, appendix A).
The ``in1k-*`` pretraining presets run 800 epochs (the paper's ablation length); the paper's headline
base/large/huge numbers come from 1600 epochs (the official TRAINING.md), so pass ``epochs=1600`` for those.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from .config import TrainConfig, check_overrides, check_task, fit_overrides

SMOKE = dict(model="convnextv2_atto", img_size=64, num_classes=2, images_per_class=8, val_images_per_class=4,
             knn_images_per_class=8, epochs=1, batch_size=8, decoder_dim=64, lr=1e-3, progress=False,
             log_every_steps=1, cache_images=True)
# amp fp32: at 96 px on a 2-core AVX512-BF16 CPU, bf16 autocast trains atto slower than fp32 (FCMAE step 142 vs 172
# img/s, fine-tuning step 96 vs 113): the tensors are too small for bf16 kernels to pay for the conversions.
CPU = dict(model="convnextv2_atto", img_size=96, num_classes=10, images_per_class=300, val_images_per_class=50,
           batch_size=64, decoder_dim=256, num_workers=2, cache_images=True, log_every_steps=5, keep_last=2, amp="fp32")
IMAGENETTE_GPU = dict(model="convnextv2_atto", img_size=224, batch_size=128, num_workers=8, save_every_steps=500)

PRETRAIN = dict(task="pretrain", base_lr=1.5e-4, betas=(0.9, 0.95), weight_decay=0.05, min_lr=0.0,
                mask_ratio=0.6, drop_path=0.0, norm_pix_loss=True, decoder_depth=1)
FINETUNE = dict(task="finetune", betas=(0.9, 0.999), min_lr=1e-6, rand_augment="rand-m9-mstd0.5-inc1", reprob=0.25,
                head_init_scale=0.001, ema_decay=0.9999)
# The paper's transfer recipes (Sec. 6, after ConvNeXt V1's): AdamW, weight decay 0.05, layer decay 0.9 (UperNet on
# ADE20K: lr 1e-4, 160k iterations of 16 images; Mask R-CNN on COCO: 3x schedule), no EMA, no Mixup.
# num_classes None: every class of the folder (composites) or of the format (ADE20K's 150, COCO's categories)
DENSE = dict(betas=(0.9, 0.999), weight_decay=0.05, layer_decay=0.9, min_lr=1e-6, cache_images=False, num_classes=None)
DENSE_SMOKE = dict(img_size=64, composites=8, val_composites=4, batch_size=4, head_channels=32, max_regions=2)
# 128 px: the stage maps are 32, 16, 8 and 4 cells across, enough for UperNet's pyramid and Mask R-CNN's anchors.
DENSE_CPU = dict(img_size=128, composites=2000, val_composites=500, batch_size=16, head_channels=128, epochs=8,
                 warmup_epochs=1, lr=2e-4, drop_path=0.1, num_workers=2, log_every_steps=5)


class FinetuneRecipe(NamedTuple):
    """A row of the paper's ImageNet-1K fine-tuning table (appendix A)."""

    epochs: int
    base_lr: float
    warmup_epochs: int
    weight_decay: float
    layer_decay: float
    layer_decay_mode: str
    mixup: float
    cutmix: float
    label_smoothing: float
    drop_path: float


IN1K_FINETUNE = {
    "atto": FinetuneRecipe(600, 2e-4, 0, 0.3, 0.9, "single", 0.0, 0.0, 0.2, 0.1),
    "femto": FinetuneRecipe(600, 2e-4, 0, 0.05, 0.9, "single", 0.3, 0.3, 0.2, 0.0),
    "pico": FinetuneRecipe(600, 2e-4, 0, 0.3, 0.9, "single", 0.3, 0.3, 0.2, 0.0),
    "nano": FinetuneRecipe(600, 2e-4, 0, 0.3, 0.9, "single", 0.5, 0.5, 0.2, 0.1),
    "tiny": FinetuneRecipe(300, 8e-4, 40, 0.05, 0.9, "single", 0.8, 1.0, 0.1, 0.2),
    "base": FinetuneRecipe(100, 6.25e-4, 20, 0.05, 0.6, "group", 0.8, 1.0, 0.1, 0.1),
    "large": FinetuneRecipe(100, 6.25e-4, 20, 0.05, 0.6, "group", 0.8, 1.0, 0.1, 0.2),
    "huge": FinetuneRecipe(50, 1.25e-3, 10, 0.05, 0.75, "single", 0.8, 1.0, 0.1, 0.3),
}
IN1K = dict(img_size=224, num_workers=10, save_every_steps=1000, log_every_steps=50, keep_last=3)

PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "pretrain": {
        "smoke": {**PRETRAIN, **SMOKE},
        "cpu": {**PRETRAIN, **CPU, "epochs": 20, "warmup_epochs": 2, "lr": 1e-3},
        "imagenette-gpu": {**PRETRAIN, **IMAGENETTE_GPU, "epochs": 400, "global_batch": 512, "warmup_epochs": 20,
                           "recon_every": 20, "eval_every": 20},
        # 800 epochs, as the paper's ablations; its headline base/large/huge results pretrain for 1600.
        **{f"in1k-{size}": {**PRETRAIN, **IN1K, "model": f"convnextv2_{size}", "epochs": 800, "global_batch": 4096,
                            "batch_size": 64, "warmup_epochs": 40, "decoder_dim": 512, "eval_every": 20,
                            "recon_every": 20, "dataset": "imagenet"}
           for size in IN1K_FINETUNE},
    },
    "finetune": {
        "smoke": {**FINETUNE, **SMOKE, "ema_decay": 0.9},
        "cpu": {**FINETUNE, **CPU, "epochs": 20, "warmup_epochs": 1, "lr": 1e-3, "ema_decay": 0.999,
                "weight_decay": 0.05, "layer_decay": 0.9, "label_smoothing": 0.1, "drop_path": 0.1},
        "imagenette-gpu": {**FINETUNE, **IMAGENETTE_GPU, "epochs": 100, "global_batch": 256, "base_lr": 2e-4,
                           "warmup_epochs": 5, "weight_decay": 0.05, "layer_decay": 0.9, "mixup": 0.3,
                           "cutmix": 0.3, "label_smoothing": 0.1, "drop_path": 0.1, "ema_decay": 0.999},
        **{f"in1k-{size}": {**FINETUNE, **IN1K, "model": f"convnextv2_{size}", **recipe._asdict(),
                            "global_batch": 1024, "batch_size": 64, "dataset": "imagenet"}
           for size, recipe in IN1K_FINETUNE.items()},
    },
    **{task: {"smoke": {**SMOKE, **DENSE, **DENSE_SMOKE, "task": task},
              "cpu": {**CPU, **DENSE, **DENSE_CPU, "task": task}}
       for task in ("segment", "detect")},
}


def preset_names(task: str) -> list[str]:
    return list(PRESETS[check_task(task)])


def load_preset(preset: str, /, task: str = "finetune", **overrides: Any) -> TrainConfig:
    """The config of ``preset`` for ``task`` with ``overrides`` (any :class:`TrainConfig` field)."""
    presets = PRESETS[check_task(task)]
    if preset not in presets:
        raise ValueError(f"preset must be one of {', '.join(map(repr, presets))} for task {task!r}; got {preset!r}")
    check_overrides(task, overrides)
    if overrides.get("task", task) != task:
        raise ValueError(f"override task={overrides['task']!r} contradicts task={task!r}")
    return TrainConfig(**{**presets[preset], **fit_overrides(presets[preset], overrides), "task": task})
