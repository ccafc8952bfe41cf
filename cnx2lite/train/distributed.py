"""Process-group setup from torchrun's environment; one process per device (DDP).

``torchrun --nproc_per_node=N -m cnx2lite pretrain ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``; multi-node runs add ``--nnodes``, ``--node_rank``
and ``--rdzv_endpoint`` as usual. NCCL on CUDA, gloo on CPU. Under torchrun the process group is joined even
for one process (the same DDP code path as many); without these variables nothing is initialized.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from ..amp import resolve_device

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False  # this call initialized the process group (and should destroy it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str = "auto") -> Dist:
    """Join the process group described by the environment (if any) and pick this process's device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    # torchrun (TORCHELASTIC_RUN_ID) also for one process: that run goes through the process group and DDP too
    launched = world_size > 1 or "TORCHELASTIC_RUN_ID" in os.environ
    owns = launched and not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if resolved.type == "cuda" else "gloo")
    return Dist(rank, local_rank, world_size, resolved, owns)


def all_reduce_sum(tensor: Tensor) -> Tensor:
    """Sum over processes (in place, returned); the identity in a single process."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor


def gather_lists(items: list) -> list:
    """Every process's ``items`` (picklable), concatenated in rank order, on every process; ``items`` in a single
    process. Shares of any length (torchmetrics' own gathering of list states needs equal ones)."""
    if not dist.is_initialized():
        return items
    shares: list = [None] * dist.get_world_size()
    dist.all_gather_object(shares, items)
    return [item for share in shares for item in share]


def run_on_main(fn: Callable[[], T]) -> T:
    """Call ``fn`` on rank 0 only; every rank returns its result, or raises the exception it raised. For decisions
    that must be made once (which checkpoint to resume, whether the run directory is ours): no rank goes on with
    another answer, and none waits at a collective for a rank 0 that failed."""
    if not dist.is_initialized():
        return fn()
    outcome: list = [None]
    if dist.get_rank() == 0:
        try:
            outcome[0] = (True, fn())
        except Exception as e:  # handed to every rank, raised there
            outcome[0] = (False, e)
    dist.broadcast_object_list(outcome, src=0)
    succeeded, value = outcome[0]
    if not succeeded:
        raise value
    return value


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def training_wrapper(model: nn.Module, dist_info: Dist, compile_model: bool = False) -> nn.Module:
    """``model`` as the training step runs it: under DistributedDataParallel when a process group was joined
    (torchrun, one process or many), then ``torch.compile``d if asked; the parameters stay ``model``'s."""
    wrapped = model
    if dist.is_initialized():
        ids = [dist_info.device] if dist_info.device.type == "cuda" else None
        wrapped = DistributedDataParallel(model, device_ids=ids)
    return torch.compile(wrapped) if compile_model else wrapped
