"""User mistakes get one line naming the culprit and exit status 2, never a traceback from deep inside torch.

Each case runs the CLI in-process (an uncaught exception fails the test with its traceback) on a tiny image folder.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from cnx2lite.cli import main
from conftest import make_image_folder

CASES = [  # (arguments, text the one-line message must contain)
    (["pretrain", "--mask-ratio", "0"], "nothing to reconstruct"),
    (["pretrain", "--mask-ratio", "2"], "mask_ratio must be in (0, 1)"),
    (["pretrain", "--mask-ratio", "0.9", "--img-size", "64"], "smallest img_size that works at this ratio is 128"),
    (["finetune", "--lr", "nan"], "lr must be None (from base_lr) or a finite number > 0, got nan"),
    (["finetune", "--lr", "-0.1"], "lr must be"),
    (["finetune", "--log-every-steps", "0"], "log_every_steps must be >= 1"),
    (["finetune", "--rand-augment", "garbage"], "rand_augment must be a timm augmentation spec"),
    (["finetune", "--label-smoothing", "2"], "label_smoothing must be in [0, 1)"),
    (["finetune", "--images-per-class", "0"], "images_per_class must be None (all) or >= 1"),
    (["finetune", "--num-classes", "7"], "num_classes must be in 1..2"),
    (["finetune", "--batch-size", "64"], "batch_size=64 is larger than"),
    (["finetune", "--device", "cuda:999"], "device 'cuda:999' is not available"),
    (["finetune", "--device", "tpu9"], "device must be auto, cpu, cuda or cuda:N"),
    (["finetune", "--pretrained", "no/such/run.pt"], "no/such/run.pt"),
    (["probe", "--checkpoint", "random", "--k", "0"], "--k: must be > 0"),
    (["probe", "--checkpoint", "random", "--img-size", "100"], "--img-size must be a multiple of 32"),
    (["probe", "--checkpoint", "no/such/run.pt"], "no/such/run.pt"),
    (["eval", "--checkpoint", "no/such/run.pt"], "no/such/run.pt"),
    (["reproduce", "--scale", "huge"], "invalid choice: 'huge'"),
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"))


@pytest.mark.parametrize(("args", "expected"), CASES, ids=[" ".join(a) for a, _ in CASES])
def test_a_user_mistake_is_one_line_and_exit_2(args, expected, folder, tmp_path, capsys):
    training = args[0] in ("pretrain", "finetune")
    extra = ["--data", str(folder)] + (["--preset", "smoke", "--output", str(tmp_path)] if training else [])
    with pytest.raises(SystemExit) as exit_info:
        main(args + extra)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert expected in err and "Traceback" not in err
    message = [line for line in err.splitlines() if not line.startswith(("usage:", " "))]  # argparse: usage first
    assert len(message) == 1, err
