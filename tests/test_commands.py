"""The command layer's one error boundary (:mod:`cnx2lite.commands`): every subcommand through the same fault matrix.

Each subcommand the parser knows gets a small, valid invocation (``INVOCATIONS``; a new command without one fails
``test_every_subcommand_is_in_the_matrix``), then every fault: Ctrl-C, a bug deep inside, a full disk, missing data,
an unreadable image, an output path that is a file. Whatever the command, the result is an exit status and at most
one line on stderr, never a traceback.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnx2lite import create_model, imagenette
from cnx2lite.commands import build_parser, main
from conftest import make_image_folder

INVOCATIONS = {  # subcommand -> arguments; {data}, {output}, {run} are filled in per test
    "demo": ["demo", "--quick", "--data", "{data}", "--output", "{output}"],
    "reproduce": ["reproduce", "--scale", "smoke", "--data", "{data}", "--output", "{output}"],
    "pretrain": ["pretrain", "--preset", "smoke", "--data", "{data}", "--output", "{output}", "--batch-size", "4"],
    "finetune": ["finetune", "--preset", "smoke", "--data", "{data}", "--output", "{output}", "--batch-size", "4"],
    "transfer": ["transfer", "--task", "segment", "--preset", "smoke", "--data", "{data}", "--output", "{output}",
                 "--composites", "4", "--val-composites", "2"],
    "eval": ["eval", "--checkpoint", "{run}", "--data", "{data}"],
    "download": ["download", "imagenette", "--data", "{output}"],
    "probe": ["probe", "--checkpoint", "random", "--data", "{data}", "--img-size", "64"],
    "collapse": ["collapse", "--encoder", "a={run},random", "--data", "{data}", "--img-size", "64", "--images", "4",
                 "--resamples", "10", "--rank-resamples", "2", "--output", "{output}"],
    "export": ["export", "--checkpoint", "random", "--format", "torchscript", "--img-size", "64", "--output",
               "{output}"],
    "bench model": ["bench", "model", "--img-size", "64", "--batch-size", "2", "--iters", "1", "--warmup", "0",
                    "--amp", "fp32"],
    "bench fcmae": ["bench", "fcmae", "--img-size", "64", "--batch-size", "2", "--iters", "1", "--warmup", "0",
                    "--backends", "gather", "dense"],
    "bench train": ["bench", "train", "--preset", "smoke", "--data", "{data}", "--steps", "1", "--iters", "1",
                    "--warmup", "0", "--tasks", "finetune"],
}


def subcommands() -> set[str]:
    """Every leaf command of the parser: 'pretrain', 'bench model', ..."""
    names = set()
    for action in build_parser()._subparsers._group_actions:
        for name, parser in action.choices.items():
            nested = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
            names |= {f"{name} {sub}" for sub in nested[0].choices} if nested else {name}
    return names


def test_every_subcommand_is_in_the_matrix():
    assert subcommands() == set(INVOCATIONS)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def finetuned(folder, tmp_path_factory) -> Path:
    from cnx2lite.train import finetune

    output = tmp_path_factory.mktemp("runs")
    return finetune("smoke", data=str(folder), output=str(output), name="ft", batch_size=4).run_dir


def invoke(command: str, capsys, **paths) -> tuple[int, str]:
    args = [a.format(**paths) for a in INVOCATIONS[command]]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return exit_info.value.code, err.strip().splitlines()[-1] if err.strip() else ""


def raising(error: BaseException):
    def fail(*args, **kwargs):
        raise error
    return fail


FAULTS = {  # fault -> (what raises it, the exit statuses allowed, what the one line says)
    "ctrl-c": (KeyboardInterrupt(), (130,), "interrupted"),
    "bug": (ZeroDivisionError("planted"), (1,), "internal error"),
    "disk full": (OSError(errno.ENOSPC, "No space left on device"), (0, 2), "No space left on device"),
}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("command", sorted(INVOCATIONS))
def test_a_fault_anywhere_is_one_line_and_an_exit_status(command, fault, folder, finetuned, tmp_path, capsys,
                                                         monkeypatch):
    """The fault strikes where every command passes: a model's forward (downloading: fetching the archive) for
    Ctrl-C and the bug, every file write for the full disk."""
    error, statuses, says = FAULTS[fault]
    monkeypatch.setattr(imagenette, "Imagenette", raising(error))  # download never reaches the network
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if fault == "disk full":
        for owner, name in ((torch, "save"), (Path, "write_text"), (Path, "write_bytes"), (torch.jit.ScriptModule,
                                                                                            "save")):
            monkeypatch.setattr(owner, name, raising(error))
    else:
        monkeypatch.setattr(torch.nn.Module, "__call__", raising(error))
    status, line = invoke(command, capsys, data=folder, output=tmp_path / "out", run=finetuned)
    assert status in statuses, (status, line)
    if status:
        assert says in line, line
    if fault == "bug":
        log = Path(line.split("traceback: ", 1)[1].split(";", 1)[0])
        assert "ZeroDivisionError: planted" in log.read_text() and log.is_relative_to(tmp_path / "cache")


def bad_inputs(folder: Path, tmp_path: Path) -> dict[str, dict[str, Path]]:
    """Fault -> the paths that carry it."""
    corrupt = shutil.copytree(folder, tmp_path / "corrupt")
    (corrupt / "train" / "class1" / "3.png").write_bytes(b"not an image")
    (corrupt / "val" / "class0" / "1.png").write_bytes(b"\x89PNG truncated")
    a_file = tmp_path / "a_file"
    a_file.write_text("not a folder")
    return {"missing data": {"data": tmp_path / "nowhere"}, "unreadable image": {"data": corrupt},
            "output is a file": {"output": a_file}}


SLOTS = {"missing data": "data", "unreadable image": "data", "output is a file": "output"}  # which path carries it


@pytest.mark.parametrize("fault", SLOTS)
@pytest.mark.parametrize("command", sorted(INVOCATIONS))
def test_bad_paths_are_one_line_and_exit_2(command, fault, folder, finetuned, tmp_path, capsys, monkeypatch):
    """Every command that takes the path meets the fault: refused in one line (exit 2) or handled (exit 0)."""
    slot = "{" + SLOTS[fault] + "}"
    if slot not in INVOCATIONS[command]:
        pytest.skip(f"{command} takes no {slot}")
    paths = dict(data=folder, output=tmp_path / "out", run=finetuned) | bad_inputs(folder, tmp_path)[fault]
    if command in ("demo", "download") and fault == "missing data":
        monkeypatch.setattr(imagenette, "Imagenette", raising(OSError("offline")))  # they download what is missing
    status, line = invoke(command, capsys, **paths)
    assert status in (0, 2), (status, line)
    if status:  # the line names its culprit: the path given, or a file under it
        assert line.startswith("error: ") and str(paths[SLOTS[fault]]) in line, line


def test_ctrl_c_while_the_command_starts_is_one_line():
    """Importing torch takes seconds; a Ctrl-C then is reported in one line with status 130, not a traceback."""
    # Ctrl-C as a terminal sends it: to a process that takes SIGINT (a test run in the background of a
    # non-interactive shell inherits it ignored, and Python then keeps ignoring it)
    starting = subprocess.Popen([sys.executable, "-m", "cnx2lite", "--help"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    time.sleep(0.3)  # after the interpreter's start, long before torch is loaded
    starting.send_signal(signal.SIGINT)
    out, err = starting.communicate(timeout=60)
    assert starting.returncode == 130 and err == "cnx2lite: interrupted while starting\n" and not out


def test_importing_the_package_loads_torch_only_when_the_api_is_used():
    code = ("import sys, cnx2lite; assert 'torch' not in sys.modules; "
            "assert cnx2lite.create_model('convnextv2_atto').dims[-1] == 320; assert 'torch' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_a_reader_that_goes_away_does_not_stop_training(tmp_path):
    """``cnx2lite pretrain ... | head -1``: the pipe breaks after the first line; the run trains to its end quietly."""
    folder = make_image_folder(tmp_path / "images")
    command = [sys.executable, "-m", "cnx2lite", "pretrain", "--preset", "smoke", "--epochs", "2", "--batch-size", "4",
               "--data", str(folder), "--output", str(tmp_path / "runs"), "--name", "piped"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert run.stdout.readline()
    run.stdout.close()  # as head -1 does
    assert run.wait(timeout=300) == 0, run.stderr.read()
    assert (tmp_path / "runs" / "piped" / "checkpoint-00000008.pt").is_file()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("args", [["finetune", "--preset", "smoke", "--show-config"], ["--help"], ["--version"],
                                  ["export", "--checkpoint", "random", "--model", "convnextv2_atto", "--format",
                                   "torchscript", "--img-size", "32", "--output", "{output}"]])
def test_a_full_stdout_is_named_as_stdout_not_as_a_full_disk_for_the_run(args, tmp_path):
    """... and stops the command before it writes a file (an export left behind refused the same command again)."""
    output = tmp_path / "model.torchscript.pt"
    with open("/dev/full", "w") as full:
        run = subprocess.run([sys.executable, "-m", "cnx2lite", *[a.format(output=output) for a in args]],
                             stdout=full, stderr=subprocess.PIPE, text=True, timeout=120)
    assert run.returncode == 2 and run.stderr == "error: cannot write to stdout (No space left on device)\n", run.stderr
    assert not output.exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("command", [["finetune"], ["transfer", "--task", "segment", "--composites", "4",
                                                    "--val-composites", "2"]])
def test_a_training_run_to_a_full_stdout_stops_before_it_writes_its_folder(command, folder, tmp_path):
    """The run says what it is before it writes config.json: transfer, which decodes nothing first, left its folder
    (round 14's SN_transfer_devfull)."""
    with open("/dev/full", "w") as full:
        run = subprocess.run([sys.executable, "-m", "cnx2lite", *command, "--preset", "smoke", "--batch-size", "2",
                              "--data", str(folder), "--output", str(tmp_path / "runs"), "--name", "full"],
                             stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert run.returncode == 2 and run.stderr == "error: cannot write to stdout (No space left on device)\n", run.stderr
    assert not (tmp_path / "runs" / "full").exists()


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_a_stderr_that_cannot_be_written_loses_the_warning_not_the_run(tmp_path):
    folder = make_image_folder(tmp_path / "images", train=8, val=4)
    command = [sys.executable, "-m", "cnx2lite", "probe", "--checkpoint", "random", "--data", str(folder),
               "--img-size", "32", "--method", "knn", "--images-per-class", "9", "--k", "5"]  # warns: 8 per class
    with open("/dev/full", "w") as full:
        run = subprocess.run(command, stdout=subprocess.PIPE, stderr=full, text=True, timeout=300)
    assert run.returncode == 0 and "top-1" in run.stdout, run.stdout


def test_a_reader_gone_before_the_result_ends_the_command_quietly():
    """``cnx2lite ... | head -c0``: the pipe is closed before anything is printed; no error, no traceback at exit."""
    command = [sys.executable, "-m", "cnx2lite", "finetune", "--preset", "smoke", "--show-config"]
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run.stdout.close()  # long before torch is imported and the config printed
    assert run.wait(timeout=120) == 0 and run.stderr.read() == ""


def test_a_mistyped_release_tag_lists_the_tags():
    with pytest.raises(ValueError, match="released tag .*fcmae.*got 'in1K'"):
        create_model("convnextv2_atto", pretrained="in1K")


def test_a_warning_of_the_package_is_one_line_and_the_command_goes_on(tmp_path, capsys):
    """A class with fewer images than asked for is named in one ``warning:`` line; the probe still runs."""
    folder = make_image_folder(tmp_path / "images", train=8, val=4)
    with pytest.raises(SystemExit) as done:
        main(["probe", "--checkpoint", "random", "--data", str(folder), "--img-size", "32", "--method", "knn",
              "--images-per-class", "9", "--k", "5"])
    err = capsys.readouterr().err
    assert done.value.code == 0, err
    assert err.splitlines() == [f"warning: --images-per-class=9: 2 of 2 class(es) of {folder / 'train'} hold fewer "
                                "images and keep all they have: class0 (8), class1 (8)"], err


def test_a_training_run_says_a_short_class_on_stderr_like_every_warning(tmp_path, capsys):
    """The run's own note of a short class is a warning of the package: stderr, so ``> log`` leaves it on the
    terminal."""
    folder = make_image_folder(tmp_path / "images", train=8, val=4)
    args = [a.format(data=folder, output=tmp_path / "runs") for a in INVOCATIONS["finetune"]]
    with pytest.raises(SystemExit) as done:
        main([*args, "--images-per-class", "9", "--no-progress"])
    out, err = capsys.readouterr()
    assert done.value.code == 0, err
    assert err.splitlines() == [f"warning: images_per_class=9: 2 of 2 class(es) of {folder / 'train'} hold fewer "
                                "images and keep all they have: class0 (8), class1 (8)"], err
    assert "warning" not in out


def test_paths_given_with_a_tilde_are_read_and_named_like_any_other(tmp_path, monkeypatch, capsys):
    """'~' as a shell leaves it in --flag=~/x: the config is read from home, a missing file is named by its flag."""
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = make_image_folder(tmp_path / "images", train=8, val=4)
    args = [a.format(data=folder, output=tmp_path / "runs") for a in INVOCATIONS["finetune"]]
    with pytest.raises(SystemExit) as done:
        main([*args, "--pretrained", "~/nowhere"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err == f"error: --pretrained {tmp_path / 'nowhere'}: does not exist\n", err
    (tmp_path / "saved.json").write_text(json.dumps({"task": "finetune", "epochs": 3}))
    with pytest.raises(SystemExit) as done:
        main(["finetune", "--config", "~/saved.json", "--show-config"])
    assert done.value.code == 0 and json.loads(capsys.readouterr().out)["epochs"] == 3


def test_a_missing_path_a_replayed_config_gives_is_named_as_the_configs(tmp_path, capsys):
    """Not a bare ``error: /x: does not exist``: the path came from the file, so the file and its field are named."""
    folder = make_image_folder(tmp_path / "images", train=8, val=4)
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps({"task": "finetune", "data": str(folder), "output": str(tmp_path / "runs"),
                                 "batch_size": 4, "pretrained": str(tmp_path / "gone")}))
    with pytest.raises(SystemExit) as done:
        main(["finetune", "--config", str(saved)])
    err = capsys.readouterr().err
    assert done.value.code == 2 and err == f"error: config {saved}: pretrained {tmp_path / 'gone'}: does not exist\n"


def test_a_config_whose_two_places_were_edited_alike_with_a_tilde_is_replayed(tmp_path, monkeypatch, capsys):
    """'~/runs', [64, 64] and a null lr at the top level and in 'requested' agree: both are resolved alike before
    they are compared ('~' expanded, the size as 64, the lr from base_lr)."""
    monkeypatch.setenv("HOME", str(tmp_path))
    fields = {"task": "finetune", "epochs": 3, "output": "~/runs", "img_size": [64, 64], "lr": None,
              "global_batch": None, "accum_steps": 2}
    (tmp_path / "saved.json").write_text(json.dumps({**fields, "requested": fields}))
    with pytest.raises(SystemExit) as done:
        main(["finetune", "--config", "~/saved.json", "--show-config"])
    out, err = capsys.readouterr()
    assert done.value.code == 0 and json.loads(out)["output"] == str(tmp_path / "runs"), err


def test_a_setting_of_another_task_edited_into_a_config_is_refused_not_ignored(tmp_path, capsys):
    """The API refuses ``dense_format`` for a fine-tuning; a config.json edited to hold it is refused alike (a value a
    preset of the task gives, e.g. the cpu preset's decoder_dim, is not an edit)."""
    fields = {"task": "finetune", "epochs": 3, "decoder_dim": 256}
    saved = tmp_path / "saved.json"
    saved.write_text(json.dumps({**fields, "requested": fields}))
    with pytest.raises(SystemExit) as done:
        main(["finetune", "--config", str(saved), "--show-config"])
    assert done.value.code == 0, capsys.readouterr().err
    capsys.readouterr()
    edited = {**fields, "dense_format": "ade20k"}
    saved.write_text(json.dumps({**edited, "requested": edited}))
    with pytest.raises(SystemExit) as done:
        main(["finetune", "--config", str(saved), "--show-config"])
    assert done.value.code == 2 and capsys.readouterr().err == (
        f"error: config: {saved}: dense_format 'ade20k' do(es) not apply to task 'finetune': the run would ignore it; "
        "remove it from 'requested', or train that task\n")


def test_a_probe_asked_for_more_neighbours_than_its_bank_holds_says_so(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "images", train=4, val=2)
    with pytest.raises(SystemExit) as done:
        main(["probe", "--checkpoint", "random", "--data", str(folder), "--img-size", "32", "--method", "knn",
              "--k", "50"])
    captured = capsys.readouterr()
    assert done.value.code == 0, captured.err
    assert captured.err.splitlines() == ["warning: k=50 is more than the 8 labeled images of the memory bank: all 8 "
                                         "vote"] and "knn top-1" in captured.out


@pytest.mark.parametrize("device", ["mps", "meta", "xpu:0", "gpu"])
def test_a_device_this_package_does_not_run_on_is_one_line(device, capsys):
    with pytest.raises(SystemExit) as done:
        main(["probe", "--checkpoint", "random", "--device", device])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and err.endswith(f"device must be auto, cpu, cuda or cuda:N; got {device!r}"), err


@pytest.mark.parametrize(("args", "code"), [(["eval", "--help"], 0), (["--version"], 0), (["finetune", "--nope"], 2)])
def test_help_or_a_usage_error_with_stdout_closed_is_no_traceback(args, code):
    """argparse prints to stderr when stdout is closed (``>&-``); nothing is left to flush (round 13's SN8, SN14)."""
    run = subprocess.run([sys.executable, "-m", "cnx2lite", *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                         text=True, timeout=120, preexec_fn=lambda: os.close(1))
    assert run.returncode == code and "Traceback" not in run.stderr and run.stderr.strip(), run.stderr


def test_a_command_started_with_stdout_closed_says_so_instead_of_losing_its_result():
    command = [sys.executable, "-m", "cnx2lite", "probe", "--checkpoint", "random", "--data", "nowhere"]
    closed = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120,
                            pass_fds=(), close_fds=True, preexec_fn=lambda: os.close(1))
    assert closed.returncode == 2 and closed.stderr == ("error: probe: stdout is closed, so what it prints would be "
                                                        "lost; send it somewhere (> file, or > /dev/null to drop "
                                                        "it)\n"), closed.stderr
