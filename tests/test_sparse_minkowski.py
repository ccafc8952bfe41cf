"""The MinkowskiEngine backend against the masked dense computation: kernel conversion, outputs and
parameter gradients, edge-case masks. Skipped where MinkowskiEngine is not installed."""
from __future__ import annotations

from types import ModuleType

import pytest
import torch

from cnx2lite.masking import random_mask, upsample_mask
from cnx2lite.models import ConvNeXtV2, create_model
from cnx2lite.sparse import dense, minkowski
from cnx2lite.sparse.tokens import layer_norm

if not minkowski.is_available():
    pytest.skip(minkowski.INSTALL_HINT, allow_module_level=True)

import MinkowskiEngine as ME  # noqa: E402  (importable now: is_available applied the shim)

TOL = {torch.float32: 1e-5, torch.float64: 1e-10}  # max error relative to the tensor's largest entry


def _model(dtype: torch.dtype = torch.float64, seed: int = 0, **kwargs) -> ConvNeXtV2:
    """Atto with every parameter perturbed, GRN gamma/beta (zero at init) strongly."""
    torch.manual_seed(seed)
    model = create_model("convnextv2_atto", num_classes=0, **kwargs).to(dtype)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.add_(torch.randn_like(p), alpha=0.5 if ".grn." in name else 0.05)
    return model


def _assert_close(actual: torch.Tensor, expected: torch.Tensor, name: str = "output") -> None:
    """Max-norm comparison: the errors of fp32 sums grow with the tensor's scale, not per entry."""
    error, scale = (actual - expected).abs().max().item(), expected.abs().max().item()
    assert error <= TOL[expected.dtype] * max(scale, 1.0), f"{name}: max error {error:.3g} at scale {scale:.3g}"


def _forward_and_grads(
    backend: ModuleType, model: ConvNeXtV2, x: torch.Tensor, mask: torch.Tensor, probe: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad()
    out = backend.forward_features(model, x, mask)
    (out * probe).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads


def _assert_matches_dense(model: ConvNeXtV2, x: torch.Tensor, mask: torch.Tensor, seed: int = 0) -> None:
    probe = torch.randn(x.shape[0], model.dims[-1], *mask.shape[1:], dtype=x.dtype)
    torch.manual_seed(seed)
    out, grads = _forward_and_grads(minkowski, model, x, mask, probe)
    torch.manual_seed(seed)
    ref, ref_grads = _forward_and_grads(dense, model, x, mask, probe)
    _assert_close(out, ref)
    assert (out.permute(0, 2, 3, 1)[mask] == 0).all()
    encoder = {n for n, _ in model.named_parameters() if n.startswith(("downsample_layers.", "stages."))}
    assert grads.keys() == ref_grads.keys() == encoder
    for name, grad in grads.items():
        _assert_close(grad, ref_grads[name], name)


def _sparse_map(coords: torch.Tensor, stride: int) -> tuple[ME.CoordinateManager, ME.CoordinateMapKey, torch.Tensor]:
    """A coordinate manager holding ``coords (M, 3)`` at tensor stride ``stride``, its key and row order."""
    manager = ME.CoordinateManager(D=2, coordinate_map_type=ME.CoordinateMapType.CPU)
    scaled = torch.cat([coords[:, :1], coords[:, 1:] * stride], 1).int().contiguous()
    key, (unique_index, _) = manager.insert_and_map(scaled, tensor_stride=stride)
    return manager, key, unique_index.long()


@pytest.mark.parametrize("stride", [1, 4])
def test_channelwise_conv_is_submanifold_dense_conv(stride):
    """7x7 depthwise weight conversion (offset i_h + 7 i_w), also with tensor-stride dilation."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(5, 5, 7, padding=3, groups=5).double()
    visible = torch.rand(2, 9, 11) < 0.5
    dense_in = torch.randn(2, 5, 9, 11, dtype=torch.float64) * visible[:, None]
    coords = visible.nonzero()
    manager, key, order = _sparse_map(coords, stride)
    feats = dense_in.permute(0, 2, 3, 1)[visible][order]
    kernel_map = minkowski._submanifold_kernel_map(manager, key, 7, torch.arange(len(feats)))  # tokens = rows
    out = minkowski._channelwise_conv(feats, kernel_map, conv)
    ref = conv(dense_in).permute(0, 2, 3, 1)[visible][order]
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)


def test_downsample_conv_matches_dense_conv():
    """LayerNorm on tokens, then the 2x2/2 weight conversion through MinkowskiConvolutionFunction,
    outputs at visible cells only."""
    torch.manual_seed(0)
    norm, conv = torch.nn.LayerNorm(6).double(), torch.nn.Conv2d(6, 8, 2, stride=2).double()
    coarse_visible = torch.rand(2, 3, 4) < 0.5  # each coarse position covers 2x2 fine ones
    visible = upsample_mask(coarse_visible, 2)
    feats_dense = torch.randn(2, 6, 6, 8, dtype=torch.float64)
    manager, key, order = _sparse_map(visible.nonzero(), 1)
    feats = feats_dense.permute(0, 2, 3, 1)[visible][order]
    out, out_key = minkowski._downsample_conv(layer_norm(feats, norm), key, manager, conv)
    ref_map = conv(norm(feats_dense.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    sample, row, col = manager.get_coordinates(out_key).long().unbind(1)
    row, col = row // 2, col // 2
    assert coarse_visible[sample, row, col].all() and len(out) == int(coarse_visible.sum())
    torch.testing.assert_close(out, ref_map[sample, row, col], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "batch, size, ratio",
    [(2, (64, 64), 0.6), (1, (64, 96), 0.6), (2, (64, 96), 0.0), (3, (96, 128), 0.9)],
)
def test_matches_dense_backend(dtype, batch, size, ratio):
    model = _model(dtype)
    x = torch.randn(batch, 3, *size, dtype=dtype)
    mask = random_mask(batch, size, ratio, generator=torch.Generator().manual_seed(1))
    _assert_matches_dense(model, x, mask)


def test_all_visible_equals_dense_model():
    """With nothing masked, submanifold convs are zero-padded dense convs: the plain dense model."""
    model = _model()
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    out = minkowski.forward_features(model, x, torch.zeros(2, 2, 3, dtype=torch.bool))
    torch.testing.assert_close(out, model.forward_features(x), rtol=1e-10, atol=1e-10)


def test_masked_border_rows_and_columns():
    """A border row and column masked in every sample: no coordinate reaches the output's edge."""
    model = _model()
    x = torch.randn(2, 3, 96, 128, dtype=torch.float64)
    mask = random_mask(2, (96, 128), 0.3, generator=torch.Generator().manual_seed(2))
    mask[:, -1, :] = True
    mask[:, :, 0] = True
    _assert_matches_dense(model, x, mask)


def test_fully_masked_sample():
    """A sample without visible cells gets zeros and does not disturb the others' GRN statistics."""
    model = _model()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    mask = torch.tensor([[[True, True], [True, True]], [[False, True], [False, False]]])
    _assert_matches_dense(model, x, mask)


def test_fully_masked_batch():
    """Nothing visible anywhere: zeros, without reaching ME (which crashes on empty maps)."""
    model = _model()
    x = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    out = minkowski.forward_features(model, x, torch.ones(2, 2, 2, dtype=torch.bool))
    assert out.shape == (2, model.dims[-1], 2, 2) and out.dtype == x.dtype and not out.any()


def test_drop_path_per_sample():
    """Training-mode stochastic depth drops whole samples, with the dense backend's random draws."""
    model = _model(drop_path_rate=0.5).train()
    x = torch.randn(4, 3, 64, 64, dtype=torch.float64)
    mask = random_mask(4, 64, 0.5, generator=torch.Generator().manual_seed(3))
    _assert_matches_dense(model, x, mask, seed=7)


def test_masked_pixels_do_not_leak():
    model = _model()
    x = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    mask = random_mask(2, (64, 96), 0.5, generator=torch.Generator().manual_seed(4))
    pixels = upsample_mask(mask, 32)[:, None]
    out = minkowski.forward_features(model, x, mask)
    changed = minkowski.forward_features(model, torch.where(pixels, torch.randn_like(x) * 10, x), mask)
    torch.testing.assert_close(changed, out, rtol=1e-12, atol=1e-12)


def test_bf16_autocast_runs_in_float32():
    """MinkowskiEngine has no bf16 kernels: under autocast the backend computes what it does in fp32 (to float32's
    rounding: with several OpenMP threads on a busy CPU its sums are ordered differently from call to call, 7e-7
    apart here, where bf16 would be 1e-2 off)."""
    model = create_model("convnextv2_atto", num_classes=0)
    x = torch.randn(2, 3, 64, 64)
    mask = random_mask(2, 64, 0.5, generator=torch.Generator().manual_seed(5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_autocast = minkowski.forward_features(model, x, mask)
    assert under_autocast.dtype == torch.float32
    torch.testing.assert_close(under_autocast, minkowski.forward_features(model, x, mask), rtol=1e-5, atol=1e-5)
