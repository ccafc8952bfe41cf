"""Continued pretraining: --init-encoder from other formats (and an FCMAE checkpoint's decoder), and
--freeze-encoder-epochs training the decoder alone first."""
from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from cnx2lite.checkpoint_formats import export_timm
from cnx2lite.fcmae import FCMAE
from cnx2lite.models import create_model
from cnx2lite.rundir import load_checkpoint
from cnx2lite.train import Trainer, load_preset, pretrain
from conftest import make_image_folder, randomize_

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


def _config(images: Path, output: Path, **overrides):
    return load_preset("smoke", task="pretrain", data=str(images), output=str(output), batch_size=4, **overrides)


def test_init_encoder_from_a_timm_file_and_a_decoder_from_an_fcmae_checkpoint(images, tmp_path):
    source = randomize_(create_model("convnextv2_atto", num_classes=1000), seed=1)
    reference = timm.create_model("convnextv2_atto")
    reference.load_state_dict(export_timm(source))
    torch.save(reference.state_dict(), tmp_path / "timm.pth")
    trainer = Trainer(_config(images, tmp_path, init_encoder=str(tmp_path / "timm.pth")))
    for key, value in trainer.model.encoder.state_dict().items():
        torch.testing.assert_close(value, source.state_dict()[key], msg=key)

    fcmae = randomize_(FCMAE("convnextv2_atto", decoder_dim=64), seed=2)  # the smoke preset's decoder width
    torch.save({"model": fcmae.state_dict()}, tmp_path / "fcmae.pt")  # as the official FCMAE saves it
    trainer = Trainer(_config(images, tmp_path, name="with-decoder", init_encoder=str(tmp_path / "fcmae.pt")))
    for key, value in fcmae.state_dict().items():
        torch.testing.assert_close(trainer.model.state_dict()[key], value, msg=key)

    with pytest.raises(ValueError, match="decoder does not fit this FCMAE .* set decoder_dim"):
        Trainer(_config(images, tmp_path, name="wide", decoder_dim=32, init_encoder=str(tmp_path / "fcmae.pt")))


def test_freeze_encoder_epochs_trains_the_decoder_alone_first(images, tmp_path):
    encoder = randomize_(create_model("convnextv2_atto", num_classes=0), seed=3)
    torch.save(encoder.state_dict(), tmp_path / "encoder.pt")
    run = pretrain(_config(images, tmp_path, name="frozen", epochs=2, freeze_encoder_epochs=1, keep_last=20,
                           save_every_steps=1, init_encoder=str(tmp_path / "encoder.pt")))
    steps_per_epoch = run.history[-1]["step"] // 2
    after_frozen = load_checkpoint(run.run_dir / f"checkpoint-{steps_per_epoch:08d}.pt")["model"]
    after_both = load_checkpoint(run.run_dir)["model"]
    weights = {k: v for k, v in encoder.state_dict().items() if not k.startswith("norm.")}
    for key, value in weights.items():  # untouched in the frozen epoch: no step, no weight decay
        assert torch.equal(after_frozen[f"encoder.{key}"], value), key
    assert all(not torch.equal(after_both[f"encoder.{k}"], v) for k, v in weights.items() if k.endswith("weight"))
    first_step = load_checkpoint(run.run_dir / "checkpoint-00000001.pt")["model"]
    assert not torch.equal(first_step["pred.weight"], after_frozen["pred.weight"])  # the decoder trains meanwhile


def test_recorded_architecture_is_checked_and_a_greyscale_fcmae_reuses_an_rgb_decoder(images, tmp_path):
    from cnx2lite.train import finetune

    run = pretrain(_config(images, tmp_path, name="mean-grn", grn_aggregation="mean"))
    with pytest.raises(ValueError, match="grn_aggregation: saved 'mean', model 'l2'"):  # would load silently
        finetune("smoke", data=str(images), output=str(tmp_path), name="l2", pretrained=str(run.run_dir))
    rgb = randomize_(FCMAE("convnextv2_atto", decoder_dim=64), seed=4)
    torch.save({"model": rgb.state_dict()}, tmp_path / "rgb.pt")
    grey = Trainer(_config(images, tmp_path, name="grey", in_chans=1, init_encoder=str(tmp_path / "rgb.pt")))
    state = grey.model.state_dict()
    torch.testing.assert_close(state["decoder.0.pwconv1.weight"], rgb.state_dict()["decoder.0.pwconv1.weight"])
    assert state["pred.weight"].shape[0] == 32 * 32  # one channel: the prediction layer starts fresh
