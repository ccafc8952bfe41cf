"""``cnx2lite transfer``: both dense tasks trained and scored end to end, on composites and on tiny folders in ADE20K's
and COCO's formats; their scores checked on predictions whose scores are known; an interrupted run resumed
bit-exactly; bad settings and folders refused in one line."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnx2lite import create_model
from cnx2lite.checkpoints import load_pretrained
from cnx2lite.commands import main
from cnx2lite.dense.formats import ADE20K, IGNORE_INDEX, COCOInstances
from cnx2lite.images import CorruptImageError
from cnx2lite.rundir import RunDir, load_checkpoint
from cnx2lite.train import api as train_api
from cnx2lite.train import train
from cnx2lite.train.dense_tasks import DetectTask, SegmentTask
from cnx2lite.train.distributed import init_distributed
from cnx2lite.train.loader import eval_loader
from cnx2lite.train.presets import load_preset
from cnx2lite.train.run_data import build_run_data, fingerprint
from cnx2lite.train.task_base import evaluate
from cnx2lite.transforms import normalization
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
    (["--task", "segment", "--img-size", "64", "96"], "img_size must be one size of at least 64 px for task"),
    (["--task", "detect", "--img-size", "32"], "img_size must be one size of at least 64 px for task 'detect'"),
    (["--task", "detect", "--composites", "0"], "composites must be >= 1, got 0"),
    (["--task", "segment", "--in-chans", "1"], "in_chans must be 3 for task 'segment'"),
    (["--task", "detect", "--num-classes", "1"], "detect needs at least 2 classes"),
    (["--task", "segment", "--dense-format", "ade20k"], "is not in ADE20K's layout"),
    (["--task", "segment", "--dense-format", "ade20k", "--num-classes", "1"], "num_classes must be in 2..255 for "
                                                                              "dense_format 'ade20k'"),
    (["--task", "detect", "--dense-format", "coco"], "is not in COCO's layout: expected one"),
    (["--task", "detect", "--dense-format", "ade20k"], "dense_format 'ade20k' holds labels for task 'segment'"),
    (["--task", "segment", "--dense-format", "voc"], "dense_format must be one of"),
])
def test_bad_settings_and_folders_are_one_line_and_exit_2(images, tmp_path, capsys, args, says):
    with pytest.raises(SystemExit) as exit_info:
        main(["transfer", *args, "--preset", "smoke", "--data", str(images), "--output", str(tmp_path)])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and says in err and "Traceback" not in err, err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_detection_scores_an_uneven_split(images, tmp_path):
    """1 val composite on 2 processes, one of which gets no val batch at all: the detections of both are gathered and
    scored once (torchmetrics' own gathering of per-image states failed on shares of different lengths)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
               "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "cnx2lite", "transfer", "--task",
               "detect", "--preset", "smoke", "--val-composites", "1", "--batch-size", "2", "--amp", "fp32",
               "--data", str(images), "--output", str(tmp_path)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    epoch = [row for row in load_checkpoint(tmp_path / "detect-convnextv2_atto")["history"] if row["kind"] == "epoch"]
    assert 0 <= epoch[-1]["val_box_ap"] <= 100


def write_ade20k(root: Path, size: int = 48) -> Path:
    """ADEChallengeData2016's layout: per split, images and annotation PNGs (0 = unlabeled, 1..3 classes); the
    image's red channel is its label times 60, so each pixel's class can be read back from the image."""
    rng = np.random.default_rng(0)
    for split, count in (("training", 6), ("validation", 3)):
        for kind in ("images", "annotations"):
            (root / kind / split).mkdir(parents=True)
        for i in range(count):
            labels = np.repeat(rng.integers(0, 4, size=(size // 8, size // 8)), 8, axis=0).repeat(8, axis=1)
            pixels = np.stack([labels * 60, rng.integers(0, 255, labels.shape), np.zeros_like(labels)], -1)
            Image.fromarray(pixels.astype(np.uint8)).save(root / "images" / split / f"ADE_{i:03d}.png")
            Image.fromarray(labels.astype(np.uint8)).save(root / "annotations" / split / f"ADE_{i:03d}.png")
    return root


def write_coco(root: Path, size: int = 64) -> Path:
    """COCO's layout: annotations/instances_<split>2017.json (polygons, category ids 3 and 7) for <split>2017/."""
    rng = np.random.default_rng(1)
    for split, count in (("train", 6), ("val", 3)):
        (root / f"{split}2017").mkdir(parents=True)
        images, annotations = [], []
        for i in range(count):
            Image.fromarray(rng.integers(0, 255, (size, size + 16, 3), dtype=np.uint8)).save(
                root / f"{split}2017" / f"{i}.jpg")
            images.append({"id": i + 1, "file_name": f"{i}.jpg", "height": size, "width": size + 16})
            for k, (category, x, y) in enumerate(((3, 4, 6), (7, 30, 20))[: 1 + i % 2]):
                polygon = [x, y, x + 20, y, x + 20, y + 24, x, y + 24]
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": category,
                                    "bbox": [x, y, 20, 24], "area": 480, "iscrowd": 0, "segmentation": [polygon]})
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(
            {"images": images, "annotations": annotations,
             "categories": [{"id": 3, "name": "car"}, {"id": 7, "name": "dog"}]}))
    return root


def test_a_coco_split_of_crowd_regions_only_is_refused(tmp_path):
    folder = write_coco(tmp_path / "coco")
    path = folder / "annotations" / "instances_train2017.json"
    content = json.loads(path.read_text())
    path.write_text(json.dumps({**content, "annotations": [{**a, "iscrowd": 1} for a in content["annotations"]]}))
    with pytest.raises(ValueError, match="every annotation is a crowd region"):
        COCOInstances(folder, "train", 32, train=True)


def test_ade20k_labels_are_classes_minus_one_with_unlabeled_ignored_and_flips_move_both(tmp_path):
    folder = write_ade20k(tmp_path / "ade")
    val = ADE20K(folder, "val", 24, num_classes=2)  # 48 -> 24 px: the labels' 8-pixel blocks become 4-pixel ones
    assert len(val) == 3 and val.classes == ["ADE20K class 1", "ADE20K class 2"]
    image, target = val[0]
    labels = np.asarray(Image.open(folder / "annotations" / "validation" / "ADE_000.png"))[::2, ::2]
    expected = np.where((labels >= 1) & (labels <= 2), labels.astype(np.int64) - 1, IGNORE_INDEX)
    assert image.shape == (3, 24, 24) and np.array_equal(target["semantic"].numpy(), expected)
    train, unflipped = ADE20K(folder, "train", 24, train=True), ADE20K(folder, "train", 24)
    torch.manual_seed(0)  # the flips draw from torch's global generator: fixed, whatever ran before
    flips = []
    for index in range(len(train)):
        (image, target), (plain_image, plain) = train[index], unflipped[index]
        flipped = not torch.equal(target["semantic"], plain["semantic"])
        assert torch.equal(target["semantic"], plain["semantic"].flip(-1) if flipped else plain["semantic"])
        assert torch.equal(image, plain_image.flip(-1) if flipped else plain_image)  # image and labels flip together
        flips.append(flipped)
    assert any(flips) and not all(flips)


def test_coco_categories_become_classes_and_instances_keep_their_masks_and_boxes(tmp_path):
    folder = write_coco(tmp_path / "coco")
    val = COCOInstances(folder, "val", 32)
    assert val.classes == ["car", "dog"] and len(val) == 3
    image, target = val[1]
    assert image.shape == (3, 32, 32) and target["labels"].tolist() == [0, 1] and not target["iscrowd"].any()
    for mask, box in zip(target["masks"], target["boxes"]):  # resized together: within a pixel of each other
        x0, y0, x1, y1 = box.tolist()
        ys, xs = torch.nonzero(mask, as_tuple=True)
        assert mask.dtype == torch.bool and len(xs) > 0
        assert abs(xs.min() - x0) <= 1 and abs(xs.max() + 1 - x1) <= 1
        assert abs(ys.min() - y0) <= 1 and abs(ys.max() + 1 - y1) <= 1


def test_a_coco_box_past_the_image_edge_is_clipped_and_trained_on(tmp_path):
    """COCO's boxes may run past the image (rounding, an instance cut by the frame): torchvision's sanitizing dropped
    such an instance from training without a word (round 17); now it is clipped to the image and kept."""
    def past_the_edge(content):
        annotation = content["annotations"][0]  # image 1 (80x64 px): its instance now runs 10 px past the right
        annotation.update(bbox=[70, 6, 20, 24], segmentation=[[70, 6, 90, 6, 90, 30, 70, 30]])
    folder = _edited_coco(tmp_path / "coco", past_the_edge)
    for training in (False, True):
        _, target = COCOInstances(folder, "val", 32, train=training)[0]
        assert target["labels"].tolist() == [0] and target["masks"].any()
        x0, y0, x1, y1 = target["boxes"][0].tolist()
        assert 0 <= x0 < x1 <= 32 and 0 <= y0 < y1 <= 32 and x1 - x0 == pytest.approx(10 * 32 / 80, abs=0.5)


def test_coco_images_are_decoded_like_every_image_of_the_package(tmp_path):
    """torchvision's reader converted a 16-bit greyscale PNG with PIL's convert('RGB'), which clips: the detector
    trained on white images (round 18's D01). Now load_image decodes them, its range scaled."""
    def sixteen_bit(content):
        for entry in content["images"]:
            entry["file_name"] = entry["file_name"].replace(".jpg", ".png")
    folder = _edited_coco(tmp_path / "coco", sixteen_bit)
    ramp = (np.arange(64 * 80, dtype=np.uint16).reshape(64, 80) * 12).astype(np.uint16)  # 0 .. 61428 of 65535
    for i in range(3):
        Image.fromarray(ramp).save(folder / "val2017" / f"{i}.png")
    image, _ = COCOInstances(folder, "val", 32)[0]
    rgb = normalization(3)
    pixels = image * torch.tensor(rgb.std)[:, None, None] + torch.tensor(rgb.mean)[:, None, None]  # back to [0, 1]
    assert 0.3 < pixels.mean() < 0.7 and pixels.min() < 0.05  # a ramp from black, not a white page


@pytest.mark.parametrize("json_size, upright", [((64, 80), True), ((80, 64), False), ((50, 50), None)])
def test_a_coco_image_turned_by_exif_is_read_in_the_frame_its_json_gives(tmp_path, json_size, upright):
    """A photo stored 80x64 with EXIF orientation 6 (shown 64x80): annotations made on the shown frame give width 64,
    on the stored one 80; the reader takes the frame whose size the JSON gives, and refuses a size neither has."""
    def sized(content):
        content["images"][0].update(width=json_size[0], height=json_size[1])
        content["annotations"] = [a for a in content["annotations"] if a["image_id"] != 1] + [
            {"id": 99, "image_id": 1, "category_id": 3, "bbox": [4, 6, 20, 24], "area": 480, "iscrowd": 0,
             "segmentation": [[4, 6, 24, 6, 24, 30, 4, 30]]}]
    folder = _edited_coco(tmp_path / "coco", sized)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    stored = np.zeros((64, 80, 3), np.uint8)
    stored[:, :40] = 255  # the stored frame's left half is white: shown upright, the top half is
    Image.fromarray(stored).save(folder / "val2017" / "0.jpg", exif=exif.tobytes())
    val = COCOInstances(folder, "val", 32)
    if upright is None:
        with pytest.raises(ValueError, match=r"0.jpg is 64x80 px, but its entry \(image 1\) gives width 50 and height"):
            val[0]
        return
    image = val[0][0].mean(0)
    top_bright = image[:16].mean() > image[16:].mean()
    left_bright = image[:, :16].mean() > image[:, 16:].mean()
    assert (top_bright, left_bright) == ((True, False) if upright else (False, True))


@pytest.mark.parametrize("task, fmt, write", [("segment", "ade20k", write_ade20k), ("detect", "coco", write_coco)])
def test_real_formats_train_and_score_through_the_cli(tmp_path, task, fmt, write):
    folder = write(tmp_path / fmt)
    done = transfer("--task", task, "--dense-format", fmt, "--preset", "smoke", "--data", str(folder), "--output",
                    str(tmp_path / "runs"), "--batch-size", "2")
    assert done.returncode == 0, done.stderr
    assert ("mIoU" if task == "segment" else "box AP") in done.stdout


@pytest.mark.parametrize("task_type", [SegmentTask, DetectTask])
def test_every_parameter_of_a_dense_model_gets_a_gradient(images, task_type):
    """Nothing unused (the backbone's final norm is gone): DistributedDataParallel needs every parameter's gradient."""
    task, val_set = _dense(task_type, images, val_composites=2)
    model = task.build_model(task.num_classes)
    batch, targets = task.collate([val_set[0], val_set[1]])
    task.loss(model.train(), batch, targets, torch.zeros(2)).backward()
    assert [name for name, p in model.named_parameters() if p.grad is None] == []


def _edited_coco(root: Path, edit) -> Path:
    folder = write_coco(root)
    path = folder / "annotations" / "instances_val2017.json"
    content = json.loads(path.read_text())
    edit(content)
    path.write_text(json.dumps(content))
    return folder


@pytest.mark.parametrize("edit, says", [
    (lambda c: c.pop("annotations"), "is not COCO's instance format: it needs the lists images, annotations"),
    (lambda c: c.update(images=[]), "lists no images"),
    (lambda c: c["annotations"][0].pop("segmentation"), "annotation 1 has no segmentation"),
    (lambda c: c["annotations"][0].update(category_id=99), "annotation 1 names category id 99"),
    (lambda c: c["annotations"][0].update(segmentation=[[1, 1, 2, 2]]), "1: a polygon of fewer than 3 points"),
    (lambda c: c["annotations"][0].update(segmentation=[[4, 4, 28, 4, 28, 28, 4]]),  # round 17: a dangling x
     r"annotation 1: a polygon is x, y pairs \(an even count\), got 7 numbers"),
    (lambda c: c["images"][0].update(file_name="gone.jpg"), "gone.jpg, which is not a file"),
    (lambda c: c["images"][1].update(file_name="./0.jpg"), r"several images name the same file_name \(0.jpg\)"),
    (lambda c: c["images"][0].update(file_name="../train2017/0.jpg"),  # a training image scored, or the reverse
     r"image 1's file_name '../train2017/0.jpg' is not a file of .*val2017: a split reads only its own"),
    (lambda c: c["images"][0].update(file_name=str(Path(__file__).resolve())),  # another data set's, absolute
     "image 1's file_name '/.* is not a file of"),
    (lambda c: c["annotations"][1].update(id=1), r"annotations share ids \(1\)"),  # one would replace the other
    (lambda c: c["images"][1].update(id=1), r"images share ids \(1\)"),
    (lambda c: c["annotations"][0].update(segmentation=[]), "annotation 1: no polygon"),
    (lambda c: c["annotations"][0].update(segmentation={"size": [5, 5], "counts": "a"}),
     r"RLE mask's size \[5, 5\] is not its image's height and width \[64, 80\]"),
    (lambda c: c["annotations"][0].update(bbox=[4, 6, 24, 30]),
     r"bbox \[4, 6, 24, 30\] is not the extent of its polygons"),
    (lambda c: c["annotations"][0].update(bbox=[4, 6, 24, 30], segmentation=_rle(4, 6, 20, 24)),  # round 21's C07
     r"bbox \[4, 6, 24, 30\] is not the extent of its mask"),
    (lambda c: c["annotations"][0].update(segmentation=_rle(0, 0, 0, 0)), "its RLE mask covers no pixel"),
    # round 17: malformed boxes were all 'not its polygons' extent'; a flat one was dropped from training unsaid
    (lambda c: c["annotations"][0].update(bbox=[4, 6, 20]), r"bbox \[4, 6, 20\] is not 4 finite numbers"),
    (lambda c: c["annotations"][0].update(bbox=[4, 6, "20", 24]), "is not 4 finite numbers"),
    (lambda c: c["annotations"][0].update(bbox=[4, 6, float("nan"), 24]), "is not 4 finite numbers"),
    (lambda c: c["annotations"][0].update(bbox=[4, 6, 20, 0], segmentation=[[4, 6, 24, 6, 14, 6]]),
     r"bbox \[4, 6, 20, 0\] has no area"),
    (lambda c: c["annotations"][0].update(bbox=[24, 6, -20, 24]), "has no area"),
    (lambda c: c["annotations"][0].update(bbox=[90, 6, 20, 24], segmentation=[[90, 6, 110, 6, 110, 30, 90, 30]]),
     r"lies outside its image \(80x64 px\)"),
    (lambda c: c["annotations"][0].update(segmentation={"size": [64, 80], "counts": "not RLE!"}),
     "its RLE mask .* does not decode"),
    # round 18: values of the wrong type failed mid-run, or were refused for another reason
    (lambda c: c["annotations"][0].update(iscrowd="0"), r"annotation 1: iscrowd must be 0 .* or 1 .*, got '0'"),
    (lambda c: c["annotations"][0].update(iscrowd=None), "annotation 1: iscrowd must be 0"),
    (lambda c: c["annotations"][0].update(segmentation=[[str(v) for v in c["annotations"][0]["segmentation"][0]]]),
     "annotation 1: a polygon is a flat list of finite numbers"),
    (lambda c: c["annotations"][0].update(segmentation=[[4, 6, 24, float("nan"), 24, 30]]),
     "a polygon is a flat list of finite numbers"),
    (lambda c: c["annotations"][0].update(segmentation=[[[4, 6], [24, 6], [24, 30], [4, 30]]]),
     r"a polygon is a flat list of finite numbers x1, y1, x2, y2, ...; got \[\[4, 6\]"),
    (lambda c: c["images"][0].pop("width"), r"image 1 needs its width and height in pixels .*, got None and 64"),
    (lambda c: c["images"][0].update(height="64"), "image 1 needs its width and height"),
    (lambda c: c["images"].append("x.jpg"), "images holds 'x.jpg', which is no entry with an integer id"),
    (lambda c: c["annotations"].append(7), "annotations holds '7', which is no entry with an integer id"),
    (lambda c: c["images"][0].update(id="1"), "images holds .*which is no entry with an integer id"),
    (lambda c: c["categories"][0].pop("name"), "category 3 has no name"),
    (lambda c: c["categories"][1].update(name="car"), r"categories share names \(car\)"),  # round 17
])
def test_a_coco_json_short_of_the_format_is_one_line_naming_file_and_entry(tmp_path, edit, says):
    folder = _edited_coco(tmp_path / "coco", edit)
    with pytest.raises(ValueError, match=says) as refused:
        COCOInstances(folder, "val", 32)
    assert "instances_val2017.json" in str(refused.value)


def _rle(x: int, y: int, width: int, height: int) -> dict:
    """COCO's RLE (counts as a string) of a ``width x height`` rectangle at ``(x, y)`` on a 64 x 80 image."""
    from pycocotools import mask as mask_utils
    mask = np.zeros((64, 80), dtype=np.uint8, order="F")
    mask[y:y + height, x:x + width] = 1
    encoded = mask_utils.encode(mask)
    return {"size": [64, 80], "counts": encoded["counts"].decode()}


def test_coco_instances_are_the_json_s_at_any_size(tmp_path):
    """Boxes written as integers are scaled as the numbers they are (integer boxes were floored by the resize, round
    21's C02); an RLE mask with its extent as box is an instance like a polygon; a polygon that runs past the image's
    edge may have its box cut there, as annotation tools write it (C04)."""
    def edit(content):
        content["annotations"][0].update(segmentation=_rle(4, 6, 20, 24))
        content["annotations"][1].update(bbox=[60, 20, 20, 24], segmentation=[[60, 20, 90, 20, 90, 44, 60, 44]])
    folder = _edited_coco(tmp_path / "coco", edit)
    val = COCOInstances(folder, "val", 32)  # 80 x 64 -> 32 x 32: x scaled by 0.4, y by 0.5
    _, first = val[0]
    assert first["boxes"].dtype == torch.float32
    torch.testing.assert_close(first["boxes"], torch.tensor([[4 * 0.4, 6 * 0.5, 24 * 0.4, 30 * 0.5]]))
    _, second = val[1]
    torch.testing.assert_close(second["boxes"][0], torch.tensor([60 * 0.4, 20 * 0.5, 80 * 0.4, 44 * 0.5]))


def test_instances_too_small_at_the_run_s_size_are_left_out_of_training_only_and_said(tmp_path):
    """A 1 px instance of an 80 x 64 image is under a pixel at 64 px: training cannot take its box, scoring keeps it
    (it was dropped from both, unsaid, and a split of such instances was scored 'AP -100%': round 21's C15)."""
    def edit(content):  # one instance of each image made tiny, in the val and (below) the train split
        for annotation in content["annotations"][::2]:
            x, y = annotation["bbox"][:2]
            annotation.update(bbox=[x, y, 1, 1], segmentation=[[x, y, x + 1, y, x + 1, y + 1, x, y + 1]])
    folder = _edited_coco(tmp_path / "coco", edit)
    train_json = folder / "annotations" / "instances_train2017.json"
    content = json.loads(train_json.read_text())
    edit(content)
    train_json.write_text(json.dumps(content))
    tiny = len(content["annotations"][::2])
    train, val = COCOInstances(folder, "train", 64, train=True), COCOInstances(folder, "val", 64)
    assert train.too_small_to_train == tiny
    kept = sum(len(train[i][1]["labels"]) for i in range(len(train)))
    assert kept == len(content["annotations"]) - tiny
    val_json = json.loads((folder / "annotations" / "instances_val2017.json").read_text())
    assert sum(len(val[i][1]["labels"]) for i in range(len(val))) == len(val_json["annotations"])
    with pytest.raises(ValueError, match="every instance is under 1 px wide or high at 2x2 px: no instance to train"):
        COCOInstances(folder, "train", 2, train=True)  # the other instances too
    config = load_preset("smoke", task="detect", dense_format="coco", data=str(folder), img_size=64)
    notes = build_run_data(config, "detect", DetectTask(config).train_transform()).notes("detect")
    assert any(note.startswith(f"{tiny} instance(s) of {folder}'s training annotations are under 1 px wide or high "
                               "at 64x64 px: left out of training") for note in notes), notes


def test_the_pixels_ade20k_ignores_are_said_with_their_share_and_labels(tmp_path):
    """Label 0 and labels past num_classes leave training and scoring; how many pixels that is, and which labels, is
    said before the run trains (a miscounted --num-classes dropped a third of the pixels unsaid: round 21's A02)."""
    folder = write_ade20k(tmp_path / "ade")
    stored = np.stack([np.asarray(Image.open(path)) for path in sorted((folder / "annotations/validation").iterdir())])
    share = {label: f"{(stored == label).mean():.1%}" for label in range(4)}
    assert ADE20K(folder, "val", 24, num_classes=2).ignored_share() == (
        f"{folder / 'annotations/validation'}: {((stored == 0) | (stored == 3)).mean():.1%} of the pixels of its 3 "
        f"annotations are ignored in training and scoring: label 0 (unlabeled: ADE20K's classes start at 1) "
        f"{share[0]}; labels past num_classes=2: 3 {share[3]} (a larger --num-classes keeps them)")
    assert ADE20K(folder, "val", 24, num_classes=3).ignored_share().endswith(f"label 0 (unlabeled: ADE20K's classes "
                                                                            f"start at 1) {share[0]}")
    two = ADE20K(folder, "val", 24, num_classes=3).ignored_share(reads=2)  # spread over the split: the first two
    assert f"{(stored[:2] == 0).mean():.1%} of the pixels of 2 of its 3 annotations" in two
    for path in (folder / "annotations/validation").iterdir():  # every pixel a class: nothing to say
        Image.fromarray(np.ones((48, 48), np.uint8)).save(path)
    assert ADE20K(folder, "val", 24, num_classes=3).ignored_share() is None
    config = load_preset("smoke", task="segment", dense_format="ade20k", data=str(folder), num_classes=2,
                         img_size=64)
    notes = build_run_data(config, "segment", SegmentTask(config).train_transform()).notes("segment")
    assert [note.split(":")[0] for note in notes] == [str(folder / "annotations/training")], notes


@pytest.mark.parametrize("fmt, write", [("coco", write_coco), ("ade20k", write_ade20k)])
def test_a_dense_folder_is_read_where_it_is_in_its_format_s_layout(tmp_path, fmt, write):
    """--data at a COCO or ADE20K folder that also holds the default dataset's folder (imagenette/) reads the folder
    given, not imagenette/ (round 21's D06); both in the layout cannot be told apart and is refused."""
    task = "detect" if fmt == "coco" else "segment"
    root = write(tmp_path / "root")
    make_image_folder(root / "imagenette")
    config = load_preset("smoke", task=task, dense_format=fmt, data=str(root), img_size=64)
    transform = (DetectTask if fmt == "coco" else SegmentTask)(config).train_transform()
    assert build_run_data(config, task, transform).folder == root
    shutil.rmtree(root / "imagenette")
    write(root / "imagenette")
    with pytest.raises(ValueError, match=rf"{root} and {root / 'imagenette'} are both in {fmt}'s layout: give the "
                                         "one to use as --data"):
        build_run_data(config, task, transform)


def test_no_instance_to_find_is_no_ap_of_minus_100():
    from cnx2lite.train.dense_tasks import _percent
    assert _percent(torch.tensor(0.25)) == 25.0 and np.isnan(_percent(torch.tensor(-1.0)))


def test_coco_splits_with_other_categories_are_refused(tmp_path):
    folder = _edited_coco(tmp_path / "coco", lambda c: c["categories"].append({"id": 9, "name": "cat"}))
    config = load_preset("smoke", task="detect", dense_format="coco", data=str(folder))
    with pytest.raises(ValueError, match=r"the val annotations' categories differ from train's \(id: name "
                                         r"\{3: 'car', 7: 'dog', 9: 'cat'\} vs \{3: 'car', 7: 'dog'\}\)"):
        build_run_data(config, "detect", DetectTask(config).train_transform())
    swapped = _edited_coco(tmp_path / "swapped", lambda c: c.update(categories=[{"id": 3, "name": "dog"},
                                                                                {"id": 7, "name": "car"}]))
    config = load_preset("smoke", task="detect", dense_format="coco", data=str(swapped))
    with pytest.raises(ValueError, match=r"\{3: 'dog', 7: 'car'\} vs \{3: 'car', 7: 'dog'\}"):  # round 18's D17
        build_run_data(config, "detect", DetectTask(config).train_transform())


@pytest.mark.parametrize("annotation, says", [(Image.new("L", (30, 30)), "is 30x30 px, its image 48x48"),
                                              (Image.new("RGB", (48, 48)), "is a RGB image")])
def test_an_ade20k_annotation_that_cannot_label_its_image_is_refused(tmp_path, annotation, says):
    folder = write_ade20k(tmp_path / "ade")
    annotation.save(folder / "annotations" / "validation" / "ADE_001.png")
    with pytest.raises(ValueError, match=says):
        ADE20K(folder, "val", 32)[1]


@pytest.mark.parametrize("kind, content", [("images", b""), ("annotations", b""),
                                           ("annotations", b"\x89PNG\r\n\x1a\n")])  # a PNG's signature alone
def test_an_ade20k_file_that_does_not_open_is_named(tmp_path, kind, content):
    """An empty image gave PIL's bare 'cannot identify image file' without the file (round 17)."""
    folder = write_ade20k(tmp_path / "ade")
    (folder / kind / "validation" / "ADE_001.png").write_bytes(content)
    with pytest.raises(CorruptImageError, match=f"cannot read .*{kind}/validation/ADE_001.png"):
        ADE20K(folder, "val", 32)


def test_ade20k_reads_its_folders_as_the_class_folder_scanner_does(tmp_path):
    """Round 18: a hidden ._ADE_000.png (macOS) was taken for an image lacking its annotation (D12); an annotation of
    JPEG data named .png trained on class indices its compression had changed (D13); an image in a subfolder was left
    out without a word (D14)."""
    folder = write_ade20k(tmp_path / "ade")
    images, annotations = folder / "images" / "validation", folder / "annotations" / "validation"
    (images / "._ADE_000.png").write_bytes(b"\x00\x05\x16\x07 AppleDouble")
    assert len(ADE20K(folder, "val", 32)) == 3
    with Image.open(annotations / "ADE_001.png") as labels:
        labels.convert("L").save(annotations / "ADE_001.png", format="JPEG", quality=95)
    with pytest.raises(ValueError, match="ADE_001.png holds JPEG data: an annotation must be a PNG"):
        ADE20K(folder, "val", 32)
    (annotations / "ADE_001.png").unlink()
    (images / "more").mkdir()
    (images / "ADE_001.png").rename(images / "more" / "ADE_001.png")
    with pytest.raises(ValueError, match=r"holds folders \(more\): ADE20K's split folders are flat"):
        ADE20K(folder, "val", 32)


@pytest.mark.parametrize("frame", ["upright", "stored"])
def test_an_ade20k_image_turned_by_exif_is_read_in_the_frame_of_its_annotation(tmp_path, frame):
    """A photo stored 64x48 with EXIF orientation 6 (shown 48x64): its annotation may be made on either frame; the
    image is read in that one, as COCO's are (round 19's N12: the stored frame was refused, naming the wrong size)."""
    folder = write_ade20k(tmp_path / "ade")
    images, annotations = folder / "images" / "validation", folder / "annotations" / "validation"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to show
    stored = np.zeros((48, 64, 3), np.uint8)
    stored[:, :32] = 255  # the stored frame's left half is white: shown upright, the top half is
    Image.fromarray(stored).save(images / "ADE_000.jpg", exif=exif.tobytes())
    (images / "ADE_000.png").unlink()
    labels = np.ones((48, 64), np.uint8) if frame == "stored" else np.ones((64, 48), np.uint8)
    Image.fromarray(labels).save(annotations / "ADE_000.png")
    image = ADE20K(folder, "val", 32)[0][0].mean(0)
    top_bright = image[:16].mean() > image[16:].mean()
    left_bright = image[:, :16].mean() > image[:, 16:].mean()
    assert (top_bright, left_bright) == ((True, False) if frame == "upright" else (False, True))
    Image.fromarray(np.ones((40, 40), np.uint8)).save(annotations / "ADE_000.png")
    with pytest.raises(ValueError, match=r"is 40x40 px, its image 48x64 px or, as stored \(before its EXIF turn\), "
                                         "64x48 px: an annotation must match its image"):
        ADE20K(folder, "val", 32)


@pytest.mark.parametrize("kind", ["annotations", "images"])
def test_an_ade20k_file_that_links_outside_its_split_is_refused(tmp_path, kind):
    """A training annotation linked to the validation one (or to another data set's) was read as this split's (round
    14's TF_ade_annlink); COCO and class folders refuse the same."""
    folder = write_ade20k(tmp_path / "ade")
    linked = folder / kind / "training" / "ADE_000.png"
    linked.unlink()
    linked.symlink_to(folder / kind / "validation" / "ADE_000.png")
    with pytest.raises(ValueError, match=f"ADE_000.png links to .*validation/ADE_000.png, outside .*{kind}/training: a "
                                         "split reads only its own files"):
        ADE20K(folder, "train", 32, num_classes=3, train=True)


@pytest.mark.parametrize("task_type", [SegmentTask, DetectTask])
def test_a_transfer_models_backbone_is_a_weights_source(images, tmp_path, task_type):
    """A segmentation or detection checkpoint gives its backbone to fine-tuning, probing or another transfer."""
    task, _ = _dense(task_type, images)
    model = task.build_model(3)
    torch.save({"model": model.state_dict()}, tmp_path / "transfer.pt")
    backbone = create_model("convnextv2_atto", num_classes=0)
    load_pretrained(backbone, tmp_path / "transfer.pt")
    source = dict(model.named_parameters())
    prefix = "backbone." if task_type is SegmentTask else "backbone.backbone."
    for name, value in backbone.state_dict().items():
        if name.startswith(("stages.", "downsample_layers.")):
            assert torch.equal(value, source[prefix + name]), name


def test_relabeling_an_ade20k_annotation_changes_the_runs_fingerprint(tmp_path):
    """A resume refuses other data by its fingerprint: an annotation rewritten must count as other data."""
    folder = write_ade20k(tmp_path / "ade")
    before = fingerprint(ADE20K(folder, "train", 32), folder)
    copy = shutil.copytree(folder, tmp_path / "elsewhere")
    assert fingerprint(ADE20K(copy, "train", 32), copy) == before  # the same tree elsewhere: the same data
    Image.new("L", (48, 48)).save(folder / "annotations" / "training" / "ADE_002.png")
    assert fingerprint(ADE20K(folder, "train", 32), folder) != before


def test_a_setting_of_another_task_is_refused_not_ignored(images, tmp_path):
    with pytest.raises(ValueError, match="init_encoder do.es. not apply to task 'segment': the run would ignore it"):
        train_api.transfer("segment", "smoke", data=str(images), output=str(tmp_path), init_encoder="runs/pretrain")
    config = load_preset("smoke", task="detect", data=str(images))
    with pytest.raises(ValueError, match="mixup do.es. not apply to task 'detect'"):
        train_api._config("detect", config, {"mixup": 0.8})


def test_ade20k_images_sharing_a_name_and_so_an_annotation_are_refused(tmp_path):
    folder = write_ade20k(tmp_path / "ade")
    Image.new("RGB", (48, 48)).save(folder / "images" / "training" / "ADE_000.jpg")  # beside ADE_000.png
    with pytest.raises(ValueError, match="share a name and so one annotation PNG: ADE_000.jpg, ADE_000.png"):
        ADE20K(folder, "train", 32)


def test_a_val_split_without_a_labeled_pixel_is_refused_and_an_unlabeled_crop_adds_no_loss(tmp_path):
    folder = write_ade20k(tmp_path / "ade")
    for annotation in (folder / "annotations" / "validation").iterdir():
        Image.new("L", (48, 48)).save(annotation)  # all 0: unlabeled
    config = load_preset("smoke", task="segment", dense_format="ade20k", data=str(folder), num_classes=3)
    task = SegmentTask(config)
    model = task.build_model(3)
    task.start_scoring(torch.device("cpu"))
    images, targets = torch.randn(2, 3, 64, 64), torch.full((2, 64, 64), -1)
    task.eval_batch(model, images, targets, 0)
    with pytest.raises(ValueError, match="no pixel of the val split is labeled"):
        task.scores()
    loss = task.loss(model, images, targets, torch.zeros(2))
    assert loss.item() == 0 and loss.requires_grad
    with pytest.raises(ValueError, match="annotations/validation is labeled: .* nothing to score"):
        ADE20K(folder, "val", 32, num_classes=3)  # when the data is read, before anything trains
    for annotation in (folder / "annotations" / "training").iterdir():
        Image.new("L", (48, 48)).save(annotation)
    with pytest.raises(ValueError, match="annotations/training is labeled: .* nothing to train on"):
        ADE20K(folder, "train", 32, num_classes=3, train=True)
    for annotation in (folder / "annotations" / "training").iterdir():  # one class: as num_classes=1 is refused
        Image.new("L", (48, 48), color=2).save(annotation)
    with pytest.raises(ValueError, match=r"annotations/training label one class only \(label 2\): nothing to tell"):
        ADE20K(folder, "train", 32, num_classes=3, train=True)
    Image.new("L", (48, 48), color=3).save(annotation)  # a second class, in the last annotation read
    assert len(ADE20K(folder, "train", 32, num_classes=3, train=True)) == 6


def test_an_ade20k_annotation_of_another_size_is_refused_before_training(tmp_path):
    folder = write_ade20k(tmp_path / "ade")
    annotation = next((folder / "annotations" / "validation").iterdir())
    Image.new("L", (24, 24), 1).save(annotation)
    with pytest.raises(ValueError, match=f"{annotation} is 24x24 px, its image 48x48 px: an annotation must match"):
        ADE20K(folder, "val", 32)


def test_skip_corrupt_is_refused_for_a_folder_used_whole(tmp_path):
    with pytest.raises(ValueError, match="skip_corrupt does not apply to dense_format 'ade20k'"):
        load_preset("smoke", task="segment", dense_format="ade20k", skip_corrupt=True)


def test_a_dataset_named_but_absent_beside_a_dense_folder_is_refused(tmp_path, capsys):
    folder = write_ade20k(tmp_path / "ade")  # the layout at the root itself: read only when --dataset is left out
    with pytest.raises(SystemExit) as exit_info:
        main(["transfer", "--task", "segment", "--dense-format", "ade20k", "--dataset", "ade20k-typo", "--preset",
              "smoke", "--data", str(folder), "--output", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and f"dataset 'ade20k-typo': {folder} holds no folder of that name" in err, err


def test_a_segmentation_figure_of_many_classes_names_those_on_the_page_without_a_warning(tmp_path, monkeypatch):
    """255 classes in the legend collapsed the axes (a matplotlib warning on stderr): it names at most 20."""
    import warnings

    import cnx2lite.train.plots as plots
    from cnx2lite.train.plots import LEGEND_CLASSES, plot_segmentations

    saved = []
    save = plots.save_png
    monkeypatch.setattr(plots, "save_png", lambda fig, path: (saved.append(fig), save(fig, path)))

    classes = [f"class {k}" for k in range(255)]
    generator = torch.Generator().manual_seed(0)
    targets = [{"semantic": torch.randint(-1, 255, (32, 32), generator=generator)} for _ in range(2)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        plot_segmentations(torch.randn(2, 3, 32, 32, generator=generator), targets,
                           torch.randn(2, 255, 32, 32, generator=generator), classes, tmp_path / "predictions.png")
    labels = [text.get_text() for text in saved[-1].legends[0].get_texts()]
    assert (tmp_path / "predictions.png").stat().st_size > 0 and len(labels) == LEGEND_CLASSES + 1 == 21
    assert labels[:2] == ["class 0", "class 1"] and labels[-1] == "and 235 more classes"
    few = [{"semantic": torch.zeros(32, 32, dtype=torch.long)} for _ in range(2)]
    logits = torch.zeros(2, 255, 32, 32)
    logits[:, 3] = 1  # on the page: class 0 (labels) and class 3 (predictions)
    plot_segmentations(torch.randn(2, 3, 32, 32), few, logits, classes, tmp_path / "few.png")
    assert [text.get_text() for text in saved[-1].legends[0].get_texts()] == ["class 0", "class 3"]


def test_the_predictions_figure_names_the_classes_as_the_image_folder_s_classes_tsv_does(tmp_path, monkeypatch):
    """Imagenette's folders are WordNet ids: the figure's legend said n01440764 where the notebooks say tench. The
    names come from the image folder the run resolved (here under a data root), not from --data as given."""
    folder = make_image_folder(tmp_path / "root" / "imagenette", classes=2)
    (folder / "CLASSES.tsv").write_text("class0\ttench\n")  # class1 has no readable name: it keeps its folder's
    config = load_preset("smoke", task="segment", data=str(tmp_path / "root"), val_composites=2)
    task = SegmentTask(config)
    _, composites = task.datasets(build_run_data(config, "segment", task.train_transform()))
    shown = {}
    monkeypatch.setattr(task, "plot", lambda images, targets, predictions, classes, path, title: shown.update(
        classes=classes))
    task.save_figures(task.build_model(2), composites, tmp_path, epoch=1, last=True)
    assert shown["classes"] == ["tench", "class1"]
