"""``cnx2lite bench``: speed and memory of our models against a reference, measured in one run.

``bench model``: training step (forward + backward + AdamW) and inference throughput of our dense
ConvNeXt V2 against timm's ``convnextv2_*`` with the same weights.
``bench fcmae``: a full FCMAE training step with each sparse backend against ``dense``.
``bench train``: FCMAE pretraining and fine-tuning steps as ``cnx2lite pretrain/finetune --preset cpu`` run them, on
real images with the data loader included: the reference path (GRN's three steps, 7x7 depthwise convs of maps
smaller than the kernel by oneDNN, AdamW's loop, every image decoded at every epoch) beside the default (fused GRN,
those convs as a matrix product, fused AdamW, images decoded once).
``--amp fp32 bf16`` measures both precisions in the same run and prints their ratio side by side (the default
for ``bench model``: fp32 and what ``auto`` picks). ``--batch-size 1`` gives the latency of one image.

Repeats are interleaved (A, B, A, B, ...) and medians reported, so background load hits both sides.
Memory: peak allocated on CUDA; on CPU, the bytes autograd saves for backward (the activation memory
a training step must hold), since the CPU allocator keeps no peak statistics.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F

from .amp import AMP_DTYPES, autocast, resolve_amp
from .checkpoint_formats import export_timm
from .data import DataNotFoundError, find_image_folder
from .fcmae import FCMAE
from .masking import check_mask_ratio, random_mask
from .models import create_model
from .sparse import available_backends, check_backend
from .train import Trainer, load_preset
from .train.loader import close_workers

Step = Callable[[], None]
K = TypeVar("K", bound=Hashable)
AMP_NAMES = {dtype: name for name, dtype in AMP_DTYPES.items()}


def _precisions(amp: Sequence[str], device: torch.device) -> dict[str, torch.dtype]:
    """``--amp`` values resolved on ``device`` (``auto`` becomes what it means there), by name, without repeats."""
    dtypes = [resolve_amp(a, device) for a in amp]
    return {AMP_NAMES[d]: d for d in dtypes}


def _train_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], dtype: torch.dtype) -> Step:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    device = next(model.parameters()).device

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        with autocast(device, dtype):
            loss = loss_fn()
        loss.backward()
        optimizer.step()

    return step


# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, by a substring of torch.cuda.get_device_name().
PEAK_BF16_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.1, "L4": 121.0,
                    "A10G": 70.0, "A10": 125.0, "RTX 4090": 165.2, "RTX 3090": 71.0, "V100": 125.0}


def peak_bf16_flops(device: torch.device) -> tuple[str, float] | None:
    """``(GPU name, peak bf16 FLOP/s)`` of a CUDA device in :data:`PEAK_BF16_TFLOPS`, else None."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    key = next((k for k in PEAK_BF16_TFLOPS if k in name), None)
    return None if key is None else (name, PEAK_BF16_TFLOPS[key] * 1e12)


def step_flops(step: Step) -> int:
    """FLOPs of one call of ``step`` (forward and backward, as executed: a sparse encoder's are fewer), counted by
    ``torch.utils.flop_counter`` (matmuls and convolutions, the FLOPs that tensor cores run)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    return counter.get_total_flops()


def utilization(flops: int, images_per_second: float, batch_size: int, device: torch.device) -> str:
    """Achieved TFLOP/s, and MFU (model FLOPs utilization) against the GPU's bf16 peak where it is known."""
    achieved = flops * images_per_second / batch_size
    text = f"{achieved / 1e12:.3g} TFLOP/s"
    peak = peak_bf16_flops(device)
    return text + (f", MFU {100 * achieved / peak[1]:.1f}% of the {peak[0]} bf16 peak" if peak else "")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(steps: Mapping[K, Step], batch_size: int, iters: int, warmup: int,
               device: torch.device) -> dict[K, float]:
    """Images per second of each step, median over ``iters`` interleaved repeats."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[K, list[float]] = {name: [] for name in steps}
    for _ in range(iters):
        for name, step in steps.items():
            _sync(device)
            start = time.perf_counter()
            step()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return {name: batch_size / statistics.median(t) for name, t in times.items()}


def step_memory(step: Step, device: torch.device) -> int:
    """Peak bytes of one step: allocated on CUDA, saved-for-backward activations on CPU."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        step()
        return torch.cuda.max_memory_allocated(device)
    saved: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return sum(saved.values())


def _print_amp_ratios(speed: Mapping[tuple[str, str], float], amp: Sequence[str]) -> None:
    """Each ``(side, precision)``'s img/s next to the same side's fp32, when fp32 ran too."""
    if "fp32" not in amp:
        return
    sides = list(dict.fromkeys(side for side, _ in speed))
    width = max(map(len, sides))
    for low in (p for p in amp if p != "fp32"):
        print(f"{low} vs fp32, same run:")
        for side in sides:
            fp32, other = speed[side, "fp32"], speed[side, low]
            print(f"  {side:>{width}}: fp32 {fp32:8.1f} img/s | {low} {other:8.1f} img/s | "
                  f"{low}/fp32 {other / fp32:.2f}x")


def bench_model(model: str = "convnextv2_atto", img_size: int = 224, batch_size: int = 32, iters: int = 5,
                warmup: int = 2, device: torch.device = torch.device("cpu"), amp: Sequence[str] = ("fp32", "auto"),
                channels_last: bool = False) -> None:
    """Training and inference img/s of our dense model against timm's with the same weights, per precision."""
    import timm

    amp = _precisions(amp, device)
    torch.manual_seed(0)
    ours = create_model(model).to(device)
    reference = timm.create_model(model, pretrained=False).to(device)
    reference.load_state_dict(export_timm(ours))
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    y = torch.randint(0, 1000, (batch_size,), device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
        for net in (ours, reference):
            net.to(memory_format=torch.channels_last)
    models = {"cnx2lite": ours, "timm": reference}
    train = {(n, p): _train_step(m.train(), lambda m=m: F.cross_entropy(m(x), y), dtype)
             for p, dtype in amp.items() for n, m in models.items()}
    print(f"{model}, batch {batch_size}, {img_size}px, {device}, {torch.get_num_threads()} threads, "
          f"amp {', '.join(amp)}{', channels_last' if channels_last else ''}")
    results = time_steps(train, batch_size, iters, warmup, device)
    train_flops = {key: step_flops(step) for key, step in train.items()}

    def infer(model: torch.nn.Module, dtype: torch.dtype) -> Step:
        def step() -> None:
            with autocast(device, dtype):
                model(x)
        return step

    with torch.inference_mode():
        inference = time_steps({(n, p): infer(m.eval(), dtype) for p, dtype in amp.items() for n, m in models.items()},
                               batch_size, iters, warmup, device)
    kinds = {"train (fwd+bwd+AdamW)": results, "inference": inference}
    for kind, r in kinds.items():
        for p in amp:
            ours, timm_speed = r["cnx2lite", p], r["timm", p]
            line = (f"{kind:>22} {p}: cnx2lite {ours:8.1f} img/s ({1e3 * batch_size / ours:7.1f} ms/batch) | "
                    f"timm {timm_speed:8.1f} img/s ({1e3 * batch_size / timm_speed:7.1f} ms/batch) | "
                    f"ratio {ours / timm_speed:.2f}x")
            if r is results:
                line += f" | cnx2lite {utilization(train_flops['cnx2lite', p], ours, batch_size, device)}"
            print(line)
    _print_amp_ratios({(f"{kind}, {n}", p): v for kind, r in kinds.items() for (n, p), v in r.items()}, list(amp))


def bench_fcmae(model: str = "convnextv2_atto", img_size: int = 224, batch_size: int = 32, iters: int = 5,
                warmup: int = 2, device: torch.device = torch.device("cpu"), amp: Sequence[str] = ("auto",),
                mask_ratio: float = 0.6, backends: Sequence[str] | None = None) -> None:
    """Img/s and memory of a whole FCMAE training step per sparse backend, against ``dense``."""
    check_mask_ratio(mask_ratio, img_size)  # the same masks training accepts: a visible and a masked cell each
    backends = list(backends or available_backends())
    for backend in backends:
        check_backend(backend)
    amp = _precisions(amp, device)
    torch.manual_seed(0)
    fcmae = FCMAE(model, mask_ratio=mask_ratio).to(device)
    x = torch.randn(batch_size, 3, img_size, img_size, device=device)
    mask = random_mask(batch_size, img_size, mask_ratio, generator=torch.Generator().manual_seed(0), device=device)

    def loss_with(backend: str) -> Callable[[], torch.Tensor]:
        def loss() -> torch.Tensor:
            fcmae.backend = backend
            return fcmae(x, mask)[0]
        return loss

    steps = {(b, p): _train_step(fcmae, loss_with(b), dtype) for p, dtype in amp.items() for b in backends}
    print(f"FCMAE {model}, batch {batch_size}, {img_size}px, mask ratio {mask_ratio}, {device}, "
          f"{torch.get_num_threads()} threads, amp {', '.join(amp)}")
    speed = time_steps(steps, batch_size, iters, warmup, device)
    memory = {key: step_memory(step, device) for key, step in steps.items()}
    flops = {key: step_flops(step) for key, step in steps.items()}
    what = "peak allocated" if device.type == "cuda" else "saved activations"
    for b, p in steps:
        line = (f"{b:>10} {p}: {speed[b, p]:8.1f} img/s, {what} {memory[b, p] / 2**20:8.1f} MiB, "
                f"{utilization(flops[b, p], speed[b, p], batch_size, device)}")
        if "dense" in backends:
            line += (f" | speed {speed[b, p] / speed['dense', p]:.2f}x dense, "
                     f"memory {memory[b, p] / memory['dense', p]:.2f}x dense")
        print(line)
    _print_amp_ratios(speed, list(amp))


# The reference path of bench train: what the default replaces, each one option away (--no-fused-grn ...).
REFERENCE_PATH = {"fused_grn": False, "small_map_matmul": False, "fused_adamw": False, "cache_images": False}


def _timed_blocks(trainer: Trainer, steps: int) -> float:
    """Seconds for ``steps`` optimizer steps of ``trainer`` from a fresh pass over its loader (so the time includes
    filling the loader's pipeline, as every epoch does)."""
    trainer.loader.sampler.set_position(0, 0)
    batches = iter(trainer.loader)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(batches)
    return time.perf_counter() - start


def bench_train(tasks: Sequence[str] = ("pretrain", "finetune"), preset: str = "cpu", data: str | None = None,
                steps: int = 15, iters: int = 3, warmup: int = 3, batch_size: int | None = None) -> None:
    """Images per second of whole training steps, data loading included, on the default path and the reference one
    (:data:`REFERENCE_PATH`), in timed blocks of steps that each start a fresh pass over the data. ``batch_size``:
    the preset's unless given."""
    given = {} if batch_size is None else {"batch_size": batch_size}
    print(f"{preset} preset, {steps} steps per timed block, {iters} blocks per side interleaved, "
          f"{torch.get_num_threads()} threads; data loading included (data: {data or 'default root'})")
    sides = {"reference": REFERENCE_PATH, "default": {}}
    with tempfile.TemporaryDirectory() as output:  # every task's settings and images checked before any is timed
        try:
            built = {task: {name: Trainer(load_preset(preset, task=task, data=data, output=output,
                                                      name=f"{task}-{name}", progress=False, epochs=1, **given,
                                                      **changes))
                            for name, changes in sides.items()} for task in tasks}
        except DataNotFoundError:  # pretraining reads a folder of photos, fine-tuning needs class folders
            if "finetune" not in tasks or data is None or not _photos_without_classes(data):
                raise
            raise DataNotFoundError(f"{data} holds photos without classes, which pretraining reads but fine-tuning "
                                    "cannot: pass --tasks pretrain, or a folder of train/<class>/ and val/<class>/"
                                    ) from None
        for task in tasks:
            trainers = built.pop(task)
            for trainer in trainers.values():
                trainer.decode_images()  # what run() does before training (a no-op on the reference path)
            batch = next(iter(trainers.values())).config.batch_size
            block = min(steps, min(t.steps_per_epoch for t in trainers.values()))  # steps per timed block
            seconds: dict[str, list[float]] = {name: [] for name in trainers}
            for trainer in trainers.values():  # warm up: workers started, caches filled, allocator grown
                _timed_blocks(trainer, min(block, warmup))
            for _ in range(iters):
                for name, trainer in trainers.items():
                    seconds[name].append(_timed_blocks(trainer, block))
            speed = {name: block * batch / statistics.median(t) for name, t in seconds.items()}
            print(f"{task:>9}: reference {speed['reference']:7.1f} img/s | default {speed['default']:7.1f} img/s | "
                  f"default/reference {speed['default'] / speed['reference']:.2f}x")
            for trainer in trainers.values():  # its workers stop before the next task is timed
                close_workers(trainer.loader)


def _photos_without_classes(data: str) -> bool:
    """Whether ``data`` is a folder of photos without class folders, which pretraining reads (and nothing else)."""
    try:
        return find_image_folder(Path(data), unlabeled_ok=True) is None
    except (ValueError, OSError):
        return False
