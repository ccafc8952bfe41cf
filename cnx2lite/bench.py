"""``cnx2lite bench``: speed and memory of our models against a reference, measured in one run.

``bench model``: training step (forward + backward + AdamW) and inference throughput of our dense
ConvNeXt V2 against timm's ``convnextv2_*`` with the same weights.
``bench fcmae``: a full FCMAE training step with each sparse backend against ``dense``.

Repeats are interleaved (A, B, A, B, ...) and medians reported, so background load hits both sides.
Memory: peak allocated on CUDA; on CPU, the bytes autograd saves for backward (the activation memory
a training step must hold), since the CPU allocator keeps no peak statistics.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import torch
import torch.nn.functional as F

from .checkpoints import export_timm
from .fcmae import FCMAE
from .masking import random_mask
from .models import VARIANTS, create_model
from .sparse import available_backends

Step = Callable[[], None]


def _train_step(model: torch.nn.Module, loss_fn: Callable[[], torch.Tensor]) -> Step:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(steps: dict[str, Step], batch_size: int, iters: int, warmup: int, device: torch.device) -> dict[str, float]:
    """Images per second of each step, median over ``iters`` interleaved repeats."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
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


def bench_model(args: argparse.Namespace) -> int:
    import timm

    device = torch.device(args.device)
    torch.manual_seed(0)
    ours = create_model(args.model).to(device)
    reference = timm.create_model(args.model, pretrained=False).to(device)
    reference.load_state_dict(export_timm(ours))
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    y = torch.randint(0, 1000, (args.batch_size,), device=device)
    models = {"cnx2lite": ours, "timm": reference}
    train = {n: _train_step(m.train(), lambda m=m: F.cross_entropy(m(x), y)) for n, m in models.items()}
    print(f"{args.model}, batch {args.batch_size}, {args.img_size}px, {device}, {torch.get_num_threads()} threads")
    results = time_steps(train, args.batch_size, args.iters, args.warmup, device)

    def infer(model: torch.nn.Module) -> Step:
        return lambda: model(x)

    with torch.inference_mode():
        inference = time_steps({n: infer(m.eval()) for n, m in models.items()}, args.batch_size, args.iters, args.warmup, device)
    for kind, r in (("train (fwd+bwd+AdamW)", results), ("inference", inference)):
        print(f"{kind:>22}: cnx2lite {r['cnx2lite']:8.1f} img/s | timm {r['timm']:8.1f} img/s | "
              f"ratio {r['cnx2lite'] / r['timm']:.2f}x")
    return 0


def bench_fcmae(args: argparse.Namespace) -> int:
    device = torch.device(args.device)
    backends = args.backends or available_backends()
    torch.manual_seed(0)
    model = FCMAE(args.model, mask_ratio=args.mask_ratio).to(device)
    x = torch.randn(args.batch_size, 3, args.img_size, args.img_size, device=device)
    mask = random_mask(args.batch_size, args.img_size, args.mask_ratio, generator=torch.Generator().manual_seed(0), device=device)

    def loss_with(backend: str) -> Callable[[], torch.Tensor]:
        def loss() -> torch.Tensor:
            model.backend = backend
            return model(x, mask)[0]
        return loss

    steps = {b: _train_step(model, loss_with(b)) for b in backends}
    print(f"FCMAE {args.model}, batch {args.batch_size}, {args.img_size}px, mask ratio {args.mask_ratio}, {device}, "
          f"{torch.get_num_threads()} threads")
    speed = time_steps(steps, args.batch_size, args.iters, args.warmup, device)
    memory = {b: step_memory(steps[b], device) for b in backends}
    what = "peak allocated" if device.type == "cuda" else "saved activations"
    for b in backends:
        line = f"{b:>10}: {speed[b]:8.1f} img/s, {what} {memory[b] / 2**20:8.1f} MiB"
        if "dense" in speed:
            line += f" | speed {speed[b] / speed['dense']:.2f}x dense, memory {memory[b] / memory['dense']:.2f}x dense"
        print(line)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("bench", help="speed/memory benchmarks against a reference", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    for name, func, helptext in (
        ("model", bench_model, "dense ConvNeXt V2: ours vs timm, training and inference img/s"),
        ("fcmae", bench_fcmae, "FCMAE training step per sparse backend: img/s and memory vs dense"),
    ):
        sub = kinds.add_parser(name, help=helptext, description=helptext)
        sub.add_argument("--model", default="convnextv2_atto", choices=list(VARIANTS), metavar="NAME",
                         help="variant (default: convnextv2_atto); one of " + ", ".join(VARIANTS))
        sub.add_argument("--img-size", type=int, default=224, help="square image size in pixels (default: 224)")
        sub.add_argument("--batch-size", type=int, default=32, help="images per step (default: 32)")
        sub.add_argument("--iters", type=int, default=5, help="timed repeats per side (default: 5)")
        sub.add_argument("--warmup", type=int, default=2, help="untimed repeats first (default: 2)")
        sub.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                         help="torch device (default: cuda if available, else cpu)")
        sub.set_defaults(run=func)
    fcmae = kinds.choices["fcmae"]
    fcmae.add_argument("--mask-ratio", type=float, default=0.6, help="masked fraction of patches (default: 0.6)")
    fcmae.add_argument("--backends", nargs="+", default=None, metavar="NAME",
                       help="backends to compare (default: every available one)")
