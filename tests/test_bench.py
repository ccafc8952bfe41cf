"""Autocast precision per device (cnx2lite.amp), ``cnx2lite bench --amp`` and the allocator setting of the CLI."""
from __future__ import annotations

import copy
import platform
import re
import shutil
import subprocess
import sys

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from cnx2lite import amp
from cnx2lite.allocator import keep_freed_memory
from cnx2lite.commands import main

CPU, CUDA = torch.device("cpu"), torch.device("cuda:0")


@pytest.mark.parametrize("native", [True, False])
def test_auto_on_cpu_follows_native_bf16(monkeypatch, native):
    monkeypatch.setattr(amp, "cpu_supports_bf16", lambda: native)
    assert amp.resolve_amp("auto", CPU) == (torch.bfloat16 if native else torch.float32)
    # explicit choices ignore the hardware
    assert amp.resolve_amp("bf16", CPU) == torch.bfloat16
    assert amp.resolve_amp("fp16", CPU) == torch.float16
    assert amp.resolve_amp("fp32", CPU) == torch.float32


@pytest.mark.parametrize("bf16", [True, False])
def test_auto_on_cuda_is_bf16_else_fp16(monkeypatch, bf16):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: bf16)
    monkeypatch.setattr(amp, "cpu_supports_bf16", lambda: pytest.fail("a CUDA device must not ask the CPU"))
    assert amp.resolve_amp("auto", CUDA) == (torch.bfloat16 if bf16 else torch.float16)


def test_auto_elsewhere_is_fp32_and_unknown_modes_fail(monkeypatch):
    monkeypatch.setattr(amp, "cpu_supports_bf16", lambda: True)
    assert amp.resolve_amp("auto", torch.device("meta")) == torch.float32
    with pytest.raises(ValueError, match="amp must be one of"):
        amp.resolve_amp("fp8", CPU)


@pytest.mark.parametrize(("flags", "expected"), [("fpu avx512f avx512_bf16 sse", True), ("fpu amx_tile amx_bf16", True),
                                                 ("fpu avx512f avx2", False)])
def test_cpuinfo_fallback_reads_the_flags(monkeypatch, tmp_path, flags, expected):
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported", raising=False)
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
    monkeypatch.setattr(amp, "CPUINFO", cpuinfo)
    assert amp.cpu_supports_bf16() is expected
    monkeypatch.setattr(amp, "CPUINFO", tmp_path / "missing")
    assert amp.cpu_supports_bf16() is False


class _ProductDtypes(TorchDispatchMode):
    """Records the dtype of each product (:data:`amp.BF16_PRODUCTS`) that reaches the kernels below it."""

    def __init__(self) -> None:
        super().__init__()
        self.dtypes: list[torch.dtype] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in amp.BF16_PRODUCTS:
            self.dtypes.append(next(a.dtype for a in args if isinstance(a, torch.Tensor)))
        return func(*args, **(kwargs or {}))


class _BatchedProduct(torch.nn.Module):
    """``x (B, M, K) @ weight (B, K, N)`` (bmm), plus ``bias (B, M, N)`` with ``add`` (baddbmm)."""

    def __init__(self, add: bool) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(6, 48, 80))
        self.bias = torch.nn.Parameter(torch.randn(6, 64, 80)) if add else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.bmm(x, self.weight) if self.bias is None else torch.baddbmm(self.bias, x, self.weight)


LAYERS = {"linear": (lambda: torch.nn.Linear(96, 384), (256, 96)),
          "conv": (lambda: torch.nn.Conv2d(24, 48, 3, padding=1), (4, 24, 20, 20)),
          "depthwise, no bias": (lambda: torch.nn.Conv2d(40, 40, 7, padding=3, groups=40, bias=False), (4, 40, 20, 20)),
          "transposed": (lambda: torch.nn.ConvTranspose2d(24, 16, 2, stride=2), (4, 24, 10, 10)),
          "bmm": (lambda: _BatchedProduct(add=False), (6, 64, 48)),
          "baddbmm": (lambda: _BatchedProduct(add=True), (6, 64, 48))}


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("channels_last", [False, True])
def test_bf16_products_on_float32_kernels_are_bf16_arithmetic(monkeypatch, layer, channels_last):
    """On a CPU without bf16 arithmetic, amp.autocast's bf16 scoring runs its products on float32 kernels (the kernels
    see float32 operands) and computes, bit for bit, bf16 arithmetic as defined: operands rounded to bf16, products
    and sums in float32, the result rounded once. Torch's own bf16 kernels on such a CPU agree within a bf16 step or
    two (some round twice: a transposed convolution's bias is added after a first rounding)."""
    monkeypatch.setattr(amp, "cpu_supports_bf16", lambda: False)
    torch.manual_seed(0)
    build, shape = LAYERS[layer]
    module, x = build(), torch.randn(shape)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    rounded = copy.deepcopy(module)
    for parameter in rounded.parameters():
        parameter.data = parameter.data.bfloat16().float()
    with torch.no_grad():
        with _ProductDtypes() as seen, amp.autocast(CPU, torch.bfloat16):
            ours = module(x)
        assert ours.dtype == torch.bfloat16 and set(seen.dtypes) == {torch.float32}
        assert torch.equal(ours, rounded(x.bfloat16().float()).bfloat16())  # the definition
        assert not torch.equal(ours, module(x).bfloat16())  # the control: unrounded operands give other numbers
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torchs = module(x)
        torch.testing.assert_close(ours.float(), torchs.float(), rtol=2 ** -6, atol=2 ** -8 * torchs.abs().max().item())


@pytest.mark.parametrize(("native", "dtype", "grad", "widened"), [
    (False, torch.bfloat16, False, True), (True, torch.bfloat16, False, False), (False, torch.bfloat16, True, False),
    (False, torch.float32, False, False), (False, torch.float16, False, False)])
def test_float32_products_only_for_bf16_scoring_on_a_cpu_without_it(monkeypatch, native, dtype, grad, widened):
    """Not while autograd records (its backward would take torch's bf16 kernels anyway, and torch.compile does not
    compile under a dispatch mode), nor on a CPU with bf16 arithmetic, nor for other precisions."""
    monkeypatch.setattr(amp, "cpu_supports_bf16", lambda: native)
    layer = torch.nn.Linear(8, 4)
    with torch.set_grad_enabled(grad), _ProductDtypes() as seen, amp.autocast(CPU, dtype):
        layer(torch.randn(2, 8))
    expected = torch.float32 if widened or dtype == torch.float32 else dtype
    assert seen.dtypes == [expected]


def test_float32_products_leave_other_dtypes_alone():
    a, b = torch.randn(8, 16), torch.randn(16, 4)
    with amp.Float32Products():
        inside = a @ b
        with pytest.raises(RuntimeError, match="dtype"):  # torch's own refusal, not a silent bf16 product
            a.bfloat16() @ b
    assert torch.equal(inside, a @ b)


def test_torch_detection_agrees_with_cpuinfo(monkeypatch):
    if not hasattr(torch.cpu, "_is_avx512_bf16_supported") or not amp.CPUINFO.exists():
        pytest.skip("needs torch's CPU detection and /proc/cpuinfo")
    from_torch = amp.cpu_supports_bf16()
    monkeypatch.delattr(torch.cpu, "_is_avx512_bf16_supported")
    assert amp.cpu_supports_bf16() == from_torch


def _speeds(out: str) -> dict[str, tuple[float, float, float]]:
    """The side-by-side lines ``side: fp32 X img/s | bf16 Y img/s | bf16/fp32 Zx`` as ``{side: (X, Y, Z)}``."""
    pattern = r"^\s*(.+?): fp32\s+([\d.]+) img/s \| bf16\s+([\d.]+) img/s \| bf16/fp32 ([\d.]+)x$"
    return {m[1]: tuple(map(float, m.groups()[1:])) for m in re.finditer(pattern, out, re.MULTILINE)}


def test_bench_fcmae_runs_fp32_and_bf16_side_by_side(capsys):
    with pytest.raises(SystemExit) as done:
        main(["bench", "fcmae", "--amp", "fp32", "bf16", "--backends", "gather", "dense",
              "--img-size", "64", "--batch-size", "2", "--iters", "1", "--warmup", "0"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "amp fp32, bf16" in out
    assert out.startswith("FCMAE convnextv2_atto, batch 2"), out[:200]  # the variant, not the module's repr
    speeds = _speeds(out)
    assert list(speeds) == ["gather", "dense"]
    for fp32, bf16, ratio in speeds.values():
        assert fp32 > 0 and bf16 > 0
        # the printed img/s are rounded to 0.05, the ratio to 0.005
        assert (bf16 - 0.05) / (fp32 + 0.05) - 0.005 <= ratio <= (bf16 + 0.05) / (fp32 - 0.05) + 0.005


def test_bench_model_takes_amp(capsys, monkeypatch):
    pytest.importorskip("timm")
    monkeypatch.setattr(amp, "cpu_supports_bf16", lambda: False)  # auto -> fp32 on any CPU, a repeat of fp32
    with pytest.raises(SystemExit) as done:
        main(["bench", "model", "--amp", "auto", "fp32", "bf16", "--device", "cpu",
              "--img-size", "32", "--batch-size", "1", "--iters", "1", "--warmup", "0"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "amp fp32, bf16" in out
    assert list(_speeds(out)) == ["train (fwd+bwd+AdamW), cnx2lite", "train (fwd+bwd+AdamW), timm",
                                  "inference, cnx2lite", "inference, timm"]
    with pytest.raises(SystemExit):
        main(["bench", "model", "--amp", "fp16"])  # not a bench choice


def test_keep_freed_memory_is_applied_on_glibc_and_yields_to_the_users_setting(monkeypatch):
    if not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"):
        pytest.skip("mallopt thresholds are glibc's")
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    assert keep_freed_memory()
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert not keep_freed_memory()


def test_step_flops_counts_matmuls_and_mfu_uses_the_gpus_bf16_peak(monkeypatch):
    from cnx2lite import bench

    layer = torch.nn.Linear(4, 3)
    assert bench.step_flops(lambda: layer(torch.randn(5, 4))) == 2 * 5 * 4 * 3
    backward = bench.step_flops(lambda: layer(torch.randn(5, 4, requires_grad=True)).sum().backward())
    assert backward == 3 * 2 * 5 * 4 * 3  # forward, and the gradients of the weight and of the input
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 PCIe")
    assert bench.peak_bf16_flops(CUDA) == ("NVIDIA H100 PCIe", 756.0e12)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H100 80GB HBM3")
    assert bench.utilization(int(989.4e12), 64.0, 128, CUDA).endswith("MFU 50.0% of the NVIDIA H100 80GB HBM3 "
                                                                      "bf16 peak")
    assert bench.peak_bf16_flops(CPU) is None and "MFU" not in bench.utilization(10**12, 1.0, 1, CPU)


def test_bench_train_times_the_default_beside_the_reference_path(tmp_path, capsys, one_thread):
    from conftest import make_image_folder

    make_image_folder(tmp_path, classes=2, train=8, val=2, size=64)
    with pytest.raises(SystemExit) as done:
        main(["bench", "train", "--preset", "smoke", "--data", str(tmp_path), "--steps", "1", "--iters", "1",
              "--warmup", "0"])
    out = capsys.readouterr().out
    assert done.value.code == 0, out
    for task in ("pretrain", "finetune"):
        line = rf"{task}: reference +[\d.]+ img/s \| default +[\d.]+ img/s \| default/reference [\d.]+x"
        assert re.search(line, out), out
    with pytest.raises(SystemExit) as done:  # a batch of one's own: for a folder of fewer images than the preset's
        main(["bench", "train", "--preset", "smoke", "--data", str(tmp_path), "--tasks", "finetune", "--steps", "1",
              "--iters", "1", "--warmup", "0", "--batch-size", "2"])
    assert done.value.code == 0, capsys.readouterr()
    unlabeled = tmp_path / "unlabeled"  # fine-tuning needs classes: refused before the pretraining side is timed
    shutil.copytree(tmp_path / "train" / "class0", unlabeled)
    with pytest.raises(SystemExit) as done:
        main(["bench", "train", "--preset", "smoke", "--data", str(unlabeled), "--steps", "1", "--iters", "1"])
    out, err = capsys.readouterr()
    assert done.value.code == 2 and "pretrain:" not in out, (out, err)
    assert "holds photos without classes, which pretraining reads but fine-tuning cannot: pass --tasks pretrain" in err


def test_importing_cnx2lite_before_torch_shortens_openmps_spin_wait_unless_the_user_set_it():
    """libgomp reads GOMP_SPINCOUNT once, when torch loads it: cnx2lite sets it first (a second process on the same
    cores then halves a run's speed instead of cutting it tenfold), and leaves a user's own value alone."""
    import os
    import subprocess

    code = ("import cnx2lite, os, torch; torch.ones(64, 64) @ torch.ones(64, 64); "
            "print(os.environ.get('GOMP_SPINCOUNT'))")
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    for extra, expected in (({}, "10000"), ({"GOMP_SPINCOUNT": "500"}, "500")):
        out = subprocess.run([sys.executable, "-c", code], env={**env, **extra}, capture_output=True, text=True,
                             check=True).stdout.split()
        assert out[-1] == expected, out
    late = "import torch, os, cnx2lite; print(os.environ.get('GOMP_SPINCOUNT'))"
    assert subprocess.run([sys.executable, "-c", late], env=env, capture_output=True, text=True,
                          check=True).stdout.split()[-1] == "None"


RELEASE = """
import gc
from cnx2lite.allocator import keep_freed_memory, release_freed_memory
def rss():
    return int(open("/proc/self/status").read().split("VmRSS:")[1].split()[0]) // 1024
keep_freed_memory()
start = rss()
blocks = [bytearray(4 << 20) for _ in range(100)]  # 400 MiB in heap blocks, as an image cache makes them
del blocks
gc.collect()
kept = rss()
assert release_freed_memory()
print(start, kept, rss())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim")
def test_memory_kept_for_reuse_is_released_between_jobs():
    """keep_freed_memory keeps what a job freed (fast for the next step of the same job); release_freed_memory gives it
    back, as the grid does between its runs (a long piece grew to 24 GB without it)."""
    done = subprocess.run([sys.executable, "-c", RELEASE], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    start, kept, released = map(int, done.stdout.split())
    assert kept - start > 300 and released - start < 100, (start, kept, released)
