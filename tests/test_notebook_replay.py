"""``make notebooks``' check (:mod:`cnx2lite.notebook.replay`): the numbers a re-run prints against the stored ones."""
from __future__ import annotations

import os
import re

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from cnx2lite.data import ENV_VAR
from cnx2lite.notebook.replay import compare, printed_numbers


def printing(text: str, tags: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    cell = new_code_cell("print(...)", metadata={"tags": list(tags)})
    cell.outputs = [new_output("stream", name="stdout", text=text)]
    return cell


def test_printed_numbers_skip_paths_and_read_every_form():
    cell = printing("convnextv2 top-1 41.8% after 16 epochs, loss 1.5e-3, delta -0.25\n"
                    "run /tmp/cnx2lite-05-146ivgub/x2 ok\n")
    cell.outputs.append(new_output("execute_result", data={"text/plain": "(16, 3, 96, 96)"}, execution_count=1))
    cell.outputs.append(new_output("display_data", data={"text/markdown": "| mIoU | 20.9 [18.7, 23.1] |",
                                                         "text/plain": "<IPython.core.display.Markdown object>"}))
    assert printed_numbers(cell) == [1, 41.8, 16, 1.5e-3, -0.25, 16, 3, 96, 96, 20.9, 18.7, 23.1]


def test_numbers_within_tolerance_reproduce_and_others_are_named():
    stored = new_notebook(cells=[new_markdown_cell("# 1"), printing("top-1 41.80, loss 0.700"),
                                 printing("12.0 s per step", tags=("nbval-ignore-output",))])
    same = new_notebook(cells=[new_markdown_cell("# 1"), printing("top-1 41.81, loss 0.700"),
                               printing("31.5 s per step", tags=("nbval-ignore-output",))])
    assert compare(stored, same, rtol=0.01, atol=0.0) == []
    moved = new_notebook(cells=[new_markdown_cell("# 1"), printing("top-1 45.00, loss 0.700"), printing("9 s")])
    assert compare(stored, moved, rtol=0.01, atol=0.0) == ["code cell 1: 1 of 3 numbers differ: 45 (stored 41.8)"]
    fewer = new_notebook(cells=[printing("top-1 41.80"), printing("")])
    assert compare(stored, fewer, rtol=0.01, atol=0.0) == ["code cell 1: prints 2 numbers, 3 stored"]
    assert "out of date" in compare(stored, new_notebook(cells=[printing("1")]), rtol=0.01, atol=0.0)[0]


def test_a_relative_data_root_is_made_absolute_before_the_kernels_start_in_notebooks(tmp_path, monkeypatch):
    """make notebooks passed ../shared/data, which the kernels (running in notebooks/) resolved to another folder."""
    from cnx2lite.notebook import replay

    seen = []
    monkeypatch.setattr(replay, "replay", lambda names, *_, **__: seen.append(os.environ[ENV_VAR]) or True)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(ENV_VAR, "../shared/data")
    assert replay.main([]) == 0
    assert seen == [str(tmp_path.parent / "shared" / "data")]


def test_replaying_named_notebooks_trains_the_shared_runs_they_read_first_and_only_those(monkeypatch):
    """Replaying notebook 06 alone trained all six shared runs first (about 25 minutes), though it reads one; and a
    run left to train inside a kernel prints into its cell, which the comparison then counts."""
    from cnx2lite.notebook import replay, shared_runs

    trained, executed = [], []
    monkeypatch.setattr(shared_runs, "RUNS", {label: lambda label=label: trained.append(label) or label
                                              for label in shared_runs.RUNS})
    monkeypatch.setattr(replay, "execute", lambda name, timeout: executed.append((name, list(trained))) or name)
    monkeypatch.setattr(replay.nbformat, "write", lambda *_: None)
    monkeypatch.setattr(replay.nbformat, "read", lambda *_, **__: None)
    monkeypatch.setattr(replay, "compare", lambda *_: [])
    assert replay.replay(["06_transfer_dense"], 0.05, 0.01, 60)
    assert executed == [("06_transfer_dense", ["V2 FCMAE"])]  # trained before its kernel ran
    trained.clear()
    assert replay.replay(sorted(shared_runs.USES), 0.05, 0.01, 60) and trained == list(shared_runs.RUNS)


def test_what_each_notebook_reads_of_the_shared_runs_is_what_its_source_calls():
    calls = {"V2 FCMAE": r'fcmae_encoder\((|"v2")\)', "V1 FCMAE": r'fcmae_encoder\("v1"\)',
             "V2 FCMAE, dense-conv encoder": r'fcmae_encoder\("v2", sparse=False\)',
             "V2 fine-tuned from FCMAE (K=50)": r'finetuned\("fcmae"\)',
             "V2 fine-tuned from scratch (K=50)": r'finetuned\("scratch"\)',
             "V2 supervised (every label)": r"supervised\(\)"}
    from cnx2lite.notebook import replay, shared_runs

    assert set(calls) == set(shared_runs.RUNS)
    assert sorted(shared_runs.USES) == sorted(p.stem for p in replay.NOTEBOOKS.glob("[0-9][0-9]_*.py"))
    for notebook, used in shared_runs.USES.items():
        source = (replay.NOTEBOOKS / f"{notebook}.py").read_text()
        read = {label for label, call in calls.items() if re.search(r"shared_runs\." + call, source)}
        assert read == set(used), notebook
