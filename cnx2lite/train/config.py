"""Training configuration: one dataclass for pretraining and fine-tuning, its fields' types, ranges and help, and a
run's saved ``config.json`` replayed (:func:`load_config`). The presets and the paper's recipes are :mod:`.presets`.

Batch sizes: ``batch_size`` is per process and micro-step; ``global_batch``, when set, fixes the
effective batch (``batch_size * accum_steps * world_size``) and derives ``accum_steps`` at launch.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from timm.data import create_transform

from ..amp import AMP_MODES
from ..data import SELECTIONS
from ..layers import BLOCK_NORMS, GRN_AGGREGATIONS
from ..masking import check_mask_ratio
from ..models import VARIANTS
from ..models.convnextv2 import BLOCK_STYLES

TASKS = ("pretrain", "finetune")
EVAL_SPLITS = ("val", "tune")  # val/, or the tuning split carved out of train/


def _f(default: Any, help: str, task: str | None = None) -> Any:
    """A config field with its help text and the task it applies to (None: both)."""
    metadata = {"help": help, "task": task}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class TrainConfig:
    task: str = _f("finetune", "'pretrain' (FCMAE) or 'finetune' (classification)")
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
                                      "reads", task="finetune")
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
                                    "image, the paper's ablation (ConvNeXt V2-B, 800 epochs: 83.7 sparse vs 79.3 "
                                    "dense top-1)", task="pretrain")
    # data
    data: str | None = _f(None, "data root (else $CNX2LITE_DATA_ROOT, else <repo>/data)")
    dataset: str = _f("imagenette", "image folder name under the data root")
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
    num_workers: int = _f(0, "DataLoader worker processes per training process")
    cache_images: bool = _f(False, "decode every image once into memory (shorter side at most 2.5x img_size, so the "
                                   "smallest pretraining crop is not upsampled) instead of at every epoch; refused "
                                   "when it would take over half the available memory")
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
        self.betas = tuple(self.betas)
        if isinstance(self.img_size, (list, tuple)):  # from flags or JSON: [S] or [H, W]
            self.img_size = self.img_size[0] if len(self.img_size) == 1 else tuple(self.img_size)
        for f in dataclasses.fields(self):  # types first: flags, a --config file and the API all pass here
            setattr(self, f.name, _typed(f.name, str(f.type), getattr(self, f.name)))
        checks = (("task", TASKS), ("amp", AMP_MODES), ("model", tuple(VARIANTS)), ("block", BLOCK_STYLES),
                  ("grn_aggregation", GRN_AGGREGATIONS), ("block_norm", ("auto", *BLOCK_NORMS)),
                  ("image_selection", SELECTIONS), ("eval_split", EVAL_SPLITS),
                  ("layer_decay_mode", ("single", "group")))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {getattr(self, name)!r}")
        for names, valid, allowed in VALUE_CHECKS:
            for name in names:
                if not valid(getattr(self, name)):  # comparisons with nan are False: nan is refused too
                    raise ValueError(f"{name} must be {allowed}, got {getattr(self, name)!r}")
        if not 0.0 <= self.tune_fraction < 1.0:
            raise ValueError(f"tune_fraction must be in [0, 1), got {self.tune_fraction!r}")
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs:g}) must be at most epochs ({self.epochs}): the lr "
                             "would never reach its peak")
        if self.freeze_encoder_epochs and self.freeze_encoder_epochs >= self.epochs:
            raise ValueError(f"freeze_encoder_epochs ({self.freeze_encoder_epochs}) must be below epochs "
                             f"({self.epochs}): the encoder would never train")
        for name in PATH_FIELDS:  # '~' as bash leaves it in --output=~/runs: the home folder, as for --data
            if isinstance(getattr(self, name), str) and getattr(self, name).startswith("~"):
                setattr(self, name, os.path.expanduser(getattr(self, name)))
        if self.eval_split == "tune" and not self.tune_fraction:
            raise ValueError("eval_split='tune' needs a tuning split: set tune_fraction > 0 (e.g. 0.1)")
        if self.rand_augment is not None:
            _check_rand_augment(self.rand_augment)
        sides = (self.img_size,) if isinstance(self.img_size, int) else self.img_size
        if len(sides) not in (1, 2) or not all(isinstance(v, int) and v > 0 and v % 32 == 0 for v in sides):
            raise ValueError(f"img_size must be one or two (H W) positive multiples of 32 (the model's stride), got "
                             f"{self.img_size!r}")
        if self.in_chans not in (1, 3):
            raise ValueError(f"in_chans must be 1 (greyscale) or 3 (RGB): image files are converted to one of them; "
                             f"got {self.in_chans!r} (the model takes any in_chans: use the library with your own "
                             "dataset for others)")
        if self.task == "pretrain":
            check_mask_ratio(self.mask_ratio, self.img_size)
        if self.name is not None and (not isinstance(self.name, str) or self.name in ("", ".", "..")
                                      or "/" in self.name or "\\" in self.name or "\0" in self.name):
            raise ValueError(f"name must be one folder name (no '/', not '.' or '..'): the run lives in "
                             f"<output>/<name>; got {self.name!r} (put the parent folders in output)")
        if self.resume not in (None, "auto") and not Path(self.resume).is_file():
            raise ValueError(f"resume must be 'auto' or an existing checkpoint file, got {self.resume!r}")

    @property
    def run_name(self) -> str:
        return self.name or f"{self.task}-{self.model}"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)



def _finite(v: float) -> bool:
    return math.isfinite(v)


# (fields, test, what the message says is allowed); None passes where a field takes it ("off", "all")
def _typed(name: str, annotation: str, value: Any) -> Any:
    """``value`` as the field's declared type (``'int'``, ``'float | None'``, ...), or a ValueError naming the field.
    Numpy scalars, integral floats for an int and paths for a string are accepted as what they hold; a fractional
    number for an int (``epochs=2.5``), a bool for a number, or a number for a string is refused."""
    kinds = {kind.strip() for kind in annotation.split("|")}
    if value is None and "None" in kinds:
        return None
    if isinstance(value, (bool, np.bool_)):
        if "bool" in kinds:
            return bool(value)
    elif isinstance(value, numbers.Integral) and kinds & {"int", "float"}:
        return int(value) if "int" in kinds else float(value)
    elif isinstance(value, numbers.Real) and "float" in kinds:
        return float(value)
    elif isinstance(value, numbers.Real) and "int" in kinds and float(value).is_integer():
        return int(value)
    elif isinstance(value, (str, os.PathLike)) and "str" in kinds:
        return os.fspath(value)  # a path given as a Path
    elif isinstance(value, tuple) and any(kind.startswith("tuple") for kind in kinds):
        return value  # img_size and betas: their elements are checked with their ranges below
    raise ValueError(f"{name} must be {annotation.replace(' | ', ' or ')}, got {value!r} ({type(value).__name__})")


VALUE_CHECKS = (
    (("epochs", "batch_size", "accum_steps", "keep_last", "eval_every", "recon_every", "log_every_steps",
      "decoder_dim", "decoder_depth"), lambda v: v >= 1, ">= 1"),
    (("num_classes", "images_per_class", "val_images_per_class", "global_batch"), lambda v: v is None or v >= 1,
     "None (all) or >= 1"),
    (("num_workers", "save_every_steps", "keep_every_epochs", "knn_images_per_class", "freeze_encoder_epochs"),
     lambda v: v >= 0, ">= 0"),
    (("seed",), lambda v: 0 <= v < 2**63, "in 0..2**63-1 (it seeds torch's generators)"),
    (("lr",), lambda v: v is None or (_finite(v) and v > 0), "None (from base_lr) or a finite number > 0"),
    (("base_lr",), lambda v: _finite(v) and v > 0, "a finite number > 0"),
    (("min_lr", "weight_decay", "warmup_epochs", "mixup", "cutmix"), lambda v: _finite(v) and v >= 0,
     "a finite number >= 0"),
    (("label_smoothing", "drop_path", "ema_decay"), lambda v: 0 <= v < 1, "in [0, 1)"),
    (("reprob",), lambda v: 0 <= v <= 1, "in [0, 1]"),
    (("layer_decay",), lambda v: 0 < v <= 1, "in (0, 1] (1 = off)"),
    (("clip_grad",), lambda v: v is None or (_finite(v) and v > 0), "None (off) or a finite number > 0"),
    (("head_init_scale",), lambda v: _finite(v) and v > 0, "a finite number > 0"),
    (("betas",), lambda v: len(v) == 2 and all(0 <= b < 1 for b in v), "two numbers in [0, 1)"),
)


def _check_rand_augment(spec: str) -> None:
    """timm parses the spec only when it builds the transform, with an assertion; build it here (as training does,
    so RandAugment, AugMix and AutoAugment specs pass) and name the field."""
    try:
        create_transform(32, is_training=True, auto_augment=spec)
    except (AssertionError, ValueError, KeyError, IndexError) as e:
        raise ValueError(f"rand_augment must be a timm augmentation spec like 'rand-m9-mstd0.5-inc1' (or None), got "
                         f"{spec!r}{': ' + str(e) if str(e) else ''}") from None


FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def fields_for(task: str) -> list[str]:
    """The config fields that apply to ``task``, in declaration order."""
    return [name for name, f in FIELDS.items() if f.metadata["task"] in (None, check_task(task))]

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
    effective = per_step * accum
    lr = config.lr if config.lr is not None else config.base_lr * effective / 256
    return dataclasses.replace(config, accum_steps=accum, lr=lr, global_batch=effective)


def load_config(path: str | Path, task: str, **overrides: Any) -> TrainConfig:
    """A run's saved ``config.json`` replayed exactly: the config as the run asked for it (its ``requested`` entry:
    ``base_lr``, ``global_batch``, ... before they were resolved, so overriding one re-derives the rest; older files
    without it replay their resolved fields), with ``overrides`` on top, e.g. another ``name``."""
    try:
        saved = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"config: cannot read {path} as a run's config.json ({type(e).__name__}: {e})") from None
    if not isinstance(saved, dict) or saved.get("task") != check_task(task):
        found = saved.get("task") if isinstance(saved, dict) else type(saved).__name__
        raise ValueError(f"config: {path} is not a {task} config.json (task {found!r})")
    unknown = sorted(set(overrides) - set(FIELDS))
    if unknown:
        raise ValueError(f"unknown config field(s) {', '.join(unknown)}; fields: {', '.join(FIELDS)}")
    requested = saved.get("requested", saved)
    checks = (("", saved, set(FIELDS) | set(RECORDED)), ("'requested' of ", requested, set(FIELDS)))
    for where, entry, allowed in checks:
        if not isinstance(entry, dict):
            raise ValueError(f"config: {where}{path} is not a mapping of fields (found {type(entry).__name__})")
        if unknown := sorted(set(entry) - allowed):
            raise ValueError(f"config: unknown field(s) {', '.join(unknown)} in {where}{path}; fields: "
                             f"{', '.join(FIELDS)}")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in requested.items()}
    if requested is not saved:  # the top level is what the run resolved from 'requested': an edit there is not replayed
        resolved = resolve_batch_and_lr(TrainConfig(**{**fields, "task": task}), saved.get("world_size", 1)).to_dict()
        edited = [k for k in FIELDS if k in saved and _as_json(saved[k]) != _as_json(resolved[k])]
        if edited:  # one side was edited by hand; which one cannot be told, so neither is guessed
            shown = "; ".join(f"{k}: {saved[k]!r} at the top level, {resolved[k]!r} from 'requested'" for k in edited)
            raise ValueError(f"config: {path} disagrees with itself ({shown}): the top level is what the run resolved "
                             "from its 'requested' entry, and a replay reads 'requested'. Give the change as a flag "
                             f"(e.g. --{edited[0].replace('_', '-')}), or edit both places alike")
    return TrainConfig(**{**fields, **fit_warmup(fields, overrides), "task": task})


# What a run's config.json records beside its settings (:meth:`cnx2lite.train.engine.Trainer._write_config`).
RECORDED = ("requested", "world_size", "effective_batch", "data_folder", "data_fingerprint", "train_images",
            "val_images", "classes")


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value))


PATH_FIELDS = ("data", "pretrained", "init_encoder", "output", "resume")


def fit_warmup(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``overrides``, plus a warmup shortened with the schedule when they shorten ``epochs`` to the base's warmup or
    below without giving one (the whole run would be warmup): the base's warmup share of its epochs is kept (a
    2-of-20-epoch warmup, run for 1 epoch, warms up for 0.1). An explicit warmup longer than the epochs is refused by
    :class:`TrainConfig`."""
    epochs, warmup = overrides.get("epochs"), base.get("warmup_epochs", 0.0)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (epochs, warmup, base.get("epochs"))):
        return overrides  # a value of the wrong type: TrainConfig refuses it by name
    if epochs is None or "warmup_epochs" in overrides or warmup < epochs or not base.get("epochs") or not warmup:
        return overrides
    return {**overrides, "warmup_epochs": warmup * epochs / base["epochs"]}


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}; got {task!r}")
    return task
