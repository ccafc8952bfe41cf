"""Training configuration: one dataclass for pretraining and fine-tuning, its fields with their defaults, help and
task. Its checks are :mod:`.config_checks`, a saved ``config.json`` replayed is :mod:`.config_files`, the presets and
the paper's recipes are :mod:`.presets`.

Batch sizes: ``batch_size`` is per process and micro-step; ``global_batch``, when set, fixes the
effective batch (``batch_size * accum_steps * world_size``) and derives ``accum_steps`` at launch.
"""
from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..data import DEFAULT_DATASET
from ..models import VARIANTS
from .config_checks import DENSE_TASKS, check_config, check_task


def _f(default: Any, help: str, task: str | tuple[str, ...] | None = None) -> Any:
    """A config field with its help text and the task(s) it applies to (None: all)."""
    metadata = {"help": help, "task": task}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    task: str = _f("finetune", "'pretrain' (FCMAE), 'finetune' (classification), or a transfer to a dense task on "
                               "composites of the photos: 'segment' (UperNet) or 'detect' (Mask R-CNN)")
    # model
    model: str = _f("convnextv2_atto", "ConvNeXt V2 variant: " + ", ".join(VARIANTS))
    block: str = _f("v2", "block style: v2 (GRN, no LayerScale) or v1 (LayerScale, no GRN), for ablations")
    grn_aggregation: str = _f("l2", "GRN's per-channel statistic over positions: l2 (the paper's), l1 or mean (global "
                                    "average pooling); the paper's ablation, ConvNeXt V2-B fine-tuned top-1: "
                                    "l2 84.6, l1 84.3, mean 83.7")
    block_norm: str = _f("auto", "what follows the MLP's GELU: auto (the block style's: GRN in v2, nothing in v1), "
                                 "grn, none, or the paper's alternatives lrn, bn, ln, se, cbam")
    drop_path: float = _f(0.0, "stochastic depth rate, linear in depth")
    head_init_scale: float = _f(1.0, "scale of the classifier's initial weights", task="finetune")
    pretrained: str | None = _f(None, "weights to fine-tune from: released weights by name (e.g. "
                                      "convnextv2_atto.fcmae, downloaded once), an FCMAE run's directory (its newest "
                                      "checkpoint) or checkpoint, or any format cnx2lite.checkpoints.load_pretrained "
                                      "reads; None: from scratch", task=("finetune", *DENSE_TASKS))
    mask_ratio: float = _f(0.6, "masked fraction of 32x32 patches", task="pretrain")
    decoder_dim: int = _f(512, "FCMAE decoder width", task="pretrain")
    decoder_depth: int = _f(1, "FCMAE decoder blocks", task="pretrain")
    norm_pix_loss: bool = _f(True, "predict per-patch normalized pixels, the paper's target; the official "
                                   "main_pretrain.py defaults to them too (its FCMAE class alone defaults to raw "
                                   "pixels)", task="pretrain")
    init_encoder: str | None = _f(None, "continue pretraining from these encoder weights (any source "
                                        "cnx2lite.checkpoints.load_pretrained reads: released name, official/timm "
                                        "file, a run); an FCMAE checkpoint's decoder loads too when it has one",
                                  task="pretrain")
    freeze_encoder_epochs: int = _f(0, "epochs at the start that train the decoder alone (the released FCMAE "
                                       "checkpoints carry no decoder)", task="pretrain")
    backend: str = _f("gather", "sparse encoder backend: dense, gather, minkowski", task="pretrain")
    sparse_encoder: bool = _f(True, "encode visible patches only (sparse conv); off: the dense encoder on the masked "
                                    "image, the paper's ablation (ConvNeXt V1-B, before GRN, 800 epochs: 83.7 "
                                    "sparse vs 79.3 dense top-1)", task="pretrain")
    head_channels: int = _f(128, "width of the dense head: UperNet's pyramid and fusion, Mask R-CNN's feature pyramid "
                                 "(the paper's UperNet uses 512)", task=DENSE_TASKS)
    # data
    data: str | None = _f(None, "data root (else $CNX2LITE_DATA_ROOT, else <repo>/data)")
    dataset: str = _f(DEFAULT_DATASET, "image folder name under the data root")
    img_size: int | tuple[int, int] = _f(224, "training/eval image size in pixels: one int (square) or H W, "
                                              "multiples of 32")
    in_chans: int = _f(3, "input channels: 3 (RGB) or 1 (greyscale; image files are converted, and RGB weights "
                          "loaded into the stem are summed over their channels)")
    num_classes: int | None = _f(None, "use the first K classes (None: all)")
    images_per_class: int | None = _f(None, "training images per class (None: all)")
    val_images_per_class: int | None = _f(None, "validation images per class (None: all)")
    image_selection: str = _f("first", "which images_per_class training images: first (in sorted order) or random "
                                       "(a pick seeded by seed, so each seed fine-tunes on another labeled subset)")
    tune_fraction: float = _f(0.0, "carve this fraction of every class of train/ out as a tuning split (the same "
                                   "images for every run): training never sees it")
    eval_split: str = _f("val", "where evaluation scores: val (val/) or tune (the tuning split, to choose settings "
                                "without looking at val/; needs tune_fraction > 0)")
    rand_augment: str | None = _f("rand-m9-mstd0.5-inc1", "timm RandAugment spec, or none", task="finetune")
    reprob: float = _f(0.25, "random erasing probability", task="finetune")
    mixup: float = _f(0.0, "Mixup alpha, 0 = off", task="finetune")
    cutmix: float = _f(0.0, "CutMix alpha, 0 = off", task="finetune")
    label_smoothing: float = _f(0.0, "label smoothing", task="finetune")
    dense_format: str = _f("composites", "the dense task's data: composites (made from a class folder's photos, "
                                         "exact labels, a synthetic task), ade20k (ADEChallengeData2016's images/ and "
                                         "annotations/ folders; segment) or coco (annotations/instances_<split>*.json "
                                         "and the image folders they name; detect), found at <data>/<dataset> or "
                                         "<data>", task=DENSE_TASKS)
    composites: int = _f(2000, "training composites, made from train/ photos: a photo of one class with 1 to "
                               "max_regions shapes cut from photos of other classes pasted on it, every pixel and "
                               "instance labeled exactly (a synthetic task); each seed makes another set",
                         task=DENSE_TASKS)
    val_composites: int = _f(500, "evaluation composites, made from the photos of the split that scores (val/, or the "
                                  "tuning split): the same set for every seed", task=DENSE_TASKS)
    max_regions: int = _f(3, "most regions pasted on a composite", task=DENSE_TASKS)
    num_workers: int = _f(0, "DataLoader worker processes per training process")
    cache_images: bool = _f(False, "decode every image once into memory (shorter side at most 2.5x img_size, so the "
                                   "smallest pretraining crop is not upsampled) instead of at every epoch; refused "
                                   "when it would take over half the available memory", task=("pretrain", "finetune"))
    skip_corrupt: bool = _f(False, "decode every image once before training and leave out (and list) those that "
                                   "fail; off: only headers are checked, and unreadable files stop the run before "
                                   "it starts, all listed")
    knn_images_per_class: int = _f(100, "labeled train images per class in the kNN monitor's memory bank: its val "
                                        "top-1 is a metrics column at every evaluation; 0 = off", task="pretrain")
    # optimization
    epochs: int = _f(1, "training epochs")
    batch_size: int = _f(64, "images per micro-step per process")
    global_batch: int | None = _f(None, "effective batch; derives accum_steps (None: use accum_steps)")
    accum_steps: int = _f(1, "micro-steps per optimizer step (gradient accumulation)")
    base_lr: float = _f(1e-3, "lr for an effective batch of 256: lr = base_lr * effective_batch / 256")
    lr: float | None = _f(None, "absolute peak lr, overriding base_lr")
    min_lr: float = _f(0.0, "lr at the end of the cosine")
    warmup_epochs: float = _f(0.0, "linear warmup, in epochs (counted per iteration)")
    weight_decay: float = _f(0.05, "AdamW weight decay (none on biases and norms; GRN gamma/beta and the mask token "
                                   "decay in pretraining only, as in the official code)")
    betas: tuple[float, float] = _f((0.9, 0.999), "AdamW betas")
    layer_decay: float = _f(1.0, "layer-wise lr decay, 1 = off")
    layer_decay_mode: str = _f("single", "layer ids for layer decay: single (one per block) or group")
    clip_grad: float | None = _f(None, "max gradient norm (None: no clipping)")
    ema_decay: float = _f(0.0, "EMA of weights decay, 0 = no EMA")
    ema_cpu: bool = _f(False, "keep the EMA on the CPU")
    # runtime
    device: str = _f("auto", "torch device: auto (cuda if available), cpu, cuda, cuda:N")
    amp: str = _f("auto", "autocast: auto (bf16 on CUDA, or fp16 where unsupported; bf16 on a CPU with native bf16 "
                  "(AVX512-BF16/AMX), else fp32), bf16, fp16 (with grad scaler), fp32")
    channels_last: bool = _f(False, "channels_last memory format")
    compile: bool = _f(False, "torch.compile the model")
    fused_grn: bool = _f(True, "GRN as one autograd function with a hand-written backward while training (same "
                               "values within float32 rounding); off: its three reference steps, for debugging")
    small_map_matmul: bool = _f(True, "7x7 depthwise convs of maps smaller than the kernel as a matrix product (same "
                                      "values within float32 rounding); off: the conv, for debugging")
    fused_adamw: bool = _f(True, "AdamW's fused kernel, one pass over each parameter (the same update within float32 "
                                 "rounding); off: torch's default loop, for debugging")
    seed: int = _f(0, "seed of everything: init, shuffle, augmentation, masks, drop path, Mixup")
    output: str = _f("runs", "parent folder of run directories")
    name: str | None = _f(None, "run directory name (None: <task>-<model>)")
    resume: str | None = _f(None, "'auto' (newest checkpoint in the run dir, if any) or a checkpoint path")
    save_every_steps: int = _f(0, "also checkpoint every N optimizer steps mid-epoch (0: epoch ends only)")
    keep_last: int = _f(2, "checkpoints kept in the run dir")
    keep_every_epochs: int = _f(0, "also keep the weights every N epochs as snapshot-epoch-<N>.pt, never pruned, to "
                                   "measure along training (cnx2lite collapse --along-training); 0: none")
    log_every_steps: int = _f(10, "metrics.csv train row every N optimizer steps")
    eval_every: int = _f(1, "evaluate every N epochs (and after the last)")
    recon_every: int = _f(1, "reconstruction figure every N epochs", task="pretrain")
    progress: bool = _f(True, "tqdm progress bars")
    tensorboard: bool = _f(False, "also log to TensorBoard in <run dir>/tensorboard (losses, lr, grad norm, metrics, "
                                  "reconstructions); needs the tensorboard package")

    def __post_init__(self) -> None:
        check_config(self)

    @property
    def run_name(self) -> str:
        return self.name or f"{self.task}-{self.model}"

    @property
    def start(self) -> str | None:
        """The weights a new run starts from (its :func:`start_field`), None from scratch."""
        return getattr(self, start_field(self.task))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def start_field(task: str) -> str:
    """The setting that names the weights a run of ``task`` starts from: ``init_encoder`` when pretraining (the
    encoder pretraining continues), ``pretrained`` otherwise."""
    return "init_encoder" if task == "pretrain" else "pretrained"


def fields_for(task: str) -> list[str]:
    """The config fields that apply to ``task``, in declaration order."""
    check_task(task)
    return [name for name, f in FIELDS.items() if f.metadata["task"] in (None, task)
            or isinstance(f.metadata["task"], tuple) and task in f.metadata["task"]]


def check_overrides(task: str, overrides: dict[str, Any]) -> None:
    """Refuse settings given for ``task`` that are no config field, or a field of another task (which the run would
    ignore: ``init_encoder`` for a transfer, ``mixup`` for pretraining)."""
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown config field(s) {', '.join(unknown)}; fields: {', '.join(FIELDS)}")
    elsewhere = [name for name in overrides if name not in fields_for(task)]
    if elsewhere:
        raise ValueError(f"{', '.join(elsewhere)} do(es) not apply to task {task!r}: the run would ignore it; its "
                         f"fields: {', '.join(fields_for(task))}")


def resolve_batch_and_lr(config: TrainConfig, world_size: int) -> TrainConfig:
    """``config`` as a launch on ``world_size`` processes runs it: ``accum_steps`` derived from ``global_batch``, the
    effective batch in ``global_batch``, and the absolute ``lr`` (from ``base_lr`` scaled by the effective batch / 256
    unless ``lr`` is set)."""
    per_step = config.batch_size * world_size
    accum = config.accum_steps
    if config.global_batch is not None:
        if config.global_batch % per_step:
            raise ValueError(f"global_batch={config.global_batch} is not a multiple of batch_size x processes "
                             f"= {config.batch_size} x {world_size}")
        accum = config.global_batch // per_step
        if config.accum_steps not in (1, accum):  # 1 is the default: global_batch decides
            raise ValueError(f"accum_steps={config.accum_steps} and global_batch={config.global_batch} disagree "
                             f"(global_batch / (batch_size x processes) = {accum}): give one of them")
    effective = per_step * accum
    lr = config.lr if config.lr is not None else config.base_lr * effective / 256
    if config.min_lr > lr:  # the cosine "decay" would climb
        raise ValueError(f"min_lr={config.min_lr:g} is above the peak lr {lr:g}"
                         + ("" if config.lr is not None else f" (base_lr x effective batch {effective} / 256)")
                         + ": lower min_lr or raise the lr")
    return dataclasses.replace(config, accum_steps=accum, lr=lr, global_batch=effective)


# A setting given yields the base's setting that would override it: lr is derived from base_lr only while lr is
# unset, and global_batch sets accum_steps.
YIELDS = {"base_lr": "lr", "accum_steps": "global_batch"}


def fit_overrides(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides`` fitted to the ``base`` config they change, so that each takes effect:

    - a setting of :data:`YIELDS` given without its partner clears the base's partner (``--base-lr`` on a preset that
      sets ``lr`` trains at the ``base_lr``-derived lr, not at the preset's);
    - a warmup shortened with the schedule when they shorten ``epochs`` to the base's warmup or below without giving
      one (the whole run would be warmup): the base's warmup share of its epochs is kept (a 2-of-20-epoch warmup, run
      for 1 epoch, warms up for 0.1). An explicit warmup longer than the epochs is refused by :class:`TrainConfig`."""
    if overrides.get("lr") is not None and "base_lr" in overrides:  # one of them would be dropped without a word
        raise ValueError("lr and base_lr given together: give lr (the peak lr itself) or base_lr (per 256 images)")
    overrides = {**overrides, **{partner: None for given, partner in YIELDS.items()
                                 if given in overrides and partner not in overrides and base.get(partner) is not None}}
    epochs, warmup = overrides.get("epochs"), base.get("warmup_epochs", 0.0)
    if not all(isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))
               for v in (epochs, warmup, base.get("epochs"))):  # numpy's numbers too, as TrainConfig takes them
        return overrides  # a value of the wrong type: TrainConfig refuses it by name
    if epochs is None or "warmup_epochs" in overrides or warmup < epochs or not base.get("epochs") or not warmup:
        return overrides
    return {**overrides, "warmup_epochs": warmup * epochs / base["epochs"]}
