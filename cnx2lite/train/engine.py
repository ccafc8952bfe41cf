"""The training loop shared by FCMAE pretraining and fine-tuning (the task is the only difference).

One optimizer step reads top to bottom in :meth:`Trainer.train_step`: the lr from :func:`cosine_lr`, ``accum_steps``
micro-batches per process, the loss check, clipping, the update, the EMA. The images come from :mod:`.run_data`,
stopping and continuing is :mod:`.resume`, evaluation :func:`.task_base.evaluate`. What the run keeps goes through its
:class:`~cnx2lite.rundir.RunDir` (lock, ``config.json``, ``metrics.csv``, checkpoints); the engine adds
``curves.png`` and the task its own figures. Rank 0 writes; all ranks compute.

Exact resume: a checkpoint holds model, optimizer, scaler, EMA, metrics history and the position
``(epoch, step_in_epoch, global_step)``. All randomness is derived from ``(seed, position)`` (see
:mod:`.seeding`), so restoring the position restores the data order, augmentations, masks,
drop path and Mixup draws: a resumed run ends bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import errno
import math
import os
import time
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import transforms
from ..amp import autocast, resolve_amp
from ..layers.depthwise import set_small_map_matmul
from ..layers.grn import set_fused
from ..probes import KNN_K, probe
from ..rundir import RunDir, RunResult
from ..writing import print_line
from .config import TrainConfig, resolve_batch_and_lr
from .config_files import located, start_record
from .distributed import Dist, all_reduce_sum, barrier, cleanup, init_distributed, run_on_main, training_wrapper
from .ema import ModelEma
from .loader import close_workers, eval_loader, move_to, read_batches, train_loader
from .optim import build_optimizer, cosine_lr
from .resume import (
    Position,
    StopFlag,
    check_resumable,
    checkpoint_to_resume,
    graceful_stop,
    keep_origin,
    read_resumable,
    restore_training_state,
    resumes_a_checkpoint,
    without_missing_start,
)
from .run_data import build_run_data
from .run_log import RunLog
from .seeding import derive_seed, seed_everything
from .task_base import evaluate
from .tasks import build_task


class NonFiniteLossError(ValueError):
    """The loss became NaN or infinite (an lr too high, fp16 without clipping): the run stopped without saving over
    good checkpoints. A ValueError: the settings' fault, so the command line reports it in one line, exit status 2."""


class Trainer:
    """Builds everything a run needs from a :class:`TrainConfig`; :meth:`run` trains."""

    def __init__(self, config: TrainConfig) -> None:
        self.dist: Dist = init_distributed(config.device)
        self.run_dir = RunDir(Path(config.output) / config.run_name)
        self.resumes = resumes_a_checkpoint(config, self.run_dir)  # continues a checkpoint rather than starting
        self.task = build_task(without_missing_start(config, self.resumes))
        if self.dist.is_main:
            self.run_dir.check_creatable()  # an output that cannot hold the run stops it before any work
        self.run_log = RunLog(self.run_dir, f"{self.task.name} {config.model}", self.dist.is_main, config.tensorboard)
        c = config
        self.data = build_run_data(c, self.task.name, self.task.train_transform())
        self.train_set, self.val_set = self.task.datasets(self.data)
        self.knn_bank = self.data.knn_bank
        self.requested = config  # as asked for (base_lr, global_batch, ...), kept in config.json for --config replays
        self.config = resolve_batch_and_lr(config, self.dist.world_size)

        seed_everything(derive_seed(c.seed, "init"))  # identical initial weights on every rank
        self.model = self.task.build_model(len(self.train_set.classes)).to(self.dist.device)
        if c.channels_last:
            self.model.to(memory_format=torch.channels_last)
        set_fused(self.model, c.fused_grn)
        set_small_map_matmul(self.model, c.small_map_matmul)
        c = self.config
        self.optimizer = build_optimizer(self.model, c.lr, c.weight_decay, c.betas, c.layer_decay, c.layer_decay_mode,
                                         self.task.decay_grn_and_mask_token, c.fused_adamw)
        self.ema = ModelEma(self.model, c.ema_decay, "cpu" if c.ema_cpu else None) if c.ema_decay > 0 else None
        self.amp_dtype = resolve_amp(c.amp, self.dist.device)
        self.scaler = torch.amp.GradScaler(self.dist.device.type) if self.amp_dtype == torch.float16 else None

        pin = self.dist.device.type == "cuda"
        self.loader = train_loader(self.train_set, c.batch_size, c.seed, self.dist.rank, self.dist.world_size,
                                   c.num_workers, pin, self.task.collate)
        self.val_loader = None if self.val_set is None else eval_loader(
            self.val_set, c.batch_size, self.dist.rank, self.dist.world_size, c.num_workers, pin, self.task.collate)
        self.steps_per_epoch = len(self.loader) // c.accum_steps
        if self.steps_per_epoch < 1:
            raise ValueError(f"an epoch has {len(self.loader)} micro-batches per process, fewer than accum_steps="
                             f"{c.accum_steps}: lower batch_size/accum_steps/global_batch or use more images")
        self.total_steps = c.epochs * self.steps_per_epoch
        self.data.name_idle_intervals(c, self.total_steps)
        self.warmup_steps = round(c.warmup_epochs * self.steps_per_epoch)
        self.position = Position()
        self.stop = StopFlag()  # what asked the run to stop early, if anything (graceful_stop sets it while training)
        self.started = time.perf_counter()  # time_s in metrics: seconds of this run, summed over resumes

        self.train_model: nn.Module = training_wrapper(self.model, self.dist, c.compile)  # DDP, compiled

    def _write_config(self) -> None:
        """``config.json``: the resolved config and what the data gave. Written once the run is known to be this
        one (a refused resume leaves the run's file alone)."""
        if self.dist.is_main:
            c, record = self.config, self.run_dir.path / "config.json"
            self.run_dir.write_config({**located(c.to_dict()), "requested": located(self.requested.to_dict()),
                                       "world_size": self.dist.world_size, "effective_batch": c.global_batch,
                                       **self.data.summary(),
                                       **start_record(c, record if self.position.global_step else None)})

    # ----------------------------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.dist.is_main:
            print_line(message)

    def run(self) -> RunResult:
        """Train to the end (or until stopped), holding the run directory's lock (rank 0) throughout."""
        try:
            with contextlib.ExitStack() as lock:
                # rank 0 takes the lock; every rank learns whether it did (no rank waits for a rank 0 that failed)
                run_on_main(lambda: lock.enter_context(self.run_dir.lock()))
                return self._run()
        finally:
            close_workers(self.loader)
            close_workers(self.val_loader)
            self.run_log.close()
            if self.dist.owns_group:
                cleanup()

    def decode_images(self) -> None:
        """With ``cache_images``, decode every image of the run's splits once, before training reads them (not in
        ``__init__``: a finished run found again trains nothing and needs none). Idempotent."""
        if self.config.cache_images:
            self.data.decode(self.config.img_size, self.log)

    def _run(self) -> RunResult:
        c = self.config
        self._maybe_resume()
        start = c.start  # what the run is, said before it writes (stdout that cannot take it stops it here)
        self.log(f"{self.task.name} {c.model} on {len(self.train_set)} {self.task.sample_kind} "
                 f"({len(self.train_set.classes)} classes, {'x'.join(map(str, transforms.image_hw(c.img_size)))} px), "
                 f"{c.epochs} epochs x {self.steps_per_epoch} steps, effective batch {c.global_batch}, lr {c.lr:.3g}, "
                 f"{self.dist.world_size} process(es) on {self.dist.device}, "
                 f"{f'weights from {start}' if start else 'from scratch'}; run dir {self.run_dir}")
        for note in [*self.task.notes(), *self.data.notes(self.task.name)]:
            self.log(note)
        if self.dist.is_main:
            self.data.warn()
        if self.position.epoch < c.epochs:  # a finished run's record is never rewritten (e.g. by a re-run elsewhere)
            self.decode_images()
            self._write_config()
            self.run_log.open(self.position.global_step)  # TensorBoard's events after this step are of lost steps
        with graceful_stop() as self.stop:
            while self.position.epoch < c.epochs:
                if not self._train_epoch():
                    self._save()
                    self.log(f"stopped at epoch {self.position.epoch}, step {self.position.global_step}; "
                             f"resume with --resume auto (run dir {self.run_dir})")
                    return self._result(interrupted=True)
                self._end_epoch()
            return self._result(interrupted=self.stop.requested)  # asked to stop during the last epoch's end: it did

    def _maybe_resume(self) -> None:
        """Continue from the checkpoint :func:`~.resume.checkpoint_to_resume` chooses (rank 0 chooses, every rank
        resumes from it), once :func:`~.resume.check_resumable` has found it is this run's."""
        c = self.config
        read: dict = {}  # the checkpoint rank 0 read while choosing, not read twice

        def choose() -> str | None:
            path, read["checkpoint"] = checkpoint_to_resume(self.run_dir, c, self.log)
            if path is None and self.task.config.start != c.start:  # a new run never starts without its start weights
                raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), c.start)
            return path

        path = run_on_main(choose)
        if path is None:
            return
        ckpt = read.get("checkpoint") or read_resumable(path)
        check_resumable(path, ckpt, self.task.name, c, self.run_dir, self.train_set.classes, self.data.fingerprints,
                        self.data.folder)
        self.data.ignored += keep_origin(c, self.requested, ckpt["config"])  # warned with the data's
        restore_training_state(path, ckpt, self.model, self.optimizer, self.ema, self.scaler)
        self.position = Position(**ckpt["position"])
        self.run_log.restore(ckpt["history"], finished=self.position.epoch >= c.epochs)
        self.started -= ckpt["history"][-1]["time_s"] if ckpt["history"] else 0.0
        self.log(f"resumed from {path} at epoch {self.position.epoch}, step {self.position.global_step}")

    def _train_epoch(self) -> bool:
        """Train until the epoch ends (True) or a stop was requested (False)."""
        c, pos = self.config, self.position
        self.loader.sampler.set_position(pos.epoch, pos.step_in_epoch * c.accum_steps * c.batch_size)
        batches = read_batches(self.loader, self._explain_read_error)
        bar = tqdm(total=self.steps_per_epoch, initial=pos.step_in_epoch, unit="step", dynamic_ncols=True,
                   desc=f"{self.task.name} {pos.epoch + 1}/{c.epochs}", disable=not (self.dist.is_main and c.progress))
        window_start, window_images = time.perf_counter(), 0
        self.train_model.train()
        with bar:
            while pos.step_in_epoch < self.steps_per_epoch:
                loss, lr, stop_requested = self.train_step(batches, self.stop.requested)
                pos.step_in_epoch += 1
                pos.global_step += 1
                pos.window_loss, pos.window_steps = pos.window_loss + loss, pos.window_steps + 1
                window_images += c.global_batch
                speed = window_images / (time.perf_counter() - window_start)
                bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}", img_s=f"{speed:.0f}")
                bar.update()
                if pos.global_step % c.log_every_steps == 0:
                    self._record(kind="train", train_loss=pos.window_loss / pos.window_steps, lr=lr,
                                 img_per_s=round(speed, 1))
                    pos.window_loss, pos.window_steps = 0.0, 0
                    window_start, window_images = time.perf_counter(), 0
                if stop_requested:
                    return False
                if c.save_every_steps and pos.global_step % c.save_every_steps == 0 \
                        and pos.step_in_epoch < self.steps_per_epoch:
                    self._save()
        return True

    def _explain_read_error(self) -> None:
        """A batch could not be read. The run cannot continue on other images (a resume checks them), so no
        checkpoint is saved: it would only block the run's name."""
        screened = " (or use --skip-corrupt)" if self.data.splits else ""  # class folders only
        self.log(f"reading a batch failed at epoch {self.position.epoch}, step {self.position.global_step}; a run "
                 f"does not continue on changed images: fix or remove the file{screened} and run it again")

    def train_step(self, batches: Iterator, stop_requested: bool = False) -> tuple[float, float, bool]:
        """One optimizer step, top to bottom: the scheduled lr; forward, loss and backward over ``accum_steps``
        micro-batches ``(images (B, C, H, W), targets (B,), seeds (B,))``; the mean loss over processes (a non-finite
        one stops the run before any update); frozen parameters left out; clipping; the update; EMA. Returns the
        loss, the lr and whether any process asked to stop. The run's position is the caller's to advance."""
        c, pos, device = self.config, self.position, self.dist.device
        lr = cosine_lr(pos.global_step, self.total_steps, c.lr, self.warmup_steps, c.min_lr)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        seed_everything(derive_seed(c.seed, "step", pos.global_step, self.dist.rank))  # drop path, Mixup
        total = 0.0
        for micro in range(c.accum_steps):
            images, targets, seeds = next(batches)
            images = images.to(device, non_blocking=True)
            if c.channels_last:
                images = images.contiguous(memory_format=torch.channels_last)
            targets = move_to(targets, device)
            last = micro == c.accum_steps - 1
            sync = contextlib.nullcontext() if last or self.dist.world_size == 1 else self.train_model.no_sync()
            with sync:
                with autocast(device, self.amp_dtype):
                    loss = self.task.loss(self.train_model, images, targets, seeds)
                scaled = loss / c.accum_steps
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total += loss.item()
        stats = all_reduce_sum(torch.tensor([total / c.accum_steps, float(stop_requested)], dtype=torch.float64,
                                            device=device))
        loss = stats[0].item() / self.dist.world_size
        if not math.isfinite(loss):
            newest = self.run_dir.latest_checkpoint()
            raise NonFiniteLossError(
                f"loss is {loss} at epoch {pos.epoch}, step {pos.global_step} (lr {lr:.3g}): stopped before the "
                f"optimizer step. {f'The last good checkpoint is {newest}.' if newest else 'No checkpoint was saved.'}"
                " Lower lr/base_lr, add clip_grad, or use amp=fp32")
        for param in self.task.frozen_parameters(self.model, pos.epoch):
            param.grad = None  # AdamW skips it: no update, no weight decay, no moment
        log_norm = self.run_log.logs_to_tensorboard and (pos.global_step + 1) % c.log_every_steps == 0
        if c.clip_grad is not None or log_norm:
            if self.scaler is not None:
                self.scaler.unscale_(self.optimizer)
            norm = nn.utils.clip_grad_norm_(self.model.parameters(), c.clip_grad or math.inf)  # inf: measure only
            if log_norm:
                self.run_log.scalar("train/grad_norm", norm.item(), pos.global_step + 1)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self.ema.update(self.model)
        return loss, lr, stats[1].item() > 0

    def _end_epoch(self) -> None:
        c, pos = self.config, self.position
        pos.epoch, pos.step_in_epoch = pos.epoch + 1, 0
        row = {"kind": "epoch",
               "lr": self.optimizer.param_groups[-1]["lr"] / self.optimizer.param_groups[-1]["lr_scale"]}
        if (train_loss := self.run_log.mean_train_loss(pos.epoch)) is not None:
            row["train_loss"] = train_loss
        last = pos.epoch == c.epochs
        if self.val_loader is not None and (pos.epoch % c.eval_every == 0 or last):
            row.update(evaluate(self.task, self.model, self.val_loader, self.amp_dtype, self.dist))
            if self.knn_bank is not None:  # pretraining's monitor: weighted kNN of the pooled encoder features
                row["knn_top1"] = probe(self.model.encoder, self.knn_bank, self.val_set, len(self.train_set.classes),
                                        "knn", c.batch_size, self.dist.device, self.amp_dtype, c.num_workers,
                                        k=min(KNN_K, len(self.knn_bank))).top1
            if self.ema is not None:
                ema = evaluate(self.task, self.ema.module, self.val_loader, self.amp_dtype, self.dist)
                row.update({"ema_" + k.removeprefix("val_"): v for k, v in ema.items() if k != "val_loss"})
            self.log(f"epoch {pos.epoch}: " + ", ".join(f"{k} {v:.4g}" for k, v in row.items()
                                                        if isinstance(v, float) and k != "lr"))
        self._record(**row)
        if self.dist.is_main:  # the task's own figures, e.g. FCMAE reconstructions
            figure_set = self.val_set if self.val_set is not None else self.train_set
            for path in self.task.save_figures(self.model, figure_set, self.run_dir.path, pos.epoch, last):
                self.run_log.image(path.parent.name, path, pos.global_step)
        self._save()
        if self.dist.is_main and c.keep_every_epochs and pos.epoch % c.keep_every_epochs == 0:
            self.run_dir.save_snapshot(self._state(resumable=False), pos.epoch)

    # ----------------------------------------------------------------------------------------------
    def _record(self, **row: object) -> None:
        pos = self.position
        row = {"epoch": round(pos.global_step / self.steps_per_epoch, 4), "step": pos.global_step,
               "time_s": round(time.perf_counter() - self.started, 1), **row}
        self.run_log.add(row)

    def _save(self) -> Path | None:
        """Checkpoint the current position (rank 0), then drop old checkpoints."""
        path = None
        if self.dist.is_main:
            path = self.run_dir.save_checkpoint(self._state(), self.position.global_step, self.config.keep_last)
        barrier()
        return path

    def _state(self, resumable: bool = True) -> dict:
        """What a checkpoint holds: the weights and where they stand; ``resumable`` adds all a resume needs."""
        state = {"task": self.task.name, "model": self.model.state_dict(), "config": self.config.to_dict(),
                 "classes": self.train_set.classes, "position": dataclasses.asdict(self.position)}
        if resumable:
            state.update(optimizer=self.optimizer.state_dict(), history=self.run_log.history,
                         ema=self.ema.module.state_dict() if self.ema is not None else None,
                         scaler=self.scaler.state_dict() if self.scaler is not None else None,
                         **self.data.fingerprints)
        return state

    def _result(self, interrupted: bool = False) -> RunResult:
        return RunResult(self.run_dir.path, self.run_log.history, self.run_dir.latest_checkpoint(), interrupted,
                         self.config.to_dict())
