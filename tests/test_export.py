"""cnx2lite export: each format written, loaded back with its runtime and compared with PyTorch."""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

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


def test_export_of_a_non_square_run_and_the_checkpoint_is_never_overwritten(tmp_path, capsys, monkeypatch):
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
    (run / "reconstructions").mkdir()
    (run / "reconstructions" / "epoch-0002.png").write_bytes(b"figure")
    for output, fmt, kind in ((tmp_path / "images" / "new.png", "torchscript", "an image"),
                              (tmp_path / "model.JPG", "exported-program", "an image"),
                              (tmp_path / "model.pt", "onnx", "trained weights"),
                              (tmp_path / "model.PTH", "torchscript", "trained weights")):
        with pytest.raises(SystemExit) as exit_info:  # an image folder would read it as an image, a loader as weights
            main(["export", "--checkpoint", str(tmp_path / "weights.pt"), "--format", fmt, "--output", str(output)])
        assert exit_info.value.code == 2 and f"is named as {kind} ({output.suffix}): name it *{FORMATS[fmt]}" in \
            capsys.readouterr().err and not output.exists()
    for output in (run / "checkpoint-00000009.pt", run, run / "reconstructions" / "epoch-0002.png",
                   run / "reconstructions" / "new.pt"):  # a run checkpoint's name, a folder, anywhere in a run
        with pytest.raises(SystemExit) as exit_info:
            main(["export", "--checkpoint", str(tmp_path / "weights.pt"), "--format", "torchscript", "--output",
                  str(output), "--img-size", "64", "--overwrite"])
        assert exit_info.value.code == 2 and "choose a new file" in capsys.readouterr().err
    assert sorted(p.name for p in run.rglob("*")) == ["checkpoint-00000002.pt", "epoch-0002.png", "reconstructions"]
    assert (run / "reconstructions" / "epoch-0002.png").read_bytes() == b"figure"
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:  # a run's checkpoint, no --output: named after the run and step
        main(["export", "--checkpoint", str(run / "checkpoint-00000002.pt"), "--format", "torchscript",
              "--img-size", "64", "--model", "convnextv2_atto"])
    assert exit_info.value.code == 0 and (tmp_path / "run-00000002.torchscript.pt").is_file()
    assert FORMATS["torchscript"] == ".torchscript.pt"  # the default name never collides with checkpoint-N.pt


def test_overwrite_never_replaces_weights_and_saved_folders_export(tmp_path, capsys):
    """--overwrite replaces an earlier export, never a file holding trained weights, wherever it lies; a
    save_pretrained folder exports like any source; a truncated safetensors file is one line."""
    from cnx2lite.export import export_checkpoint
    from cnx2lite.hub import save_pretrained

    model = randomize_(create_model("convnextv2_atto", num_classes=0))
    weights = tmp_path / "best.pt"  # a checkpoint copied out of its run, under any name
    torch.save({"model": model.state_dict()}, weights)
    folder = save_pretrained(model, tmp_path / "saved")
    first = export_checkpoint(folder, "torchscript", tmp_path / "enc.ts", img_size=64)
    again = export_checkpoint(folder, "torchscript", tmp_path / "enc.ts", img_size=64, overwrite=True)
    assert first.files == again.files and again.max_difference < 1e-4
    with pytest.raises(ValueError, match="holds trained weights"):
        export_checkpoint(folder, "torchscript", weights, img_size=64, overwrite=True)
    assert torch.load(weights, weights_only=True)["model"].keys() == model.state_dict().keys()
    (folder / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes()[:100])
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--checkpoint", str(folder), "--format", "torchscript", "--output", str(tmp_path / "x.ts")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "truncated or not a safetensors file" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("linked", ["enc.ts", "enc.ts.data"])
def test_an_output_that_is_a_link_is_never_written_through(tmp_path, linked):
    """--output (or ONNX's <name>.data beside it) linked to a user's file elsewhere: --overwrite wrote the export
    into the link's target (round 18's X01)."""
    from cnx2lite.export import export_checkpoint

    victim = tmp_path / "outside" / "keep.csv"
    victim.parent.mkdir()
    victim.write_text("a,b\n")
    (tmp_path / linked).symlink_to(victim)
    with pytest.raises(ValueError, match=f"{linked} is a symbolic link .*keep.csv.*: an export writes only files of"):
        export_checkpoint("random", "torchscript", tmp_path / "enc.ts", img_size=64, overwrite=True)
    assert victim.read_text() == "a,b\n"


def test_save_pretrained_never_writes_into_a_training_run(tmp_path):
    """A run's config.json is its record (resume and load_model read it): a saved model must go elsewhere."""
    from cnx2lite.hub import save_pretrained

    run = tmp_path / "run"
    (run / "reconstructions").mkdir(parents=True)
    (run / "config.json").write_text('{"task": "finetune"}')
    for folder in (run, run / "reconstructions", run / "new"):
        with pytest.raises(ValueError, match=f"inside the training run {run}"):
            save_pretrained(create_model("convnextv2_atto", num_classes=2), folder)
    assert (run / "config.json").read_text() == '{"task": "finetune"}' and not (run / "new").exists()
    (tmp_path / "notes.pt").write_text("mine")
    with pytest.raises(ValueError, match="notes.pt: it is a file; give a folder"):
        save_pretrained(create_model("convnextv2_atto", num_classes=2), tmp_path / "notes.pt")


def test_a_broken_optional_package_is_one_line_naming_it(tmp_path, monkeypatch, capsys):
    """An installed package that fails on import (a mismatched build) is named: no exit 1 from deep inside it."""
    broken = "raise AttributeError('module numpy has no attribute float')\n"
    for package, code in (("onnx", broken), ("onnxscript", "")):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text(code)
        monkeypatch.delitem(sys.modules, package, raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--checkpoint", "random", "--format", "onnx", "--output", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1, err
    assert "onnx is installed but does not import (AttributeError: module numpy has no attribute float)" in err


def test_an_output_named_as_a_folder_or_with_an_onnx_data_file_beside_it_is_refused(tmp_path):
    from cnx2lite.export import export_checkpoint

    with pytest.raises(ValueError, match="names a folder"):
        export_checkpoint("random", "torchscript", f"{tmp_path}/newdir/", model="convnextv2_atto", img_size=64)
    (tmp_path / "model.onnx.data").write_bytes(b"someone's weights")
    with pytest.raises(FileExistsError, match="model.onnx.data exists"):
        export_checkpoint("random", "onnx", tmp_path / "model.onnx", model="convnextv2_atto", img_size=64)
    assert (tmp_path / "model.onnx.data").read_bytes() == b"someone's weights" and not (tmp_path / "newdir").exists()


def test_an_output_that_is_no_regular_file_or_named_for_another_format_is_refused(tmp_path):
    from cnx2lite.export import export_checkpoint

    os.mkfifo(tmp_path / "pipe")
    with pytest.raises(ValueError, match="pipe is not a regular file"):
        export_checkpoint("random", "torchscript", tmp_path / "pipe", model="convnextv2_atto", img_size=64,
                          overwrite=True)
    assert (tmp_path / "pipe").is_fifo()
    with pytest.raises(ValueError, match=r"is named as onnx \(.onnx\), but --format is torchscript"):
        export_checkpoint("random", "torchscript", tmp_path / "model.onnx", model="convnextv2_atto", img_size=64)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipe"]


def test_an_export_to_a_home_path_expands_the_tilde(tmp_path, monkeypatch):
    """'~/m.torchscript.pt' went into a folder literally named '~' under the current folder (round 15): a path given
    to the API is expanded where it enters, as every other path is."""
    from cnx2lite.export import export_checkpoint

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    for output in ("~/a.torchscript.pt", Path("~/b.torchscript.pt")):
        result = export_checkpoint("random", "torchscript", output, model="convnextv2_atto", img_size=32)
        assert result.files == [tmp_path / "home" / Path(output).name]
    assert not (tmp_path / "~").exists()
