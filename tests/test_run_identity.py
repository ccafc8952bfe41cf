"""A run folder holds one run: what a resume may and may not change, and settings that must take effect as given.

Each case was found silently wrong by a misuse round: a resume that mixed two runs in one folder, or forgot the
weights the run started from, or scored on another val split; a flag that a preset's value overrode without a word.
"""
from __future__ import annotations

import json
import re
import shutil
import warnings

import numpy as np
import pytest

from cnx2lite.rundir import RunDir
from cnx2lite.train import finetune, load_preset, pretrain
from cnx2lite.train.resume import ResumeMismatchError
from cnx2lite.train.run_data import IgnoredSettingWarning
from conftest import make_image_folder

SMALL = dict(batch_size=4, epochs=2, keep_last=5)


@pytest.fixture
def folder(tmp_path):
    return make_image_folder(tmp_path / "images")


def test_a_resume_from_another_run_never_writes_into_a_run_of_its_own(folder, tmp_path, one_thread):
    run = dict(data=str(folder), output=str(tmp_path / "runs"), **SMALL)
    finetune("smoke", **run, name="a", seed=7)
    other = finetune("smoke", **{**run, "epochs": 3}, name="b")
    before = {p.name: p.read_bytes() for p in (tmp_path / "runs" / "a").iterdir() if p.is_file()}
    into_a = dict(run, name="a", epochs=3, resume=str(other.run_dir / "checkpoint-00000004.pt"))  # b's epoch 1
    with pytest.raises(ResumeMismatchError, match="holds a run of its own"):
        finetune("smoke", **into_a)
    assert {p.name: p.read_bytes() for p in (tmp_path / "runs" / "a").iterdir() if p.is_file()} == before
    fresh = finetune("smoke", **{**into_a, "name": "c"})  # into a new folder it continues b
    assert fresh.history[-1]["step"] == 12


def test_a_resume_from_an_older_checkpoint_of_the_run_never_replaces_its_later_ones(folder, tmp_path, one_thread):
    """--resume <an older checkpoint> into its own, finished run retrained from there and replaced the later
    checkpoints and metrics.csv with another history (round 19's N23): refused; branching into a new run is not."""
    run = dict(data=str(folder), output=str(tmp_path / "runs"), name="a", **SMALL)
    finetune("smoke", **run)
    older = tmp_path / "runs" / "a" / "checkpoint-00000004.pt"  # epoch 1 of 2
    before = {p.name: p.read_bytes() for p in (tmp_path / "runs" / "a").iterdir() if p.is_file() and p.name != ".lock"}
    with pytest.raises(ResumeMismatchError, match=f"cannot resume from {older}: .* holds later checkpoints of this run "
                                                  r"\(newest: checkpoint-00000008.pt\)"):
        finetune("smoke", **{**run, "amp": "bf16"}, resume=str(older))
    after = {p.name: p.read_bytes() for p in (tmp_path / "runs" / "a").iterdir() if p.is_file() and p.name != ".lock"}
    assert after == before
    branch = finetune("smoke", **{**run, "name": "b"}, resume=str(older))
    assert branch.history[-1]["step"] == 8 and (tmp_path / "runs" / "a" / "checkpoint-00000008.pt").is_file()


def test_a_resumed_run_keeps_the_weights_it_started_from(folder, tmp_path, one_thread):
    run = dict(data=str(folder), output=str(tmp_path / "runs"), **SMALL)
    encoder = pretrain("smoke", **run, name="fcmae").run_dir
    finetune("smoke", **run, name="ft", pretrained=str(encoder))
    newest = RunDir(tmp_path / "runs" / "ft").latest_checkpoint()
    newest.unlink()  # as if it had crashed in its last epoch
    finetune("smoke", **run, name="ft", resume="auto")  # --pretrained not repeated
    config = json.loads((tmp_path / "runs" / "ft" / "config.json").read_text())
    assert config["pretrained"] == config["requested"]["pretrained"] == str(encoder)


def test_a_resume_refuses_another_val_split(folder, tmp_path, one_thread):
    run = dict(data=str(folder), output=str(tmp_path / "runs"), name="r", **SMALL)
    finetune("smoke", **run)
    RunDir(tmp_path / "runs" / "r").latest_checkpoint().unlink()
    other_val = shutil.copytree(folder, tmp_path / "other")
    for image in sorted((other_val / "val" / "class0").iterdir())[:2]:
        image.unlink()
    with pytest.raises(ResumeMismatchError, match="the scored images under"):
        finetune("smoke", **{**run, "data": str(other_val), "resume": "auto"})


def test_a_resume_that_finds_nothing_says_it_starts_a_new_run(folder, tmp_path, capsys, one_thread):
    finetune("smoke", data=str(folder), output=str(tmp_path / "runs"), name="typo", resume="auto", **SMALL)
    assert f"no checkpoint in {tmp_path / 'runs' / 'typo'}: starting a new run" in capsys.readouterr().out


def test_a_snapshot_is_not_resumed_but_pointed_to_pretrained(folder, tmp_path, one_thread):
    run = dict(data=str(folder), output=str(tmp_path / "runs"), **SMALL)
    finetune("smoke", **run, name="s", keep_every_epochs=1)
    snapshot = next((tmp_path / "runs" / "s").glob("snapshot-*.pt"))
    with pytest.raises(ResumeMismatchError, match="holds weights only .* pass it as pretrained"):
        finetune("smoke", **{**run, "epochs": 3}, name="t", resume=str(snapshot))
    with pytest.raises(ResumeMismatchError, match="holds weights only"):  # nor the folders made for it
        finetune("smoke", **{**run, "epochs": 3, "output": str(tmp_path / "new" / "deep")}, resume=str(snapshot))
    assert not (tmp_path / "new").exists()


def test_a_run_folder_inside_the_images_it_reads_is_refused(folder, tmp_path):
    with pytest.raises(ValueError, match="is inside the images read from"):
        finetune("smoke", data=str(folder), output=str(folder / "train" / "runs"), **SMALL)
    with pytest.raises(ValueError, match=f"is inside the images read from {folder}, where"):  # beside train/
        finetune("smoke", data=str(folder), output=str(folder), **SMALL)
    unlabeled = tmp_path / "photos"
    shutil.copytree(folder / "train" / "class0", unlabeled)
    with pytest.raises(ValueError, match="is inside the images read from"):
        pretrain("smoke", data=str(unlabeled), output=str(unlabeled / "runs"), **SMALL)
    (unlabeled / "more").symlink_to(tmp_path / "runs", target_is_directory=True)  # a link to where the runs go
    (tmp_path / "runs").mkdir()
    with pytest.raises(ValueError, match=f"inside the images read from .*through {unlabeled}/more, which leads"):
        pretrain("smoke", data=str(unlabeled), output=str(tmp_path / "runs"), **SMALL)
    assert not (tmp_path / "runs" / "pretrain-convnextv2_atto").exists()


def test_a_setting_given_takes_effect_over_the_preset_s_partner():
    assert load_preset("smoke").lr is not None  # the preset sets lr: base_lr alone would never apply
    assert load_preset("smoke", base_lr=1e-3).lr is None
    assert load_preset("imagenette-gpu", accum_steps=2).global_batch is None
    assert finetune_config_from_a_config_object(base_lr=1e-3).lr is None


def finetune_config_from_a_config_object(**overrides):
    from cnx2lite.train.api import _config
    return _config("finetune", load_preset("smoke"), overrides)


@pytest.mark.parametrize(("overrides", "says"), [
    (dict(lr=1e-4, min_lr=0.05), "min_lr=0.05 is above the peak lr 0.0001"),
    (dict(base_lr=1e-6), "above the peak lr"),  # derived from base_lr at batch 4: below the preset's min_lr
    (dict(accum_steps=3, global_batch=8), "accum_steps=3 and global_batch=8 disagree"),
    (dict(betas=(0.9, "0.999")), "betas[1] must be float"),
    (dict(img_size=(64, "64")), "img_size[1] must be int"),
    (dict(layer_decay_mode="group"), "but layer_decay is 1.0 (off)"),
    (dict(mixup=0.8, batch_size=3), "mixup and cutmix pair each image with another of its batch: batch_size must be "
                                    "even, got 3"),
    (dict(ema_cpu=True, ema_decay=0.0), "ema_cpu keeps the EMA of the weights on the CPU, but there is none"),
    (dict(keep_every_epochs=3), "keep_every_epochs (3) is more than epochs (2): no snapshot would be kept"),
    (dict(output=""), "output is an empty path"),
    (dict(name=" "), "no spaces around it"),
    (dict(name="run "), "no spaces around it"),
])
def test_contradicting_or_mistyped_settings_are_refused_by_name(folder, tmp_path, overrides, says):
    with pytest.raises(ValueError, match=re.escape(says)):
        finetune("smoke", **{"data": str(folder), "output": str(tmp_path / "runs"), **SMALL, **overrides})


def test_numpy_values_are_taken_as_the_numbers_they_hold():
    config = load_preset("smoke", betas=np.array([0.9, 0.95]), img_size=(np.int64(64), np.int64(96)))
    assert config.betas == (0.9, 0.95) and config.img_size == (64, 96)
    assert all(type(v) is float for v in config.betas) and all(type(v) is int for v in config.img_size)


def test_a_data_root_with_two_image_trees_is_refused(folder, tmp_path):
    with pytest.raises(ValueError, match=f"dataset 'imagenet_typo': {folder} holds no folder of that name"):
        finetune("smoke", data=str(folder), dataset="imagenet_typo", output=str(tmp_path / "runs"), **SMALL)
    root = shutil.copytree(folder, tmp_path / "root")
    shutil.copytree(folder, root / "mydata")
    with pytest.raises(ValueError, match="holds both train/ and mydata/train/"):
        finetune("smoke", data=str(root), dataset="mydata", output=str(tmp_path / "runs"), **SMALL)


def test_a_config_json_without_its_requested_entry_replays_its_settings(folder, tmp_path, one_thread):
    run = finetune("smoke", data=str(folder), output=str(tmp_path / "runs"), name="r", **SMALL)
    saved = json.loads((run.run_dir / "config.json").read_text())
    del saved["requested"]
    (tmp_path / "old.json").write_text(json.dumps(saved))
    from cnx2lite.train import load_config
    replayed = load_config(tmp_path / "old.json", "finetune", name="again")
    assert (replayed.seed, replayed.epochs, replayed.lr) == (saved["seed"], saved["epochs"], saved["lr"])


def test_a_new_run_never_writes_over_another_run_s_record(folder, tmp_path, one_thread, capsys):
    run = dict(data=str(folder), output=str(tmp_path / "runs"), **SMALL)
    pretrain("smoke", **run, name="p")
    for checkpoint in (tmp_path / "runs" / "p").glob("checkpoint-*.pt"):
        checkpoint.unlink()  # space saved after an export: the record stays
    record = (tmp_path / "runs" / "p" / "config.json").read_text()
    with pytest.raises(FileExistsError, match="holds the record of another run .*task: .pretrain. -> .finetune."):
        finetune("smoke", **run, name="p")
    assert (tmp_path / "runs" / "p" / "config.json").read_text() == record
    other_images = shutil.copytree(folder, tmp_path / "other")
    sorted((other_images / "train" / "class0").iterdir())[0].unlink()
    with pytest.raises(FileExistsError, match=r"it logged 2 finished epoch\(s\)"):  # the same settings, other images
        pretrain("smoke", **{**run, "data": str(other_images)}, name="p")
    metrics = (tmp_path / "runs" / "p" / "metrics.csv").read_text()
    with pytest.raises(FileExistsError, match=r"it logged 2 finished epoch\(s\), whose results a new run would"):
        pretrain("smoke", **run, name="p")  # the identical command: the finished results stay
    assert (tmp_path / "runs" / "p" / "metrics.csv").read_text() == metrics
    capsys.readouterr()
    with pytest.raises(FileExistsError, match="holds the record of another run"):  # one error, no "starting" first
        pretrain("smoke", **run, name="p", resume="auto")
    assert "starting a new run" not in capsys.readouterr().out


def test_a_run_folder_inside_another_run_is_refused(folder, tmp_path, one_thread):
    first = finetune("smoke", data=str(folder), output=str(tmp_path / "runs"), name="a", **SMALL)
    with pytest.raises(ValueError, match="is inside the training run"):
        finetune("smoke", data=str(folder), output=str(first.run_dir), name="nested", **SMALL)
    assert not (first.run_dir / "nested").exists()


def test_a_resume_given_other_weights_keeps_its_origin_and_says_so(folder, tmp_path, capsys, one_thread):
    run = dict(data=str(folder), output=str(tmp_path / "runs"), **SMALL)
    encoder = pretrain("smoke", **run, name="fcmae").run_dir
    finetune("smoke", **run, name="ft", pretrained=str(encoder))
    RunDir(tmp_path / "runs" / "ft").latest_checkpoint().unlink()
    other = str(next(encoder.glob("checkpoint-*.pt")))
    with pytest.warns(IgnoredSettingWarning, match=f"pretrained {re.escape(other)} does not apply to a resume"):
        finetune("smoke", **run, name="ft", resume="auto", pretrained=other)  # a warning, as other no-ops are
    assert json.loads((tmp_path / "runs" / "ft" / "config.json").read_text())["pretrained"] == str(encoder)


def test_a_resume_needs_none_of_the_start_weights_it_began_from(folder, tmp_path, one_thread):
    """The weights of a resumed run come from its checkpoint: the run folder it started from, deleted since, blocks
    nothing, and the record keeps the origin. Without a checkpoint to resume the missing start is refused by name."""
    run = dict(data=str(folder), output=str(tmp_path / "runs"), **SMALL)
    encoder = pretrain("smoke", **run, name="fcmae").run_dir
    finetune("smoke", **run, name="ft", pretrained=str(encoder))
    RunDir(tmp_path / "runs" / "ft").latest_checkpoint().unlink()
    shutil.rmtree(encoder)
    resumed = finetune("smoke", **run, name="ft", resume="auto", pretrained=str(encoder))
    assert resumed.history[-1]["step"] == 8 and resumed.config["pretrained"] == str(encoder)
    with pytest.raises(FileNotFoundError, match=re.escape(str(encoder))):
        finetune("smoke", **run, name="new", resume="auto", pretrained=str(encoder))
    assert not (tmp_path / "runs" / "new").exists()


@pytest.mark.parametrize(("overrides", "says"), [
    (dict(lr=1e-4, base_lr=5e-3), "lr and base_lr given together"),
    (dict(data=""), "data is an empty path"),
    (dict(pretrained=""), "pretrained is an empty path"),
])
def test_settings_that_would_be_dropped_or_defaulted_silently_are_refused(overrides, says):
    with pytest.raises(ValueError, match=says):
        load_preset("smoke", **overrides)


def test_an_api_call_runs_its_own_task_only():
    with pytest.raises(ValueError, match="task 'finetune' given to pretrain"):
        pretrain(load_preset("smoke", task="pretrain"), task="finetune")


def test_a_replay_reads_the_run_s_images_and_weights_from_anywhere(folder, tmp_path, monkeypatch, one_thread):
    from cnx2lite.train import load_config
    monkeypatch.chdir(tmp_path)
    pretrain("smoke", data="images", output="runs", name="p", **SMALL)  # relative folders, as typed in a shell
    finetune("smoke", data="images", output="runs", name="ft", pretrained="runs/p", **SMALL)
    record = tmp_path / "runs" / "ft" / "config.json"
    saved = json.loads(record.read_text())
    started = str(RunDir(tmp_path / "runs" / "p").latest_checkpoint())
    assert saved["start_checkpoint"] == started
    assert saved["data"] == saved["requested"]["data"] == str(folder)
    assert saved["pretrained"] == saved["requested"]["pretrained"] == str(tmp_path / "runs" / "p")
    monkeypatch.chdir(folder)  # replayed from elsewhere: the same images, beside the same runs
    replayed = load_config(record, "finetune", name="again")
    assert (replayed.data, replayed.output) == (str(folder), str(tmp_path / "runs"))

    shutil.copy(started, tmp_path / "runs" / "p" / "checkpoint-00000012.pt")  # as if the encoder's run trained on
    newer = f"started from {started}, but its pretrained {tmp_path}/runs/p now gives .*: give --pretrained"
    with pytest.raises(ValueError, match=newer):
        load_config(record, "finetune", name="again")
    assert load_config(record, "finetune", name="again", pretrained=started).pretrained == started
    (tmp_path / "runs" / "p" / "checkpoint-00000012.pt").unlink()
    shutil.copy(tmp_path / "runs" / "p" / "checkpoint-00000004.pt", started)  # other weights under the same name
    with pytest.raises(ValueError, match=f"started from {started}, but its size or time differs from the one"):
        load_config(record, "finetune", name="again")

    monkeypatch.setenv("CNX2LITE_DATA_ROOT", str(folder))  # the images given by the environment: recorded as a path
    finetune("smoke", output=str(tmp_path / "runs"), name="env", **SMALL)
    monkeypatch.setenv("CNX2LITE_DATA_ROOT", str(tmp_path))
    assert load_config(tmp_path / "runs" / "env" / "config.json", "finetune").data == str(folder)


def test_a_setting_without_its_partner_is_refused_and_numpy_numbers_count_as_numbers():
    with pytest.raises(ValueError, match="freeze_encoder_epochs trains the decoder alone on the encoder given by"):
        load_preset("smoke", task="pretrain", epochs=2, freeze_encoder_epochs=1)
    assert load_preset("cpu", epochs=np.int64(1)).warmup_epochs == load_preset("cpu", epochs=1).warmup_epochs


def test_a_run_records_the_folder_a_data_link_led_to(folder, tmp_path, one_thread):
    """A replay reads the images the run read, even once the link it was given points at other images."""
    import os

    from cnx2lite.train import load_config

    link = tmp_path / "current"
    link.symlink_to(folder)
    finetune("smoke", data=str(link), output=str(tmp_path / "runs"), name="a", **SMALL)
    record = tmp_path / "runs" / "a" / "config.json"
    saved = json.loads(record.read_text())
    assert saved["data"] == saved["data_folder"] == os.path.realpath(folder)
    link.unlink()
    link.symlink_to(tmp_path)  # the link moved on
    assert load_config(record, "finetune").data == os.path.realpath(folder)


def test_a_replay_on_other_images_says_so(folder, tmp_path, capsys, one_thread):
    from cnx2lite.commands import main
    finetune("smoke", data=str(folder), output=str(tmp_path / "runs"), name="r", **SMALL)
    record = tmp_path / "runs" / "r" / "config.json"
    with pytest.raises(SystemExit) as stop:
        main(["finetune", "--config", str(record), "--name", "same"])
    assert stop.value.code == 0 and "warning" not in capsys.readouterr().err
    sorted((folder / "train" / "class0").iterdir())[0].unlink()
    with pytest.raises(SystemExit) as stop:
        main(["finetune", "--config", str(record), "--name", "again"])
    assert stop.value.code == 0
    err = capsys.readouterr().err
    assert f"warning: config: the images differ from those the run of {record} trained on" in err
    assert "or the settings that choose them edited in the file: num_classes, images_per_class" in err
    with pytest.raises(SystemExit):  # another subset asked for: other images are what the user chose
        main(["finetune", "--config", str(record), "--name", "other-seed", "--seed", "3"])
    assert "warning: config" not in capsys.readouterr().err  # (the short class is still named)
    with pytest.raises(SystemExit) as stop:  # a resume refuses the other images itself: one line, the error
        main(["finetune", "--config", str(record), "--resume", "auto"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: cannot resume") and len(err.splitlines()) == 1, err


def test_resuming_a_finished_run_rewrites_none_of_its_record(folder, tmp_path, capsys, one_thread):
    run = dict(data=str(folder), output=str(tmp_path / "runs"), **SMALL)
    encoder = pretrain("smoke", **run, name="p").run_dir
    finetune("smoke", **run, name="ft", pretrained=str(encoder))
    files = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs" / "ft").iterdir() if p.is_file() and p.name != ".lock"}
    capsys.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        finetune("smoke", **run, name="ft", resume="auto", pretrained=f"{encoder}/")  # the same folder, written so
    assert {p: p.stat().st_mtime_ns for p in files} == files
    assert not [w for w in caught if "does not apply to a resume" in str(w.message)]


def test_a_checkpoint_renamed_by_hand_is_refused_not_resumed_and_pruned_by_its_name(folder, tmp_path, one_thread):
    """A run orders and prunes its checkpoints by their names: one renamed to a later step would outrank, and with
    keep_last=1 outlive, the checkpoint the resumed run writes next."""
    from cnx2lite.train.resume import ResumeMismatchError

    run = dict(data=str(folder), output=str(tmp_path / "runs"), name="ft", **SMALL)
    finetune("smoke", **run)
    newest = max((tmp_path / "runs" / "ft").glob("checkpoint-*.pt"))
    renamed = newest.with_name("checkpoint-00000099.pt")
    newest.rename(renamed)
    with pytest.raises(ResumeMismatchError, match=f"cannot resume from {renamed}: its name says step 99, but it was "
                                                  f"saved at step {int(newest.stem.split('-')[1])}"):
        finetune("smoke", **run, resume="auto")
    assert renamed.is_file()
