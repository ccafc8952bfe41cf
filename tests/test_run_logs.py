"""Logs people read with their own tools: TensorBoard beside metrics.csv, and --config replaying a saved run."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnx2lite.commands import main
from cnx2lite.train import load_config, pretrain
from cnx2lite.train import tensorboard as tb
from conftest import make_image_folder

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


def test_tensorboard_holds_the_metrics_grad_norm_and_reconstructions(images, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed (pip install -e '.[dev]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = pretrain("smoke", data=str(images), output=str(tmp_path), batch_size=4, epochs=2, tensorboard=True)
    events = EventAccumulator(str(run.run_dir / "tensorboard"))
    events.Reload()
    scalars = events.Tags()["scalars"]
    assert {"train/train_loss", "train/lr", "train/grad_norm", "epoch/val_loss", "epoch/knn_top1"} <= set(scalars)
    logged = [e.value for e in events.Scalars("train/train_loss")]
    csv_rows = [r["train_loss"] for r in run.history if r["kind"] == "train"]
    assert logged == pytest.approx(csv_rows)
    assert events.Tags()["images"] == ["reconstructions"] and len(events.Images("reconstructions")) == 2


def test_tensorboard_asked_for_without_the_package_is_one_line(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(tb.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--preset", "smoke", "--tensorboard", "--data", str(images), "--output", str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and "pip install tensorboard" in err


def test_config_replays_a_saved_run_exactly(images, tmp_path, capsys):
    pretrain("smoke", data=str(images), output=str(tmp_path), name="first", batch_size=4, mask_ratio=0.5, lr=3e-4)
    saved = tmp_path / "first" / "config.json"
    capsys.readouterr()  # the training's own output
    with pytest.raises(SystemExit):
        main(["pretrain", "--config", str(saved), "--name", "again", "--show-config"])
    replayed = json.loads(capsys.readouterr().out)
    requested = json.loads(saved.read_text())["requested"]  # before lr, accum_steps, global_batch were resolved
    assert {k: v for k, v in replayed.items() if k != "name"} == {k: requested[k] for k in replayed if k != "name"}
    assert replayed["name"] == "again" and replayed["lr"] == 3e-4
    with pytest.raises(SystemExit):  # an override re-derives what depends on it: base_lr matters once lr is unset
        main(["pretrain", "--config", str(saved), "--lr", "none", "--base-lr", "0.004", "--show-config"])
    again = json.loads(capsys.readouterr().out)
    assert again["lr"] is None and again["base_lr"] == 0.004
    with pytest.raises(ValueError, match="is not a finetune config.json"):
        load_config(saved, "finetune")
