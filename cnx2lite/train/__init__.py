"""Training: FCMAE pretraining, fine-tuning and transfer to dense tasks with the paper's recipes, one loop for all.

``pretrain(config)`` / ``finetune(config)`` / ``transfer("segment" | "detect", config)`` -> :class:`RunResult`, with
the config from
``load_preset(name, task, **overrides)``. Modules: ``config`` (the dataclass), ``presets`` (presets and the
paper's recipes), ``resume`` (stopping and continuing a run), ``run_data`` (the images a run reads), ``optim``
(parameter groups, layer decay, warmup + cosine lr), ``ema``, ``seeding`` (seeds from the run
position), ``loader`` (resumable sharded sampling), ``distributed`` (torchrun/DDP), ``task_base`` (what the loop
asks of a task; evaluation), ``tasks`` and ``dense_tasks`` (what pretraining, fine-tuning, segmentation and detection
compute, and their figures), ``engine`` (the loop), ``plots`` (run figures), ``api``. The run directory's files
belong to :mod:`cnx2lite.rundir`; the command line to :mod:`cnx2lite.commands`.
"""
from ..rundir import RunResult
from .api import evaluate_checkpoint, finetune, pretrain, train, transfer
from .config import TrainConfig
from .config_files import load_config
from .engine import NonFiniteLossError, Trainer
from .presets import PRESETS, load_preset, preset_names
from .resume import ResumeMismatchError

__all__ = ["pretrain", "finetune", "transfer", "evaluate_checkpoint", "train", "Trainer", "RunResult",
           "NonFiniteLossError", "ResumeMismatchError", "TrainConfig", "load_config", "load_preset", "preset_names",
           "PRESETS"]
