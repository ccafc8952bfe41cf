"""cnx2lite export: each format written, loaded back with its runtime and compared with PyTorch."""
from __future__ import annotations

import importlib.util

import pytest
import torch

from cnx2lite.commands import main
from cnx2lite.export import FORMATS, export_model, max_difference
from cnx2lite.models import create_model
from conftest import randomize_

NEEDS = {"onnx": ("onnx", "onnxscript", "onnxruntime")}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_export_matches_pytorch_on_another_batch_size(fmt, tmp_path):
    missing = [p for p in NEEDS.get(fmt, ()) if importlib.util.find_spec(p) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (pip install -e '.[dev]')")
    model = randomize_(create_model("convnextv2_atto", num_classes=10)).eval()
    path = export_model(model, tmp_path / f"model{FORMATS[fmt]}", fmt, img_size=64)
    assert max_difference(model, path, fmt, img_size=64) < 1e-4


def test_export_cli_writes_the_encoder_of_a_state_dict(tmp_path, capsys):
    encoder = randomize_(create_model("convnextv2_atto", num_classes=0))
    torch.save(encoder.state_dict(), tmp_path / "encoder.pt")
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--checkpoint", str(tmp_path / "encoder.pt"), "--format", "exported-program", "--img-size",
              "64", "--output", str(tmp_path / "encoder.pt2")])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "encoder (pooled features)" in out and (tmp_path / "encoder.pt2").is_file()
    assert float(out.rsplit(" ", 1)[1]) < 1e-4


def test_export_of_a_non_square_run_and_the_checkpoint_is_never_overwritten(tmp_path, capsys):
    model = randomize_(create_model("convnextv2_atto", num_classes=3)).eval()
    path = export_model(model, tmp_path / "wide.pt2", "exported-program", img_size=(64, 96))
    assert max_difference(model, path, "exported-program", (64, 96)) < 1e-4
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    with pytest.raises(SystemExit) as exit_info:  # writing the export over its own source
        main(["export", "--checkpoint", str(tmp_path / "weights.pt"), "--format", "torchscript", "--output",
              str(tmp_path / "weights.pt"), "--img-size", "64"])
    assert exit_info.value.code == 2 and "is the checkpoint being exported" in capsys.readouterr().err
    run = tmp_path / "run"
    run.mkdir()
    torch.save(model.state_dict(), run / "checkpoint-00000002.pt")
    for output in (run / "checkpoint-00000009.pt", run):  # any run checkpoint's name, a folder: refused, not written
        with pytest.raises(SystemExit) as exit_info:
            main(["export", "--checkpoint", str(tmp_path / "weights.pt"), "--format", "torchscript", "--output",
                  str(output), "--img-size", "64"])
        assert exit_info.value.code == 2 and "choose a new file" in capsys.readouterr().err
    assert sorted(p.name for p in run.iterdir()) == ["checkpoint-00000002.pt"]
    assert FORMATS["torchscript"] == ".torchscript.pt"  # the default name never collides with checkpoint-N.pt
