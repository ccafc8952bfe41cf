"""A run that stops and continues: Ctrl-C and SIGTERM stop it after the current step with a checkpoint, and
``resume="auto"`` continues from the newest readable one only when it is this run's: same task, settings (all but the
:data:`RUNTIME_FIELDS`), classes and training images."""
from __future__ import annotations

import contextlib
import csv
import json
import os
import signal
import sys
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from torch import nn
from torch.optim import Optimizer
from tqdm.auto import tqdm

from ..rundir import CHECKPOINT_PATTERN, RunDir, load_checkpoint
from .config import TrainConfig, start_field
from .config_checks import WHOLE_SPLIT_IGNORES
from .config_files import comparable
from .ema import ModelEma
from .run_log import last_epoch, read_metrics


@dataclass
class Position:
    """Where a run is, plus the open logging window (so a resumed run logs the same rows)."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    window_loss: float = 0.0
    window_steps: int = 0


# Where and how a run executes, not what it computes: these may change when a run is resumed (another machine, more
# workers, another equivalent sparse backend). Every other field must match the checkpoint's.
RUNTIME_FIELDS = frozenset({"backend", "data", "pretrained", "init_encoder", "num_workers", "device", "amp",
                            "channels_last", "compile", "fused_grn", "small_map_matmul", "fused_adamw", "ema_cpu",
                            "output", "name", "resume", "save_every_steps", "keep_last", "keep_every_epochs",
                            "log_every_steps", "eval_every", "recon_every", "progress", "tensorboard"})


class ResumeMismatchError(ValueError):
    """A run cannot continue from the checkpoint it was given: trained with other settings, classes or task, or
    unreadable."""


def changed_settings(saved: dict[str, Any], config: TrainConfig) -> list[str]:
    """The non-runtime fields where ``config`` differs from ``saved`` (a checkpoint's config, or a ``config.json``),
    as 'name: old -> new'; compared as JSON holds them, so a tuple equals the list it was saved as. Settings the run's
    data ignores (an ADE20K or COCO folder's :data:`~.config_checks.WHOLE_SPLIT_IGNORES`) are no change."""
    current, recorded = comparable(config.to_dict()), comparable(saved)
    asked = config.to_dict()  # as spelled, for the message
    ignored = RUNTIME_FIELDS | (set(WHOLE_SPLIT_IGNORES) if config.dense_format in ("ade20k", "coco") else set())
    return [f"{name}: {saved[name]!r} -> {asked[name]!r}" for name in current
            if name not in ignored and name in saved and recorded[name] != current[name]]


def checkpoint_to_resume(run_dir: RunDir, config: TrainConfig,
                         log: Callable[[str], None]) -> tuple[str, dict | None] | tuple[None, None]:
    """Which checkpoint a run continues (``config.resume``: None, ``"auto"`` or a path), and its content when it was
    read to decide. A run directory that already holds checkpoints, or another run's record (:func:`check_record`), is
    never started over silently."""
    resume = config.resume
    if resume is None and run_dir.latest_checkpoint():
        raise FileExistsError(f"{run_dir} already holds checkpoints of a run: pass resume='auto' "
                              "(--resume auto) to continue it, or choose another name/output")
    if resume == "auto":
        try:
            found = run_dir.newest_readable_checkpoint(log)
        except ValueError as e:  # none of them loads
            raise ResumeMismatchError(str(e)) from None
        if found[0] is None:  # a mistyped name starts a new run: say so, in case it was meant to continue one
            check_record(run_dir, config)  # before saying so: a folder holding another run's record is refused
            log(f"resume auto: no checkpoint in {run_dir}: starting a new run")
        return found
    if resume is None:
        check_record(run_dir, config)
    return resume, None


def check_resumable(path: str, ckpt: object, task: str, config: TrainConfig, run_dir: RunDir, classes: list[str],
                    fingerprints: dict[str, str], data_folder: Path) -> None:
    """Raise a :class:`ResumeMismatchError` saying why, unless ``ckpt`` (read from ``path``) is a checkpoint of this
    run: the same task, an unfinished run when it is another directory's (and then only into a directory that holds
    no run of its own), the same settings, classes and images (``fingerprints``: of the training images and of the
    scored ones, each compared when the checkpoint kept it)."""
    start_from = f"{start_field(task)} (--{start_field(task).replace('_', '-')})"
    if not isinstance(ckpt, dict) or "task" not in ckpt:
        raise ResumeMismatchError(f"cannot resume from {path}: it is not a cnx2lite training checkpoint (no task, "
                                  f"optimizer or position in it); to start from its weights, pass it as {start_from}")
    if ckpt.get("task") != task:
        raise ResumeMismatchError(f"cannot resume {task} from {path}: it is a {ckpt.get('task')!r} checkpoint")
    if "optimizer" not in ckpt:  # a snapshot (keep_every_epochs) or an export: weights and position only
        raise ResumeMismatchError(f"cannot resume from {path}: it holds weights only (a snapshot), not the optimizer "
                                  f"state a run continues with; to start from its weights, pass it as {start_from}")
    named = CHECKPOINT_PATTERN.fullmatch(Path(path).name)
    saved_at = ckpt.get("position", {}).get("global_step")
    if named and saved_at is not None and int(named.group(1)) != saved_at:  # renamed or copied by hand
        raise ResumeMismatchError(f"cannot resume from {path}: its name says step {int(named.group(1))}, but it was "
                                  f"saved at step {saved_at}; the run orders and prunes its checkpoints by their "
                                  "names: remove it (a copy, or another run's), or if it is this run's own, give "
                                  "it back its name (checkpoint-<step>.pt)")
    foreign = Path(path).resolve().parent != run_dir.path.resolve()
    newest_step, newest = (run_dir.numbered(CHECKPOINT_PATTERN) or [(None, None)])[-1]
    if foreign and (newest is not None or (run_dir.path / "metrics.csv").exists()):
        raise ResumeMismatchError(f"cannot resume from {path} into {run_dir}: that folder holds a run of its own, and "
                                  "continuing another run's checkpoint there would mix the two; choose another name "
                                  "or output")
    if not foreign and newest is not None and saved_at is not None and newest_step > saved_at:
        raise ResumeMismatchError(f"cannot resume from {path}: {run_dir} holds later checkpoints of this run (newest: "
                                  f"{newest.name}), which continuing from step {saved_at} would replace with another "
                                  "history; continue the newest (--resume auto), or branch into a new run: --resume "
                                  f"{path} with another name")
    done = ckpt.get("position", {}).get("epoch", 0)
    if foreign and done >= config.epochs:
        raise ResumeMismatchError(f"cannot resume from {path}: that run has trained {done} epoch(s), as many as this "
                                  f"one asks for ({config.epochs}), so there is nothing to continue; to start a new "
                                  f"run from its weights, pass it as {start_from}")
    changed = changed_settings(ckpt.get("config", {}), config)
    if "classes" in ckpt and ckpt["classes"] != classes:  # labels would silently mean other classes
        changed.append(f"classes: {_describe_change(ckpt['classes'], classes)}")
    for key, images, how in (("data_fingerprint", "training", "files added, removed, replaced or relabeled"),
                             ("scoring_fingerprint", "scored", "files added, removed, replaced or relabeled"),
                             ("content_fingerprint", "training or scored", "a file's content changed (its name "
                              "and size did not)")):
        if ckpt.get(key, fingerprints[key]) != fingerprints[key]:  # older runs: none kept
            changed.append(f"the {images} images under {data_folder}: {how} since the run began")
            break  # one change of the images is said once
    if changed:
        raise ResumeMismatchError(f"cannot resume from {path}: it was trained with other settings "
                                  f"({'; '.join(changed)}). Resume with the same settings, or start a new run "
                                  "(another name or output)")


def resumes_a_checkpoint(config: TrainConfig, run_dir: RunDir) -> bool:
    """Whether the run continues a checkpoint (one given, or ``auto`` with one in its folder) rather than starting."""
    return config.resume not in (None, "auto") or (config.resume == "auto" and run_dir.latest_checkpoint() is not None)


def without_missing_start(config: TrainConfig, resumes: bool) -> TrainConfig:
    """``config`` as the model is built from it: a run that resumes a checkpoint (``resumes``: see
    :func:`resumes_a_checkpoint`) takes its weights from there, so the weights it started from (``config.start``) are
    not needed, and when they are gone since (a deleted run folder, released weights not downloaded here) they are
    left out rather than refused. Otherwise ``config`` itself."""
    if config.start is None or os.path.exists(config.start) or not resumes:
        return config
    return replace(config, **{start_field(config.task): None})


def keep_origin(config: TrainConfig, requested: TrainConfig, saved: dict[str, Any]) -> list[str]:
    """A resumed run keeps the weights it started from in its record: its weights come from the checkpoint, so
    ``pretrained``/``init_encoder`` take the checkpoint's values, in place. Returns what to say of another one given:
    a setting the resume does not use, for the run's ignored-setting warnings."""
    unused = []
    for name in ("pretrained", "init_encoder"):
        given, started = getattr(config, name), saved.get(name)
        if given is not None and _real(given) != _real(started):  # the same folder written another way is the same
            unused.append(f"{name} {given} does not apply to a resume: the run continues from its checkpoint, and "
                          f"started from {started or 'scratch'}")
        setattr(config, name, started)
        setattr(requested, name, started)
    return unused


def check_record(run_dir: RunDir, config: TrainConfig) -> None:
    """A folder that holds another run's record (its ``config.json``, without a checkpoint to resume: deleted, or
    never saved) is refused: other settings, snapshots, or a history of finished epochs (whose results a new run would
    write over, whatever its images or weights). Only the same settings, started again in a folder whose run never
    finished an epoch, may write over it."""
    path = run_dir.path / "config.json"
    try:
        saved = json.loads(path.read_text()) if path.is_file() else None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        saved = {}
    if saved is None:
        return
    changed = changed_settings(saved, config)
    if run_dir.snapshots():
        changed.append("it holds snapshots")
    if (epochs := _epochs_logged(run_dir)) and not changed:
        changed.append(f"it logged {epochs} finished epoch(s), whose results a new run would write over")
    if changed:
        raise FileExistsError(f"{run_dir} holds the record of another run ({'; '.join(changed)}): choose another "
                              "name or output, or remove the folder")


def _real(path: str | None) -> str | None:
    """A path as the file it leads to (released weights by name stay names)."""
    return os.path.realpath(path) if path and os.path.exists(path) else path


def _epochs_logged(run_dir: RunDir) -> int:
    try:
        return int(last_epoch(read_metrics(run_dir.path / "metrics.csv")) or 0)
    except (OSError, ValueError, KeyError, csv.Error):  # none, or not a metrics file: no history to keep
        return 0


def read_resumable(path: str) -> dict:
    """The checkpoint at ``path``; one that cannot be read is a :class:`ResumeMismatchError` naming it."""
    try:
        return load_checkpoint(path)
    except ValueError as e:
        raise ResumeMismatchError(f"cannot resume: {e}") from None


def restore_training_state(path: str, ckpt: dict, model: nn.Module, optimizer: Optimizer, ema: ModelEma | None,
                           scaler: torch.amp.GradScaler | None) -> None:
    """Load a checkpoint :func:`check_resumable` accepted into the run's model, optimizer, EMA and scaler."""
    model.load_state_dict(ckpt["model"])
    implementation = [(group["fused"], group["foreach"]) for group in optimizer.param_groups]
    try:
        optimizer.load_state_dict(ckpt["optimizer"])
    except ValueError as e:  # parameter groups of another version (layer-decay ids, weight-decay rules)
        raise ResumeMismatchError(f"cannot resume from {path}: its optimizer state does not fit this version's "
                                  f"parameter groups ({e}). Start a new run, or start one from its weights with "
                                  "--pretrained (fine-tuning) or --init-encoder (pretraining)") from None
    for group, (fused, foreach) in zip(optimizer.param_groups, implementation):  # this run's, not the checkpoint's
        group["fused"], group["foreach"] = fused, foreach
    if ema is not None:
        ema.module.load_state_dict(ckpt["ema"])
    if scaler is not None and ckpt.get("scaler") is not None:  # fp16 now, not before: the scaler starts afresh
        scaler.load_state_dict(ckpt["scaler"])


def _describe_change(old: list[str], new: list[str]) -> str:
    gone, added = [c for c in old if c not in new], [c for c in new if c not in old]
    if not gone and not added:
        return f"the same {len(old)} class folders in another label order"
    return "; ".join(part for part in (f"{gone} gone" if gone else "", f"{added} added" if added else "") if part)


class StopFlag:
    requested = False
    signal: int | None = None  # the signal that asked for the stop


@contextlib.contextmanager
def graceful_stop() -> Iterator[StopFlag]:
    """SIGINT (Ctrl-C, a notebook's interrupt), SIGTERM (schedulers' preemption) and SIGHUP (the terminal or ssh
    session closed; left ignored under ``nohup``) ask the loop to stop after the current step and save; a second Ctrl-C
    interrupts at once."""
    flag = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: object) -> None:
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested, flag.signal = True, signum
        again = " (Ctrl-C again to abort without saving)" if signum == signal.SIGINT else ""
        tqdm.write(f"{signal.Signals(signum).name}: stopping after this step and saving a checkpoint{again}",
                   file=sys.stderr)

    hangup = [signal.SIGHUP] if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN else []
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, *hangup)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
