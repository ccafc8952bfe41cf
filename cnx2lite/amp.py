"""Where and at what precision a process computes: the device (:func:`resolve_device`) and the autocast precision
per device, shared by training (``device=``, ``amp=``), evaluation and ``cnx2lite bench --amp``."""
from __future__ import annotations

import re
from pathlib import Path

import torch

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
AMP_MODES = ("auto", *AMP_DTYPES)
CPUINFO = Path("/proc/cpuinfo")


def autocast(device: torch.device, dtype: torch.dtype) -> torch.autocast:
    """``torch.autocast`` on ``device`` to ``dtype``; disabled for float32."""
    return torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32)


def cpu_supports_bf16() -> bool:
    """Whether this CPU does bf16 arithmetic natively (x86 AVX512-BF16 or AMX-BF16), so that bf16
    autocast runs on bf16 hardware instead of being emulated. Asks torch (its cpuinfo-based
    ``torch.cpu._is_avx512_bf16_supported``) when it has the check, else reads the flags in
    ``/proc/cpuinfo``; False when neither can tell (other CPUs run bf16 through conversions)."""
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
