"""``cnx2lite transfer``: both dense tasks trained and scored end to end, their scores checked on predictions whose
scores are known, an interrupted run resumed bit-exactly, and bad settings refused in one line."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from cnx2lite.rundir import RunDir, load_checkpoint
from cnx2lite.train import train
from cnx2lite.train.dense_tasks import DetectTask, SegmentTask
from cnx2lite.train.distributed import init_distributed
from cnx2lite.train.loader import eval_loader
from cnx2lite.train.presets import load_preset
from cnx2lite.train.run_data import build_run_data
from cnx2lite.train.task_base import evaluate
from conftest import make_image_folder

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), classes=3)


def transfer(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cnx2lite", "transfer", *args], cwd=REPO, capture_output=True,
                          text=True, env={"OMP_NUM_THREADS": "1", "PATH": ""})


@pytest.mark.parametrize("task, scores", [("segment", ("val_miou", "val_pixel_acc")),
                                          ("detect", ("val_box_ap", "val_box_ap50", "val_mask_ap"))])
def test_both_tasks_train_and_score_end_to_end(images, tmp_path, task, scores):
    done = transfer("--task", task, "--preset", "smoke", "--data", str(images), "--output", str(tmp_path))
    assert done.returncode == 0, done.stderr
    run = tmp_path / f"{task}-convnextv2_atto"
    assert "done: run dir" in done.stdout and ("mIoU" if task == "segment" else "box AP") in done.stdout
    header = (run / "metrics.csv").read_text().splitlines()[0].split(",")
    assert set(scores) <= set(header) and header[-1] == "time_s"
    epoch = [row for row in load_checkpoint(run)["history"] if row["kind"] == "epoch"][-1]
    assert all(0 <= epoch[k] <= 100 for k in scores), epoch
    assert (run / "predictions.png").stat().st_size > 0 and (run / "curves.png").stat().st_size > 0


class Oracle(nn.Module):
    """A "model" that answers from the batch's own labels: what evaluation must score 100."""

    def __init__(self, answers) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.answers = answers

    def forward(self, images):
        return self.answers.pop(0)


def _scores(task, dataset, answers, batch_size=2):
    loader = eval_loader(dataset, batch_size, 0, 1, 0, collate_fn=task.collate)
    return evaluate(task, Oracle(answers), loader, None, init_distributed("cpu"))


def _dense(task_type, images, **overrides):
    config = load_preset("smoke", task=task_type.name, data=str(images), **overrides)
    task = task_type(config)
    train_set, val_set = task.datasets(build_run_data(config, task.name, task.train_transform()))
    task.num_classes = len(train_set.classes)
    return task, val_set


def test_segmentation_scores_are_miou_and_pixel_accuracy(images):
    task, val_set = _dense(SegmentTask, images, val_composites=4)
    labels = [task.collate([val_set[i], val_set[i + 1]])[1] for i in (0, 2)]
    perfect = [nn.functional.one_hot(t, 3).permute(0, 3, 1, 2).float() for t in labels]
    assert _scores(task, val_set, perfect)["val_miou"] == pytest.approx(100)
    # every pixel called class 0: its IoU is its pixel share, the other classes' 0; accuracy is that share too
    everything_zero = [torch.zeros(2, 3, *t.shape[1:]).index_fill_(1, torch.tensor([0]), 1.0) for t in labels]
    share = torch.cat(labels).eq(0).float().mean().item()
    present = len(torch.cat(labels).unique())
    scores = _scores(task, val_set, everything_zero)
    assert scores["val_pixel_acc"] == pytest.approx(100 * share, abs=1e-3)
    assert scores["val_miou"] == pytest.approx(100 * share / max(present, 1), abs=1e-3)


def test_detection_scores_are_coco_box_and_mask_ap(images):
    task, val_set = _dense(DetectTask, images, val_composites=4)
    truths = [t for i in (0, 2) for t in task.collate([val_set[i], val_set[i + 1]])[1]]

    def answers(keep):
        found = [{"boxes": t["boxes"][keep], "labels": t["labels"][keep], "scores": torch.ones(len(t["labels"]))[keep],
                  "masks": t["masks"][keep, None].float()} for t in truths]
        return [found[:2], found[2:]]

    perfect = _scores(task, val_set, answers(slice(None)))
    assert perfect["val_box_ap"] == pytest.approx(100) and perfect["val_mask_ap"] == pytest.approx(100)
    assert _scores(task, val_set, answers(slice(0, 0)))["val_box_ap"] == pytest.approx(0)


@pytest.mark.parametrize("task", ["segment", "detect"])
def test_a_resumed_run_ends_bit_identical(images, tmp_path, task):
    """The run stopped after its first epoch (its newest checkpoint gone) and resumed equals the run that went on."""
    config = load_preset("smoke", task=task, data=str(images), output=str(tmp_path), epochs=2, drop_path=0.1,
                         num_workers=0)
    whole = train(config)
    cut = tmp_path / "cut"
    shutil.copytree(whole.run_dir, cut)
    newest = RunDir(cut).latest_checkpoint()
    newest.unlink()
    resumed = train(dataclasses.replace(config, name="cut", resume="auto"))
    a, b = load_checkpoint(whole.run_dir), load_checkpoint(resumed.run_dir)
    assert a["position"] == b["position"]
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    timeless = [[{k: v for k, v in row.items() if k not in ("time_s", "img_per_s")} for row in ckpt["history"]]
                for ckpt in (a, b)]
    assert timeless[0] == timeless[1]


@pytest.mark.parametrize("args, says", [
    (["--task", "classify"], "argument --task: invalid choice: 'classify'"),
    (["--task", "segment", "--img-size", "64", "96"], "img_size must be one size for task 'segment'"),
    (["--task", "detect", "--composites", "0"], "composites must be >= 1, got 0"),
    (["--task", "segment", "--in-chans", "1"], "in_chans must be 3 for task 'segment'"),
    (["--task", "detect", "--num-classes", "1"], "detect needs at least 2 classes"),
])
def test_bad_settings_are_one_line_and_exit_2(images, tmp_path, args, says):
    done = transfer(*args, "--preset", "smoke", "--data", str(images), "--output", str(tmp_path))
    assert done.returncode == 2 and says in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) <= 2
