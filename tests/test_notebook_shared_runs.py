"""The runs the notebooks share (:mod:`cnx2lite.notebook.shared_runs`): trained once on first use, then found."""
from __future__ import annotations

import json

import pytest

from cnx2lite.data import REPO
from cnx2lite.notebook import shared_runs
from cnx2lite.rundir import RunDir
from conftest import make_image_folder


@pytest.fixture
def smoke_runs(tmp_path, monkeypatch, one_thread):
    monkeypatch.setenv("CNX2LITE_SCALE", "smoke")
    monkeypatch.setenv("CNX2LITE_DATA_ROOT", str(make_image_folder(tmp_path / "data")))
    monkeypatch.setenv(shared_runs.RUNS_ENV, str(tmp_path / "runs"))
    yield tmp_path / "runs"
    shared_runs._grid.cache_clear()


def test_a_run_trains_on_first_use_and_is_found_afterwards(smoke_runs):
    encoder = shared_runs.fcmae_encoder()
    assert encoder.parent == smoke_runs / "runs" and encoder.name == "pretrain-v2-p0"
    checkpoint = RunDir(encoder).latest_checkpoint()
    written = checkpoint.stat().st_mtime_ns
    finetuned = shared_runs.finetuned("fcmae")
    config = json.loads((finetuned / "config.json").read_text())
    assert config["pretrained"] == str(encoder) and config["images_per_class"] == shared_runs.SCALES["smoke"].main_shot
    assert shared_runs.fcmae_encoder() == encoder and RunDir(encoder).latest_checkpoint().stat().st_mtime_ns == written
    shared_runs._grid.cache_clear()  # a new notebook's kernel: found on disk, not trained again
    assert shared_runs.finetuned("fcmae") == finetuned
    assert RunDir(encoder).latest_checkpoint().stat().st_mtime_ns == written


def test_the_arms_differ_only_in_their_init(smoke_runs):
    fcmae, scratch = (json.loads((shared_runs.finetuned(init) / "config.json").read_text())
                      for init in ("fcmae", "scratch"))
    differ = {key for key in (fcmae.keys() | scratch.keys()) - {"requested"} if fcmae.get(key) != scratch.get(key)}
    assert differ == {"name", "pretrained", "start_checkpoint", "start_stamp"}, differ  # the init and its file
    with pytest.raises(ValueError, match="init must be 'fcmae' or 'scratch'"):
        shared_runs.finetuned("supervised")


def test_the_cpu_runs_are_the_size_the_readme_states():
    cpu = shared_runs.SCALES["cpu"]
    readme = " ".join((REPO / "README.md").read_text().split())
    assert (f"(at `cpu`: {cpu.img_size} px, {cpu.pretrain_epochs} pretraining epochs, "
            f"{cpu.finetune_epochs[shared_runs.SHOTS]} fine-tuning epochs)") in readme


def test_a_notebooks_scratch_folder_is_emptied_on_each_run_not_left_in_the_temp_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(shared_runs.RUNS_ENV, str(tmp_path / "runs"))
    first = shared_runs.scratch_folder("06")
    assert first == tmp_path / "runs" / "scratch-06" and list(first.iterdir()) == []
    (first / "segment-FCMAE").mkdir()
    (first / "segment-FCMAE" / "checkpoint.pt").write_bytes(b"x" * 100)
    other = shared_runs.scratch_folder("05")
    assert (first / "segment-FCMAE" / "checkpoint.pt").exists(), "another notebook's folder is left alone"
    assert shared_runs.scratch_folder("06") == first and list(first.iterdir()) == [] and other.is_dir()


def test_a_scratch_folder_is_one_folder_of_the_runs_folder_and_no_runs(tmp_path, monkeypatch):
    """scratch_folder('x/../../../victim') emptied a folder outside the runs folder (round 15's unsafe case); a runs
    folder inside a training run would put scratch files among the run's record."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "work.txt").write_text("keep me")
    monkeypatch.setenv(shared_runs.RUNS_ENV, str(tmp_path / "nb" / "runs"))
    for label in ("x/../../../victim", "..", "a\\b", ""):
        with pytest.raises(ValueError, match="notebook must be one folder name"):
            shared_runs.scratch_folder(label)
    assert (victim / "work.txt").read_text() == "keep me"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"task": "finetune"}')
    monkeypatch.setenv(shared_runs.RUNS_ENV, str(run))
    with pytest.raises(ValueError, match=f"runs folder {run} is inside the training run {run}"):
        shared_runs.scratch_folder("05")
    assert not (run / "scratch-05").exists()
