"""Resumable, seeded data loading: the position in an epoch is all a resume needs.

:class:`ResumableSampler` is a :class:`DistributedSampler` (seeded shuffle per epoch, one shard per
process) that can start mid-epoch and yields ``(epoch, index)`` keys; :class:`SeededDataset` turns a
key into ``(image, target, sample_seed)`` with the augmentation seeded by ``(seed, epoch, index)``.
Rank ``r`` of ``W`` gets indices ``perm[r::W]``, so the ranks' ``b``-sized batches at one step are
together the single-process ``W * b`` batch at that step.
"""
from __future__ import annotations

import os
import signal
from typing import Any, Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset, get_worker_info

from .seeding import derive_seed, seeded


class SeededDataset(Dataset):
    """Wraps a map-style ``(image, target)`` dataset; ``dataset[(epoch, index)]`` ->
    ``(image, target, sample_seed)`` with every RNG seeded by ``sample_seed = f(seed, epoch, index)``."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[Tensor, int, int]:
        epoch, index = key
        sample_seed = derive_seed(self.seed, "sample", epoch, index)
        # A worker process draws nothing else, so it skips saving and restoring the generators (0.1 ms a sample).
        with seeded(sample_seed, restore=get_worker_info() is None):
            image, target = self.dataset[index]
        return image, target, sample_seed


class ResumableSampler(DistributedSampler):
    """A seeded, sharded shuffle that yields ``(epoch, index)`` from position ``start`` of this
    process's shard. Works without a process group (pass ``num_replicas`` and ``rank``)."""

    def __init__(self, dataset: Dataset, num_replicas: int, rank: int, seed: int, shuffle: bool = True) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.start = 0

    def set_position(self, epoch: int, start: int) -> None:
        """Begin ``epoch`` at the ``start``-th sample of this process's shard."""
        self.set_epoch(epoch)
        self.start = start

    def __iter__(self) -> Iterator[tuple[int, int]]:
        indices = list(super().__iter__())[self.start:]
        return iter([(self.epoch, i) for i in indices])

    def __len__(self) -> int:
        return self.num_samples - self.start


def init_worker(worker_id: int) -> None:
    """A training or evaluation DataLoader worker's init. SIGTERM is ignored: a stop sent to the whole process group (a
    scheduler's preemption, ``pkill -f``) is the main process's to handle, which stops after the step and saves; a
    worker killed by it, even an idle evaluation worker, would end the run with an error instead (PyTorch's workers
    already leave SIGINT to the main process).

    The lowest CPU priority, so the training threads keep the cores and the worker decodes and augments in the time
    they leave. On 2 cores with 2 workers beside 2 compute threads this
    trained atto at 96 px 6-7% faster (fine-tuning 173 -> 183 img/s, FCMAE 241 -> 257). OpenMP's passive wait
    policy, the other way to hand the cores over, was slower for fine-tuning in our runs (its threads then sleep
    between the many small ops of a step; see :mod:`cnx2lite.openmp` for the spin count we set instead)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if hasattr(os, "nice"):  # POSIX
        os.nice(19)


def train_loader(dataset: Dataset, batch_size: int, seed: int, rank: int, world_size: int,
                 num_workers: int, pin_memory: bool = False, collate_fn: Callable | None = None) -> DataLoader:
    """Full batches of ``(images, targets, sample_seeds)`` (``collate_fn`` makes them from the samples, torch's
    default_collate without one); move it with ``loader.sampler.set_position``."""
    seeded_dataset = SeededDataset(dataset, seed)
    sampler = ResumableSampler(seeded_dataset, world_size, rank, seed)
    if len(sampler) < batch_size:
        raise ValueError(f"batch_size={batch_size} is larger than this process's share of the training set "
                         f"({len(sampler)} of {len(dataset)} images): lower batch_size or use more images")
    # Persistent workers: starting them costs about 1.7 s per epoch on 2 cores, a third of a 500-image epoch. They
    # hold no state that matters: the sampler runs in this process and every sample's seed comes from its key.
    return DataLoader(seeded_dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                      num_workers=num_workers, pin_memory=pin_memory, persistent_workers=num_workers > 0,
                      generator=torch.Generator().manual_seed(seed), worker_init_fn=init_worker, collate_fn=collate_fn)


def read_batches(loader: DataLoader, on_read_error: Callable[[], None]) -> Iterator:
    """``loader``'s batches; when one cannot be read (a worker's error: a file unreadable or gone mid-run),
    ``on_read_error()`` runs before the error goes on."""
    batches = iter(loader)
    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except Exception:
            on_read_error()
            raise
        yield batch


def close_workers(loader: DataLoader | None) -> None:
    """Stop a loader's persistent workers now. They ignore SIGTERM (:func:`init_worker`), so Python's exit, which
    stops worker processes with SIGTERM and then waits for them, would wait forever for workers left running by a
    run that ended with an error; a run closes them itself however it ends."""
    iterator = getattr(loader, "_iterator", None)  # where DataLoader keeps the iterator of persistent workers
    if iterator is not None and hasattr(iterator, "_shutdown_workers"):
        iterator._shutdown_workers()
        loader._iterator = None


def eval_loader(dataset: Dataset, batch_size: int, rank: int, world_size: int, num_workers: int,
                pin_memory: bool = False, collate_fn: Callable | None = None) -> DataLoader:
    """This process's strided share ``rank::world_size`` of ``dataset``, in order, no padding
    (so summed counts over processes are exact)."""
    share = Subset(dataset, range(rank, len(dataset), world_size))
    return DataLoader(share, batch_size=batch_size, shuffle=False, num_workers=num_workers, pin_memory=pin_memory,
                      persistent_workers=num_workers > 0, worker_init_fn=init_worker, collate_fn=collate_fn)


def move_to(targets: Any, device: torch.device) -> Any:
    """``targets`` on ``device``: a tensor, or the lists and dicts of tensors that detection batches hold."""
    if isinstance(targets, Tensor):
        return targets.to(device, non_blocking=True)
    if isinstance(targets, dict):
        return {key: move_to(value, device) for key, value in targets.items()}
    if isinstance(targets, (list, tuple)):
        return type(targets)(move_to(value, device) for value in targets)
    return targets
