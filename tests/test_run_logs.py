"""Logs people read with their own tools: TensorBoard beside metrics.csv, and --config replaying a saved run."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cnx2lite.commands import main
from cnx2lite.rundir import RunDir, RunDirLockedError, run_directory_of
from cnx2lite.train import ResumeMismatchError, finetune, load_config, pretrain, run_log
from conftest import make_image_folder, write_images

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
    # resumed from the checkpoint of epoch 1: the events of epoch 2's first training are purged, not drawn twice
    RunDir(run.run_dir).latest_checkpoint().unlink()
    resumed = pretrain("smoke", data=str(images), output=str(tmp_path), batch_size=4, epochs=2, tensorboard=True,
                       resume="auto")
    events = EventAccumulator(str(run.run_dir / "tensorboard"))
    events.Reload()
    assert [e.value for e in events.Scalars("train/train_loss")] == pytest.approx(
        [r["train_loss"] for r in resumed.history if r["kind"] == "train"])


def test_a_tensorboard_folder_that_is_a_link_is_refused_like_every_run_file(tmp_path):
    """A resumed run wrote its events through a ``tensorboard`` link planted in the run folder, out of the run."""
    pytest.importorskip("tensorboard", reason="the tensorboard package is not installed (pip install -e '.[dev]')")
    from cnx2lite.train.run_log import RunLog

    (tmp_path / "run").mkdir()
    (tmp_path / "outside").mkdir()
    (tmp_path / "run" / "tensorboard").symlink_to(tmp_path / "outside", target_is_directory=True)
    with pytest.raises(OSError, match="tensorboard.*link"):
        RunLog(RunDir(tmp_path / "run"), "pretrain", writes=True, tensorboard=True).open(step=4)
    assert list((tmp_path / "outside").iterdir()) == []


def test_tensorboard_asked_for_without_the_package_is_one_line(images, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_log.importlib.util, "find_spec", lambda name: None)
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
    with pytest.raises(ValueError, match=r"is not a finetune config.json \(task 'pretrain'\)"):
        load_config(saved, "finetune")
    (tmp_path / "null.json").write_text("null")
    with pytest.raises(ValueError, match=r"null.json is not a finetune config.json \(it holds NoneType\)"):
        load_config(tmp_path / "null.json", "finetune")
    (tmp_path / "deep.json").write_text("[" * 100_000)  # json's parser recurses: not an internal error
    with pytest.raises(ValueError, match=r"cannot read .*deep.json as a run's config.json \(RecursionError"):
        load_config(tmp_path / "deep.json", "finetune")
    record = json.loads(saved.read_text())
    for edit, message in ((dict(epochs=7), r"disagrees with itself \(epochs: 7 at the top level, 1 from 'requested'"),
                          (dict(requested={**record["requested"], "epochs": 7}), r"epochs: 1 at the top level, 7 from"),
                          (dict(requested={**record["requested"], "epoch": 7}),
                           r"unknown field\(s\) epoch in 'requested'"),
                          (dict(mask_ration=0.9), r"unknown field\(s\) mask_ration in "),
                          (dict(batch_size=-4, requested={**record["requested"], "batch_size": -4}),  # (CE4_bs_neg_ovr)
                           r"^config: .*edited.json: batch_size must be >= 1, got -4 \(a value of the file itself")):
        edited = tmp_path / "edited.json"  # a hand edit the replay would not read is refused, not dropped
        edited.write_text(json.dumps({**record, **edit}))
        with pytest.raises(ValueError, match=message):
            load_config(edited, "pretrain", batch_size=4)  # a flag's value does not mend the file's


@pytest.mark.parametrize("data", ["images", "./images", "~/cnx2lite-no-such-images"])
def test_a_replayed_config_whose_data_is_not_found_names_its_field(data, images, tmp_path, capsys, monkeypatch):
    """A relative data path edited into a config.json and replayed from another folder: the error names the file and
    field it came from, not only the path (round 13/14's CE2_data_rel); also where the message spells the path
    otherwise than the file (``./images`` as ``images``, ``~`` expanded)."""
    pretrain("smoke", data=str(images), output=str(tmp_path), name="first", batch_size=4)
    record = json.loads((tmp_path / "first" / "config.json").read_text())
    edited = tmp_path / "relative.json"
    edited.write_text(json.dumps({**record, "data": data, "requested": {**record["requested"], "data": data}}))
    monkeypatch.chdir(tmp_path / "first")  # no images/ here
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["pretrain", "--config", str(edited), "--name", "again", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(f"error: config {edited}: data: No image folder found"), err


def test_a_replayed_config_s_data_does_not_take_the_blame_for_a_dataset_typo(images, tmp_path, capsys):
    pretrain("smoke", data=str(images), output=str(tmp_path), name="first", batch_size=4)
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["pretrain", "--config", str(tmp_path / "first" / "config.json"), "--dataset", "imagenete", "--name",
              "again", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith("error: dataset 'imagenete': "), err


def test_a_replayed_config_without_data_does_not_take_the_blame_for_the_environment_s_root(images, tmp_path, capsys,
                                                                                          monkeypatch):
    pretrain("smoke", data=str(images), output=str(tmp_path), name="first", batch_size=4)
    record = json.loads((tmp_path / "first" / "config.json").read_text())
    edited = tmp_path / "no-data.json"
    edited.write_text(json.dumps({**record, "data": None, "requested": {**record["requested"], "data": None}}))
    monkeypatch.setenv("CNX2LITE_DATA_ROOT", str(tmp_path / "missing"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        main(["pretrain", "--config", str(edited), "--name", "again", "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and err.startswith(f"error: No image folder found: neither {tmp_path / 'missing'}"), err


# ------------------------------------------------------------------------------------ a run folder is a closed room
@pytest.mark.parametrize("name", ["../escaped", "/abs/path", "a/b", "..", "."])
def test_a_run_name_is_one_folder_name(name, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--preset", "smoke", "--output", str(tmp_path / "out"), "--name", name])
    assert exit_info.value.code == 2 and "name must be one folder name" in capsys.readouterr().err
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "out").exists()


def test_a_run_folder_that_is_a_link_is_refused(images, tmp_path, capsys):
    """``<output>/<name>`` linked to a folder elsewhere (empty, or another run) would put the run outside --output,
    or into another run: refused in one line, nothing written at the link's target."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "linked").symlink_to(elsewhere)
    with pytest.raises(SystemExit) as exit_info:
        main(["finetune", "--preset", "smoke", "--data", str(images), "--output", str(tmp_path / "out"), "--name",
              "linked", "--batch-size", "4"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "is a symbolic link" in err and len(err.splitlines()) == 1, err
    assert not list(elsewhere.iterdir())


@pytest.mark.parametrize("planted", ["metrics.csv", "config.json", ".lock"])
def test_run_files_never_follow_a_planted_symlink(planted, tmp_path):
    """A symlink in place of a run file would have the link's target truncated or overwritten: refused instead."""
    target = tmp_path / "precious.txt"
    target.write_text("keep me")
    run = RunDir(tmp_path / "run")
    run.create()
    (run.path / planted).symlink_to(target)
    with pytest.raises((OSError, RunDirLockedError), match="symbolic link"):
        with run.lock():
            run.write_config({"a": 1})
            run.write_metrics([])
    assert target.read_text() == "keep me"


def test_a_run_file_is_written_whole_or_not_at_all(tmp_path):
    """A write that fails half-way (a crash, a full disk) leaves the previous file whole: a second run checking the
    folder while the first writes its config.json met half a file and took the run for a user's folder (CI, stop 37)."""
    run = RunDir(tmp_path / "run")
    run.create()
    run.write_config({"task": "pretrain"})
    run.write_metrics([{"kind": "epoch", "epoch": 1, "step": 4}])
    before = {name: (run.path / name).read_text() for name in ("config.json", "metrics.csv")}

    class Unprintable:
        def __str__(self):
            raise OSError(28, "No space left on device")

    rows = [{"kind": "epoch", "epoch": e, "step": 4 * e, "train_loss": "x" * 10_000} for e in range(1, 50)]
    with pytest.raises(OSError, match="No space left"):
        run.write_metrics([*rows, {"kind": "epoch", "epoch": 50, "step": Unprintable()}])
    assert {name: (run.path / name).read_text() for name in before} == before
    assert sorted(p.name for p in run.path.iterdir()) == ["config.json", "metrics.csv"]  # no temporary file left


def test_a_folder_where_a_run_file_goes_is_named_under_the_flag_that_holds_it(tmp_path):
    """Not '--output runs/ftW/metrics.csv' (a path the user never gave), nor the temporary file (round 13's
    RS_curves_dir)."""
    import argparse

    from cnx2lite.commands import _os_message

    run = RunDir(tmp_path / "runs" / "ftW")
    run.create()
    (run.path / "metrics.csv").mkdir()
    with pytest.raises(IsADirectoryError) as error:
        run.write_metrics([])
    args = argparse.Namespace(command="finetune", output=str(tmp_path / "runs"))
    assert _os_message(error.value, args) == (f"{run.path / 'metrics.csv'} (under --output {tmp_path / 'runs'}): "
                                              "is a folder where a file must be")
    assert [p.name for p in run.path.iterdir()] == ["metrics.csv"]


@pytest.mark.parametrize("planted", ["curves.png", "reconstruction.png", "reconstructions"])
def test_a_runs_figures_never_follow_a_planted_symlink(planted, images, tmp_path):
    """Figures are run files too: a link in place of one (or of the reconstructions folder) is refused, its target
    kept."""
    target = tmp_path / "precious"
    target.mkdir() if planted == "reconstructions" else target.write_text("keep me")
    (tmp_path / "plant").mkdir()
    (tmp_path / "plant" / "config.json").write_text('{"task": "pretrain"}')  # a run's folder (it started before)
    (tmp_path / "plant" / planted).symlink_to(target)
    with pytest.raises(OSError, match="symbolic link"):
        pretrain("smoke", data=str(images), output=str(tmp_path), name="plant", batch_size=4)
    assert (list(target.iterdir()) == []) if planted == "reconstructions" else target.read_text() == "keep me"


def test_a_resume_into_a_folder_holding_a_link_rewrites_nothing(images, tmp_path):
    """A config.json planted as a link was refused only after the resume had rewritten metrics.csv and the curves
    (round 17): the folder is checked for links when the run takes its lock, before it writes anything."""
    pretrain("smoke", data=str(images), output=str(tmp_path), name="run", batch_size=4)
    run = tmp_path / "run"
    target = tmp_path / "precious.json"
    target.write_text((run / "config.json").read_text())
    (run / "config.json").unlink()
    (run / "config.json").symlink_to(target)

    def run_files() -> dict[str, bytes]:  # the lock file aside: its holder's pid comes and goes
        return {p.name: p.read_bytes() for p in [*run.iterdir(), target] if p.is_file() and p.name != ".lock"}

    before = run_files()
    with pytest.raises(OSError, match="config.json is a symbolic link"):
        pretrain("smoke", data=str(images), output=str(tmp_path), name="run", batch_size=4, epochs=2, resume="auto")
    assert run_files() == before and "metrics.csv" in before


def test_a_link_among_a_runs_checkpoints_is_named_as_a_link(images, tmp_path, capsys):
    """A link planted as a run's newest checkpoint or a snapshot (another run's file) is named as what it is, by the
    resume and by every reader of the folder; nothing reached through it is pruned or continued, and the folder stays
    a run's (no export lands in it)."""
    run = dict(data=str(images), output=str(tmp_path), batch_size=4)
    pretrain("smoke", **run, name="other")
    pretrain("smoke", **run, name="mine", epochs=2, keep_every_epochs=1)
    foreign = RunDir(tmp_path / "other").latest_checkpoint()
    for planted in ("checkpoint-00009999.pt", "snapshot-epoch-0009.pt"):
        (tmp_path / "mine" / planted).symlink_to(foreign)
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--preset", "smoke", "--data", str(images), "--output", str(tmp_path), "--name", "mine",
              "--batch-size", "4", "--epochs", "2", "--keep-every-epochs", "1", "--resume", "auto"])
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and err == (f"error: {tmp_path / 'mine' / 'checkpoint-00009999.pt'} is a symbolic "
                                                 "link: a run folder holds only its run's own files; remove the link")
    assert foreign.is_file()
    with pytest.raises(OSError, match="snapshot-epoch-0009.pt is a symbolic link"):
        RunDir(tmp_path / "mine").snapshots()
    assert run_directory_of(tmp_path / "mine" / "export.onnx") == tmp_path / "mine"


def test_a_refused_run_leaves_nothing_behind(tmp_path):
    with pytest.raises(ValueError, match="refused"):
        with RunDir(tmp_path / "new").lock():
            raise ValueError("refused")
    assert not (tmp_path / "new").exists()
    kept = RunDir(tmp_path / "kept")
    with pytest.raises(ValueError):
        with kept.lock():
            kept.write_config({"a": 1})  # it wrote something: its record stays
            raise ValueError("failed later")
    assert (tmp_path / "kept" / "config.json").is_file()


def test_a_run_remembers_its_data(tmp_path):
    """The same images copied elsewhere resume (a finished run's record is not rewritten by the re-run); an image
    replaced since the run began is refused, naming the images."""
    original = make_image_folder(tmp_path / "a")
    run = dict(output=str(tmp_path / "runs"), name="ft", batch_size=4, resume="auto")
    finetune("smoke", data=str(original), **run)
    config = (tmp_path / "runs" / "ft" / "config.json").read_text()
    assert json.loads(config)["data_fingerprint"]
    moved = shutil.copytree(original, tmp_path / "b")
    finetune("smoke", data=str(moved), **run)  # finished, same images: found, not retrained
    assert (tmp_path / "runs" / "ft" / "config.json").read_text() == config
    write_images(moved / "train" / "class0", 1, 72, np.random.default_rng(1))  # 0.png replaced by another image
    with pytest.raises(ResumeMismatchError, match="training images"):
        finetune("smoke", data=str(moved), **run)


def test_an_image_replaced_by_one_of_the_same_size_is_told_apart(tmp_path):
    """Uncompressed images of one resolution all have one byte size: a name-and-size fingerprint took a replaced one
    for the same (round 13's RS_img_replaced)."""
    from PIL import Image

    folder = make_image_folder(tmp_path / "a")
    image = folder / "val" / "class1" / "0.png"
    pixels = np.random.default_rng(0).integers(0, 255, (72, 72, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(image, compress_level=0)
    run = dict(data=str(folder), output=str(tmp_path / "runs"), name="ft", batch_size=4, resume="auto")
    finetune("smoke", **run)
    size = image.stat().st_size
    Image.fromarray(255 - pixels).save(image, compress_level=0)
    assert image.stat().st_size == size
    with pytest.raises(ResumeMismatchError, match=r"scored images under .*: a file's content changed \(its name and "
                                                  r"size did not\) since the run began"):
        finetune("smoke", **run)


def test_a_run_never_takes_over_a_folder_that_is_not_a_runs(images, tmp_path, capsys):
    """A saved model's or a user's folder under the run's name: training would overwrite its config.json and
    metrics.csv, so it is refused in one line; an empty folder (or one a run already holds) is the run's to use."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.json").write_text('{"my": "settings"}')
    with pytest.raises(SystemExit) as stop:
        main(["pretrain", "--preset", "smoke", "--data", str(images), "--output", str(tmp_path), "--name", "mine"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "holds files that are not a training run's (config.json)" in err
    assert (mine / "config.json").read_text() == '{"my": "settings"}' and len(err.splitlines()) == 1
    (tmp_path / "empty").mkdir()
    RunDir(tmp_path / "empty").check_creatable()  # an empty folder is fine
    starting = tmp_path / "starting"  # a run writing its first config.json: the lock then names its owner
    starting.mkdir()
    (starting / ".lock").write_text("123 host\n")
    (starting / ".config.tmp-123.json").write_text('{"task": "pre')
    RunDir(starting).check_creatable()
    (starting / ".config.tmp-123.json.bak").write_text("")  # not a name a run writes
    with pytest.raises(FileExistsError, match="not a training run's"):
        RunDir(starting).check_creatable()


def test_a_run_folder_that_cannot_be_written_is_named_as_the_run_folder(tmp_path, monkeypatch):
    """A resume into a read-only run folder: nothing is to be created, so the folder itself is named (the check is
    os.access, so the test stands in for a read-only folder: root may write into any)."""
    import cnx2lite.rundir as rundir

    (tmp_path / "runs" / "ft").mkdir(parents=True)
    monkeypatch.setattr(rundir.os, "access", lambda path, mode: Path(path) != tmp_path / "runs" / "ft")
    with pytest.raises(PermissionError, match=f"^run folder {tmp_path / 'runs' / 'ft'} is not writable"):
        RunDir(tmp_path / "runs" / "ft").check_creatable()
    with pytest.raises(PermissionError, match=f"^cannot write into {tmp_path / 'runs' / 'ft'} to create the run "):
        RunDir(tmp_path / "runs" / "ft" / "new").check_creatable()


def test_an_output_that_is_a_link_to_nowhere_is_named_as_one(tmp_path):
    from cnx2lite.writing import make_folder

    (tmp_path / "runs").symlink_to(tmp_path / "gone")
    with pytest.raises(OSError, match=f"cannot create the run directory {tmp_path / 'runs' / 'x'} \\(a link to "
                                      f"nowhere: {tmp_path / 'runs'}\\): choose"):
        make_folder(tmp_path / "runs" / "x", "the run directory", "choose another output folder (--output) or name")


def test_a_checkpoint_that_cannot_be_opened_is_left_alone(tmp_path, monkeypatch):
    """Permissions or an I/O error say nothing about the file's content: it is not renamed *.unreadable (the run
    would roll back and later start over), its OSError names it instead. A damaged file is set aside as before."""
    import cnx2lite.rundir as rundir

    run = RunDir(tmp_path / "run")
    run.create()
    for step in (1, 2):
        rundir._save_atomically({"step": step}, run.checkpoint_path(step))

    def denied(path):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(rundir, "load_checkpoint", denied)
    with pytest.raises(PermissionError):
        run.newest_readable_checkpoint(log=lambda _: None)
    assert [p.name for p in run.checkpoints()] == ["checkpoint-00000001.pt", "checkpoint-00000002.pt"]
    monkeypatch.undo()
    run.checkpoint_path(2).write_bytes(b"PK\x03\x04 cut")
    path, state = run.newest_readable_checkpoint(log=lambda _: None)
    assert path == run.checkpoint_path(1) and state["step"] == 1
    assert (tmp_path / "run" / "checkpoint-00000002.pt.unreadable").is_file()


def test_a_failed_write_leaves_the_old_file_and_says_why(tmp_path, monkeypatch):
    """torch's writers report a full disk or a read-only folder as a RuntimeError from inside torch; a checkpoint
    written through replaced_atomically keeps the old file whole and raises the OSError it stands for, naming it."""
    import shutil as shutil_module
    from collections import namedtuple

    import torch

    from cnx2lite import writing
    from cnx2lite.rundir import _save_atomically

    path = tmp_path / "checkpoint-00000001.pt"
    _save_atomically({"step": 1}, path)

    def full_disk(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 0")

    monkeypatch.setattr(torch, "save", full_disk)
    monkeypatch.setattr(writing.shutil, "disk_usage", lambda _: namedtuple("Usage", "total used free")(1, 1, 0))
    with pytest.raises(OSError, match=f"cannot write {path}: the disk is full") as error:
        _save_atomically({"step": 2}, path)
    assert error.value.filename == str(path) and error.value.errno == 28
    monkeypatch.undo()
    assert torch.load(path, weights_only=True) == {"step": 1} and [p.name for p in tmp_path.iterdir()] == [path.name]
    assert shutil_module.disk_usage(tmp_path).free > 0


def test_a_write_refused_on_its_temporary_file_names_the_file_asked_for(tmp_path, monkeypatch):
    """The temporary file is a detail of replaced_atomically: an OSError about it (a folder made read-only, a quota)
    names the file the caller asked for, keeps nothing behind, and the temporary name keeps the file's suffix."""
    import errno

    from cnx2lite import writing

    path = tmp_path / "model.pt2"
    with writing.replaced_atomically(path) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".pt2" and tmp.name.startswith(".model.tmp-")
        tmp.write_bytes(b"whole")
    monkeypatch.setattr(writing.os, "access", lambda *args: False)  # root writes anywhere: the folder says no

    with pytest.raises(OSError) as error, writing.replaced_atomically(path) as tmp:
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp))
    assert error.value.filename == str(path)
    assert error.value.strerror == f"cannot write {path}: the folder is not writable"
    monkeypatch.undo()
    with pytest.raises(OSError) as error, writing.replaced_atomically(path) as tmp:  # a quota: its own reason
        raise OSError(errno.EDQUOT, "Disk quota exceeded", str(tmp))
    assert error.value.errno == errno.EDQUOT and error.value.strerror == f"cannot write {path}: Disk quota exceeded"

    def read_only(self, missing_ok=False):  # a read-only folder refuses even the unlink of a file that is not there
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    with pytest.raises(OSError) as error, writing.replaced_atomically(path) as tmp:
        raise OSError(errno.EROFS, "Read-only file system", str(tmp))
    assert error.value.filename == str(path)  # not the unlink's error about the temporary file
    monkeypatch.undo()
    with pytest.raises(FileNotFoundError) as error, writing.replaced_atomically(path):
        open(tmp_path / "elsewhere" / "x")  # an error about another file is the block's own: passed on as it is
    assert error.value.filename == str(tmp_path / "elsewhere" / "x")
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt2"] and path.read_bytes() == b"whole"


def test_a_checkpoint_cut_anywhere_is_a_value_error_naming_it(tmp_path):
    """However short a truncated checkpoint is cut, reading it says so, naming it: resume then sets it aside and
    continues from the one before (a cut inside the zip's entries once raised a bare '[Errno 22] Invalid argument')."""
    import torch

    from cnx2lite.torch_files import read_torch_file

    whole = tmp_path / "whole.pt"
    torch.save({"model": {f"w{i}": torch.randn(64, 64) for i in range(8)}}, whole)
    data = whole.read_bytes()
    for size in (100, 1000, 5000, 20000, len(data) // 2, len(data) - 10):
        cut = tmp_path / f"cut-{size}.pt"
        cut.write_bytes(data[:size])
        with pytest.raises(ValueError, match=f"cannot read {cut}"):
            read_torch_file(cut)
