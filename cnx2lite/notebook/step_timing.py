"""Where the time of an FCMAE training step goes, for notebook 2: each part (stem, depthwise convs, the rest of the
encoder, decoder, loss, AdamW) timed forward and backward with module hooks, interleaved repeats and medians, and
the speed-up that the sparse encoder's share predicts (Amdahl) beside the measured one."""
from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from ..fcmae import FCMAE
from .plotting import subplots
from .sparse_figures import DPI

PARTS = ("stem", "7x7 dwconvs", "rest of encoder", "decoder", "loss", "AdamW")
PART_COLORS = dict(zip(PARTS, ("#5f6368", "#1a73e8", "#a142f4", "#e8710a", "#f9ab00", "#188038")))
FIXED = ("stem", "7x7 dwconvs", "decoder", "loss", "AdamW")  # the same work whatever the mask ratio


class _Clock:
    """Timestamps of named events, taken from module hooks during one training step; on a GPU each
    mark waits for the queued kernels first (which slows the step a little but times each part)."""

    def __init__(self, device: torch.device) -> None:
        self.events: dict[str, list[float]] = {}
        self.cuda = device.type == "cuda"

    def mark(self, name: str) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self.events.setdefault(name, []).append(time.perf_counter())

    def total(self, start: str, stop: str) -> float:
        """Sum of the spans between the matching ``start`` and ``stop`` events (several for repeated modules)."""
        return sum(b - a for a, b in zip(self.events[start], self.events[stop], strict=True))


def _hook(clock: _Clock, module: nn.Module, name: str, backward_end: bool = True) -> list[RemovableHandle]:
    """Marks ``name>``/``name<`` around the module's forward, ``name<b``/``name>b`` around its backward
    (``backward_end=False``: only its start, for a module whose input needs no gradient)."""
    handles = [module.register_forward_pre_hook(lambda *_: clock.mark(f"{name}>")),
               module.register_forward_hook(lambda *_: clock.mark(f"{name}<")),
               module.register_full_backward_pre_hook(lambda *_: clock.mark(f"{name}<b"))]
    if backward_end:
        handles.append(module.register_full_backward_hook(lambda *_: clock.mark(f"{name}>b")))
    return handles


def step_parts(fcmae: FCMAE, optimizer: torch.optim.Optimizer, x: Tensor, mask: Tensor) -> dict[tuple[str, str], float]:
    """One FCMAE training step (forward, backward, AdamW) on ``x (N, 3, H, W)`` under ``mask (N, h, w)``,
    timed per part by hooks: ``{(phase, part): seconds}``, phase ``"forward"``, ``"backward"`` or
    ``"update"``. Spans between hooks are attributed to the part that runs there: the encoder is the
    time from the stem's start to the decoder's start, the loss from the decoder's end to the loss
    value (and back)."""
    clock = _Clock(x.device)
    enc = fcmae.encoder
    handles = _hook(clock, enc.downsample_layers[0], "stem", backward_end=False)
    handles += _hook(clock, fcmae.proj, "proj") + _hook(clock, fcmae.pred, "pred")
    for stage in enc.stages:
        for block in stage:
            handles += _hook(clock, block.dwconv, "dw")
    try:
        optimizer.zero_grad(set_to_none=True)
        clock.mark("start")
        loss = fcmae(x, mask)[0]
        clock.mark("loss")
        loss.backward()
        clock.mark("backward")
        optimizer.step()
        clock.mark("update")
    finally:
        for handle in handles:
            handle.remove()
    one = {name: times[0] for name, times in clock.events.items() if len(times) == 1}
    dw_fwd, dw_bwd = clock.total("dw>", "dw<"), clock.total("dw<b", "dw>b")
    return {
        ("forward", "stem"): one["stem<"] - one["stem>"],
        ("forward", "7x7 dwconvs"): dw_fwd,
        ("forward", "rest of encoder"): one["proj>"] - one["stem<"] - dw_fwd,
        ("forward", "decoder"): one["pred<"] - one["proj>"],
        ("forward", "loss"): one["loss"] - one["pred<"] + one["stem>"] - one["start"],
        ("backward", "loss"): one["pred<b"] - one["loss"],
        ("backward", "decoder"): one["proj>b"] - one["pred<b"],
        ("backward", "7x7 dwconvs"): dw_bwd,
        ("backward", "rest of encoder"): one["stem<b"] - one["proj>b"] - dw_bwd,
        ("backward", "stem"): one["backward"] - one["stem<b"],
        ("update", "AdamW"): one["update"] - one["backward"],
    }


def time_step_parts(fcmae: FCMAE, x: Tensor, mask: Tensor, backends: Sequence[str], iters: int,
                    warmup: int = 1) -> dict[str, dict[tuple[str, str], float]]:
    """Median seconds per ``(phase, part)`` of :func:`step_parts` for each backend, the backends
    interleaved (A, B, A, B, ...) so that background load hits both. The model's weights change with
    each AdamW step (lr 1e-4), which does not change the work."""
    optimizer = torch.optim.AdamW(fcmae.parameters(), lr=1e-4)
    runs: dict[str, list[dict[tuple[str, str], float]]] = {b: [] for b in backends}
    for i in range(warmup + iters):
        for backend in backends:
            fcmae.backend = backend
            parts = step_parts(fcmae, optimizer, x, mask)
            if i >= warmup:
                runs[backend].append(parts)
    return {b: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for b, rs in runs.items()}


def amdahl(parts: Mapping[tuple[str, str], float], visible: float) -> float:
    """The speed-up of a step whose non-fixed parts (``rest of encoder``) shrink to ``visible`` of their
    time while the :data:`FIXED` parts stay: ``total / (fixed + visible * rest)``."""
    fixed = sum(t for (_, part), t in parts.items() if part in FIXED)
    rest = sum(t for (_, part), t in parts.items() if part not in FIXED)
    return (fixed + rest) / (fixed + visible * rest)


def plot_step_parts(parts: Mapping[str, Mapping[tuple[str, str], float]], title: str) -> Figure:
    """One stacked bar per ``(backend, phase)``: milliseconds per part of :func:`time_step_parts`."""
    rows = [(b, phase) for phase in ("forward", "backward", "update") for b in parts]
    fig, ax = subplots(figsize=(8.6, 0.6 + 0.42 * len(rows)), dpi=DPI)
    for y, (backend, phase) in enumerate(rows):
        left = 0.0
        for part in PARTS:
            ms = 1e3 * parts[backend].get((phase, part), 0.0)
            ax.barh(y, ms, left=left, color=PART_COLORS[part], edgecolor="white", lw=0.5)
            left += ms
        ax.text(left, y, f" {left:.0f} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), [f"{b}: {phase}" for b, phase in rows])
    ax.invert_yaxis()
    ax.set_xlabel("time per training step (ms, median)")
    ax.set_xlim(0, ax.get_xlim()[1] * 1.1)
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(handles=[Patch(fc=PART_COLORS[p], label=p) for p in PARTS], fontsize=8, ncols=3,
              loc="lower right")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def training_step(fcmae: FCMAE, x: Tensor, mask: Tensor, backend: str) -> Callable[[], None]:
    """A closure running one FCMAE training step (forward, backward, AdamW) with ``backend``."""
    optimizer = torch.optim.AdamW(fcmae.parameters(), lr=1e-4)

    def step() -> None:
        fcmae.backend = backend
        optimizer.zero_grad(set_to_none=True)
        fcmae(x, mask)[0].backward()
        optimizer.step()

    return step


def plot_speedups(speedups: Mapping[str, float], title: str) -> Figure:
    """Bars of the gather backend's speed-up over dense per setting (``{label: ratio}``)."""
    names = list(speedups)
    fig, ax = subplots(figsize=(6.4, 0.8 + 0.45 * len(names)), dpi=DPI)
    bars = ax.barh(names, [speedups[n] for n in names], color="#1a73e8", label="gather / dense, same run")
    for bar, n in zip(bars, names):
        ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {speedups[n]:.2f}x", va="center", fontsize=9)
    ax.axvline(1, color="#5f6368", lw=1, ls="--", label="1x: no speed-up")
    ax.invert_yaxis()
    ax.set_xlabel("training-step speed-up of gather over dense (x)")
    ax.set_xlim(0, max(max(speedups.values()), 1.0) * 1.25)
    ax.spines[["top", "right"]].set_visible(False)
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.legend(*ax.get_legend_handles_labels(), loc="upper center", bbox_to_anchor=(0.5, 0.0), ncols=2,
               frameon=False, fontsize=8)
    return fig
