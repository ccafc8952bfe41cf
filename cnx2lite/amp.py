"""Where and at what precision a process computes: the device (:func:`resolve_device`) and the autocast precision
per device, shared by training (``device=``, ``amp=``), evaluation and ``cnx2lite bench --amp``."""
from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
AMP_MODES = ("auto", *AMP_DTYPES)
CPUINFO = Path("/proc/cpuinfo")


_aten = torch.ops.aten
# The products of a forward that bf16 autocast sends to bf16 kernels and Float32Products widens: linear (mm, addmm),
# batched matmul (bmm, baddbmm) and convolution. Others (matrix-vector products, out= variants) keep torch's kernels.
BF16_PRODUCTS = frozenset({_aten.mm.default, _aten.addmm.default, _aten.bmm.default, _aten.baddbmm.default,
                           _aten.convolution.default})


class Float32Products(TorchDispatchMode):
    """bf16 matrix products and convolutions on float32 kernels, for a CPU without bf16 arithmetic. The bf16 operands
    are widened (exactly), multiplied and summed in float32, and the result is rounded to bf16: what a native bf16
    kernel computes (bf16 products are exact in float32, its sums are float32), up to the order of the sums. Torch's
    own bf16 kernels on such a CPU (AVX2) convert element by element: a forward of atto on 128 random images at 96 px
    under ``torch.autocast`` took 4.8 s on a 2-core AVX2 EPYC, 0.66 s with this mode, 0.54 s in float32. Ops with
    operands of other dtypes pass through unchanged."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in BF16_PRODUCTS:
            dtypes = {a.dtype for a in (*args, *kwargs.values()) if isinstance(a, Tensor) and a.is_floating_point()}
            if dtypes == {torch.bfloat16}:
                args, kwargs = tree_map(_widen, (args, kwargs))
                return func(*args, **kwargs).to(torch.bfloat16)
        return func(*args, **kwargs)


def _widen(value):
    return value.float() if isinstance(value, Tensor) and value.dtype == torch.bfloat16 else value


@contextmanager
def autocast(device: torch.device, dtype: torch.dtype) -> Iterator[None]:
    """``torch.autocast`` on ``device`` to ``dtype``; disabled for float32. A forward without autograd (scoring) in
    bf16 on a CPU without bf16 arithmetic (:func:`cpu_supports_bf16`) computes its products with
    :class:`Float32Products`: the same precision about 7x faster than torch's conversions. Not while autograd
    records: the backward's products would still take torch's bf16 kernels, and torch.compile does not compile under
    a dispatch mode."""
    with ExitStack() as stack:
        stack.enter_context(torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32))
        if (device.type == "cpu" and dtype == torch.bfloat16 and not torch.is_grad_enabled()
                and not cpu_supports_bf16()):
            stack.enter_context(Float32Products())
        yield


def cpu_supports_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (x86 AVX512-BF16 or AMX-BF16), so that bf16 autocast runs on
    bf16 hardware (elsewhere :func:`autocast` widens its products to float32). Asks torch (its cpuinfo-based
    ``torch.cpu._is_avx512_bf16_supported``) when it has the check, else reads the flags in ``/proc/cpuinfo``; False
    when neither can tell."""
    detect = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    if detect is not None:
        return bool(detect())
    try:
        flags = set(CPUINFO.read_text().split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16"})


def resolve_amp(amp: str, device: torch.device) -> torch.dtype:
    """The autocast dtype of ``amp`` on ``device``. ``"bf16"``, ``"fp16"``, ``"fp32"`` as named;
    ``"auto"``: bf16 on a CUDA GPU that supports it (fp16 on older ones), bf16 on a CPU with native
    bf16 (:func:`cpu_supports_bf16`), fp32 otherwise. fp32 means autocast off."""
    if amp != "auto":
        if amp not in AMP_DTYPES:
            raise ValueError(f"amp must be one of {', '.join(map(repr, AMP_MODES))}; got {amp!r}")
        return AMP_DTYPES[amp]
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_supports_bf16():
        return torch.bfloat16
    return torch.float32


def check_device_name(device: str) -> None:
    """Refuse a device name this package does not run on, wherever the run would go (its GPUs are
    :func:`resolve_device`'s to check, on the machine that runs it)."""
    if not isinstance(device, str) or not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {device!r}")


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``"auto"``: ``cuda:<local_rank>`` when CUDA is there, else CPU; ``"cuda"`` picks the local GPU. A device that
    torch does not know, or a GPU that is not there, raises a ValueError naming it."""
    check_device_name(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        device = f"cuda:{local_rank}"
    try:
        resolved = torch.device(device)
    except RuntimeError:
        resolved = None
    if resolved is None or resolved.type not in ("cpu", "cuda"):  # what this package runs on (and tests)
        raise ValueError(f"device must be auto, cpu, cuda or cuda:N; got {device!r}")
    if resolved.type == "cuda" and (not torch.cuda.is_available()
                                    or (resolved.index or 0) >= torch.cuda.device_count()):
        raise ValueError(f"device {device!r} is not available here ({torch.cuda.device_count()} CUDA GPU(s)); "
                         "use device auto or cpu")
    return resolved
