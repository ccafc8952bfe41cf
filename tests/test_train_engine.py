"""End-to-end training runs on a tiny synthetic image folder: exact resume after Ctrl-C and kill -9,
NaN stop, 2-process DDP equal to one process, checkpoint evaluation, pretrain -> finetune."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from cnx2lite.rundir import RunDir, RunDirLockedError, load_checkpoint
from cnx2lite.train import NonFiniteLossError, evaluate_checkpoint, finetune, pretrain
from cnx2lite.train.tasks import FinetuneTask
from conftest import make_image_folder

REPO = Path(__file__).resolve().parents[1]
# Fine-tuning with every source of randomness on: RandAugment, random erasing, Mixup/CutMix, drop path, EMA.
FINETUNE_FLAGS = ["finetune", "--preset", "smoke", "--epochs", "2", "--batch-size", "4", "--mixup", "0.8",
                  "--cutmix", "1.0", "--drop-path", "0.1", "--label-smoothing", "0.1", "--save-every-steps", "1",
                  "--keep-last", "3"]
TOTAL_STEPS = 8  # 2 classes x 8 images / batch 4 = 4 steps per epoch, 2 epochs


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


def cli(args: list[str], data: Path, output: Path, name: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "cnx2lite", *args, "--data", str(data), "--output", str(output), "--name", name]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def wait_for_step(run_dir: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> int:
    """Poll until the run's newest checkpoint reaches ``step``; returns that checkpoint's step."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        path = RunDir(run_dir).latest_checkpoint()
        if path and int(Path(path).stem.split("-")[1]) >= step:
            return int(Path(path).stem.split("-")[1])
        assert process.poll() is None, f"run ended early:\n{process.stdout.read()}"
        time.sleep(0.01)
    raise TimeoutError(f"no checkpoint for step {step} in {run_dir}")


def finish(process: subprocess.Popen, timeout: float = 180) -> tuple[int, str]:
    out, _ = process.communicate(timeout=timeout)
    return process.returncode, out


@pytest.fixture(scope="module")
def reference(images, tmp_path_factory) -> Path:
    """An uninterrupted fine-tuning run; returns its run dir."""
    output = tmp_path_factory.mktemp("runs")
    rc, out = finish(cli(FINETUNE_FLAGS, images, output, "reference"))
    assert rc == 0, out
    return output / "reference"


def _same_tensors(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), f"{where} differs"
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _same_tensors(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same_tensors(x, y, f"{where}[{i}]")


def test_ctrl_c_then_kill_9_then_resume_is_bit_identical(images, reference, tmp_path):
    """Ctrl-C saves and exits with 130; kill -9 mid-epoch loses only the steps since the last
    checkpoint; after two resumes (with 2 DataLoader workers, unlike the reference) model, EMA,
    optimizer and the logged losses equal the uninterrupted run's exactly."""
    run_dir = tmp_path / "interrupted"
    first = cli(FINETUNE_FLAGS, images, tmp_path, "interrupted")
    wait_for_step(run_dir, 2, first)
    first.send_signal(signal.SIGINT)
    rc, out = finish(first)
    assert rc == 130 and "SIGINT: stopping after this step" in out, out
    assert out.splitlines()[-1].startswith("finetune: interrupted, checkpoint "), out  # stderr's last line
    stopped_at = load_checkpoint(run_dir)["position"]["global_step"]
    assert 2 <= stopped_at < TOTAL_STEPS

    second = cli([*FINETUNE_FLAGS, "--resume", "auto", "--num-workers", "2"], images, tmp_path, "interrupted")
    killed_at = wait_for_step(run_dir, 5, second)
    second.kill()  # SIGKILL: no handler runs
    assert finish(second)[0] == -signal.SIGKILL
    assert killed_at < TOTAL_STEPS, "the run finished before it could be killed mid-way"

    rc, out = finish(cli([*FINETUNE_FLAGS, "--resume", "auto", "--num-workers", "2"], images, tmp_path, "interrupted"))
    assert rc == 0 and "resumed from" in out, out
    resumed, expected = load_checkpoint(run_dir), load_checkpoint(reference)
    assert resumed["position"] == expected["position"]
    assert (expected["position"]["epoch"], expected["position"]["global_step"]) == (2, TOTAL_STEPS)
    for key in ("model", "ema", "optimizer"):
        _same_tensors(resumed[key], expected[key], key)
    losses = [[(r["kind"], r["step"], r.get("train_loss"), r.get("val_loss")) for r in ckpt["history"]]
              for ckpt in (resumed, expected)]
    assert losses[0] == losses[1]
    elapsed = [r["time_s"] for r in resumed["history"]]
    assert elapsed == sorted(elapsed), f"time_s must add up over the resumes, got {elapsed}"


KILLED_WHILE_SAVING = """
import os, signal, sys, torch
from cnx2lite.commands import main
real_save, saves = torch.save, []
def save_then_die(obj, f, *args, **kwargs):  # the third checkpoint write dies half-way: kill -9, no handler runs
    saves.append(1)
    if len(saves) == 3:
        f.write(b"the first bytes of a checkpoint")
        f.flush()
        os.kill(os.getpid(), signal.SIGKILL)
    return real_save(obj, f, *args, **kwargs)
torch.save = save_then_die
main(sys.argv[1:])
"""


def test_kill_9_while_a_checkpoint_is_written_then_resume_is_bit_exact(images, reference, tmp_path):
    """A process killed inside a checkpoint write leaves the previous checkpoints intact and a partial temporary file,
    which the resumed run removes; the run then ends bit-identical to an uninterrupted one."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-c", KILLED_WHILE_SAVING, *FINETUNE_FLAGS, "--data", str(images), "--output",
               str(tmp_path), "--name", "killed"]
    killed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    run_dir = tmp_path / "killed"
    assert killed.returncode == -signal.SIGKILL, killed.stdout + killed.stderr
    assert [Path(p).name for p in RunDir(run_dir).checkpoints()] == ["checkpoint-00000001.pt", "checkpoint-00000002.pt"]
    assert len(list(run_dir.glob(".checkpoint-00000003.tmp-*.pt"))) == 1
    rc, out = finish(cli([*FINETUNE_FLAGS, "--resume", "auto"], images, tmp_path, "killed"))
    assert rc == 0 and f"resumed from {run_dir / 'checkpoint-00000002.pt'}" in out, out
    assert not list(run_dir.glob("*.tmp-*"))
    resumed, expected = load_checkpoint(run_dir), load_checkpoint(reference)
    for key in ("model", "ema", "optimizer"):
        _same_tensors(resumed[key], expected[key], key)


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(images, reference, tmp_path):
    """A checkpoint cut short (a full disk, a copy that stopped) must not lose the run: resume skips it, saying so,
    continues from the one before and ends bit-identical; a half-written temporary file of a killed save is removed."""
    run_dir = tmp_path / "cut"
    shutil.copytree(reference, run_dir)
    (run_dir / ".lock").unlink(missing_ok=True)
    newest = RunDir(run_dir).latest_checkpoint()
    newest.write_bytes(newest.read_bytes()[:1000])
    orphan = run_dir / f".{newest.stem}.tmp-12345.pt"  # what replaced_atomically writes before its rename
    orphan.write_bytes(b"partial")
    rc, out = finish(cli([*FINETUNE_FLAGS, "--resume", "auto"], images, tmp_path, "cut"))
    assert rc == 0 and f"skipping unreadable checkpoint {newest}" in out, out
    assert f"resumed from {run_dir / f'checkpoint-{TOTAL_STEPS - 1:08d}.pt'}" in out, out
    assert not orphan.exists() and Path(f"{newest}.unreadable").is_file()  # kept for a look, out of the way
    resumed, expected = load_checkpoint(run_dir), load_checkpoint(reference)
    _same_tensors(resumed["model"], expected["model"], "model")


def test_eval_of_a_checkpoint_matches_the_run(images, reference):
    ckpt = RunDir(reference).latest_checkpoint()
    last = load_checkpoint(ckpt)["history"][-1]
    result = evaluate_checkpoint(ckpt, str(images))
    assert result["images"] == 8 and result["top1"] == pytest.approx(last["val_top1"])
    assert evaluate_checkpoint(ckpt, str(images), use_ema=True)["top1"] == pytest.approx(last["ema_top1"])


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(images, tmp_path, monkeypatch):
    calls = []
    original = FinetuneTask.loss

    def loss_nan_at_third_step(self, *args):
        calls.append(1)
        loss = original(self, *args)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(FinetuneTask, "loss", loss_nan_at_third_step)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at epoch 0, step 2 .* last good checkpoint is .*"
                                                 r"checkpoint-00000002\.pt"):
        finetune("smoke", data=str(images), output=str(tmp_path), name="nan", batch_size=4, save_every_steps=1)
    good = load_checkpoint(tmp_path / "nan")
    assert good["position"]["global_step"] == 2
    assert all(torch.isfinite(v).all() for v in good["model"].values())


def test_a_stop_asked_for_during_the_last_epochs_end_reports_an_interrupted_but_finished_run(images, tmp_path,
                                                                                              monkeypatch):
    """Ctrl-C while the last epoch is evaluated: every step has trained and the final checkpoint is saved, and the run
    says it was interrupted (so the command exits 130, as asked); a resume then trains nothing."""
    from cnx2lite.train import engine

    evaluate = engine.evaluate
    calls = []

    def ctrl_c_at_the_last_evaluation(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # epochs=2: the second evaluation is the last epoch's
            signal.raise_signal(signal.SIGINT)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", ctrl_c_at_the_last_evaluation)
    run = dict(data=str(images), output=str(tmp_path), name="stopped", batch_size=4, epochs=2, ema_decay=0.0)
    result = finetune("smoke", **run)
    assert result.interrupted and result.history[-1]["kind"] == "epoch" and result.history[-1]["epoch"] == 2
    assert load_checkpoint(tmp_path / "stopped")["position"]["global_step"] == TOTAL_STEPS
    monkeypatch.undo()
    again = finetune("smoke", **run, resume="auto")
    assert not again.interrupted and again.history == result.history


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_equals_one_process_with_the_same_global_batch(images, tmp_path):
    """gloo DDP, 2 ranks x 4 images vs 1 process x 8: per-sample seeds make the augmentations and
    FCMAE masks of each image the same, so only float summation order may differ."""
    flags = ["pretrain", "--preset", "smoke", "--epochs", "2", "--amp", "fp32"]  # auto may pick bf16 on a CPU
    single = cli([*flags, "--batch-size", "8"], images, tmp_path, "single")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
                "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "cnx2lite", *flags,
                "--batch-size", "4", "--data", str(images), "--output", str(tmp_path), "--name", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ddp = subprocess.Popen(torchrun, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for process in (single, ddp):
        rc, out = finish(process)
        assert rc == 0, out
    a = load_checkpoint(tmp_path / "single")
    b = load_checkpoint(tmp_path / "ddp")
    assert a["position"] == b["position"] and a["position"]["global_step"] == 4
    assert a["config"]["global_batch"] == b["config"]["global_batch"] == 8
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    losses = [[r["train_loss"] for r in ckpt["history"] if r["kind"] == "train"] for ckpt in (a, b)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-5) and losses[0][0] != losses[0][-1]


def test_two_nodes_through_torchrun_rendezvous_equal_one_process(images, tmp_path):
    """The multi-node path: 2 "nodes" x 1 process on this machine, joined by torchrun's c10d rendezvous (gloo), train
    what one process does with the same global batch."""
    flags = ["pretrain", "--preset", "smoke", "--epochs", "2", "--amp", "fp32"]
    single = cli([*flags, "--batch-size", "8"], images, tmp_path, "single")
    endpoint = f"127.0.0.1:{_free_port()}"
    nodes = [subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}",
                               "--nproc-per-node=1", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
                               "--rdzv-id=cnx2lite-test", "-m", "cnx2lite", *flags, "--batch-size", "4",
                               "--data", str(images), "--output", str(tmp_path), "--name", "nodes"],
                              cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
             for rank in (0, 1)]
    for process in (single, *nodes):
        rc, out = finish(process)
        assert rc == 0, out
    a, b = load_checkpoint(tmp_path / "single"), load_checkpoint(tmp_path / "nodes")
    assert a["position"] == b["position"] and b["config"]["global_batch"] == 8
    for key, value in a["model"].items():
        torch.testing.assert_close(b["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
    assert json.loads((tmp_path / "nodes" / "config.json").read_text())["world_size"] == 2


def test_ddp_into_a_locked_run_dir_stops_every_rank(images, tmp_path):
    """Rank 0 alone takes the lock; when it cannot, every rank must stop with its message instead of waiting for
    rank 0 at a collective forever."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
                "--master_addr=127.0.0.1", f"--master_port={_free_port()}", "-m", "cnx2lite", "pretrain", "--preset",
                "smoke", "--batch-size", "4", "--data", str(images), "--output", str(tmp_path), "--name", "taken"]
    with RunDir(tmp_path / "taken").lock():
        rc, out = finish(subprocess.Popen(torchrun, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True), timeout=120)
    assert rc != 0 and out.count(f"error: {tmp_path / 'taken'} is in use by process {os.getpid()}") == 2, out
    assert not RunDir(tmp_path / "taken").checkpoints()


def test_pretrain_then_finetune_through_the_api(images, tmp_path):
    pre = pretrain("smoke", data=str(images), output=str(tmp_path), batch_size=4)
    assert (pre.run_dir / "reconstruction.png").is_file() and (pre.run_dir / "curves.png").is_file()
    assert pre.metric("val_loss") and pre.final_top1 is None
    fine = finetune("smoke", data=str(images), output=str(tmp_path), batch_size=4, pretrained=str(pre.run_dir))
    assert fine.final_top1 is not None and fine.final_ema_top1 is not None
    header = (fine.run_dir / "metrics.csv").read_text().splitlines()[0]
    assert header.startswith("kind,epoch,step,train_loss,lr") and "ema_top1" in header
    assert '"pretrained"' in (fine.run_dir / "config.json").read_text()
    by_file, by_dir = (evaluate_checkpoint(path, str(images)) for path in (fine.checkpoint, fine.run_dir))
    assert by_file == by_dir and by_file["top1"] == fine.final_top1
    with pytest.raises(FileNotFoundError, match="directory without checkpoint"):
        finetune("smoke", data=str(images), output=str(tmp_path), name="next", pretrained=str(tmp_path))


def test_resume_refuses_other_settings_but_takes_other_runtime(images, tmp_path):
    """A finished run resumes with other runtime settings (nothing left to do), but not with another recipe: that
    would silently mix two runs. Notebook 5 relies on this when it reuses notebook 4's V2 pre-training."""
    run = dict(data=str(images), output=str(tmp_path), name="run", batch_size=4)
    done = pretrain("smoke", **run)
    again = pretrain("smoke", **run, resume="auto", backend="dense", num_workers=1, progress=True)
    assert again.checkpoint == done.checkpoint and again.history == done.history
    with pytest.raises(ValueError, match=r"other settings \(mask_ratio: 0.6 -> 0.75; seed: 0 -> 1\)"):
        pretrain("smoke", **run, resume="auto", mask_ratio=0.75, seed=1)
    with pytest.raises(ValueError, match=r"block: 'v2' -> 'v1'"):
        pretrain("smoke", **run, resume="auto", block="v1")


def test_quick_demo_writes_a_report(images, tmp_path):
    from cnx2lite.demo import run_demo

    other = tmp_path / "demo" / "runs" / "my-own-run"  # not the demo's: it must survive
    other.mkdir(parents=True)
    (other / "checkpoint-00000001.pt").write_bytes(b"mine")
    report = run_demo(str(images), tmp_path / "demo", quick=True).read_text()
    assert (other / "checkpoint-00000001.pt").read_bytes() == b"mine"
    assert "| FCMAE-pretrained |" in report and "| from scratch |" in report and "Total wall time" in report
    assert "| difference |" in report and "interval" in report
    for figure in ("val_top1.png", "reconstruction.png", "pretraining_knn.png"):
        assert (tmp_path / "demo" / figure).is_file() and f"({figure})" in report


def test_the_demo_removes_only_runs_it_created_and_none_in_use(tmp_path):
    from cnx2lite.demo import MANIFEST, _clear_own_runs

    runs = tmp_path / "runs"
    for name in ("pretrain-v2-p0", "old-demo-run", "busy-demo-run"):
        (runs / name).mkdir(parents=True)
        (runs / name / "checkpoint-00000001.pt").write_bytes(b"weights")
        (tmp_path / "records" / name).mkdir(parents=True)  # the grid's record of each, which it would reuse
    (tmp_path / MANIFEST).write_text("old-demo-run\nbusy-demo-run\n")  # an earlier demo created these two
    names = ["pretrain-v2-p0", "old-demo-run", "new-demo-run"]  # reproduce's pretrain-v2-p0 is not the demo's
    _clear_own_runs(tmp_path, names)
    assert (runs / "pretrain-v2-p0" / "checkpoint-00000001.pt").is_file() and not (runs / "old-demo-run").exists()
    assert (tmp_path / "records" / "pretrain-v2-p0").is_dir() and not (tmp_path / "records" / "old-demo-run").exists()
    assert (tmp_path / MANIFEST).read_text().split() == ["busy-demo-run", "new-demo-run", "old-demo-run"]
    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from cnx2lite.rundir import RunDir\n"
                              f"with RunDir({str(runs / 'busy-demo-run')!r}).lock():\n"
                              "    print('locked', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirLockedError, match="in use by process"):  # another process trains it
            _clear_own_runs(tmp_path, ["busy-demo-run"])
        assert (runs / "busy-demo-run" / "checkpoint-00000001.pt").is_file()
    finally:
        child.kill()
        child.wait()


def test_a_second_run_into_a_busy_run_dir_is_refused_and_a_dead_owners_lock_is_free(images, tmp_path):
    """Two trainings into one run directory would mix their checkpoints and config.json: the second is refused with
    the first's pid; once the first is killed (kill -9: no cleanup runs) its lock is free, since the kernel drops it."""
    first = cli(["pretrain", "--preset", "smoke", "--epochs", "1000", "--batch-size", "4"], images, tmp_path, "busy")
    lock = tmp_path / "busy" / ".lock"
    deadline = time.monotonic() + 60
    while not (lock.is_file() and lock.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        with pytest.raises(RunDirLockedError, match=f"in use by process {first.pid} on {socket.gethostname()}"):
            pretrain("smoke", data=str(images), output=str(tmp_path), name="busy", batch_size=4, resume="auto")
        rc, out = finish(cli(["pretrain", "--preset", "smoke", "--resume", "auto"], images, tmp_path, "busy"))
        assert rc == 2 and f"error: {tmp_path / 'busy'} is in use by process {first.pid}" in out  # a usage error
        assert "Traceback" not in out
    finally:
        first.kill()
        first.wait()
    assert lock.read_text().startswith(f"{first.pid} ")  # the dead owner's file is still there ...
    with RunDir(tmp_path / "busy").lock():  # ... and does not count
        assert lock.read_text().startswith(f"{os.getpid()} ")
    assert lock.read_text() == ""


def test_refused_resume_keeps_config_and_resume_refuses_changed_classes(images, tmp_path):
    run = dict(data=str(images), output=str(tmp_path), name="run", batch_size=4, num_classes=None)
    finetune("smoke", **run)
    config = (tmp_path / "run" / "config.json").read_text()
    with pytest.raises(ValueError, match="other settings"):
        finetune("smoke", **run, resume="auto", lr=0.5)
    assert (tmp_path / "run" / "config.json").read_text() == config
    # a class folder added since: with every class taken, label 2 would now mean class 'a-new' -> refused
    added = [images / split / "a-new" for split in ("train", "val")]
    for folder in added:
        folder.mkdir()
        shutil.copy(images / "train" / "class0" / "0.png", folder / "0.png")
    try:
        with pytest.raises(ValueError, match=r"lr: .*; classes: \['a-new'\] added.*; the training images under "):
            finetune("smoke", **run, resume="auto", lr=0.5)  # every change is named, the settings' and the data's
    finally:
        for folder in added:
            shutil.rmtree(folder)


def test_a_filesystem_without_flock_is_one_line(tmp_path, monkeypatch):
    import errno
    import fcntl

    def no_locks(*args):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(RunDirLockedError, match=r"cannot lock .*\.lock \(No locks available\): this filesystem"):
        with RunDir(tmp_path / "run").lock():
            pass


@pytest.mark.parametrize("task", ["pretrain", "finetune"])
def test_the_default_path_trains_what_the_reference_path_trains(images, tmp_path, task):
    """Fused GRN, small maps' depthwise convs as a matrix product, fused AdamW and images decoded once (the defaults of
    the smoke and cpu presets) against GRN's three steps, oneDNN's conv, AdamW's loop and images decoded at every
    step: the same losses within float32 rounding over the first steps (their gradients agree to ~4e-6 relative). In
    float32, as the cpu preset trains: under bf16 autocast the two round differently."""
    run = pretrain if task == "pretrain" else finetune
    common = dict(data=str(images), output=str(tmp_path), batch_size=4, epochs=1, amp="fp32")
    default = run("smoke", name="default", **common)
    paths = ("fused_grn", "small_map_matmul", "fused_adamw", "cache_images")
    reference = run("smoke", name="reference", **dict.fromkeys(paths, False), **common)
    assert all(default.config[key] and not reference.config[key] for key in paths)
    losses = [[r["train_loss"] for r in result.history if r["kind"] == "train"] for result in (default, reference)]
    assert len(losses[0]) == 4
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=1e-5, atol=1e-6)


def test_quick_demo_sweep_chooses_each_arms_recipe_on_the_tuning_split(images, tmp_path):
    from cnx2lite.demo import run_demo
    from cnx2lite.reproduce.recipes import SWEEP

    report = run_demo(str(images), tmp_path / "demo", quick=True, sweep=True).read_text()
    sweep = (tmp_path / "demo" / "sweep.md").read_text()
    rows = [line for line in sweep.splitlines() if line.startswith("| lr")]
    # scratch also tries every recipe without layer decay (referee review F8); FCMAE has no such row
    assert len(rows) == 2 * len(SWEEP) and sum(line.count("**chosen**") for line in rows) == 2, sweep
    assert all(line.split(" | ")[1] == "not tried" for line in rows if "-ld1 " in line), sweep
    assert "chosen on the\ntuning split by the sweep of this run" in report or "the sweep of this run" in report
    runs = sorted(p.name for p in (tmp_path / "demo" / "runs").iterdir())
    assert sum(name.endswith("-tune") for name in runs) == 3 * len(SWEEP), runs
    for name in runs:  # every sweep trial scored on the tuning split, never on val/, with the layer decay it names
        config = json.loads((tmp_path / "demo" / "runs" / name / "config.json").read_text())
        if name.startswith("finetune"):
            assert config["eval_split"] == ("tune" if name.endswith("-tune") else "val")
            assert config["tune_fraction"] > 0 and config["image_selection"] == "random"
            assert config["layer_decay"] == (1.0 if "-ld1" in name else 0.9), name
            assert "-ld1" not in name or "-scratch-" in name, name


def test_an_image_unreadable_mid_epoch_stops_in_one_line_and_the_run_can_start_again(tmp_path):
    """A JPEG whose header reads but whose data is cut (copied half-way) is found only when a worker decodes it: the
    run names the file in one line, exits 2, and does not hang waiting for its workers (they ignore SIGTERM, which
    Python's exit sends them). It saves no checkpoint: a resume would refuse the fixed images, and a checkpoint would
    only block the name; with the file removed the same command trains."""
    folder = make_image_folder(tmp_path / "images")
    broken = folder / "train" / "class1" / "cut.jpg"
    Image.open(folder / "train" / "class1" / "0.png").save(broken, quality=95)
    broken.write_bytes(broken.read_bytes()[:len(broken.read_bytes()) // 2])
    (folder / "train" / "class1" / "7.png").unlink()  # 16 images in 4 full batches: every one is read
    rc, out = finish(cli(["finetune", "--preset", "smoke", "--epochs", "1", "--batch-size", "4", "--no-cache-images",
                          "--num-workers", "1"], folder, tmp_path / "runs", "cut"), timeout=120)
    lines = out.strip().splitlines()
    assert rc == 2 and lines[-1].startswith(f"error: cannot read image {broken}"), out
    assert "fix or remove the file (or use --skip-corrupt) and run it again" in out
    assert not list((tmp_path / "runs" / "cut").glob("checkpoint-*.pt"))
    broken.unlink()
    rc, out = finish(cli(["finetune", "--preset", "smoke", "--epochs", "1", "--batch-size", "4", "--no-cache-images",
                          "--num-workers", "1"], folder, tmp_path / "runs", "cut"), timeout=120)
    assert rc == 0 and list((tmp_path / "runs" / "cut").glob("checkpoint-*.pt")), out
