"""The evidence machinery: paired bootstrap, kNN and linear probes, the kNN monitor, unlabeled pretraining data,
and ``cnx2lite reproduce --scale smoke`` end to end."""
from __future__ import annotations

import csv
import dataclasses
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cnx2lite import data, transforms
from cnx2lite.amp import resolve_amp
from cnx2lite.bootstrap import bootstrap_accuracy, paired_bootstrap
from cnx2lite.factory import load_model
from cnx2lite.probes import knn_scores, linear_probe_scores, probe
from cnx2lite.train import finetune, pretrain
from cnx2lite.train.run_data import IgnoredSettingWarning
from conftest import make_image_folder, write_images

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tinted(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("tinted"))


# ---------------------------------------------------------------------------------------------------------------
def test_paired_bootstrap_values_and_intervals():
    a = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0] * 50, dtype=torch.bool)
    b = torch.tensor([1, 1, 0, 0, 0, 0, 0, 0] * 50, dtype=torch.bool)
    diff = paired_bootstrap(a, b)
    assert diff.value == pytest.approx(25.0)
    assert 20 < diff.low < 25 < diff.high < 30 and diff.excludes_zero
    same = paired_bootstrap(a, a)
    assert (same.value, same.low, same.high) == (0.0, 0.0, 0.0) and not same.excludes_zero
    # pairing: b = a shifted by one image has the same accuracy, so the difference is centred on 0 but uncertain
    shifted = paired_bootstrap(a, a.roll(1))
    assert shifted.value == 0.0 and shifted.low < -1 and shifted.high > 1
    # seeds are resampled too: two seeds, one always right, one always wrong -> 50%, anywhere in [0, 100]
    both = bootstrap_accuracy(torch.stack([torch.ones(10), torch.zeros(10)]))
    assert (both.value, both.low, both.high) == (50.0, 0.0, 100.0)
    # ... while two seeds that agree leave only the images' uncertainty
    agree = bootstrap_accuracy(torch.stack([a, a]))
    alone = bootstrap_accuracy(a)
    assert (agree.low, agree.high) == pytest.approx((alone.low, alone.high), abs=1.0) and alone.high - alone.low > 5
    with pytest.raises(ValueError, match="same seeds and images"):
        paired_bootstrap(a, a[:-1])
    # a contrast of two gains, per seed and image: (a - b) - (c - d)
    c, d = a.roll(3), torch.zeros_like(a)
    contrast = paired_bootstrap(a.float() - b.float(), c.float() - d.float())
    assert contrast.value == pytest.approx((50 - 25) - (50 - 0))


def test_knn_votes_with_temperature_weights():
    bank = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    labels = torch.tensor([0, 0, 1])
    query = torch.tensor([[0.6, 0.8]])  # cos 0.6, ~0.67, 0.8 with the bank rows
    scores = knn_scores(bank, labels, query, num_classes=2, k=3, temperature=0.1)
    sims = torch.nn.functional.normalize(bank, dim=1) @ torch.nn.functional.normalize(query, dim=1).T
    expected = torch.tensor([[(sims[0] / 0.1).exp() + (sims[1] / 0.1).exp(), (sims[2] / 0.1).exp()]]).squeeze(-1)
    torch.testing.assert_close(scores / scores.sum(), expected.view(1, 2) / expected.sum())  # the same vote shares
    assert scores.argmax().item() == 1  # at a low temperature the closest neighbour dominates the vote
    assert knn_scores(bank, labels, query, 2, k=3, temperature=1.0).argmax().item() == 0  # at T=1 two outvote one
    assert knn_scores(bank, labels, query, 2, k=2, temperature=0.1).argmax().item() == 1  # k=2: the 2 nearest
    with pytest.raises(ValueError, match="k must be >= 1"):
        knn_scores(bank, labels, query, 2, k=0)
    # a small temperature: exp(sim / T) overflows float32 past sim / T = 88.7; the vote must not
    many = torch.cat([bank[:1].repeat(5, 1), bank[2:]])  # five neighbours of class 0 at cos 0.6, one of class 1 at 0.8
    cold = knn_scores(many, torch.tensor([0] * 5 + [1]), query, 2, k=6, temperature=0.005)
    assert torch.isfinite(cold).all() and cold.argmax().item() == 1  # exp(0.2 / 0.005) outweighs five


def test_linear_probe_separates_separable_features_and_not_noise():
    gen = torch.Generator().manual_seed(0)
    centers = torch.randn(3, 16, generator=gen) * 3
    y = torch.arange(300) % 3
    x = centers[y] + torch.randn(300, 16, generator=gen)
    logits = linear_probe_scores(x[:200], y[:200], x[200:], 3)
    assert (logits.argmax(1) == y[200:]).float().mean() > 0.95
    noise = torch.randn(300, 16, generator=gen)
    chance = (linear_probe_scores(noise[:200], y[:200], noise[200:], 3).argmax(1) == y[200:]).float().mean()
    assert chance < 0.55  # 1/3 expected; a probe that memorized would not generalize


def test_probe_reads_image_content(tinted, tmp_path):
    """A random-init encoder is at chance when classes do not differ in content, and separates classes that do."""
    alike = make_image_folder(tmp_path / "alike", train=40, val=40, size=32, tinted=False)
    encoder = load_model("random", "convnextv2_atto")[0]
    results = {}
    for name, folder in (("alike", alike), ("tinted", tinted)):
        transform = transforms.eval_transform(32 if name == "alike" else 64, crop_pct=1.0)
        train_set = data.build_dataset(folder, "train", transform)
        val_set = data.build_dataset(folder, "val", transform)
        for method in ("knn", "linear"):
            results[name, method] = probe(encoder, train_set, val_set, 2, method, k=5)
    for method in ("knn", "linear"):
        assert 25 <= results["alike", method].top1 <= 75, results["alike", method]  # 80 val images, chance 50%
        assert results["tinted", method].top1 == 100.0
        assert results["alike", method].correct.shape == (80,)


def test_knn_monitor_is_a_metrics_column(tinted, tmp_path):
    run = pretrain("smoke", data=str(tinted), output=str(tmp_path), batch_size=4, epochs=2, knn_images_per_class=4)
    knn = run.metric("knn_top1")
    assert len(knn) == 2
    # the column is the kNN probe of the run's encoder: recompute the last value from the saved checkpoint
    transform = transforms.eval_transform(64)
    bank = data.build_dataset(tinted, "train", transform, images_per_class=4)
    val = data.build_dataset(tinted, "val", transform, classes=bank.classes)
    encoder = load_model(run.run_dir)[0]
    assert probe(encoder, bank, val, 2, "knn", amp_dtype=resolve_amp("auto", torch.device("cpu"))).top1 == knn[-1]
    with open(run.run_dir / "metrics.csv") as f:
        assert [r["knn_top1"] for r in csv.DictReader(f) if r["kind"] == "epoch"] == [str(v) for v in knn]
    off = pretrain("smoke", data=str(tinted), output=str(tmp_path), name="off", batch_size=4, knn_images_per_class=0)
    assert off.metric("knn_top1") == []


def test_pretraining_takes_a_nested_folder_of_unlabeled_images(tmp_path):
    rng = np.random.default_rng(0)
    write_images(tmp_path / "photos", 5, 64, rng)
    write_images(tmp_path / "photos" / "trip" / "day2", 5, 64, rng)
    (tmp_path / "photos" / "notes.txt").write_text("not an image")
    # every setting that picks images by class (the smoke preset's and those given) is named, not silently dropped
    with pytest.warns(IgnoredSettingWarning, match=re.escape(
            "num_classes=2, images_per_class=8, val_images_per_class=3, image_selection=random, knn_images_per_class=8 "
            "(the preset's or the flags') do not apply (no classes); training on all 10")):
        run = pretrain("smoke", data=str(tmp_path / "photos"), output=str(tmp_path / "runs"), batch_size=4,
                       val_images_per_class=3, image_selection="random")
    assert run.history[-1]["step"] == 2 and (run.run_dir / "reconstruction.png").is_file()
    with pytest.raises(ValueError, match="tune_fraction and eval_split='tune' carve images out of each class"):
        pretrain("smoke", data=str(tmp_path / "photos"), output=str(tmp_path / "runs"), tune_fraction=0.5)
    assert '"train_images": 10' in (run.run_dir / "config.json").read_text()
    with pytest.raises(data.DataNotFoundError, match="has train/"):
        finetune("smoke", data=str(tmp_path / "photos"), output=str(tmp_path / "runs"))
    with pytest.raises(data.DataNotFoundError, match="no images"):
        pretrain("smoke", data=str(tmp_path / "runs" / "nothing-here"), output=str(tmp_path / "runs"))


def test_unlabeled_pretraining_refuses_a_labeled_tree_under_another_name(tinted, tmp_path):
    """A typo in --dataset must not pretrain on every image of train/ and val/ as if they were unlabeled."""
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "imagenet").symlink_to(tinted)
    with pytest.raises(data.DataNotFoundError, match=r"imagenet/train exists: pass --data"):
        pretrain("smoke", data=str(tmp_path / "root"), dataset="imagenette", output=str(tmp_path / "runs"))
    for split in ("training", "validation"):  # ADE20K's layout: its label maps are no photos (round 18's P08)
        for kind in ("images", "annotations"):
            shutil.copytree(tinted / "val" / "class0", tmp_path / "ade" / kind / split)
    with pytest.raises(data.DataNotFoundError, match=r"ade/annotations exists: rename .*COCO's train2017/"):
        pretrain("smoke", data=str(tmp_path / "ade"), output=str(tmp_path / "runs"))


def test_probe_command(tinted):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cnx2lite", "probe", *args, "--data", str(tinted)], cwd=REPO,
                              capture_output=True, text=True, timeout=120)

    ok = run("--checkpoint", "random", "--img-size", "64", "--k", "3")
    assert ok.returncode == 0, ok.stderr
    assert "knn top-1" in ok.stdout and "linear top-1" in ok.stdout and "95% interval" in ok.stdout
    missing = run("--checkpoint", "no/such/run.pt")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "no/such/run.pt" in missing.stderr


def test_reproduce_smoke_trains_in_pieces_writes_every_table_and_resumes(tinted, tmp_path):
    from cnx2lite.reproduce import run_reproduce

    out = tmp_path / "smoke"
    # a spent budget: no run starts, and the report says which tables wait
    stopped = run_reproduce("smoke", str(tinted), out, seeds=2, pretrain_seeds=2, hours=1e-9).read_text()
    assert "stopped at its `--hours 1e-09` budget" in stopped and stopped.count("Not trained yet.") == 6
    assert not list((out / "runs").glob("*/checkpoint-*.pt"))

    text = run_reproduce("smoke", str(tinted), out, seeds=2, pretrain_seeds=2).read_text()
    for heading in ("## Fine-tuning recipes, chosen on the tuning split", "## Sanity checks", "## 1. FCMAE vs scratch",
                    "## 2. Co-design", "## 3. Sparse vs dense", "## 4. Feature collapse", "## 5. GRN against",
                    "## 6. Transfer to dense tasks (synthetic composites)"):
        assert heading in text
    assert "Not trained yet" not in text and "Stopped" not in text and "V2-CBAM fcmae" in text  # its sanity check
    prose = " ".join(text.split())
    assert "hierarchical bootstrap" in prose and "0.750 of each image is masked" in prose  # 64 px: 1 of 2x2 cells kept
    # replicated: the verdicts of tables 1-5 speak of reruns (the smoke transfer table has one run per init)
    assert "one run per arm" not in text.split("## 6.")[0] and "one run per arm" in text.split("## 6.")[1]
    for figure in ("label_efficiency.png", "codesign.png", "sparse_vs_dense.png", "feature_collapse_64px.png",
                   "grn_ablation.png", "pretraining_knn.png", "reconstruction.png", "transfer.png"):
        assert (out / figure).is_file() and f"({figure})" in text
    with open(out / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["table"] for r in rows} == {"1", "2", "3", "4", "5", "6"}
    for r in rows:
        assert float(r["ci_low"]) <= float(r["value"]) <= float(r["ci_high"])
    runs = {(r["table"], r["row"], r["metric"]): r["runs"].split() for r in rows}
    assert len(runs["1", "K=4 FCMAE", "fine-tuned top-1"]) == 4  # 2 pretraining runs x 2 seeds
    assert len(runs["1", "K=4 scratch", "fine-tuned top-1"]) == 2
    assert len(runs["1", "K=4 FCMAE - scratch", "fine-tuned top-1"]) == 4  # run (p, s) minus scratch seed s
    assert {"V1 sparse - dense", "V2 sparse - dense"} <= {r["row"] for r in rows if r["table"] == "3"}
    # each row says whether its interval covers reruns, as the verdicts above do (the notebooks quote it)
    assert {r["replicated"] for r in rows if r["table"] != "6"} == {"1"}
    assert {r["replicated"] for r in rows if r["table"] == "6"} == {"0"}
    # a second invocation finds every run finished (no checkpoint is written again) and writes the same numbers
    first = (out / "results.csv").read_text()
    checkpoints = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/checkpoint-*.pt")}
    # 8 pretrainings (V1/V2 x sparse/dense x 2 runs), 18 sweep trials (scratch's 6 recipes also without layer decay),
    # 26 fine-tunings (FCMAE 4 per cell, scratch 2):
    # K=4 and K=all x (V2 FCMAE + scratch), V1 FCMAE + scratch, V1 and V2 dense conv; the GRN table: 4 pretrainings
    # (nothing or CBAM in GRN's place x 2 runs) and 16 fine-tunings (those two, GRN removed or added at fine-tuning);
    # the transfer table: 2 tasks x 4 inits, one run each, from 3 init runs of its own (V2, V1 FCMAE, supervised)
    assert len(checkpoints) == 8 + 18 + 26 + 4 + 16 + 8 + 3
    assert {"segment V2 FCMAE - random init", "detect V2 FCMAE - V1 FCMAE"} <= {r["row"] for r in rows
                                                                                 if r["table"] == "6"}
    run_reproduce("smoke", str(tinted), out, seeds=2, pretrain_seeds=2)
    assert (out / "results.csv").read_text() == first
    assert {p: p.stat().st_mtime_ns for p in checkpoints} == checkpoints
    # on another machine, from the records alone: the same numbers, nothing trained, no checkpoint needed
    assert len(list((out / "records").glob("*/metrics.csv"))) == len(checkpoints)
    shutil.rmtree(out / "runs")
    run_reproduce("smoke", str(tinted), out, seeds=2, pretrain_seeds=2)
    assert (out / "results.csv").read_text() == first
    assert not list(out.glob("runs/*/checkpoint-*.pt"))
    # the transfer runs to train again, elsewhere: their inits are the table's own runs, trained again (and matching
    # their records), never the recorded pretraining runs of the other tables (another machine would not match those)
    for record in (out / "records").glob("transfer-[sd]*"):
        shutil.rmtree(record)
    run_reproduce("smoke", str(tinted), out, seeds=2, pretrain_seeds=2)
    assert (out / "results.csv").read_text() == first
    assert sorted(p.name for p in (out / "runs").iterdir() if not p.name.startswith("transfer-")) == []
    inits = sorted(p.name for p in (out / "runs").glob("transfer-init-*"))
    assert inits[1:] == ["transfer-init-pretrain-v1-p0", "transfer-init-pretrain-v2-p0"] and len(inits) == 3
    assert inits[0].startswith("transfer-init-finetune-v2-scratch-kall-s0")  # and the sweep's recipe
    # a GRN table half trained (CBAM's fine-tunings not yet): written from its finished rows, naming the rest
    for record in (out / "records").glob("finetune-v2-cbam-*"):
        shutil.rmtree(record)
    text = run_reproduce("smoke", str(tinted), out, seeds=2, pretrain_seeds=2, hours=1e-9).read_text()
    grn_section = text.split("## 5. ")[1].split("\n## ")[0]
    assert "Not trained yet (1 of the table's rows, added when the grid has trained them): CBAM." in grn_section
    assert "| nothing |" in grn_section and "| CBAM |" not in grn_section and "V2-CBAM fcmae" not in text
    with open(out / "results.csv") as f:
        grn_rows = {r["row"] for r in csv.DictReader(f) if r["table"] == "5"}
    assert "GRN - nothing" in grn_rows and not any("CBAM" in row for row in grn_rows)


def test_a_difference_of_runs_from_the_same_pretraining_is_paired_run_by_run():
    """GRN removed at fine-tuning starts from GRN's own pretraining runs and labeled images: run (p, s) of one arm is
    the partner of run (p, s) of the other, so run-to-run spread shared by both leaves the paired interval."""
    from cnx2lite.reproduce.report_rows import difference

    generator = torch.Generator().manual_seed(0)
    levels = torch.linspace(0.3, 0.7, 6).view(2, 3, 1)  # runs far apart, each run's two arms alike
    a = torch.rand(2, 3, 400, generator=generator) < levels
    b = a.clone()
    b[..., :8] = True  # the second arm gets a few more images right, in every run
    paired, unpaired = difference(a, b, paired=True), difference(a, b)
    assert paired.value == pytest.approx(unpaired.value) and paired.runs == unpaired.runs
    assert paired.high - paired.low < (unpaired.high - unpaired.low) / 3 and paired.high < 0


def test_a_table_with_nothing_to_train_at_a_scale_is_never_written(tinted, tmp_path):
    """The gpu scale has no transfer table: no cells, no runs of its own; it is named as not trained, not built (its
    build read the transfer settings of a scale without them). Elsewhere the table is ready once its runs (the
    transfer runs and their init runs) are recorded."""
    from cnx2lite.reproduce.grid import SCALES, Grid
    from cnx2lite.reproduce.tables import TABLES

    transfer = next(spec for spec in TABLES if spec.title.startswith("6"))
    folder = str(data.find_image_folder(tinted))
    gpu, smoke = Grid(SCALES["gpu"], folder, tmp_path / "gpu"), Grid(SCALES["smoke"], folder, tmp_path / "smoke")
    assert SCALES["gpu"].transfer is None and not transfer.ready(gpu)
    recorded = set(transfer.own_runs(smoke))
    assert {"transfer-init-pretrain-v2-p0", "transfer-segment-fcmae-s0"} <= recorded
    smoke.records.has_run = lambda name: name in recorded
    assert transfer.ready(smoke)
    recorded.discard("transfer-init-pretrain-v1-p0")
    assert not transfer.ready(smoke)


def test_a_piece_records_its_finished_runs_and_a_retrained_run_must_match_its_record(tinted, tmp_path, monkeypatch):
    from cnx2lite import amp
    from cnx2lite.reproduce import run_reproduce
    from cnx2lite.reproduce.evaluation import Evaluator
    from cnx2lite.reproduce.grid import SCALES, Grid
    from cnx2lite.reproduce.records import RecordMismatch, Records

    out = tmp_path / "piece"
    Grid(SCALES["smoke"], str(data.find_image_folder(tinted)), out).pretrain("v2")  # the first run of the grid
    # measured on a CPU without native bf16: the grid's precision all the same, as on one that has it
    monkeypatch.setattr(amp, "cpu_supports_bf16", lambda: False)
    grid = Grid(SCALES["smoke"], str(data.find_image_folder(tinted)), out)
    assert Evaluator(grid, torch.device("cpu")).amp_dtype == torch.bfloat16 and SCALES["smoke"].eval_amp == "bf16"
    # "auto" (the demo's: one process measures every run) keys what it resolved to
    auto = Grid(dataclasses.replace(SCALES["smoke"], eval_amp="auto"), str(data.find_image_folder(tinted)), out)
    assert Evaluator(auto, torch.device("cpu")).key("val_correct").startswith("val_correct-fp32@")
    run_reproduce("smoke", str(tinted), out, hours=1e-9)  # then a piece whose budget starts no run
    records = out / "records"
    assert sorted(p.name for p in records.iterdir() if p.is_dir()) == ["pretrain-v2-p0", "random-v2-p0"]
    measured = torch.load(records / "pretrain-v2-p0" / "measured.pt", weights_only=True)
    assert {key.split("@")[0] for key in measured} >= {"knn-k4-s0-bf16", "knn-kall-s0-bf16",
                                                       "collapse-gelu-64px-4images-3ranks"}
    # the weights are gone and the record says another loss than training gives here: the fine-tuning runs would
    # start from a different pretraining than the one recorded, so the grid stops instead of mixing the two
    shutil.rmtree(out / "runs")
    with open(records / "pretrain-v2-p0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    rows[-1]["train_loss"] = str(float(rows[-1]["train_loss"]) + 0.1)
    with open(records / "pretrain-v2-p0" / "metrics.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    with pytest.raises(RecordMismatch, match="pretrain-v2-p0 trained again differs from its record"):
        run_reproduce("smoke", str(tinted), out)
    # records count only for their images and settings: never mixed into a grid of other data or another scale
    other = make_image_folder(tmp_path / "other", classes=3)
    with pytest.raises(RecordMismatch, match="were made on other images"):
        run_reproduce("smoke", str(other), tmp_path / "other-out", records=records)
    config = Grid(SCALES["smoke"], str(data.find_image_folder(tinted)), out).pretrain_config("v2", True, 0)[1]
    with pytest.raises(RecordMismatch, match="trained with other settings"):
        Records(records).has_run("pretrain-v2-p0", {**config.to_dict(), "epochs": 7})
    # a record of other settings whose weights a run needs: refused before training it again (QA round 22 R06: it
    # trained first, then blamed "another machine or code version"), and a record without its settings is damaged
    shutil.rmtree(out / "runs")
    saved = json.loads((records / "pretrain-v2-p0" / "config.json").read_text())
    saved["requested"]["mask_ratio"] = 0.75
    (records / "pretrain-v2-p0" / "config.json").write_text(json.dumps(saved))
    grid = Grid(SCALES["smoke"], str(data.find_image_folder(tinted)), out)
    with pytest.raises(RecordMismatch, match=r"other settings \(mask_ratio 0.75 recorded, 0.6 here\)"):
        grid.pretrain("v2", weights=True)
    assert not list(out.glob("runs/*/checkpoint-*.pt"))
    del saved["requested"]
    (records / "pretrain-v2-p0" / "config.json").write_text(json.dumps(saved))
    with pytest.raises(RecordMismatch, match="damaged .*no 'requested' settings"):
        grid.pretrain("v2")


def test_reproduce_and_the_demo_never_overwrite_a_report_they_did_not_write(tinted, tmp_path):
    from cnx2lite.demo import run_demo
    from cnx2lite.reproduce import run_reproduce

    (tmp_path / "report.md").write_text("# my thesis notes\n")
    (tmp_path / "figures").mkdir()
    (tmp_path / "figures" / "reconstruction.png").write_bytes(b"my figure")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"task": "pretrain"}')  # a training run's folder
    for output in (tmp_path, tmp_path / "figures", tmp_path / "run"):
        for write in (lambda: run_reproduce("smoke", str(tinted), output, hours=1e-9),
                      lambda: run_demo(str(tinted), output, quick=True)):
            with pytest.raises((FileExistsError, ValueError), match="did not write|inside the training run"):
                write()
    assert (tmp_path / "report.md").read_text() == "# my thesis notes\n" and not (tmp_path / "runs").exists()
    assert (tmp_path / "figures" / "reconstruction.png").read_bytes() == b"my figure"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json"]


def test_a_report_folder_is_claimed_by_one_command_only_once_every_check_passed(tinted, tmp_path):
    """Killed after its first figure and before its report.md, reproduce finds its own figure again and goes on; no
    other command takes over a folder one claimed; a refused reproduce leaves no folder behind."""
    from cnx2lite.report_folder import CLAIM_FILE, check_report_folder, claim_report_folder
    from cnx2lite.reproduce import COMMAND, REPORT_FILES, run_reproduce

    output = tmp_path / "out"
    check_report_folder(output, COMMAND, REPORT_FILES)
    assert not output.exists()  # checking writes nothing
    claim_report_folder(output, COMMAND)
    (output / "feature_collapse.png").write_bytes(b"a figure of the interrupted run")
    check_report_folder(output, COMMAND, REPORT_FILES)
    (output / "feature_collapse.png").unlink()  # even with none of its files there, the folder stays reproduce's
    for other in ("cnx2lite demo", "cnx2lite collapse"):
        with pytest.raises(FileExistsError, match=f"is the folder of {COMMAND}: {other} would mix"):
            check_report_folder(output, other, ("report.md", "*.png"))
    assert (output / CLAIM_FILE).read_text() == f"{COMMAND}\n"
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"task": "pretrain"}')
    with pytest.raises(ValueError, match="inside the training run"):
        run_reproduce("smoke", str(tinted), tmp_path / "refused", records=run / "records")
    with pytest.raises(FileNotFoundError):  # no data there: refused before the records folder is made
        run_reproduce("smoke", str(tmp_path / "nowhere"), tmp_path / "refused", records=tmp_path / "records")
    assert not (tmp_path / "refused").exists() and not (tmp_path / "records").exists()
    # a claim file planted as a link is never written through; a report of another command before claims is its
    legacy, planted, victim = tmp_path / "legacy", tmp_path / "planted", tmp_path / "victim.txt"
    legacy.mkdir()
    (legacy / "report.md").write_text("# cnx2lite demo\n\nold\n")
    with pytest.raises(FileExistsError, match="is the folder of cnx2lite demo"):
        check_report_folder(legacy, COMMAND, REPORT_FILES)
    check_report_folder(legacy, "cnx2lite demo", ("report.md", "*.png"))
    planted.mkdir()
    (planted / CLAIM_FILE).symlink_to(victim)
    with pytest.raises(ValueError, match="is not a file this package wrote"):
        check_report_folder(planted, COMMAND, REPORT_FILES)
    with pytest.raises(OSError, match="symbolic link"):
        claim_report_folder(planted, COMMAND)
    assert not victim.exists()
    (planted / CLAIM_FILE).unlink()  # a folder the command claimed, with one of its files replaced by a link
    claim_report_folder(planted, COMMAND)
    (planted / "report.md").symlink_to(victim)
    with pytest.raises(ValueError, match="report.md is a link, which cnx2lite reproduce would write through"):
        check_report_folder(planted, COMMAND, REPORT_FILES)
    assert not victim.exists()


def test_a_damaged_record_is_named_and_records_never_go_into_a_run(tmp_path):
    from cnx2lite.reproduce.records import RecordMismatch, Records

    record = tmp_path / "records" / "finetune-x"
    record.mkdir(parents=True)
    (record / "config.json").write_text('{"epochs": 2}')
    (record / "metrics.csv").write_text("kind,epoch,train_loss\nepoch,1.0,2.0\n")  # cut before its last epoch
    with pytest.raises(RecordMismatch, match="finetune-x is damaged .*ends before epoch 2"):
        Records(tmp_path / "records").has_run("finetune-x")
    (record / "measured.pt").write_bytes(b"PK\x03\x04 cut")
    with pytest.raises(RecordMismatch, match="measured.pt is damaged"):
        Records(tmp_path / "records").measured("finetune-x", "val_correct")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint-00000001.pt").write_bytes(b"PK")
    with pytest.raises(ValueError, match="inside the training run"):
        Records(tmp_path / "run" / "records").check_writable()
    assert not (tmp_path / "run" / "records").exists()
    images = tmp_path / "d2" / "train" / "c0"  # a class folder of another data set (round 15): records among images
    images.mkdir(parents=True)
    (images / "0.png").write_bytes(b"png")
    with pytest.raises(ValueError, match=r"--records .*c0 holds files that are not records \(0.png\)"):
        Records(images).check_writable()
    assert Records(tmp_path / "records").check_writable() is None  # a folder of records is one


def test_bf16_training_follows_fp32(tinted, tmp_path):
    """A few FCMAE and fine-tuning steps under CPU bf16 autocast stay within 2% (relative) of the fp32 losses, from the
    same weights and data: bf16 changes rounding, not what is trained."""
    runs = {}
    for task in (pretrain, finetune):
        for amp in ("fp32", "bf16"):
            result = task("smoke", data=str(tinted), output=str(tmp_path), name=f"{task.__name__}-{amp}", amp=amp,
                          batch_size=4, epochs=2, log_every_steps=1)
            runs[task.__name__, amp] = [r["train_loss"] for r in result.history if r["kind"] == "train"]
    for name in ("pretrain", "finetune"):
        fp32, bf16 = runs[name, "fp32"], runs[name, "bf16"]
        assert len(fp32) == 8 and fp32 != bf16  # bf16 really ran
        assert bf16 == pytest.approx(fp32, rel=0.02)


def test_the_grid_trains_each_pretrainings_runs_together(tmp_path):
    """A piece that stops leaves at most one pretraining with fine-tuning runs still to train (another machine must
    train that one again): the cpu grid's runs come grouped by the pretraining they start from."""
    from cnx2lite.reproduce import _training_order
    from cnx2lite.reproduce.grid import SCALES, Grid
    from cnx2lite.reproduce.recipes import Recipe

    folder = make_image_folder(tmp_path / "images")
    grid = Grid(SCALES["cpu"], str(folder), tmp_path / "out", recipes={"fcmae": Recipe(1e-3), "scratch": Recipe(1e-3)})
    runs = _training_order(grid)
    order = [grid.pretrain_name(c.block, c.init == "fcmae", p) for c, p, _ in runs if c.init != "scratch"]
    finished = [name for i, name in enumerate(order) if i + 1 == len(order) or order[i + 1] != name]
    assert len(finished) == len(set(order)) == 24  # each group once: V1/V2 x sparse/dense and 8 alternatives, x 2
    assert sum(c.init == "scratch" for c, _, _ in runs) == 3 * 4  # K=10, 50, all; V1 at K=50


def test_a_random_init_transfers_with_the_layer_decay_the_sweep_chose_for_scratch(tinted, tmp_path):
    """Layer decay keeps pretrained layers near their weights; the random-init transfer arm follows scratch's sweep
    (referee review F8), the pretrained arms keep the dense preset's 0.9."""
    from cnx2lite.reproduce.grid import SCALES, Grid
    from cnx2lite.reproduce.recipes import Recipe
    from cnx2lite.reproduce.transfer_table import transfer_config

    grid = Grid(SCALES["smoke"], str(data.find_image_folder(tinted)), tmp_path / "out",
                recipes={"fcmae": Recipe(1e-3), "scratch": Recipe(1e-3, layer_decay=1.0)})
    assert transfer_config(grid, "segment", "scratch", 0).layer_decay == 1.0
    assert transfer_config(grid, "segment", "fcmae", 0).layer_decay == 0.9
    assert transfer_config(grid, "detect", "supervised", 0).layer_decay == 0.9
    # the name says it (review 46: a later sweep choosing 1.0 met the 0.9 run's record, refused as other settings)
    assert transfer_config(grid, "segment", "scratch", 0).name == "transfer-segment-scratch-ld1-s0"
    grid.recipes["scratch"] = Recipe(1e-3)
    assert transfer_config(grid, "segment", "scratch", 0).name == "transfer-segment-scratch-s0"  # as recorded


def test_split_score_records_name_the_evaluation_composites_they_were_scored_on(tinted, tmp_path, monkeypatch):
    """Records of table 6 pair runs scored on the same composites; the photos' listing alone does not pin them (the
    shapes are rasterized by Pillow): the key holds a hash of the composites' labels (review 48)."""
    from cnx2lite.dense import composites
    from cnx2lite.reproduce.grid import SCALES, Grid
    from cnx2lite.reproduce.transfer_table import composites_id

    def grid() -> Grid:
        return Grid(SCALES["smoke"], str(data.find_image_folder(tinted)), tmp_path / "out")

    first = grid()
    assert composites_id(first, "segment") == composites_id(first, "segment") == composites_id(grid(), "detect")
    shape = composites.random_shape
    monkeypatch.setattr(composites, "random_shape", lambda rng, size: (lambda m, b: (~m, b))(*shape(rng, size)))
    assert composites_id(grid(), "segment") != composites_id(first, "segment")  # other shapes: another key
