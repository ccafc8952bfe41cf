"""User mistakes get one line naming the culprit and exit status 2, never a traceback from deep inside torch.

Each CLI case runs in-process (an uncaught exception fails the test with its traceback) on a tiny image folder;
``{name}`` in an argument is one of the files the ``paths`` fixture makes. API cases call the library directly.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import cnx2lite
from cnx2lite.checkpoints import load_pretrained
from cnx2lite.commands import main
from cnx2lite.demo import run_demo
from cnx2lite.export import export_checkpoint
from cnx2lite.masking import random_mask
from cnx2lite.models import create_model
from cnx2lite.train import evaluate_checkpoint, finetune, load_config, pretrain
from conftest import make_image_folder

CASES = [  # (arguments, text the one-line message must contain)
    # training flags, checked when the config is built
    (["pretrain", "--mask-ratio", "0"], "nothing to reconstruct"),
    (["pretrain", "--mask-ratio", "2"], "mask_ratio must be in (0, 1)"),
    (["pretrain", "--mask-ratio", "0.9", "--img-size", "64"], "smallest img_size that works at this ratio is 128"),
    (["finetune", "--lr", "nan"], "lr must be None (from base_lr) or a finite number > 0, got nan"),
    (["finetune", "--lr", "-0.1"], "lr must be"),
    (["finetune", "--log-every-steps", "0"], "log_every_steps must be >= 1"),
    (["finetune", "--rand-augment", "garbage"], "rand_augment must be a timm augmentation spec"),
    (["finetune", "--label-smoothing", "2"], "label_smoothing must be in [0, 1)"),
    (["finetune", "--epochs", "0"], "epochs must be >= 1"),
    (["finetune", "--device", "cuda:999"], "device 'cuda:999' is not available"),
    (["finetune", "--device", "tpu9"], "device must be auto, cpu, cuda or cuda:N"),
    # data that does not fit the flags
    (["finetune", "--images-per-class", "0"], "images_per_class must be None (all) or >= 1"),
    (["finetune", "--num-classes", "7"], "num_classes must be in 1..2"),
    (["finetune", "--batch-size", "64"], "batch_size=64 is larger than"),
    (["finetune", "--data", "{nowhere}"], "No image folder found"),
    (["finetune", "--data", "{corrupt}"], "1 unreadable image file(s) under"),
    (["pretrain", "--data", "{nested}", "--dataset", "typo"], "pass --data"),
    # files: missing, unreadable, of the other task, not ours
    (["finetune", "--pretrained", "no/such/run.pt"], "no/such/run.pt"),
    (["finetune", "--pretrained", "{pickled}"], "Unsupported global"),
    (["finetune", "--resume", "{pickled}"], "cannot resume: cannot read"),
    (["finetune", "--resume", "{truncated}"], "cannot resume: cannot read"),
    (["finetune", "--resume", "{pretrain_ckpt}"], "it is a 'pretrain' checkpoint"),
    (["finetune", "--resume", "{bare}"], "not a cnx2lite training checkpoint"),
    (["finetune", "--output", "{a_file}"], "cannot create the run directory"),
    # eval, probe, bench
    (["eval", "--checkpoint", "no/such/run.pt"], "no/such/run.pt"),
    (["eval", "--checkpoint", "{pretrain_run}"], "is not a fine-tuning checkpoint"),
    (["eval", "--checkpoint", "{finetune_run}", "--batch-size", "0"], "--batch-size: must be > 0"),
    (["eval", "--checkpoint", "{finetune_run}", "--img-size", "100"], "--img-size: must be a positive multiple of 32"),
    (["eval", "--checkpoint", "{no_ema_run}", "--ema"], "its EMA entry is empty"),
    (["eval", "--checkpoint", "{pickled}"], "Unsupported global"),
    (["eval", "--checkpoint", "{an_image}"], "is not a checkpoint (it is a PNG image)"),
    (["finetune", "--pretrained", "{a_file}"], "is not a checkpoint (it is a text file)"),
    (["eval", "--checkpoint", "{finetune_run}", "--data", "{val_missing_a_class}"], "['class1']"),
    (["probe", "--checkpoint", "random", "--k", "0"], "--k: must be > 0"),
    (["probe", "--checkpoint", "random", "--img-size", "100"], "--img-size: must be a positive multiple of 32"),
    (["probe", "--checkpoint", "no/such/run.pt"], "no/such/run.pt"),
    (["bench", "fcmae", "--iters", "0"], "--iters: must be > 0"),
    (["bench", "model", "--img-size", "100"], "--img-size: must be a positive multiple of 32"),
    (["bench", "model", "--device", "cuda:999"], "device 'cuda:999' is not available"),
    (["export", "--checkpoint", "no/such/run.pt", "--format", "onnx"], "no/such/run.pt"),
    (["export", "--checkpoint", "{pickled}", "--format", "torchscript"], "Unsupported global"),
    (["export", "--checkpoint", "random", "--format", "tflite"], "invalid choice: 'tflite'"),
    (["pretrain", "--init-encoder", "no/such/encoder.pt"], "no/such/encoder.pt"),
    (["pretrain", "--freeze-encoder-epochs", "-1"], "freeze_encoder_epochs must be >= 0"),
    (["finetune", "--pretrained", "convnextv2_atto.in22k-in1k"], "no released weights named"),
    (["reproduce", "--scale", "huge"], "invalid choice: 'huge'"),
    (["reproduce", "--seeds", "0"], "--seeds: must be > 0"),
    (["finetune", "--num-classes", "1"], "finetune needs at least 2 classes"),
    (["finetune", "--seed", "-1"], "seed must be in 0..2**63-1"),
    (["finetune", "--name", "forked", "--resume", "{finetune_ckpt}"],
     "that run has trained 1 epoch(s), as many as this one asks for"),
    (["export", "--checkpoint", "random", "--format", "torchscript", "--output", "{a_file}"], "pass --overwrite"),
    (["export", "--checkpoint", "random", "--format", "torchscript", "--output", "{finetune_run}/model.pt"],
     "is inside the run"),
    (["probe", "--checkpoint", "random", "--dataset", "/abs/folder"], "dataset must be one folder name"),
    (["download", "imagenette", "--data", "{a_file}"], "it is a file"),
    (["probe", "--checkpoint", "random", "--num-classes", "1"], "a probe needs at least 2 classes"),
    (["collapse", "--encoder", "a=random", "--contrast", "a", "a", "--data", "{corrupt}"],
     "--contrast a a: an encoder against itself differs by nothing"),
    (["collapse", "--encoder", "a=random", "--data", "{corrupt}", "--output", "{corrupt}/val/class0"],
     "class0 is inside the images read from"),
    (["export", "--checkpoint", "random", "--format", "torchscript", "--output", "{an_image}", "--overwrite"],
     "is no torchscript export (named *.torchscript.pt): --overwrite replaces only an earlier export"),
    (["finetune", "--name", "two\nlines"], "no control characters"),
    (["finetune", "--name", "x" * 256], "at most 255 bytes"),
    (["pretrain", "--no-sparse-encoder", "--backend", "dense"], "but sparse_encoder is off"),
    (["finetune", "--block", "v1", "--grn-aggregation", "l1"], "this model has no GRN (block 'v1'"),
    # --show-config refuses what every run would refuse
    (["finetune", "--lr", "none", "--base-lr", "1e-3", "--min-lr", "0.5", "--show-config"],
     "min_lr=0.5 is above the peak lr 3.125e-05 (base_lr x effective batch 8 / 256)"),
    (["pretrain", "--backend", "bogus", "--show-config"], "backend must be one of 'dense', 'gather', 'minkowski'"),
    (["finetune", "--device", "tpu", "--show-config"], "device must be auto, cpu, cuda or cuda:N; got 'tpu'"),
    # a ~user this system does not have: pathlib's bare RuntimeError was an internal error (round 13)
    (["finetune", "--data", "~nosuchuser/d1"], "data ~nosuchuser/d1: no user 'nosuchuser' to expand '~nosuchuser'"),
    (["finetune", "--output", "~nosuchuser/runs"], "output ~nosuchuser/runs: no user 'nosuchuser'"),
    (["finetune", "--pretrained", "~nosuchuser/x.pt"], "pretrained ~nosuchuser/x.pt: no user 'nosuchuser'"),
    (["eval", "--checkpoint", "~nosuchuser/run"], "checkpoint ~nosuchuser/run: no user 'nosuchuser'"),
    (["probe", "--checkpoint", "random", "--data", "~nosuchuser/d1"], "data ~nosuchuser/d1: no user 'nosuchuser'"),
    (["finetune", "--pretrained", "https://example.com/x.pt"], "pretrained https://example.com/x.pt: a URL, and paths "
     "are read from disk only: download the file first"),
    (["eval", "--checkpoint", "s3://bucket/run"], "checkpoint s3://bucket/run: a URL"),
    # an argument no flag takes: refused by the subcommand it was given to, naming a bare flag before it
    (["finetune", "--cache-images", "false"], "cnx2lite finetune: unrecognized arguments: false (--cache-images takes "
     "no value; its opposite is --no-cache-images) (see cnx2lite finetune --help)"),
    (["bench", "train", "--nope"], "cnx2lite bench train: unrecognized arguments: --nope (see cnx2lite bench train"),
    # a flag the command lacks after a switch: the flag is the fault, not a value given to the switch (round 20's N33)
    (["transfer", "--task", "segment", "--no-progress", "--init", "x"], "cnx2lite transfer: unrecognized arguments: "
     "--init x (see cnx2lite transfer --help)"),
    (["finetune", "--weight_decay=0.1"], "unrecognized arguments: --weight_decay=0.1 (did you mean --weight-decay "),
    (["finetune", "--no-progress", "-lr", "1"], "unrecognized arguments: -lr 1 (did you mean --lr "),
    (["probe", "--checkpoint", "random", "--images-per-class", "nine"], "argument --images-per-class: invalid int "
     "value: 'nine'"),
    (["finetune", "--name", "~"], "not '.' or '..', not starting with '~' (a shell reads it as a home folder)"),
    (["probe", "--checkpoint", "random", "--temperature", "inf"],  # an unweighted vote that would say nothing
     "argument --temperature: must be a finite number > 0, got inf"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def paths(folder, tmp_path_factory) -> dict[str, str]:
    """Runs and files the cases refer to by name."""
    root = tmp_path_factory.mktemp("cases")
    run = dict(data=str(folder), output=str(root / "runs"), batch_size=4)
    finetune("smoke", **run, name="finetune", ema_decay=0.99)
    finetune("smoke", **run, name="no-ema", ema_decay=0.0)
    pretrain("smoke", **run, name="pretrain")
    ckpt = torch.load(next((root / "runs" / "finetune").glob("checkpoint-*.pt")), weights_only=True)
    torch.save(ckpt["model"], root / "bare.pt")  # a state dict, not a training checkpoint
    (root / "truncated.pt").write_bytes((root / "bare.pt").read_bytes()[:2000])
    torch.save({"model": _Payload()}, root / "pickled.pt")  # an object weights_only=True refuses to unpickle
    (root / "a_file").write_text("not a folder")
    corrupt = shutil.copytree(folder, root / "corrupt")
    (corrupt / "train" / "class1" / "3.png").write_bytes(b"not an image")
    shutil.copytree(folder, root / "nested" / "mydata")
    missing = root / "val-missing" / "val"
    shutil.copytree(folder / "val" / "class0", missing / "class0")
    return {"nowhere": str(root / "nowhere"), "nested": str(root / "nested"), "corrupt": str(corrupt),
            "pickled": str(root / "pickled.pt"), "an_image": str(next(folder.glob("train/*/*.png"))),
            "truncated": str(root / "truncated.pt"), "bare": str(root / "bare.pt"), "a_file": str(root / "a_file"),
            "pretrain_run": str(root / "runs" / "pretrain"), "finetune_run": str(root / "runs" / "finetune"),
            "no_ema_run": str(root / "runs" / "no-ema"), "val_missing_a_class": str(missing.parent),
            "pretrain_ckpt": str(next((root / "runs" / "pretrain").glob("checkpoint-*.pt"))),
            "finetune_ckpt": str(next((root / "runs" / "finetune").glob("checkpoint-*.pt")))}


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_user_mistake_is_one_line_and_exit_2(args, expected, folder, paths, tmp_path, capsys):
    args = [a.format(**paths) for a in args]
    takes_data = args[0] in ("pretrain", "finetune", "eval", "probe") and "--data" not in args
    extra = ["--data", str(folder)] if takes_data else []
    if args[0] in ("pretrain", "finetune"):
        extra += ["--preset", "smoke"] + ([] if "--output" in args else ["--output", str(tmp_path)])
    with pytest.raises(SystemExit) as exit_info:
        main(args + extra)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert expected in err and "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err  # argparse's refusals too: no usage dump first
    assert not [p for p in tmp_path.iterdir() if p.is_dir()], "a refused run must leave nothing behind"


def test_eval_needs_only_the_val_split(folder, paths, tmp_path, capsys):
    val_only = shutil.copytree(folder / "val", tmp_path / "val")
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "--checkpoint", paths["finetune_run"], "--data", str(val_only.parent)])
    assert exit_info.value.code == 0 and "top-1" in capsys.readouterr().out


API_CASES = [  # (call, exception type, text the message must contain)
    (lambda: finetune(Path("runs/x/config.json")), ValueError,
     "config must be a preset name or a TrainConfig, got PosixPath('runs/x/config.json')"),
    (lambda: create_model("convnextv2_atto")(torch.rand(1, 3, 64, 64, dtype=torch.float64)), ValueError,
     "expected images of the model's dtype torch.float32, got torch.float64"),
    (lambda: create_model("convnextv2_atto")(torch.zeros(1, 3, 64, 64, dtype=torch.uint8)), ValueError,
     "scale it to floats first"),
    (lambda: create_model("convnextv2_atto")(torch.rand(3, 64, 64)), ValueError, "expected images shaped (N, 3, H, W)"),
    (lambda: random_mask(2, (64,)), ValueError, "img_size must be an int or a pair (H, W) of ints"),
    (lambda: random_mask(2, 64.0), ValueError, "img_size must be an int or a pair"),
    (lambda: create_model("convnextv2_tiny_typo"), ValueError, "unknown model name"),
    (lambda: load_pretrained(create_model("convnextv2_atto"), 123), ValueError,
     "source must be a file, a run folder, a released name or a state dict; got int"),
    (lambda: load_pretrained("convnextv2_atto", "convnextv2_atto.fcmae"), ValueError,
     "model must be a ConvNeXtV2 (e.g. cnx2lite.create_model('convnextv2_atto')); got str"),
    # round 14: the function is the task; a range torch would name in its own words
    (lambda: finetune("smoke", task="pretrain"), ValueError, "task 'pretrain' given to finetune(): it runs task="),
    (lambda: evaluate_checkpoint("run", batch_size=0), ValueError, "batch_size must be >= 1, got 0"),
    (lambda: evaluate_checkpoint("run", num_workers=-1), ValueError, "num_workers must be >= 0, got -1"),
    (lambda: evaluate_checkpoint("run", images_per_class=0), ValueError,
     "images_per_class must be None (all) or >= 1, got 0"),
    (lambda: evaluate_checkpoint("run", img_size=50), ValueError,
     "img_size must be one or two (H W) positive multiples of 32"),
    (lambda: export_checkpoint("random", "onnx", img_size=(64, 6.5)), ValueError, "img_size[1] must be int, got 6.5"),
]


@pytest.mark.parametrize(("call", "kind", "expected"), API_CASES, ids=[c[2][:40] for c in API_CASES])
def test_an_api_mistake_raises_one_clear_error(call, kind, expected):
    with pytest.raises(kind) as info:
        call()
    assert expected in str(info.value) and "\n" not in str(info.value)


def test_an_unreadable_or_foreign_file_is_one_clear_error(paths):
    model = create_model("convnextv2_atto")
    for name, expected in (("pickled", "Unsupported global"), ("truncated", "cannot read")):
        with pytest.raises(ValueError, match=expected) as info:
            load_pretrained(model, paths[name])
        assert paths[name] in str(info.value) and "\n" not in str(info.value)


def test_the_api_takes_numpy_integers_as_what_they_hold():
    import numpy as np

    assert random_mask(np.int64(2), np.int64(64), np.float32(0.5)).shape == (2, 2, 2)
    assert create_model("convnextv2_atto", num_classes=np.int64(3)).num_classes == 3
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        random_mask(True, 64)


def test_none_is_all_on_every_command_that_defaults_to_all():
    """probe's --images-per-class none was an invalid int while training took it (round 14: PR_linear_ipc_none)."""
    from cnx2lite.commands import build_parser
    for command in (["probe", "--checkpoint", "random"], ["finetune"]):
        args = build_parser().parse_args([*command, "--images-per-class", "none", "--num-classes", "None"])
        assert args.images_per_class is None and args.num_classes is None


def test_a_list_flag_measures_each_value_once():
    from cnx2lite.commands import build_parser
    args = build_parser().parse_args(["collapse", "--encoder", "a=random", "--img-size", "64", "64", "96", "--point",
                                      "gelu", "gelu"])
    assert args.img_size == [64, 96] and args.point == ["gelu"]


FLAG_CALLS = {  # a public function's bool parameter given a string: "no" is truthy, so it must be refused
    "evaluate_checkpoint use_ema": lambda v: evaluate_checkpoint("run", use_ema=v),
    "export_checkpoint overwrite": lambda v: export_checkpoint("run", "onnx", overwrite=v),
    "load_model classifier": lambda v: cnx2lite.load_model("random", "convnextv2_atto", classifier=v),
    "load_pretrained strict": lambda v: load_pretrained(create_model("convnextv2_atto"), {}, strict=v),
    "read_weights use_ema": lambda v: cnx2lite.read_weights("run", use_ema=v),
    "run_demo quick": lambda v: run_demo(quick=v),
}


@pytest.mark.parametrize("call", FLAG_CALLS)
@pytest.mark.parametrize("value", ["no", "False", 0])
def test_a_flag_of_the_api_takes_only_a_bool(call, value):
    """``use_ema="no"`` scored the EMA weights: the string was simply truthy (round 13's API_ev_ema_str)."""
    name = call.split()[1]
    with pytest.raises(ValueError, match=f"^{name} must be bool.*, got {value!r} \\({type(value).__name__}\\)$"):
        FLAG_CALLS[call](value)


def test_the_api_checks_numbers_by_their_annotations(tmp_path):
    import numpy as np

    with pytest.raises(ValueError, match=r"^batch_size must be int, got 2.5 \(float\)$"):
        evaluate_checkpoint(tmp_path, batch_size=2.5)
    with pytest.raises(ValueError, match=r"^seed must be int, got True \(bool\)$"):
        cnx2lite.load_model("random", "convnextv2_atto", seed=True)
    a, _ = cnx2lite.load_model("random", "convnextv2_atto", seed=np.int64(3), classifier=np.bool_(False))
    b, _ = cnx2lite.load_model("random", "convnextv2_atto", seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_every_command_names_the_val_classes_the_model_was_not_trained_on(folder, paths, tmp_path, capsys):
    """A val/ class that train/ does not hold is never scored: eval, probe and both trainings name it (the smoke
    preset's num_classes=2 included); a class num_classes leaves out of both splits is the user's choice, unnamed."""
    extra = shutil.copytree(folder, tmp_path / "extra")
    shutil.copytree(folder / "val" / "class0", extra / "val" / "zebra")
    for split in ("train", "val"):  # a third class in both splits, beyond the preset's num_classes=2
        shutil.copytree(folder / split / "class1", extra / split / "class2")
    train = ["--preset", "smoke", "--batch-size", "4", "--output", str(tmp_path / "runs")]
    for args in (["eval", "--checkpoint", paths["finetune_run"]],
                 ["probe", "--checkpoint", paths["pretrain_run"], "--method", "knn", "--k", "3"],
                 ["finetune", *train, "--name", "ft"], ["pretrain", *train, "--name", "pt"]):
        with pytest.raises(SystemExit) as done:
            main(args + ["--data", str(extra)])
        err = capsys.readouterr().err
        assert done.value.code == 0 and "class folder(s) the model was not trained on" in err and "zebra (4" in err
        assert args[0] == "eval" or "class2" not in err, err  # probe reads train/ too
    with pytest.raises(SystemExit) as done:  # the kNN probe's flags given to the linear probe alone (round 15)
        main(["probe", "--checkpoint", paths["pretrain_run"], "--data", str(folder), "--method", "linear", "--k", "20"])
    err = capsys.readouterr().err  # named though it is the default: it was given
    assert done.value.code == 0 and "warning: --k 20 does not apply to --method linear: it is the kNN" in err
    with pytest.raises(SystemExit) as done:  # a seed seeds a random init only; the probes draw nothing (round 17)
        main(["probe", "--checkpoint", paths["pretrain_run"], "--data", str(folder), "--method", "linear",
              "--seed", "3"])
    err = capsys.readouterr().err
    assert done.value.code == 0 and "warning: --seed 3 does not apply to --checkpoint" in err


def test_reproduce_refuses_a_folder_too_small_for_its_scale_before_creating_anything(tmp_path, capsys):
    small = make_image_folder(tmp_path / "small", train=3)
    with pytest.raises(SystemExit) as done:
        main(["reproduce", "--scale", "smoke", "--data", str(small), "--output", str(tmp_path / "out")])
    assert done.value.code == 2 and "fewer than one batch (8)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    enough = make_image_folder(tmp_path / "enough", train=8)
    for flag in ("--output", "--records"):  # never among the images it reads (the next run would read them)
        inside = enough / "train" / "class0" / "rep"
        with pytest.raises(SystemExit) as done:
            main(["reproduce", "--scale", "smoke", "--data", str(enough), "--hours", "1e-9", flag, str(inside)])
        assert done.value.code == 2 and f"{flag} {inside}: " in capsys.readouterr().err and not inside.exists()
    loose = make_image_folder(tmp_path / "loose", train=8)  # a train/ of loose images was '0 classes, 0 images'
    shutil.copy(next((loose / "train" / "class0").iterdir()), loose / "train" / "stray.jpg")  # (round 19's N39)
    with pytest.raises(SystemExit) as done:
        main(["reproduce", "--scale", "smoke", "--data", str(loose), "--output", str(tmp_path / "out")])
    assert done.value.code == 2 and "1 image file(s) outside any class folder" in capsys.readouterr().err


def test_a_class_folder_linked_to_another_is_refused(folder, tmp_path):
    from cnx2lite.data import build_dataset
    linked = shutil.copytree(folder, tmp_path / "linked")
    shutil.rmtree(linked / "val" / "class1")
    (linked / "val" / "class1").symlink_to(linked / "val" / "class0")
    with pytest.raises(ValueError, match="are the same folder"):
        build_dataset(linked, "val")


def test_an_export_never_writes_into_a_saved_model(tmp_path):
    from cnx2lite.export import export_checkpoint
    from cnx2lite.hub import save_pretrained
    saved = save_pretrained(create_model("convnextv2_atto", num_classes=2), tmp_path / "saved")
    config = (saved / "config.json").read_text()
    with pytest.raises(ValueError, match="is inside the saved model"):
        export_checkpoint(str(saved), "torchscript", saved / "config.json", img_size=64, overwrite=True)
    assert (saved / "config.json").read_text() == config


def test_save_pretrained_replaces_a_link_instead_of_writing_through_it(tmp_path):
    from cnx2lite.hub import save_pretrained
    saved = save_pretrained(create_model("convnextv2_atto", num_classes=2), tmp_path / "saved")
    (tmp_path / "elsewhere.safetensors").write_bytes(b"someone's file")
    (saved / "model.safetensors").unlink()
    (saved / "model.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    save_pretrained(create_model("convnextv2_atto", num_classes=2), saved)
    assert (tmp_path / "elsewhere.safetensors").read_bytes() == b"someone's file"
    assert not (saved / "model.safetensors").is_symlink()


def test_collapse_counts_a_run_once_however_it_is_spelled(paths):
    from cnx2lite.commands.collapse import parse_encoder
    run = paths["pretrain_run"]
    for twice in (f"{run},{run}/", f"{run},{paths['pretrain_ckpt']}"):
        with pytest.raises(Exception, match="names a source twice"):
            parse_encoder(f"a={twice}")


def test_damaged_records_and_saved_configs_are_one_line_naming_the_file(tmp_path):
    from cnx2lite.hub import load_saved, save_pretrained
    from cnx2lite.reproduce.records import RecordMismatch, Records
    (tmp_path / "records" / "run").mkdir(parents=True)
    torch.save([1, 2], tmp_path / "records" / "run" / "measured.pt")
    with pytest.raises(RecordMismatch, match="measured.pt is damaged .*holds a list"):
        Records(tmp_path / "records").measured("run", "key")
    saved = save_pretrained(create_model("convnextv2_atto", num_classes=2), tmp_path / "saved")
    (saved / "config.json").write_bytes(b"\xf2 not json")
    with pytest.raises(ValueError, match="config.json is not a saved model's config"):
        load_saved(saved)


def test_a_0d_tensor_ratio_is_the_number_it_holds():
    assert random_mask(2, 64, torch.tensor(0.5)).shape == (2, 2, 2)


def _path_taking_calls(value, tmp_path) -> dict:
    """Each public call that takes a path, given ``value`` for it: ``{label: (parameter name, call)}``."""
    return {"load_model": ("source", lambda: cnx2lite.load_model(value)),
            "read_weights": ("source", lambda: cnx2lite.read_weights(value)),
            "save_pretrained": ("folder", lambda: cnx2lite.save_pretrained(create_model("convnextv2_atto"), value)),
            "evaluate_checkpoint": ("checkpoint", lambda: evaluate_checkpoint(value)),
            "evaluate_checkpoint data_root": ("data_root", lambda: evaluate_checkpoint(str(tmp_path / "run"),
                                                                                       data_root=value)),
            "load_config": ("config", lambda: load_config(value, "finetune"))}


@pytest.mark.parametrize("call", ["load_model", "read_weights", "save_pretrained", "evaluate_checkpoint",
                                  "evaluate_checkpoint data_root", "load_config"])
@pytest.mark.parametrize("value", [b"/tmp/x", 3.5])
def test_a_path_of_the_wrong_type_is_refused_naming_the_parameter(call, value, tmp_path):
    """Not pathlib's ``TypeError: argument should be a str object ...`` from inside the call."""
    name, run = _path_taking_calls(value, tmp_path)[call]
    with pytest.raises(ValueError, match=f"^{name} must be a path \\(a str or os.PathLike\\); got "
                                         f"{type(value).__name__}"):
        run()


@pytest.mark.parametrize("call", ["load_model", "save_pretrained", "evaluate_checkpoint", "load_config"])
def test_an_empty_path_is_refused_naming_the_parameter(call, tmp_path):
    """An unset ``$VAR`` in a script: not ``error: : does not exist``."""
    name, run = _path_taking_calls("", tmp_path)[call]
    with pytest.raises(ValueError, match=f"^{name} is an empty path: give a path, or leave it out"):
        run()


def test_a_folder_named_like_a_checkpoint_in_a_run_is_named(tmp_path, capsys):
    (tmp_path / "run" / "checkpoint-00000005.pt").mkdir(parents=True)
    with pytest.raises(SystemExit) as done:
        main(["eval", "--checkpoint", str(tmp_path / "run")])
    err = capsys.readouterr().err
    folder = tmp_path / "run" / "checkpoint-00000005.pt"
    assert done.value.code == 2 and err == (f"error: {folder} in the run folder is a folder named like a run's file: "
                                            "remove or rename it\n"), err
