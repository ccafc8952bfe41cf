"""The notebooks' evidence: numbers, figures, per-block curves and run settings of the committed cpu report."""
from __future__ import annotations

import csv
import re

import pytest

from cnx2lite.notebook import evidence


def test_measured_reads_the_committed_report():
    with open(evidence.REPORT / "results.csv", newline="") as f:
        row = next(r for r in csv.DictReader(f) if r["row"] == "K=50 FCMAE - scratch" and r["metric"] == "kNN top-1")
    got = evidence.measured(1, "K=50 FCMAE - scratch", "kNN top-1")
    assert (got.value, got.low, got.high) == (float(row["value"]), float(row["ci_low"]), float(row["ci_high"]))
    assert got.runs == tuple(float(v) for v in row["runs"].split()) and len(got.runs) > 1  # replicated
    assert got.low <= got.value <= got.high and str(got).startswith(f"{got.value:.1f} [")
    with pytest.raises(KeyError, match="table 1 has"):
        evidence.measured(1, "no such row")
    assert str(evidence.Measured(0.4597, 0.4545, 0.4653)) == "0.460 [0.455, 0.465]"
    assert evidence.report_figure("label_efficiency").is_file()
    with pytest.raises(FileNotFoundError, match="figures:"):
        evidence.report_figure("nothing")


def test_the_rows_figures_and_epochs_the_notebooks_read_are_in_the_report():
    for k in ("K=10", "K=50", "K=all"):
        for row in ("FCMAE", "scratch", "FCMAE - scratch"):
            for metric in ("fine-tuned top-1", "kNN top-1"):
                evidence.measured(1, f"{k} {row}", metric)
    for row in ("V1 FCMAE gain", "V2 FCMAE gain", "V2 gain - V1 gain"):
        evidence.measured(2, row)
    for block in ("V1", "V2"):
        for row in ("sparse conv FCMAE", "dense conv FCMAE", "sparse - dense"):
            evidence.measured(3, f"{block} {row}")
    for size in (96, 224):
        for metric in ("feature cosine distance", "centered cosine distance", "effective rank / channels",
                       "off channels (share)"):
            for encoder in ("V1 FCMAE", "V2 FCMAE", "V2 random init", "V2 supervised (all labels)"):
                evidence.measured(4, f"{encoder} at {size} px", metric)
        for metric in ("feature cosine distance", "effective rank / channels"):
            evidence.measured(4, f"V2 FCMAE - V1 FCMAE at {size} px", metric)
    grn_rows = evidence.measured_rows(5)  # notebook 03: the rows table 5 has so far, each beside its difference
    assert {"nothing", "GRN - nothing", "LRN", "GRN - LRN"} <= set(grn_rows)
    assert all(row.removeprefix("GRN - ") in grn_rows for row in grn_rows)
    assert list(grn_rows) == [r["row"] for r in csv.DictReader((evidence.REPORT / "results.csv").open())
                              if r["table"] == "5" and r["metric"] == "fine-tuned top-1"]  # the report's order
    assert not evidence.measured_rows(9)
    for name in ("label_efficiency", "codesign", "reconstruction", "feature_collapse_96px", "feature_collapse_224px",
                 "grn_ablation"):
        assert evidence.report_figure(name).is_file()
    assert evidence.finetune_epochs().startswith("K=10: ")


def test_a_verdict_follows_the_interval_and_negation_turns_a_difference_round():
    """The report's words (cnx2lite.reproduce.report_rows.verdict), without its Markdown."""
    assert evidence.Measured(4.3, 1.6, 7.1).verdict("A beats B") == (
        "reproduces: A beats B (interval over runs and images excludes 0: 4.3 [1.6, 7.1])")
    assert evidence.Measured(-7.5, -9.5, -5.5).verdict("A beats B").startswith(
        "contradicted at this budget: the opposite of A beats B (")
    assert evidence.Measured(0.2, -1.7, 2.1).verdict("A beats B").startswith("not shown at this budget: A beats B: ")
    assert evidence.Measured(0.05, 0.01, 0.09).verdict("A beats B").endswith("0.050 [0.010, 0.090])")  # 3 digits
    assert evidence.Measured(0.0, 0.0, 1.0).verdict("A beats B").startswith("not shown")  # 0 itself is not excluded
    flipped = -evidence.Measured(-0.034, -0.040, -0.029, "paper", (-0.03, -0.04))
    assert flipped == evidence.Measured(0.034, 0.029, 0.040, "paper", (0.03, 0.04))
    single = evidence.Measured(4.3, 1.6, 7.1, runs=(4.3,), replicated=False)  # was worded as replicated (stop 36)
    assert single.verdict("A beats B").startswith("one run per arm, intervals over images only: A beats B: higher")
    assert evidence.measured(1, "K=50 FCMAE - scratch").replicated  # the committed report's rows are
    assert evidence.measured(2, "V2 gain - V1 gain").replicated and not evidence.measured(2, "V2 gain - V1 gain").runs
    assert flipped.verdict("V1 has more").startswith("reproduces")


def test_whether_a_row_is_replicated_is_read_from_its_own_column(tmp_path, monkeypatch):
    """A difference of single runs in a table whose other rows are replicated (a half-trained table) is worded as
    single runs: the notebooks guessed it from the other rows of its table."""
    (tmp_path / "results.csv").write_text(
        "table,row,metric,value,ci_low,ci_high,runs,replicated,paper\n"
        "5,LRN,fine-tuned top-1,42.0,39.7,44.2,39.0 43.4,1,\n"
        "5,GRN - BN,fine-tuned top-1,2.5,0.5,4.5,,0,\n")
    monkeypatch.setattr(evidence, "REPORT", tmp_path)
    evidence._rows.cache_clear()
    try:
        assert evidence.measured(5, "LRN").replicated and not evidence.measured(5, "GRN - BN").replicated
        assert evidence.measured(5, "GRN - BN").verdict("GRN beats BN").startswith("one run per arm")
    finally:
        evidence._rows.cache_clear()


def test_a_report_section_is_its_heading_to_the_next_and_none_while_not_trained(tmp_path, monkeypatch):
    """Notebook 06 showed table 6 by partitioning at '## 6. Transfer', the trained section's heading only: had the
    pending section carried it, the notebook would have printed 'Not trained yet.' and failed on the missing figure."""
    table_1 = evidence.report_section(1)
    assert table_1.startswith("## 1. FCMAE vs scratch") and "\n## " not in table_1 and "![" not in table_1
    pending = "# Report\n\n## 6 transfer to dense tasks\n\nNot trained yet.\n\n## Run times\n\n| a |\n"
    trained = ("# Report\n\n## 10 other\n\nten\n\n## 1. FCMAE\n\none\n\n## 6. Transfer to dense tasks\n\n"
               "| task | V2 |\n|---|---|\n| segment | 20.9 |\n\n![transfer](transfer.png)\n\n- a verdict\n")
    monkeypatch.setattr(evidence, "REPORT", tmp_path)
    (tmp_path / "report.md").write_text(pending)
    assert evidence.report_section(6) is None
    with pytest.raises(ValueError, match="has no section of table 7"):
        evidence.report_section(7)
    (tmp_path / "report.md").write_text(trained)
    assert evidence.report_section(6) == ("## 6. Transfer to dense tasks\n\n| task | V2 |\n|---|---|\n"
                                          "| segment | 20.9 |\n\n- a verdict\n")
    assert evidence.report_section(1) == "## 1. FCMAE\n\none\n"  # not table 10's


def test_collapse_curves_come_from_the_report_s_per_block_file():
    with open(evidence.REPORT / "feature_collapse.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if (r["img_size"], r["point"], r["encoder"], r["stat"])
                == ("96", "gelu", "V1 FCMAE", "effective_rank")]
    curve = evidence.collapse_curve("V1 FCMAE", "effective_rank", 96)
    blocks = sorted((int(r["block"]), r) for r in rows if r["block"] != "0")
    assert list(curve) == [r["layer"] for _, r in blocks] and len(curve) == 12  # input to output, Atto's 12 blocks
    first = blocks[0][1]
    assert curve[first["layer"]] == evidence.Measured(float(first["value"]), float(first["low"]), float(first["high"]),
                                                      runs=tuple(float(v) for v in first["run_values"].split()))
    mean = evidence.collapse_mean("V1 FCMAE", "effective_rank", 96)
    assert mean.value == float(next(r for r in rows if r["block"] == "0")["value"]) and len(mean.runs) == 2
    assert mean.value == pytest.approx(evidence.measured(4, "V1 FCMAE at 96 px", "effective rank / channels").value,
                                       abs=1e-4)  # results.csv rounds to 4 places
    assert list(evidence.collapse_curve("V2 FCMAE", "distance", 224, point="grn"))[0].endswith(".grn")
    contrast = evidence.collapse_mean("V2 FCMAE - V1 FCMAE", "saturated", 96)
    assert contrast.low <= contrast.value <= contrast.high and contrast.runs == ()
    with pytest.raises(KeyError, match="only its mean over blocks"):
        evidence.collapse_curve("V2 FCMAE - V1 FCMAE", "saturated", 96)
    with pytest.raises(KeyError, match="it has .*'V1 FCMAE', 'dead', 96, 'gelu'"):
        evidence.collapse_mean("V1 FCMAE", "dead", 128)


def test_the_report_s_run_settings_come_from_its_committed_records():
    config = evidence.report_run_config("pretrain-v2-p0")
    assert config["task"] == "pretrain" and config["name"] == "pretrain-v2-p0" and 0 < config["mask_ratio"] < 1
    assert evidence.report_run_config("pretrain-v1-p0")["block"] == "v1"
    with pytest.raises(FileNotFoundError, match="its runs: .*pretrain-v2-p0"):
        evidence.report_run_config("pretrain-v2")


def test_the_evidence_helpers_check_their_arguments_by_type():
    """measured('1', ...) said 'table 1 has: []' and report_run_config(None) raised a raw TypeError (round 15)."""
    for call, says in ((lambda: evidence.measured("1", "K=50 FCMAE"), "table must be int, got '1'"),
                       (lambda: evidence.collapse_mean("V1 FCMAE", "distance", "96"), "img_size must be int"),
                       (lambda: evidence.report_run_config(None), "name must be str, got None"),
                       (lambda: evidence.Measured(1.0, 0.5, 2.0).verdict(None), "claim must be str, got None")):
        with pytest.raises(ValueError, match=re.escape(says)):
            call()
