"""Every sparse backend computes the function of a submanifold sparse ConvNet, with the dense
model's parameters: same loss, predictions and gradients; no leak from masked pixels."""
import pytest
import torch

from cnx2lite import FCMAE, create_model
from cnx2lite.masking import pixel_mask, random_mask
from cnx2lite.sparse import BACKENDS, available_backends, sparse_forward_features
from conftest import randomize_

OTHERS = [b for b in available_backends() if b != "dense"]


def border_mask(n, h, w):
    """Random masks plus a whole last row and first column masked in every sample."""
    mask = random_mask(n, (32 * h, 32 * w), 0.5, generator=torch.Generator().manual_seed(1))
    mask[:, -1, :] = True
    mask[:, :, 0] = True
    return mask


CASES = [  # variant, (H, W), batch, mask ratio or a mask builder
    ("convnextv2_atto", (64, 96), 2, 0.6),
    ("convnextv2_atto", (64, 64), 1, 0.6),
    ("convnextv2_atto", (96, 128), 3, 0.9),
    ("convnextv2_atto", (64, 96), 2, 0.0),
    ("convnextv2_atto", (96, 96), 2, border_mask),
    ("convnextv2_femto", (64, 128), 2, 0.6),
]


def assert_close_fp32(actual, expected, what):
    """Equal to 1e-5 relative to the tensor's magnitude: fp32 sums in another order differ by a few
    ulps of the largest entry, not of each entry."""
    scale = expected.abs().max().clamp_min(1.0)
    err = ((actual - expected).abs().max() / scale).item()
    assert err < 1e-5, f"{what}: max error {err:.2e} of magnitude {scale.item():.3g}"


def assert_backends_agree(model, imgs, mask, backend):
    """``backend`` gives the dense backend's loss, predictions and gradients (same parameters); returns its
    predictions."""
    ref_loss, ref_pred, ref_grads = _run(model, imgs, mask, "dense")
    loss, pred, grads = _run(model, imgs, mask, backend)
    assert_close_fp32(loss, ref_loss, "loss")
    assert_close_fp32(pred, ref_pred, "predictions")
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert_close_fp32(grad, ref_grads[name], name)
    return pred


def _run(model, imgs, mask, backend):
    model.zero_grad()
    model.backend = backend
    loss, pred, _ = model(imgs, mask)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), pred.detach(), grads


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("variant, size, n, ratio", CASES)
def test_backends_agree_on_loss_predictions_and_gradients(backend, variant, size, n, ratio):
    torch.manual_seed(0)
    model = randomize_(FCMAE(variant, decoder_dim=64, backend="dense"))
    imgs = torch.randn(n, 3, *size)
    grid = (size[0] // 32, size[1] // 32)
    mask = (ratio(n, *grid) if callable(ratio)
            else random_mask(n, size, ratio, generator=torch.Generator().manual_seed(0)))
    assert_backends_agree(model, imgs, mask, backend)


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("aggregation", ["l1", "mean"])
@pytest.mark.parametrize("ratio", [0.6, border_mask])  # equal / unequal visible counts per sample
def test_backends_agree_for_every_grn_aggregation(backend, aggregation, ratio):
    torch.manual_seed(0)
    model = randomize_(FCMAE("convnextv2_atto", decoder_dim=64, backend="dense", grn_aggregation=aggregation))
    assert model.encoder.stages[2][0].grn.aggregation == aggregation
    imgs = torch.randn(2, 3, 96, 96)
    mask = ratio(2, 3, 3) if callable(ratio) else random_mask(2, 96, ratio, generator=torch.Generator().manual_seed(0))
    pred = assert_backends_agree(model, imgs, mask, backend)
    # and not the l2 model's function: the option reaches the backends
    l2 = FCMAE("convnextv2_atto", decoder_dim=64, backend=backend)
    l2.load_state_dict(model.state_dict())
    with torch.no_grad():
        assert (l2(imgs, mask)[1] - pred).abs().max() > 1e-3


@pytest.mark.parametrize("backend", available_backends())
def test_visible_outputs_ignore_masked_pixels(backend):
    torch.manual_seed(0)
    model = randomize_(create_model("convnextv2_atto", num_classes=0)).double()
    imgs = torch.randn(2, 3, 96, 64, dtype=torch.float64)
    mask = random_mask(2, (96, 64), 0.5, generator=torch.Generator().manual_seed(3))
    noise = 10 * torch.randn_like(imgs) * pixel_mask(mask).unsqueeze(1)
    with torch.no_grad():
        a = sparse_forward_features(model, imgs, mask, backend)
        b = sparse_forward_features(model, imgs + noise, mask, backend)
    assert torch.equal(a, b)
    assert (a * mask.unsqueeze(1) == 0).all()


def test_a_plain_dense_encoder_leaks():
    """The copy-paste problem: without re-masking, masked pixels change visible outputs."""
    torch.manual_seed(0)
    model = randomize_(create_model("convnextv2_atto", num_classes=0)).double()
    imgs = torch.randn(2, 3, 96, 64, dtype=torch.float64)
    mask = random_mask(2, (96, 64), 0.5, generator=torch.Generator().manual_seed(3))
    noise = 10 * torch.randn_like(imgs) * pixel_mask(mask).unsqueeze(1)
    visible = (~mask).unsqueeze(1)
    with torch.no_grad():
        a = model.forward_features(imgs) * visible
        b = model.forward_features(imgs + noise) * visible
    assert (a - b).abs().max() > 1e-3


@pytest.mark.parametrize("backend", available_backends())
def test_zero_ratio_equals_the_dense_model(backend):
    torch.manual_seed(0)
    model = randomize_(create_model("convnextv2_atto", num_classes=0)).double()
    imgs = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    mask = torch.zeros(2, 2, 3, dtype=torch.bool)
    with torch.no_grad():
        torch.testing.assert_close(sparse_forward_features(model, imgs, mask, backend), model.forward_features(imgs))


def test_v1_blocks_run_sparse_too():
    torch.manual_seed(0)
    model = randomize_(create_model("convnextv2_atto", num_classes=0, block="v1"))
    imgs = torch.randn(2, 3, 64, 64)
    mask = random_mask(2, 64, 0.5)
    with torch.no_grad():
        ref = sparse_forward_features(model, imgs, mask, "dense")
        for backend in OTHERS:
            assert_close_fp32(sparse_forward_features(model, imgs, mask, backend), ref, backend)


def test_drop_path_gather_matches_dense_under_the_same_draws():
    model = randomize_(create_model("convnextv2_atto", num_classes=0, drop_path_rate=0.5)).train()
    imgs = torch.randn(4, 3, 64, 64)
    mask = random_mask(4, 64, 0.5)
    torch.manual_seed(5)
    ref = sparse_forward_features(model, imgs, mask, "dense")
    torch.manual_seed(5)
    assert_close_fp32(sparse_forward_features(model, imgs, mask, "gather"), ref, "gather")


def test_unknown_backend_and_bad_mask_get_clear_errors():
    model = create_model("convnextv2_atto", num_classes=0)
    imgs = torch.randn(1, 3, 64, 64)
    with pytest.raises(ValueError, match="backend must be one of 'dense', 'gather', 'minkowski'"):
        sparse_forward_features(model, imgs, torch.zeros(1, 2, 2, dtype=torch.bool), "sparse")
    with pytest.raises(ValueError, match=r"mask must be shaped \(N, H/32, W/32\) = \(1, 2, 2\)"):
        sparse_forward_features(model, imgs, torch.zeros(1, 7, 7, dtype=torch.bool))
    assert set(available_backends()) <= set(BACKENDS)


def test_minkowski_is_exercised_when_installed():
    try:
        import MinkowskiEngine  # noqa: F401
    except Exception:
        pytest.skip("MinkowskiEngine not installed: run `make minkowski` (scripts/install_minkowski.sh)")
    assert "minkowski" in available_backends()
