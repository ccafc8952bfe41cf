"""Inputs other than square RGB: --in-chans 1 (greyscale) and --img-size H W, from the transforms to a trained and
evaluated run, and RGB weights adapted to a greyscale stem."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from cnx2lite import transforms
from cnx2lite.checkpoints import load_pretrained
from cnx2lite.commands import main
from cnx2lite.models import create_model
from cnx2lite.rundir import load_checkpoint
from conftest import make_image_folder, randomize_

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), size=96)


def test_transforms_give_the_asked_channels_and_shape():
    img = Image.new("RGB", (120, 90), (200, 40, 40))
    for transform in (transforms.pretrain_transform((64, 96), in_chans=1),
                      transforms.finetune_transform((64, 96), in_chans=1),
                      transforms.eval_transform((64, 96), in_chans=1)):
        assert transform(img).shape == (1, 64, 96)
    assert transforms.eval_transform(64)(img).shape == (3, 64, 64)
    grey = transforms.eval_transform(32, in_chans=1)(img)
    luma = (0.299 * 200 + 0.587 * 40 + 0.114 * 40) / 255  # PIL's L conversion of (200, 40, 40)
    assert torch.allclose(transforms.denormalize(grey), torch.full_like(grey, luma), atol=0.005)
    with pytest.raises(ValueError, match="in_chans must be 1 .* or 3"):
        transforms.eval_transform(64, in_chans=4)


def test_rgb_weights_in_a_greyscale_stem_see_a_grey_image_as_its_rgb_copy():
    rgb = randomize_(create_model("convnextv2_atto", num_classes=5)).eval()
    grey = create_model("convnextv2_atto", num_classes=5, in_chans=1).eval()
    result = load_pretrained(grey, rgb.state_dict())
    assert "stem adapted from 3 to 1 input channels" in result.notes
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="the weights take 1-channel images .* the model 3-channel ones: .* give the "
                                         r"model in_chans=1 \(--in-chans 1\)"):  # the remedy, not a key (round 18)
        load_pretrained(rgb, grey.state_dict())


def _run(args: list[str], images: Path, output: Path, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--data", str(images), "--output", str(output)])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0, err
    return out


def test_greyscale_non_square_pretrain_finetune_and_eval(images, tmp_path, capsys):
    flags = ["--preset", "smoke", "--in-chans", "1", "--img-size", "64", "96", "--batch-size", "4"]
    _run(["pretrain", *flags, "--name", "pre"], images, tmp_path, capsys)
    pre = load_checkpoint(tmp_path / "pre")
    assert pre["model"]["encoder.downsample_layers.0.0.weight"].shape[1] == 1
    assert pre["model"]["pred.weight"].shape[0] == 32 * 32  # one channel per predicted pixel
    assert (tmp_path / "pre" / "reconstruction.png").is_file()
    _run(["finetune", *flags, "--name", "fine", "--pretrained", str(tmp_path / "pre")], images, tmp_path, capsys)
    fine = load_checkpoint(tmp_path / "fine")
    assert fine["config"]["img_size"] == (64, 96) and fine["config"]["in_chans"] == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--checkpoint", str(tmp_path / "fine"), "--data", str(images)])
    assert exit_info.value.code == 0 and "top-1" in capsys.readouterr().out
