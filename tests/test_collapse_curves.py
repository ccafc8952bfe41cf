"""Collapse curves over encoders and runs (cnx2lite.collapse_curves, cnx2lite collapse): the resampling that gives
their intervals, the per-run statistics against cnx2lite.collapse, and the command end to end on a tiny folder."""
from __future__ import annotations

import csv
import re
import shutil

import pytest
import torch

from cnx2lite import collapse, collapse_curves
from cnx2lite.bootstrap import Resampled, image_counts, resampled_contrast
from cnx2lite.commands import main
from cnx2lite.models import create_model
from cnx2lite.report_folder import CLAIM_FILE
from conftest import make_image_folder


def test_image_counts_are_draws_with_replacement_shared_by_seed():
    counts = image_counts(7, 50, seed=3)
    assert counts.shape == (50, 7) and (counts.sum(dim=1) == 7).all() and (counts >= 0).all()
    assert torch.equal(counts, image_counts(7, 50, seed=3)) and not torch.equal(counts, image_counts(7, 50, seed=4))
    assert (counts == 0).any()  # some image left out by some resample, as a bootstrap must
    with pytest.raises(ValueError, match="images and resamples must be >= 1"):
        image_counts(0, 5)


def test_resampled_mean_and_contrast():
    torch.manual_seed(0)
    counts = image_counts(40, 400)
    values = torch.randn(2, 40, 3)  # 2 runs, 40 images, 3 layers
    a = Resampled.mean_of(values, counts)
    assert torch.allclose(a.value, values.double().mean(dim=1))
    assert torch.allclose(a.draws[5, 1], (counts[5] @ values[1].double()) / 40)
    value, low, high = resampled_contrast([a, a], (1.0, -1.0))  # an arm against itself on the same images
    assert torch.allclose(value, torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert (low <= 1e-12).all() and (high >= -1e-12).all()
    # a mean of per-image noise: the interval is about +- 2 standard errors (the run level adds the runs' spread)
    one = Resampled.mean_of(values[:1], counts)
    value, low, high = resampled_contrast([one])
    se = values[0].double().std(dim=0) / 40 ** 0.5
    assert torch.allclose((high - low) / 2, 1.96 * se, rtol=0.25)
    with pytest.raises(ValueError, match="same image draws"):
        resampled_contrast([one, Resampled.mean_of(values[:1], counts[:10])], (1.0, -1.0))
    # runs that are blocks (run p of every arm on the same data): drawn once for all, a shared run effect cancels
    shifted = Resampled(a.value + 1.0, a.draws + 1.0)
    _, low, high = resampled_contrast([shifted, a], (1.0, -1.0), paired_runs=True)
    assert torch.allclose(high - low, torch.zeros(3, dtype=torch.float64), atol=1e-9)
    _, low, high = resampled_contrast([shifted, a], (1.0, -1.0))  # drawn on their own: the run spread counts
    assert ((high - low) > 0.1).all()
    with pytest.raises(ValueError, match="as many runs in every arm"):
        resampled_contrast([a, one], (1.0, -1.0), paired_runs=True)


def test_a_biased_whole_sample_statistic_gets_an_interval_around_its_value():
    """The effective rank of a resample is lower than the sample's (duplicated images add no direction): the normal
    interval is centred on the value, its width the draws' spread."""
    torch.manual_seed(1)
    samples = torch.randn(30, 40, dtype=torch.float64)  # fewer samples than dimensions: the rank is sample-bound
    counts = image_counts(30, 60)
    value = torch.tensor([[collapse.effective_rank(samples)]])
    draws = torch.tensor([[[collapse.effective_rank(samples, w)]] for w in counts])
    assert draws.mean() < value.item() - 1  # biased low
    v, low, high = resampled_contrast([Resampled(value, draws)])
    assert low.item() < v.item() < high.item()
    assert (high - low).item() / 2 == pytest.approx(1.96 * draws.std().item(), rel=1e-5)


def test_weighted_effective_rank_is_the_rank_of_the_repeated_samples():
    torch.manual_seed(2)
    samples = torch.randn(12, 5, dtype=torch.float64)
    weights = torch.tensor([2, 0, 1, 3, 1, 0, 1, 1, 2, 0, 0, 1], dtype=torch.float64)
    repeated = samples.repeat_interleave(weights.long(), dim=0)
    assert collapse.effective_rank(samples, weights) == pytest.approx(collapse.effective_rank(repeated), rel=1e-9)


def test_measure_run_matches_the_collapse_measures(one_thread):
    torch.manual_seed(3)
    model = create_model("convnextv2_atto", num_classes=0).eval()
    images = torch.randn(5, 3, 64, 64)
    counts = image_counts(5, 4)
    layers, stats = collapse_curves.measure_run(model, images, counts, positions=3, rank_resamples=2, batch_size=2)
    reference = collapse.collapse_by_layer(model, images)
    assert layers == [layer.name for layer in reference]
    for stat in collapse_curves.PER_IMAGE_STATS:
        value, draws = stats[stat]
        expected = torch.stack([getattr(layer, stat).mean() for layer in reference])
        assert torch.allclose(value, expected, atol=1e-6), stat
        assert draws.shape == (4, 12)
    value, draws = stats["effective_rank"]
    assert draws.shape == (2, 12) and ((value > 0) & (value <= 1)).all()
    # the last block's 2x2 maps: 3 of 4 positions per image, 15 samples of 1280 channels
    assert value[-1] * 1280 <= 15 + 1e-6
    again = collapse_curves.measure_run(model, images, counts, positions=3, rank_resamples=2, batch_size=5)[1]
    assert torch.allclose(again["effective_rank"][0], value)  # the same positions whatever the batching


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("images"), classes=3, train=2, val=3)


def collapse_command(folder, output, *extra) -> list[str]:
    return ["collapse", "--data", str(folder), "--img-size", "64", "--images", "6", "--resamples", "50",
            "--rank-resamples", "3", "--output", str(output), *extra]


def test_asking_for_more_images_than_the_split_holds_is_a_warning_and_measures_all(folder, tmp_path, capsys,
                                                                                   one_thread):
    with pytest.raises(SystemExit) as exit_info:
        main([*collapse_command(folder, tmp_path / "out", "--encoder", "a=random:v2"), "--images", "20"])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0 and "fewer" not in out, err
    assert err.splitlines() == [f"warning: --images 20: the val split of {folder} has 9 images; measuring all of "
                                "them"]


def test_a_home_output_expands_the_tilde(folder, tmp_path, capsys, monkeypatch, one_thread):
    """--output '~/col' wrote into a folder named '~' under the current folder (round 16)."""
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main([*collapse_command(folder, "~/col", "--encoder", "a=random:v2"), "--images", "4"])
    assert exit_info.value.code == 0, capsys.readouterr().err
    assert (tmp_path / "home" / "col" / "collapse.csv").is_file() and not (tmp_path / "~").exists()


def test_the_command_writes_curves_table_and_figure(folder, tmp_path, capsys, one_thread):
    output = tmp_path / "out"
    main_args = collapse_command(folder, output, "--encoder", "V2 random=random:v2,random:v2", "--encoder",
                                 "same=random:v2", "--encoder", "V1 random=random:v1", "--contrast", "V2 random",
                                 "same", "--contrast", "V1 random", "V2 random")
    with pytest.raises(SystemExit) as exit_info:
        main(main_args)
    assert exit_info.value.code == 0
    assert {p.name for p in output.iterdir()} == {"collapse.csv", "collapse.md", "collapse-64px.png", CLAIM_FILE}
    rows = list(csv.DictReader(open(output / "collapse.csv")))
    # 3 encoders after GELU + 2 V2 ones after GRN, 6 stats, 12 blocks + their mean; 2 contrasts (GRN: one) x 6 stats
    assert len(rows) == 5 * 6 * 13 + 3 * 6
    v2 = [r for r in rows if r["encoder"] == "V2 random" and r["point"] == "gelu" and r["stat"] == "distance"]
    assert v2[0]["block"] == "0" and len(v2[0]["run_values"].split()) == 2
    runs = [float(v) for v in v2[0]["run_values"].split()]
    assert float(v2[0]["value"]) == pytest.approx(sum(runs) / 2, abs=1e-4)
    # "same" is seed 0 of "V2 random": the contrast holds 0 but is not 0 (seed 1 differs)
    report = (output / "collapse.md").read_text()
    assert "| V1 random - V2 random | GELU |" in report and "| V2 random - same | GRN |" in report
    assert "V1 random" not in [r["encoder"] for r in rows if r["point"] == "grn"]  # V1 has no GRN
    assert "![collapse curves](collapse-64px.png)" in report
    # a refused collapse into the same folder changes nothing there
    with pytest.raises(SystemExit) as exit_info:
        main(collapse_command(folder, output, "--encoder", "b=random:v1", "--point", "grn"))
    assert exit_info.value.code == 2 and (output / "collapse-64px.png").is_file()
    # measured again at another size into the same folder: the earlier figure goes with the earlier numbers, and
    # only the files a collapse writes go: the user's own notes stay
    (output / "collapse-notes.md").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(collapse_command(folder, output, "--encoder", "b=random:v1", "--point", "gelu", "--img-size", "96"))
    assert exit_info.value.code == 0
    assert {p.name for p in output.iterdir()} == {"collapse.csv", "collapse.md", "collapse-96px.png",
                                                  "collapse-notes.md", CLAIM_FILE}
    # a folder holding a collapse.md that collapse did not write is someone's: refused, untouched
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "collapse.md").write_text("my notes")
    with pytest.raises(SystemExit) as exit_info:
        main(collapse_command(folder, mine, "--encoder", "b=random:v1", "--point", "gelu"))
    assert exit_info.value.code == 2 and "holds collapse.md that cnx2lite collapse did not write" in \
        capsys.readouterr().err
    assert [p.name for p in mine.iterdir()] == ["collapse.md"] and (mine / "collapse.md").read_text() == "my notes"


@pytest.mark.parametrize("args, says", [
    (["--encoder", "no label"], "--encoder: must be LABEL=SOURCE"),
    (["--encoder", "a=random:v3"], "random:v1 or random:v2"),
    (["--encoder", "a=random", "--encoder", "a=random:v1"], "--encoder labels must differ"),
    (["--encoder", "a=run", "--encoder", "a=other", "--along-training"], "--encoder labels must differ"),
    (["--encoder", "a=random", "--contrast", "a", "b"], "--contrast names 'b'"),
    (["--encoder", "a=nowhere/run"], "nowhere/run"),
    (["--encoder", "a=random", "--point", "ln"], "--point"),
    (["--encoder", "a=random:v1", "--point", "grn"], "none of the encoders has GRN"),
    (["--encoder", "a=random:v1,random:v2", "--point", "grn"], "mixes runs of 2 architectures"),
    (["--encoder", "a=random:v1,random:v2", "--point", "gelu"],  # averaged as reruns of one encoder (round 19's N33)
     "block=v1, grn_aggregation=l2, block_norm=none; dims [40, 80, 160, 320], depths [2, 2, 6, 2], block=v2"),
    (["--encoder", "a=random", "--rank-resamples", "60"], "must be at most resamples"),
    (["--encoder", "a=random", "--resamples", "1", "--rank-resamples", "1"], "resamples and rank_resamples must be >= "
                                                                              "2, got 1 and 1"),
    (["--encoder", "a=random", "--encoder", "b=random", "--contrast", "a", "b"], "--contrast a b: both encoders load "
                                                                                 "the same weights (random)"),
    (["--encoder", "a=random", "--encoder", "b=random:v1", "--contrast", "a", "b", "--along-training"],
     "--contrast is not measured with --along-training"),
    (["--encoder", "a=some/run,some/run"], "names a source twice"),
    (["--encoder", "a=random", "--img-size", "32"], "must be 64 or more"),
    (["--encoder", "a=random", "--images", "1"], "resample the images and need at least 2"),
])
def test_bad_input_is_one_line(args, says, folder, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(collapse_command(folder, tmp_path / "out", *args))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and says in err, err


def test_snapshots_along_training_and_the_budget_curve(folder, tmp_path, capsys, one_thread):
    """--keep-every-epochs keeps the weights at those epochs (never pruned, never resumed from); collapse
    --along-training measures every encoder at each epoch its runs kept."""
    from cnx2lite.rundir import RunDir
    from cnx2lite.train import pretrain

    runs = {}
    for block in ("v1", "v2"):
        result = pretrain("smoke", data=str(folder), output=str(tmp_path / "runs"), name=f"pre-{block}", block=block,
                          epochs=2, keep_every_epochs=1, keep_last=1, batch_size=4)
        runs[block] = result.run_dir
        assert sorted(RunDir(result.run_dir).snapshots()) == [1, 2] and len(RunDir(result.run_dir).checkpoints()) == 1
    output = tmp_path / "budget"
    with pytest.raises(SystemExit) as exit_info:
        main(collapse_command(folder, output, "--along-training", "--encoder", f"V1={runs['v1']}", "--encoder",
                              f"V2={runs['v2']}"))
    assert exit_info.value.code == 0, capsys.readouterr().err
    rows = list(csv.DictReader(open(output / "collapse-along-training-64px.csv")))
    assert {(r["epoch"], r["encoder"]) for r in rows} == {(e, b) for e in ("1", "2") for b in ("V1", "V2")}
    grn = {r["epoch"]: float(r["value"]) for r in rows if r["stat"] == "grn_change"}  # V2 only: V1 has no GRN
    assert {r["encoder"] for r in rows if r["stat"] == "grn_change"} == {"V2"} and set(grn) == {"1", "2"}
    assert all(0 < value < 1 for value in grn.values()), grn  # it moved off the identity, a little
    assert (output / "collapse-along-training-64px.png").is_file()
    report = (output / "collapse-along-training-64px.md").read_text()  # the budget question in numbers
    distance = {label: {r["epoch"]: float(r["value"]) for r in rows
                        if (r["encoder"], r["point"], r["stat"]) == (label, "gelu", "distance")}
                for label in ("V1", "V2")}
    change = {label: epochs["2"] - epochs["1"] for label, epochs in distance.items()}
    first, last = (collapse_curves.number(distance["V1"][epoch]) for epoch in ("1", "2"))
    assert f"| V1 | GELU | 1 | 1 -> 2 | {first} -> {last}: " in report, report
    contrast = re.search(r"\| V1 - V2 \| GELU \| (\S+) \[(\S+), (\S+)\]: (V1's change (above|below) V2's|not told "
                         r"apart)", report)
    assert contrast and abs(float(contrast[1]) - (change["V1"] - change["V2"])) < 3e-5, report  # the CSV's 5 digits
    assert "One run per encoder: the intervals are over images only" in report
    with pytest.raises(SystemExit):  # a per-layer report beside it leaves it be (QA round 22 C10: it was deleted)
        main(collapse_command(folder, output, "--encoder", "a=random"))
    assert (output / "collapse.csv").is_file() and (output / "collapse-along-training-64px.png").is_file()
    assert "cannot exceed what the sample spans here, whatever the encoder: at most 0.294 in stage 1" in (
        output / "collapse.md").read_text()  # 6 images x 8 positions: 47 / 160 channels (QA round 22 C13)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:  # a run and its last snapshot are one run (QA round 22 C03: two)
        main(collapse_command(folder, output, "--encoder", f"V2={runs['v2']},{runs['v2']}/snapshot-epoch-0002.pt"))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "hold the same weights" in err and len(err.splitlines()) == 1, err
    first = f"{runs['v2']}/snapshot-epoch-0001.pt"
    with pytest.raises(SystemExit) as exit_info:  # the same runs in another order (review 46: compared in order)
        main(collapse_command(folder, output, "--encoder", f"a={runs['v2']},{first}", "--encoder",
                              f"b={first},{runs['v2']}", "--contrast", "a", "b"))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "both encoders load the same weights" in err, err
    shutil.copytree(runs["v2"], tmp_path / "copy")
    with pytest.raises(SystemExit) as exit_info:  # a copy of a run folder is that run (review 46: counted twice)
        main(collapse_command(folder, output, "--along-training", "--encoder", f"V2={runs['v2']},{tmp_path / 'copy'}"))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "hold the same weights" in err and len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit) as exit_info:  # two encoders of one run: their changes differ by nothing (review 49)
        main(collapse_command(folder, output, "--along-training", "--encoder", f"a={runs['v2']}", "--encoder",
                              f"b={tmp_path / 'copy'}"))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "'a' and 'b' hold the same runs" in err and len(err.splitlines()) == 1, err
    with pytest.raises(SystemExit) as exit_info:  # a run without snapshots: one line saying how to get them
        main(collapse_command(folder, output, "--along-training", "--encoder", f"x={folder}"))
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2 and "--keep-every-epochs" in err and len(err.splitlines()) == 1


def test_the_budget_script_runs_tiny(tmp_path):
    """scripts/collapse_budget.sh end to end at the smoke preset: two pretrainings with kept epochs, the curve."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    folder = make_image_folder(tmp_path / "images")
    env = {**os.environ, "PYTHON": sys.executable, "DATA": str(folder), "OUTPUT": str(tmp_path), "PRESET": "smoke",
           "EPOCHS": "2", "EVERY": "1", "SIZE": "64", "IMAGES": "4", "RESAMPLES": "20", "RANK_RESAMPLES": "3",
           "OMP_NUM_THREADS": "1"}
    repo = Path(__file__).resolve().parents[1]
    done = subprocess.run(["bash", "scripts/collapse_budget.sh"], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = list(csv.DictReader(open(tmp_path / "report" / "collapse-along-training-64px.csv")))
    assert {(r["epoch"], r["encoder"]) for r in rows if r["point"] == "gelu"} == {
        (e, b) for e in ("1", "2") for b in ("V1 FCMAE", "V2 FCMAE", "V2 FCMAE, no GRN")}
    assert {(r["epoch"], r["encoder"]) for r in rows if r["stat"] == "grn_change"} == {("1", "V2 FCMAE"),
                                                                                       ("2", "V2 FCMAE")}
    assert {r["stat"] for r in rows if r["encoder"] == "V2 FCMAE, no GRN" and r["point"] == "grn"} == set()
    report = (tmp_path / "report" / "collapse-along-training-64px.md").read_text()
    assert all(f"| {pair} | GELU |" in report for pair in (  # each pair of arms' changes from epoch 1 to 2
        "V1 FCMAE - V2 FCMAE", "V1 FCMAE - V2 FCMAE, no GRN", "V2 FCMAE - V2 FCMAE, no GRN")), report


def test_a_share_too_small_for_three_decimals_is_not_printed_as_zero():
    """V1's dead channels (7e-5 of them) printed as -0.000 [-0.000, -0.000] read "V2 lower" on nothing visible
    (referee review F11): such numbers keep two significant digits; a true 0 stays 0.000."""
    from cnx2lite.collapse_curves import number
    assert [number(7e-5), number(-7e-5, "+"), number(0.0), number(-0.0344, "+"), number(5e-4)] == [
        "7.0e-05", "-7.0e-05", "0.000", "-0.034", "0.001"]


def test_the_sample_bounds_the_effective_rank_where_it_holds_fewer_rows_than_channels():
    """QA round 22 C13: 12 images at 64 px reach at most 47 / 1280 in atto's stage 4, whatever the encoder."""
    from cnx2lite.collapse_curves import rank_ceilings

    atto = (40, 80, 160, 320)
    assert rank_ceilings(atto, 12, 64) == pytest.approx({1: 95 / 160, 2: 95 / 320, 3: 95 / 640, 4: 47 / 1280})
    assert rank_ceilings(atto, 500, 96) == {}  # the report's 500 images: 4,000 rows in stage 4, over 1,280 channels
