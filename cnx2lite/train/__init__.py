"""Training: FCMAE pretraining and fine-tuning with the paper's recipes, one loop for both.

``pretrain(config)`` / ``finetune(config)`` -> :class:`RunResult`, with the config from
``load_preset(name, task, **overrides)``. Modules: ``config`` (dataclass, presets), ``optim``
(parameter groups, layer decay, warmup + cosine lr), ``ema``, ``seeding`` (seeds from the run
position), ``loader`` (resumable sharded sampling), ``distributed`` (torchrun/DDP), ``tasks`` (what
pretraining and fine-tuning compute, and their figures), ``engine`` (the loop), ``plots`` (run
figures), ``api``. The run directory's files belong to :mod:`cnx2lite.rundir`; the command line to
:mod:`cnx2lite.commands`.
"""
from .api import evaluate_checkpoint, finetune, pretrain, train
from .config import PRESETS, ResumeMismatchError, TrainConfig, load_config, load_preset, preset_names
from .engine import NonFiniteLossError, RunResult, Trainer

__all__ = ["pretrain", "finetune", "evaluate_checkpoint", "train", "Trainer", "RunResult", "NonFiniteLossError",
           "ResumeMismatchError", "TrainConfig", "load_config", "load_preset", "preset_names", "PRESETS"]
