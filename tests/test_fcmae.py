import json

import pytest
import torch

from cnx2lite import FCMAE, create_model
from cnx2lite.checkpoints import load_pretrained
from cnx2lite.fcmae import patch_statistics, patchify, unpatchify
from cnx2lite.masking import pixel_mask, random_mask
from cnx2lite.notebook.pretraining_figures import load_fcmae
from cnx2lite.train import load_preset, pretrain
from conftest import make_image_folder, randomize_


def test_patchify_round_trip_and_layout():
    imgs = torch.randn(2, 3, 64, 96)
    patches = patchify(imgs)
    assert patches.shape == (2, 6, 32 * 32 * 3)
    torch.testing.assert_close(patches[0, 4].view(32, 32, 3).permute(2, 0, 1), imgs[0, :, 32:64, 32:64])
    assert torch.equal(unpatchify(patches, (2, 3)), imgs)


def test_forward_shapes_and_loss_only_on_masked_patches():
    torch.manual_seed(0)
    model = FCMAE("convnextv2_atto", decoder_dim=64)
    imgs = torch.randn(2, 3, 64, 96)
    mask = random_mask(2, (64, 96), 0.5)
    loss, pred, out_mask = model(imgs, mask)
    assert pred.shape == (2, 32 * 32 * 3, 2, 3) and torch.equal(out_mask, mask)
    target = patchify(imgs)
    mean, std = patch_statistics(target)
    per_patch = (pred.flatten(2).transpose(1, 2) - (target - mean) / std).square().mean(-1)
    torch.testing.assert_close(loss, per_patch[mask.flatten(1)].mean())


def test_norm_pix_switch_and_zero_ratio():
    torch.manual_seed(0)
    model = FCMAE("convnextv2_atto", decoder_dim=64, norm_pix_loss=False)
    imgs = torch.randn(2, 3, 64, 64)
    mask = random_mask(2, 64, 0.5)
    loss, pred, _ = model(imgs, mask)
    raw = (pred.flatten(2).transpose(1, 2) - patchify(imgs)).square().mean(-1)
    torch.testing.assert_close(loss, raw[mask.flatten(1)].mean())
    assert model(imgs, torch.zeros_like(mask))[0].item() == 0.0


def test_random_mask_is_drawn_at_the_ratio():
    model = FCMAE("convnextv2_atto", decoder_dim=64, mask_ratio=0.75)
    _, _, mask = model(torch.randn(2, 3, 128, 128))
    assert ((~mask).flatten(1).sum(1) == 4).all()


def test_reconstruction_panels_paste_visible_patches():
    torch.manual_seed(0)
    model = FCMAE("convnextv2_atto", decoder_dim=64)
    imgs = torch.randn(2, 3, 64, 64)
    mask = random_mask(2, 64, 0.5)
    panels = model.reconstruct(imgs, mask)
    pix = mask.repeat_interleave(32, 1).repeat_interleave(32, 2).unsqueeze(1)
    assert all(p.shape == imgs.shape for p in panels)
    assert torch.equal(panels.pasted[~pix.expand_as(imgs)], imgs[~pix.expand_as(imgs)])
    assert (panels.masked[pix.expand_as(imgs)] == 0).all()
    # norm-pix predictions are de-normalized with each patch's own statistics
    mean, std = patch_statistics(patchify(imgs))
    _, pred, _ = model(imgs, mask)
    expected = unpatchify(pred.flatten(2).transpose(1, 2) * std + mean, (2, 2))
    torch.testing.assert_close(panels.reconstruction, expected)


def test_encoder_loads_into_a_classifier_for_fine_tuning():
    torch.manual_seed(0)
    fcmae = FCMAE("convnextv2_atto", decoder_dim=64)
    classifier = create_model("convnextv2_atto", num_classes=10)
    result = classifier.load_state_dict(fcmae.encoder.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["head.bias", "head.weight", "norm.bias", "norm.weight"]
    assert not result.unexpected_keys
    result = load_pretrained(classifier, {"model": fcmae.state_dict()})
    assert set(result.missing_keys) == {"head.bias", "head.weight", "norm.bias", "norm.weight"}
    imgs = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(classifier.forward_features(imgs), fcmae.encoder.forward_features(imgs))


def test_a_given_model_is_copied_and_left_whole():
    model = randomize_(create_model("convnextv2_atto", num_classes=10))
    fcmae = FCMAE(model, decoder_dim=64)
    assert isinstance(model.norm, torch.nn.LayerNorm) and isinstance(model.head, torch.nn.Linear)
    assert set(fcmae.state_dict()) == set(FCMAE("convnextv2_atto", decoder_dim=64).state_dict())
    imgs = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(fcmae.encoder.forward_features(imgs), model.forward_features(imgs))
    assert not set(map(id, fcmae.parameters())) & set(map(id, model.parameters()))


def test_every_parameter_gets_a_gradient():
    model = FCMAE("convnextv2_atto", decoder_dim=64)
    model(torch.randn(2, 3, 64, 64))[0].backward()
    assert all(p.grad is not None for p in model.parameters())


def test_dense_encoder_ablation_runs_the_plain_model_on_the_masked_image():
    """sparse=False: the dense encoder on zeroed masked patches, so masked positions leak into the
    features at visible cells; the decoder and loss are unchanged."""
    torch.manual_seed(0)
    model = randomize_(FCMAE("convnextv2_atto", decoder_dim=64, sparse=False)).double()
    imgs = torch.randn(2, 3, 64, 96, dtype=torch.float64)
    mask = random_mask(2, (64, 96), 0.5, generator=torch.Generator().manual_seed(0))
    visible = (~mask).unsqueeze(1)
    with torch.no_grad():
        dense = model.forward_encoder(imgs, mask)
        torch.testing.assert_close(dense, model.encoder.forward_features(imgs * ~pixel_mask(mask).unsqueeze(1)))
        model.sparse = True
        sparse = model.forward_encoder(imgs, mask)
        model.sparse = False
    assert ((dense - sparse) * visible).abs().max() > 1e-3  # the leak the sparse encoder avoids
    loss, pred, _ = model(imgs, mask)
    torch.testing.assert_close(loss, model.forward_loss(imgs, model.forward_decoder(dense, mask), mask))
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_grn_aggregation_configures_the_encoder_only():
    model = FCMAE("convnextv2_atto", decoder_dim=64, grn_aggregation="mean")
    assert {b.grn.aggregation for s in model.encoder.stages for b in s} == {"mean"}
    assert model.decoder[0].grn.aggregation == "l2"
    assert set(model.state_dict()) == set(FCMAE("convnextv2_atto", decoder_dim=64).state_dict())


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(encoder="convnextv2_tiny2"), ValueError, "unknown model name"),
        (dict(mask_ratio=1.0), ValueError, r"ratio .* must be in \[0, 1\)"),
        (dict(backend="sparse"), ValueError, "backend must be one of"),
        (dict(grn_aggregation="max"), ValueError, "grn_aggregation must be one of 'l2', 'l1', 'mean'; got 'max'"),
        (dict(encoder=torch.nn.Linear(2, 2)), TypeError, "encoder must be a model name or a ConvNeXtV2"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        FCMAE(**kwargs)


def test_from_config_builds_what_a_run_trained(tmp_path):
    """Training and the notebooks build an FCMAE from a config the same way, in_chans included (the notebooks' own
    copy dropped it), and a config.json of an older run without the newer fields still loads."""
    folder = make_image_folder(tmp_path / "data")
    run = pretrain(load_preset("smoke", task="pretrain", data=str(folder), output=str(tmp_path / "runs"),
                               in_chans=1, batch_size=4, progress=False))
    model, config = load_fcmae(run.run_dir)
    assert model.encoder.in_chans == 1 and config["in_chans"] == 1
    old = {k: v for k, v in json.loads((run.run_dir / "config.json").read_text()).items()
           if k not in ("in_chans", "grn_aggregation", "sparse_encoder")}
    assert FCMAE.from_config(old).encoder.in_chans == 3
