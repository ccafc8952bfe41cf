"""The checks every :class:`~cnx2lite.train.config.TrainConfig` passes when it is made (flags, a ``--config`` file and
the API alike): each field converted to its declared type, then its allowed values and ranges, then the settings that
must agree with each other. A refusal is a ValueError naming the field and what it allows."""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
from timm.data import create_transform

from ..amp import AMP_MODES, check_device_name
from ..arguments import check_folder_name, expand_user, typed
from ..data import SELECTIONS
from ..layers import BLOCK_NORMS, GRN_AGGREGATIONS
from ..masking import check_mask_ratio, mask_grid, num_visible
from ..models import VARIANTS
from ..models.convnextv2 import BLOCK_STYLES, default_block_norm
from ..rundir import RUN_TASKS
from ..sparse import BACKENDS

TASKS = RUN_TASKS
DENSE_TASKS = ("segment", "detect")
DENSE_FORMATS = {"composites": None, "ade20k": "segment", "coco": "detect"}  # -> the task its labels are for
WHOLE_SPLIT_IGNORES = ("images_per_class", "val_images_per_class", "image_selection", "composites", "val_composites",
                       "max_regions")  # what an ADE20K or COCO folder ignores: its splits are used whole
EVAL_SPLITS = ("val", "tune")  # val/, or the tuning split carved out of train/
PATH_FIELDS = ("data", "pretrained", "init_encoder", "output", "resume")


def check_config(config: Any) -> None:
    """Convert a :class:`~cnx2lite.train.config.TrainConfig`'s fields to their types in place and refuse any value out
    of its range, in one line (typed ``Any``: the config module imports this one)."""
    if isinstance(config.betas, (list, np.ndarray)):  # from flags, JSON or numpy
        config.betas = tuple(config.betas)
    if isinstance(config.img_size, (list, tuple, np.ndarray)):  # [S] or [H, W]; [S, S] is the square S
        sides = tuple(config.img_size)
        config.img_size = sides[0] if len(sides) == 1 or (len(sides) == 2 and sides[0] == sides[1]) else sides
    for f in dataclasses.fields(config):  # types first: flags, a --config file and the API all pass here
        setattr(config, f.name, typed(f.name, str(f.type), getattr(config, f.name)))
    checks = (("task", TASKS), ("amp", AMP_MODES), ("model", tuple(VARIANTS)), ("block", BLOCK_STYLES),
              ("grn_aggregation", GRN_AGGREGATIONS), ("block_norm", ("auto", *BLOCK_NORMS)),
              ("image_selection", SELECTIONS), ("eval_split", EVAL_SPLITS),
              ("layer_decay_mode", ("single", "group")), ("dense_format", tuple(DENSE_FORMATS)),
              ("backend", tuple(BACKENDS)))
    for name, allowed in checks:
        if getattr(config, name) not in allowed:
            raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {getattr(config, name)!r}")
    check_ranges(**{name: getattr(config, name) for names, _, _ in VALUE_CHECKS for name in names})
    check_device_name(config.device)  # which GPUs there are is for the machine that runs it to say
    if config.lr is not None and config.min_lr > config.lr:  # from base_lr, the lr is known at launch
        raise ValueError(f"min_lr={config.min_lr:g} is above the peak lr {config.lr:g}: the cosine would climb; lower "
                         "min_lr or raise lr")
    if not 0.0 <= config.tune_fraction < 1.0:
        raise ValueError(f"tune_fraction must be in [0, 1), got {config.tune_fraction!r}")
    if config.warmup_epochs > config.epochs:
        raise ValueError(f"warmup_epochs ({config.warmup_epochs:g}) must be at most epochs ({config.epochs}): the lr "
                         "would never reach its peak")
    if config.freeze_encoder_epochs and config.freeze_encoder_epochs >= config.epochs:
        raise ValueError(f"freeze_encoder_epochs ({config.freeze_encoder_epochs}) must be below epochs "
                         f"({config.epochs}): the encoder would never train")
    _check_no_ops(config)
    for name in ("data", "pretrained", "init_encoder"):  # an unset $VAR in a script: never "the default"
        if getattr(config, name) == "":
            raise ValueError(f"{name} is an empty path: give a path, or leave it out")
    for name in PATH_FIELDS:  # '~' as bash leaves it in --output=~/runs: the home folder, as for --data; no URL
        if isinstance(getattr(config, name), str):
            setattr(config, name, expand_user(getattr(config, name), name))
    if config.eval_split == "tune" and not config.tune_fraction:
        raise ValueError("eval_split='tune' needs a tuning split: set tune_fraction > 0 (e.g. 0.1)")
    if config.rand_augment is not None:
        _check_rand_augment(config.rand_augment)
    check_img_size(config.img_size)
    if config.in_chans not in (1, 3):
        raise ValueError(f"in_chans must be 1 (greyscale) or 3 (RGB): image files are converted to one of them; "
                         f"got {config.in_chans!r} (the model takes any in_chans: use the library with your own "
                         "dataset for others)")
    if config.task == "pretrain":
        check_mask_ratio(config.mask_ratio, config.img_size)
    if config.task in DENSE_TASKS:
        _check_dense(config)
    _check_batchnorm_values(config)
    if config.name is not None:
        check_folder_name(config.name, "name", "the run lives in <output>/<name> (put the parent folders in output)")
    if config.resume not in (None, "auto") and not Path(config.resume).is_file():
        raise ValueError(f"resume must be 'auto' or an existing checkpoint file, got {config.resume!r}")


def _check_no_ops(config: Any) -> None:
    """Settings that could not take effect as given, refused rather than ignored without a word."""
    if (config.mixup or config.cutmix) and config.batch_size % 2:  # timm's Mixup asserts this deep in the first step
        raise ValueError(f"mixup and cutmix pair each image with another of its batch: batch_size must be even, got "
                         f"{config.batch_size}")
    if config.ema_cpu and not config.ema_decay:
        raise ValueError("ema_cpu keeps the EMA of the weights on the CPU, but there is none (ema_decay 0): set "
                         "ema_decay (e.g. 0.999), or leave ema_cpu out")
    if config.keep_every_epochs > config.epochs:
        raise ValueError(f"keep_every_epochs ({config.keep_every_epochs}) is more than epochs ({config.epochs}): no "
                         "snapshot would be kept; lower it, or leave it out (0)")
    if config.freeze_encoder_epochs and not config.init_encoder:
        raise ValueError("freeze_encoder_epochs trains the decoder alone on the encoder given by init_encoder "
                         "(--init-encoder); without one the encoder is random: give init_encoder, or leave "
                         "freeze_encoder_epochs out")
    if config.output == "":  # an unset $VAR in a script: the run would land in the working directory
        raise ValueError("output is an empty path: give a folder, or leave it out (runs)")
    if not config.sparse_encoder and config.backend != "gather":  # the default: only a backend asked for is refused
        raise ValueError(f"backend {config.backend!r} runs the sparse encoder, but sparse_encoder is off (the dense "
                         "encoder on the masked image): leave backend out, or turn sparse_encoder on")
    has_grn = default_block_norm(config.block, config.block_norm) == "grn"
    if config.grn_aggregation != "l2" and not has_grn:
        raise ValueError(f"grn_aggregation {config.grn_aggregation!r} sets GRN's statistic, but this model has no GRN "
                         f"(block {config.block!r}, block_norm {config.block_norm!r}): leave grn_aggregation out, or "
                         "use block_norm 'grn'")
    if config.layer_decay_mode == "group" and config.layer_decay == 1.0:
        raise ValueError("layer_decay_mode 'group' sets which layers share a layer-decay scale, but layer_decay is "
                         "1.0 (off): give layer_decay < 1 (e.g. 0.8), or layer_decay_mode 'single'")


def _check_batchnorm_values(config: Any) -> None:
    """BatchNorm in GRN's place normalizes each channel over a micro-batch's (visible) positions: where the last stage
    holds one value per channel it outputs its bias whatever the input, and its running variance never measures
    anything (torch's BatchNorm refuses such a batch; ours would train on)."""
    if default_block_norm(config.block, config.block_norm) != "bn":
        return
    h, w = mask_grid(config.img_size)  # the last stage's map: one position per 32 px cell
    visible = config.task == "pretrain" and config.sparse_encoder  # the sparse encoder's statistics: visible cells
    positions = num_visible(h * w, config.mask_ratio) if visible else h * w
    if config.batch_size * positions < 2:
        raise ValueError(f"block_norm 'bn': the last stage's BatchNorm would see {config.batch_size * positions} value "
                         f"per channel in a training step (batch_size {config.batch_size} x {positions} "
                         f"{'visible ' if visible else ''}position(s) at img_size "
                         f"{config.img_size}), so it would normalize nothing: raise batch_size or img_size")


def _check_dense(config: Any) -> None:
    """What the transfer tasks need: square RGB images (composites are square and RGB; Mask R-CNN's resizing is a
    no-op at one size), composites read from their photo files."""
    if not isinstance(config.img_size, int) or config.img_size < 64:
        raise ValueError(f"img_size must be one size of at least 64 px for task {config.task!r} (composites are "
                         f"square; below 64 px the last stage map is 1x1, too small for the head's norms), got "
                         f"{config.img_size!r}")
    if config.dense_format != "composites":
        if DENSE_FORMATS[config.dense_format] != config.task:
            raise ValueError(f"dense_format {config.dense_format!r} holds labels for task "
                             f"{DENSE_FORMATS[config.dense_format]!r}, not {config.task!r}")
        if config.dense_format == "coco" and config.num_classes is not None:
            raise ValueError(f"num_classes does not apply to dense_format 'coco': its categories are the classes; "
                             f"got {config.num_classes}")
        if config.dense_format == "ade20k" and not 2 <= (config.num_classes or 2) <= 255:
            raise ValueError(f"num_classes must be in 2..255 for dense_format 'ade20k' (its annotation PNGs hold "
                             f"labels 1..255, and one class leaves nothing to tell apart), got {config.num_classes}")
        if config.tune_fraction or config.eval_split != "val":
            raise ValueError(f"dense_format {config.dense_format!r} has its own train and val splits: leave "
                             "tune_fraction and eval_split unset (they carve a class folder's train/)")
        if config.skip_corrupt:  # an image left out would leave its annotation behind
            raise ValueError(f"skip_corrupt does not apply to dense_format {config.dense_format!r}: its images and "
                             "annotations are used whole; fix or remove an unreadable image and its annotation")
    if config.in_chans != 3:
        raise ValueError(f"in_chans must be 3 for task {config.task!r} (its images, composites, ADE20K or COCO, are "
                         f"read as RGB), got {config.in_chans!r}")
    if config.cache_images:
        raise ValueError(f"cache_images does not apply to task {config.task!r}: composites read their photos when "
                         "they are made; leave it off")


def check_ranges(**values: Any) -> None:
    """Refuse, naming it, any of ``values`` (fields of a TrainConfig, by name, already of their types) out of its
    range (:data:`VALUE_CHECKS`): every function that takes one of these settings checks it here."""
    for names, valid, allowed in VALUE_CHECKS:
        for name in set(names) & values.keys():
            if not valid(values[name]):  # comparisons with nan are False: nan is refused too
                raise ValueError(f"{name} must be {allowed}, got {values[name]!r}")


def check_img_size(img_size: int | tuple[int, ...]) -> None:
    """An image size is one side or two (H, W), each a positive multiple of 32 (the model's stride)."""
    sides = (img_size,) if isinstance(img_size, int) else img_size
    if len(sides) not in (1, 2) or not all(isinstance(v, int) and v > 0 and v % 32 == 0 for v in sides):
        raise ValueError(f"img_size must be one or two (H W) positive multiples of 32 (the model's stride), got "
                         f"{img_size!r}")


def _finite(v: float) -> bool:
    return math.isfinite(v)


# (fields, test, what the message says is allowed); None passes where a field takes it ("off", "all")
VALUE_CHECKS = (
    (("epochs", "batch_size", "accum_steps", "keep_last", "eval_every", "recon_every", "log_every_steps",
      "decoder_dim", "decoder_depth", "head_channels", "composites", "val_composites", "max_regions"),
     lambda v: v >= 1, ">= 1"),
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


def check_task(task: str) -> str:
    if task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(map(repr, TASKS))}; got {task!r}")
    return task
