"""The GPU path (``pytest -m cuda``): backends on CUDA, bf16 and fp16 training, channels_last and torch.compile,
NCCL DDP through torchrun. Skipped, saying why, where there is no CUDA GPU; ``scripts/gpu_check.sh`` runs them on a
device machine. What a CPU can check of the same code runs in the other test files."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnx2lite import FCMAE, create_model
from cnx2lite.layers import GRN
from cnx2lite.masking import random_mask
from cnx2lite.rundir import load_checkpoint
from conftest import make_image_folder, randomize_

REPO = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(),
                                                   reason="no CUDA GPU here (scripts/gpu_check.sh runs these on one)")]
CUDA = torch.device("cuda")


def _fcmae(seed: int = 0) -> FCMAE:
    torch.manual_seed(seed)
    return randomize_(FCMAE("convnextv2_atto", decoder_dim=128), seed=seed).to(CUDA)


def _batch(n: int = 8, size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(1)).to(CUDA)
    return images, random_mask(n, size, 0.6, generator=torch.Generator().manual_seed(2), device=CUDA)


def test_dense_and_gather_agree_on_cuda_in_fp32():
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    model = _fcmae()
    images, mask = _batch()
    results = {}
    for backend in ("dense", "gather"):
        model.backend = backend
        model.zero_grad()
        loss, pred, _ = model(images, mask)
        loss.backward()
        results[backend] = (loss.detach(), pred.detach(), {n: p.grad.clone() for n, p in model.named_parameters()})
    (loss_d, pred_d, grads_d), (loss_g, pred_g, grads_g) = results["dense"], results["gather"]
    torch.testing.assert_close(loss_g, loss_d, rtol=1e-5, atol=0)
    torch.testing.assert_close(pred_g, pred_d, rtol=1e-5, atol=1e-5 * pred_d.abs().max().item())
    for name, grad in grads_d.items():
        torch.testing.assert_close(grads_g[name], grad, rtol=1e-5, atol=1e-5 * grad.abs().max().item() + 1e-12,
                                   msg=name)


def _losses(dtype: torch.dtype | None, steps: int = 10) -> list[float]:
    model = _fcmae()
    images, mask = _batch()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    losses = []
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=dtype or torch.float32, enabled=dtype is not None):
            loss = model(images, mask)[0]
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16+GradScaler"])
def test_mixed_precision_training_tracks_fp32_for_10_steps(dtype):
    reference, mixed = _losses(None), _losses(dtype)
    assert all(map(torch.isfinite, torch.tensor(mixed)))
    assert mixed == pytest.approx(reference, rel=0.02)  # 2%: the same bound as the CPU bf16 test
    assert mixed[-1] < mixed[0]


def test_fp16_grn_with_activations_whose_square_overflows():
    grn = GRN(64).to(CUDA)
    with torch.no_grad():
        grn.gamma.fill_(0.5)
    x = torch.randn(2, 8, 8, 64, device=CUDA) * 300
    with torch.autocast("cuda", dtype=torch.float16):
        out = grn(x.half())
    assert torch.isinf(x.half().square()).any() and torch.isfinite(out).all()
    torch.testing.assert_close(out.float(), grn(x), rtol=2e-3, atol=0.5)


def test_channels_last_and_compile_match_eager():
    model = randomize_(create_model("convnextv2_atto", num_classes=10)).to(CUDA).eval()
    x = torch.randn(4, 3, 224, 224, device=CUDA)
    with torch.no_grad():
        eager = model(x)
        last = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
        compiled = torch.compile(model)(x)
    scale = eager.abs().max().item()
    torch.testing.assert_close(last, eager, rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-4 * scale)


def test_compiled_fcmae_step_matches_eager_and_reports_graph_breaks():
    images, mask = _batch()
    eager_model, compiled_model = _fcmae(), _fcmae()
    eager = eager_model(images, mask)[0]
    explanation = torch._dynamo.explain(compiled_model)(images, mask)
    print(f"FCMAE gather step under torch.compile: {explanation.graph_count} graph(s), "
          f"{explanation.graph_break_count} break(s): {[str(b.reason)[:80] for b in explanation.break_reasons]}")
    compiled = torch.compile(compiled_model)(images, mask)[0]
    torch.testing.assert_close(compiled, eager, rtol=1e-4, atol=1e-5)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_one_process_nccl_ddp_through_torchrun_equals_a_plain_run(tmp_path):
    images = make_image_folder(tmp_path / "images")
    flags = ["pretrain", "--preset", "smoke", "--epochs", "2", "--amp", "fp32", "--device", "cuda", "--batch-size", "4",
             "--data", str(images), "--output", str(tmp_path)]
    env = {**os.environ, "NCCL_P2P_DISABLE": "1"}
    plain = subprocess.run([sys.executable, "-m", "cnx2lite", *flags, "--name", "plain"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0, plain.stdout + plain.stderr
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=1",
                          "--master-addr=127.0.0.1", f"--master-port={_free_port()}", "-m", "cnx2lite", *flags,
                          "--name", "ddp"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    a, b = load_checkpoint(tmp_path / "plain"), load_checkpoint(tmp_path / "ddp")
    assert a["position"] == b["position"]
    for key, value in a["model"].items():  # CUDA's atomic adds may reorder sums: a little more room than on the CPU
        torch.testing.assert_close(b["model"][key], value, rtol=1e-4, atol=1e-5, msg=key)
