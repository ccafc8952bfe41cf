"""Unit tests of the training package: parameter groups, layer decay, schedule, EMA, presets,
checkpoint files, sharded resumable sampling, CLI help."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest
import torch
from timm.loss import SoftTargetCrossEntropy

from cnx2lite.commands import build_parser, run_command
from cnx2lite.fcmae import FCMAE
from cnx2lite.models import create_model
from cnx2lite.rundir import RunDir, load_checkpoint
from cnx2lite.train import load_config, load_preset, preset_names
from cnx2lite.train.ema import ModelEma
from cnx2lite.train.loader import ResumableSampler
from cnx2lite.train.optim import build_optimizer, cosine_lr, layer_id, param_groups
from cnx2lite.train.seeding import derive_seed
from cnx2lite.train.tasks import build_criterion, build_mixup


def _group_of(groups: list[dict], name: str) -> dict:
    return next(g for g in groups if name in g["names"])


GRN_AND_MASK_TOKEN = ("encoder.stages.0.0.grn.gamma", "encoder.stages.0.0.grn.beta", "mask_token",
                      "decoder.0.grn.gamma")


@pytest.mark.parametrize("decay_grn_and_mask_token", [False, True])
def test_weight_decay_exemptions_of_fine_tuning_and_pretraining(decay_grn_and_mask_token):
    """Official fine-tuning exempts GRN gamma/beta (and LayerScale) besides 1-D parameters and biases;
    official pretraining (timm add_weight_decay) exempts only 1-D parameters and biases."""
    model = FCMAE("convnextv2_atto", decoder_dim=32)
    groups = param_groups(model, weight_decay=0.05, decay_grn_and_mask_token=decay_grn_and_mask_token)
    for name in ("encoder.stages.0.0.pwconv1.bias", "encoder.stages.0.0.norm.weight",
                 "encoder.downsample_layers.0.1.weight"):
        assert _group_of(groups, name)["weight_decay"] == 0.0, name
    for name in ("encoder.stages.0.0.pwconv1.weight", "encoder.stages.0.0.dwconv.weight", "pred.weight"):
        assert _group_of(groups, name)["weight_decay"] == 0.05, name
    for name in GRN_AND_MASK_TOKEN:
        assert _group_of(groups, name)["weight_decay"] == (0.05 if decay_grn_and_mask_token else 0.0), name
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_tasks_pick_the_official_weight_decay_rule():
    from cnx2lite.train.tasks import FinetuneTask, PretrainTask

    assert PretrainTask.decay_grn_and_mask_token and not FinetuneTask.decay_grn_and_mask_token
    optimizer = build_optimizer(FCMAE("convnextv2_atto", decoder_dim=32), lr=1e-3, weight_decay=0.05,
                                betas=(0.9, 0.95), decay_grn_and_mask_token=PretrainTask.decay_grn_and_mask_token)
    by_name = {n: g for g in optimizer.param_groups for n in g["names"]}
    assert all(by_name[name]["weight_decay"] == 0.05 for name in GRN_AND_MASK_TOKEN)


def official_single(name, depths):
    """The official optim_factory.get_num_layer_for_convnext_single, restated."""
    parts = name.split(".")
    if parts[0] == "downsample_layers":
        return sum(depths[:int(parts[1])]) + 1
    if parts[0] == "stages":
        return sum(depths[:int(parts[1])]) + int(parts[2]) + 1
    return sum(depths) + 1


def official_group(name):
    """The official optim_factory.get_num_layer_for_convnext, restated."""
    parts = name.split(".")
    if parts[0] not in ("downsample_layers", "stages"):
        return 13
    stage = int(parts[1])
    if parts[0] == "downsample_layers":
        return {0: 0, 1: 2, 2: 3, 3: 12}[stage]
    return {0: 1, 1: 2, 2: 3 + int(parts[2]) // 3, 3: 12}[stage]


@pytest.mark.parametrize("variant", ["convnextv2_atto", "convnextv2_base"])
def test_layer_ids_match_the_official_code(variant):
    with torch.device("meta"):
        model = create_model(variant)
    for name, _ in model.named_parameters():
        assert layer_id(name, model.depths, "single") == official_single(name, model.depths), name
        assert layer_id(name, model.depths, "group") == official_group(name), name
        assert layer_id("encoder." + name, model.depths, "single") == official_single(name, model.depths), name


def test_layer_ids_single_and_group():
    atto = (2, 2, 6, 2)  # n = 12
    assert layer_id("downsample_layers.0.0.weight", atto, "single") == 1  # the stem shares block 0's id
    assert layer_id("stages.0.0.dwconv.weight", atto, "single") == 1
    assert layer_id("downsample_layers.1.1.weight", atto, "single") == 3
    assert layer_id("downsample_layers.2.0.bias", atto, "single") == 5
    assert layer_id("stages.1.1.grn.gamma", atto, "single") == 4
    assert layer_id("stages.3.1.pwconv2.weight", atto, "single") == 12
    assert layer_id("head.weight", atto, "single") == layer_id("norm.weight", atto, "single") == 13
    base = (3, 3, 27, 3)
    expected = {"downsample_layers.0.0.weight": 0, "stages.0.2.norm.weight": 1, "downsample_layers.1.0.weight": 2,
                "stages.1.0.dwconv.weight": 2, "downsample_layers.2.1.bias": 3, "stages.2.0.norm.bias": 3,
                "stages.2.5.norm.bias": 4, "stages.2.26.norm.bias": 11, "downsample_layers.3.1.weight": 12,
                "stages.3.2.pwconv1.weight": 12, "head.bias": 13, "norm.weight": 13}
    for name, lid in expected.items():
        assert layer_id(name, base, "group") == lid, name
    with pytest.raises(ValueError, match="layer_decay_mode must be one of 'single', 'group'"):
        layer_id("head.weight", base, "stage")


def test_layer_decay_scales_and_optimizer_lr():
    model = create_model("convnextv2_atto", num_classes=3)
    optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999), layer_decay=0.5)
    by_name = {n: g for g in optimizer.param_groups for n in g["names"]}
    assert by_name["head.weight"]["lr_scale"] == 1.0
    assert by_name["stages.3.1.pwconv1.weight"]["lr_scale"] == 0.5
    assert by_name["downsample_layers.0.0.weight"]["lr_scale"] == 0.5 ** 12
    assert by_name["stages.0.0.dwconv.weight"]["lr"] == pytest.approx(1e-3 * 0.5 ** 12)
    assert optimizer.defaults["betas"] == (0.9, 0.999)


def test_fused_adamw_updates_as_the_loop_and_a_resume_keeps_this_runs_implementation():
    from cnx2lite.train.resume import restore_training_state

    def trained(fused: bool) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(0)
        model = create_model("convnextv2_atto", num_classes=3)
        optimizer = build_optimizer(model, lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999), layer_decay=0.8, fused=fused)
        for _ in range(3):
            optimizer.zero_grad()
            model(torch.randn(2, 3, 32, 32)).square().mean().backward()
            optimizer.step()
        return model, optimizer

    (fused_model, fused_opt), (loop_model, loop_opt) = trained(True), trained(False)
    for a, b in zip(fused_model.parameters(), loop_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(g["fused"] for g in fused_opt.param_groups) and not any(g["fused"] for g in loop_opt.param_groups)
    # a checkpoint of the loop, resumed by a run that chose the fused kernel: the run's choice holds
    checkpoint = {"model": loop_model.state_dict(), "optimizer": loop_opt.state_dict()}
    restore_training_state("ckpt.pt", checkpoint, fused_model, fused_opt, None, None)
    assert all(g["fused"] for g in fused_opt.param_groups)
    torch.testing.assert_close(fused_opt.state_dict()["state"], loop_opt.state_dict()["state"], rtol=0, atol=0)


def test_cosine_schedule_with_warmup():
    lrs = [cosine_lr(s, 100, 1.0, warmup_steps=10, min_lr=0.1) for s in range(101)]
    assert lrs[0] == 0.0 and lrs[5] == pytest.approx(0.5) and lrs[10] == pytest.approx(1.0)
    assert lrs[55] == pytest.approx(0.1 + 0.9 * 0.5) and lrs[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert cosine_lr(0, 10, 2.0) == 2.0


def test_ema_is_fp32_and_follows_the_decay():
    model = torch.nn.Linear(3, 2).to(torch.bfloat16)
    ema = ModelEma(model, decay=0.75)
    assert ema.module.weight.dtype == torch.float32 and not ema.module.weight.requires_grad
    before = ema.module.weight.clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)
    torch.testing.assert_close(ema.module.weight, 0.75 * before + 0.25 * model.weight.float())
    with pytest.raises(ValueError, match="ema decay"):
        ModelEma(model, decay=1.0)


def test_presets_follow_the_paper_and_take_overrides():
    for task in ("pretrain", "finetune"):
        for name in preset_names(task):
            assert load_preset(name, task=task).task == task
    pre = load_preset("in1k-large", task="pretrain")
    assert (pre.epochs, pre.global_batch, pre.base_lr, pre.betas, pre.weight_decay, pre.warmup_epochs) == \
        (800, 4096, 1.5e-4, (0.9, 0.95), 0.05, 40)
    assert (pre.mask_ratio, pre.drop_path, pre.norm_pix_loss, pre.decoder_dim, pre.decoder_depth) == \
        (0.6, 0, True, 512, 1)
    base = load_preset("in1k-base", task="finetune")
    assert (base.epochs, base.base_lr, base.warmup_epochs, base.layer_decay, base.layer_decay_mode) == \
        (100, 6.25e-4, 20, 0.6, "group")
    assert (base.mixup, base.cutmix, base.label_smoothing, base.drop_path, base.global_batch, base.min_lr) == \
        (0.8, 1.0, 0.1, 0.1, 1024, 1e-6)
    atto = load_preset("in1k-atto", task="finetune", epochs=3)
    assert (atto.epochs, atto.weight_decay, atto.mixup, atto.label_smoothing, atto.ema_decay) == \
        (3, 0.3, 0, 0.2, 0.9999)
    with pytest.raises(ValueError, match="unknown config field"):
        load_preset("smoke", task="finetune", epoch=3)
    with pytest.raises(ValueError, match="preset must be one of"):
        load_preset("in1k-giant", task="finetune")
    with pytest.raises(ValueError, match="amp must be one of 'auto', 'bf16', 'fp16', 'fp32'"):
        load_preset("smoke", task="finetune", amp="fp8")


def test_checkpoint_files_atomic_newest_pruned(tmp_path):
    run_dir = RunDir(tmp_path)
    for step in (3, 12):
        run_dir.save_checkpoint({"step": torch.tensor(step)}, step, keep_last=5)
    (tmp_path / ".checkpoint-00000099.tmp-1.pt").write_bytes(b"partial")  # a crash mid-write leaves only this
    assert run_dir.latest_checkpoint() == tmp_path / "checkpoint-00000012.pt"
    run_dir.save_checkpoint({"step": torch.tensor(7)}, 7, keep_last=2)  # the oldest step goes, not the oldest file
    assert [p.name for p in run_dir.checkpoints()] == ["checkpoint-00000007.pt", "checkpoint-00000012.pt"]
    assert load_checkpoint(tmp_path)["step"] == 12
    assert RunDir(tmp_path / "nothing").latest_checkpoint() is None


def test_sampler_shards_union_single_batch_and_resumes_mid_epoch():
    dataset = list(range(40))
    single = list(ResumableSampler(dataset, 1, 0, seed=3))
    ranks = [list(ResumableSampler(dataset, 2, r, seed=3)) for r in range(2)]
    for step in range(5):  # global batch 8 = 2 ranks x 4
        union = sorted(ranks[0][4 * step:4 * step + 4] + ranks[1][4 * step:4 * step + 4])
        assert union == sorted(single[8 * step:8 * step + 8])
    sampler = ResumableSampler(dataset, 1, 0, seed=3)
    sampler.set_position(epoch=0, start=16)
    assert list(sampler) == single[16:] and len(sampler) == 24
    sampler.set_position(epoch=1, start=0)
    assert list(sampler) != single and all(e == 1 for e, _ in sampler)


def test_derived_seeds_differ_by_kind_and_position():
    seeds = {derive_seed(0, k, *p) for k in ("sample", "step") for p in ((0, 1), (1, 0), (0, 2))}
    assert len(seeds) == 6 and derive_seed(5, "mask", 1) == derive_seed(5, "mask", 1)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return action.choices


def test_every_training_flag_is_documented_with_its_default():
    commands = _subparsers(build_parser())
    for name in ("pretrain", "finetune", "eval", "download"):
        for action in commands[name]._actions:
            if action.option_strings and action.dest != "help":
                documented = "default" in (action.help or "") or action.required
                assert documented, f"{name} {action.option_strings} has no default in its help"
    assert ("--mask-ratio" in commands["pretrain"].format_help()
            and "--mask-ratio" not in commands["finetune"].format_help())
    assert "--mixup" in commands["finetune"].format_help() and "--mixup" not in commands["pretrain"].format_help()


def test_block_style_reaches_the_models():
    from cnx2lite.train.presets import load_preset
    from cnx2lite.train.tasks import FinetuneTask, PretrainTask

    fcmae = PretrainTask(load_preset("smoke", task="pretrain", block="v1")).build_model(2)
    assert fcmae.encoder.block == "v1" and fcmae.encoder.stages[0][0].grn is None
    classifier = FinetuneTask(load_preset("smoke", task="finetune", block="v1")).build_model(2)
    assert classifier.block == "v1" and classifier.stages[0][0].gamma is not None
    with pytest.raises(ValueError, match="block must be one of 'v2', 'v1'"):
        load_preset("smoke", task="pretrain", block="v3")


def test_grn_aggregation_and_sparse_encoder_reach_the_models():
    from cnx2lite.train.presets import load_preset
    from cnx2lite.train.tasks import FinetuneTask, PretrainTask

    config = load_preset("smoke", task="pretrain", grn_aggregation="l1", sparse_encoder=False)
    fcmae = PretrainTask(config).build_model(2)
    assert fcmae.encoder.grn_aggregation == "l1" and fcmae.encoder.stages[0][0].grn.aggregation == "l1"
    assert not fcmae.sparse and PretrainTask(load_preset("smoke", task="pretrain")).build_model(2).sparse
    classifier = FinetuneTask(load_preset("smoke", task="finetune", grn_aggregation="mean")).build_model(2)
    assert classifier.stages[3][1].grn.aggregation == "mean"
    with pytest.raises(ValueError, match="grn_aggregation must be one of 'l2', 'l1', 'mean'; got 'max'"):
        load_preset("smoke", task="finetune", grn_aggregation="max")
    commands = _subparsers(build_parser())
    assert "--no-sparse-encoder" in commands["pretrain"].format_help()
    assert "--sparse-encoder" not in commands["finetune"].format_help()
    assert all("--grn-aggregation" in commands[task].format_help() for task in ("pretrain", "finetune"))


@pytest.mark.parametrize("flags, message", [
    (["--block", "v3"], "error: block must be one of 'v2', 'v1'; got 'v3'"),
    (["--img-size", "100"], "error: img_size must be one or two (H W) positive multiples of 32"),
])
def test_bad_flag_values_are_one_line_errors(flags, message, capsys):
    args = build_parser().parse_args(["pretrain", "--preset", "smoke", *flags])
    assert run_command(args) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and "Traceback" not in err


@pytest.mark.parametrize(("overrides", "message"), [
    (dict(mask_ratio=0.0), r"mask_ratio must be in \(0, 1\): at 0.0 there is nothing to reconstruct"),
    (dict(mask_ratio=1.0), r"mask_ratio must be in \(0, 1\)"),
    (dict(mask_ratio=0.9, img_size=64), r"keeps 0 of 2x2=4 cells visible.*smallest img_size that works at this ratio "
                                        r"is 128"),
    (dict(mask_ratio=0.6, img_size=32), r"keeps 0 of 1x1=1 cells visible.*smallest img_size .* is 64"),
])
def test_pretraining_refuses_masks_that_leave_nothing_to_learn(overrides, message):
    with pytest.raises(ValueError, match=message):
        load_preset("smoke", task="pretrain", **overrides)
    with pytest.raises(ValueError, match="mask_ratio.* not apply to task 'finetune': the run would ignore it"):
        load_preset("smoke", task="finetune", **overrides)  # a pretrain-only setting, said so
    assert load_preset("smoke", task="pretrain", mask_ratio=0.1).mask_ratio == 0.1  # 3 of 4 visible, 1 masked: fine


def test_mixup_soft_targets_and_criterion():
    mixup = build_mixup(num_classes=10, mixup=0.8, cutmix=1.0, label_smoothing=0.1)
    x, y = mixup(torch.randn(4, 3, 8, 8), torch.tensor([0, 1, 2, 3]))
    assert x.shape == (4, 3, 8, 8) and y.shape == (4, 10)
    torch.testing.assert_close(y.sum(1), torch.ones(4))
    assert (y > 0).all()  # smoothed: no hard zeros
    assert isinstance(build_criterion(mixup, 0.1), SoftTargetCrossEntropy)
    assert build_mixup(10, 0.0, 0.0, 0.1) is None
    loss = build_criterion(None, 0.1)
    assert isinstance(loss, torch.nn.CrossEntropyLoss) and loss.label_smoothing == 0.1
    with pytest.raises(ValueError, match="mixup and cutmix must be >= 0"):
        build_mixup(10, -1.0, 0.0, 0.1)


def test_config_values_are_typed_in_one_place():
    """Flags, a --config file and the API pass the same check: numpy scalars and paths are what they hold, a
    fractional epoch count or a bool for a number is refused naming the field."""
    import numpy as np

    config = load_preset("smoke", task="finetune", epochs=np.int64(2), lr=np.float32(1e-3), batch_size=4.0,
                         output=Path("runs"))
    assert (config.epochs, config.batch_size, config.output) == (2, 4, "runs") and isinstance(config.lr, float)
    for bad, message in ((dict(epochs=2.5), "epochs must be int, got 2.5"), (dict(epochs=True), "epochs must be int"),
                         (dict(name=3), "name must be str or None"), (dict(lr="1e-3"), "lr must be float or None")):
        with pytest.raises(ValueError, match=message):
            load_preset("smoke", task="finetune", **bad)


def test_a_warmup_longer_than_the_run_is_refused_and_a_shortened_preset_keeps_its_warmup_share(tmp_path):
    import json

    from cnx2lite.train.presets import load_preset

    with pytest.raises(ValueError, match=r"warmup_epochs \(3\) must be at most epochs \(2\)"):
        load_preset("cpu", task="pretrain", epochs=2, warmup_epochs=3)
    assert load_preset("cpu", task="pretrain", epochs=1).warmup_epochs == pytest.approx(2 / 20)  # 2 of 20 epochs
    assert load_preset("cpu", task="pretrain", epochs=5).warmup_epochs == 2  # still fits: unchanged
    assert load_preset("cpu", task="pretrain", epochs=1, warmup_epochs=0).warmup_epochs == 0  # asked for: kept
    saved = tmp_path / "config.json"  # a replayed run shortened the same way
    saved.write_text(json.dumps({**load_preset("cpu", task="pretrain").to_dict(), "task": "pretrain"}))
    assert load_config(saved, "pretrain", epochs=1).warmup_epochs == pytest.approx(2 / 20)


def test_settings_that_would_be_silently_wrong_are_refused_or_made_right(tmp_path):
    from cnx2lite.train.presets import load_preset

    with pytest.raises(ValueError, match=r"freeze_encoder_epochs \(5\) must be below epochs \(1\)"):
        load_preset("smoke", task="pretrain", freeze_encoder_epochs=5)  # the encoder would never train
    with pytest.raises(ValueError, match="epochs must be int, got '2'"):  # not a TypeError from inside
        load_preset("cpu", task="pretrain", epochs="2")
    home = os.path.expanduser("~")
    config = load_preset("smoke", task="finetune", output="~/runs", data="~/photos")  # bash leaves --output=~/x
    assert (config.output, config.data) == (f"{home}/runs", f"{home}/photos")


def test_loader_workers_leave_a_stop_signal_to_the_training_process():
    """A SIGTERM to the whole process group (a scheduler, pkill -f) must reach only the main process, which stops
    after the step and saves: the workers ignore it (run in a child, since the init also lowers the priority)."""
    import subprocess
    import sys

    code = ("import signal; from cnx2lite.train.loader import init_worker; init_worker(0); "
            "print(signal.getsignal(signal.SIGTERM) is signal.SIG_IGN)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "True", done.stderr
    from cnx2lite.train.loader import eval_loader, init_worker, train_loader

    images = torch.utils.data.TensorDataset(torch.zeros(8, 3))  # an idle evaluation worker killed ends a run too
    assert train_loader(images, 2, 0, 0, 1, num_workers=1).worker_init_fn is init_worker
    assert eval_loader(images, 2, 0, 1, num_workers=1).worker_init_fn is init_worker


def test_a_run_names_the_setting_a_short_class_falls_short_of(tmp_path):
    """Each split of a run is picked by its own setting; a class short of images is said once, by the run (rank 0) as a
    warning of the package (on stderr from the command line), naming that setting, not the library's parameter name."""
    import warnings

    from cnx2lite.data import ShortClassWarning
    from cnx2lite.train.run_data import build_run_data
    from conftest import make_image_folder

    folder = make_image_folder(tmp_path / "images", train=8, val=4)
    config = load_preset("smoke", task="pretrain", data=str(folder), val_images_per_class=5, knn_images_per_class=8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # building the splits says nothing: every rank builds them
        run_data = build_run_data(config, "pretrain", lambda image: image)
    assert run_data.notes("pretrain") == []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_data.warn()
    assert [(w.category, str(w.message)) for w in caught] == [
        (ShortClassWarning, f"val_images_per_class=5: 2 of 2 class(es) of {folder / 'val'} hold fewer images and "
                            "keep all they have: class0 (4), class1 (4)")]


def test_settings_the_images_give_nothing_to_act_on_are_named(tmp_path):
    """A random pick of every image, a kNN monitor over one class: each a warning of the run, not silence."""
    import warnings

    from cnx2lite.train.run_data import IgnoredSettingWarning, build_run_data
    from conftest import make_image_folder

    folder = make_image_folder(tmp_path / "images", train=8, val=4)
    every = load_preset("smoke", task="finetune", data=str(folder), images_per_class=None, image_selection="random")
    as_many = load_preset("smoke", task="finetune", data=str(folder), images_per_class=8, image_selection="random")
    one_class = load_preset("smoke", task="pretrain", data=str(folder), num_classes=1, knn_images_per_class=2)
    for config, task, said in (
            (every, "finetune", "image_selection=random does not apply without images_per_class: every image of each "
                                "class is taken"),
            (as_many, "finetune", "image_selection=random does not apply with images_per_class=8, no fewer than any "
                                  "class holds: every image of each class is taken"),
            (one_class, "pretrain", "knn_images_per_class=2 does not apply to one class (class0): every neighbour "
                                    "would vote for it; no kNN monitor")):
        run_data = build_run_data(config, task, lambda image: image)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            run_data.warn()
        assert [(w.category, str(w.message)) for w in caught] == [(IgnoredSettingWarning, said)]
    assert len(build_run_data(every, "finetune", lambda image: image).train_set) == 16
    picked = load_preset("smoke", task="finetune", data=str(folder), images_per_class=7, image_selection="random")
    assert build_run_data(picked, "finetune", lambda image: image).ignored == []  # a pick: it applies
    assert build_run_data(one_class, "pretrain", lambda image: image).knn_bank is None


def test_intervals_beyond_the_runs_steps_and_a_rounded_mask_ratio_are_named(tmp_path):
    """The images decide how many steps a run has: a log or save interval beyond them is named, not silently idle;
    a mask grid of 2x2 cells masks 50% whatever mask_ratio in [0.25, 0.5) asks for, and the run says so."""
    from cnx2lite.train.engine import Trainer
    from cnx2lite.train.tasks import PretrainTask
    from conftest import make_image_folder

    folder = make_image_folder(tmp_path / "images", train=8, val=4)
    config = load_preset("smoke", task="finetune", data=str(folder), output=str(tmp_path / "runs"), batch_size=4,
                         epochs=1, log_every_steps=100, save_every_steps=100)
    ignored = Trainer(config).data.ignored
    assert ignored == ["log_every_steps=100 does not apply: the run trains 4 steps, so no training loss would be "
                       "logged",
                       "save_every_steps=100 does not apply: the run trains 4 steps, so no checkpoint is saved between "
                       "epochs"]
    assert Trainer(load_preset("smoke", task="finetune", data=str(folder), output=str(tmp_path / "runs"),
                               batch_size=4, epochs=1)).data.ignored == []
    assert PretrainTask(load_preset("smoke", task="pretrain", mask_ratio=0.3)).notes() == [
        "mask_ratio 0.3 masks 50.0% of each image at 64x64 px: the grid of 32 px cells keeps int(cells x (1 - "
        "mask_ratio)) of them visible"]
    assert PretrainTask(load_preset("smoke", task="pretrain", mask_ratio=0.5)).notes() == []


def test_a_closed_terminal_stops_a_run_as_sigterm_does_unless_nohup_ignores_it(capsys):
    """SIGHUP (the ssh session closed) killed a run with no checkpoint (round 13's SG_hup): it now asks for the stop
    and save; under ``nohup`` (SIGHUP ignored) it stays ignored."""
    import signal

    from cnx2lite.train.resume import graceful_stop

    previous = signal.signal(signal.SIGHUP, signal.SIG_DFL)  # as in a terminal, whatever this suite was started under
    try:
        with graceful_stop() as flag:
            signal.raise_signal(signal.SIGHUP)
        assert flag.requested and flag.signal == signal.SIGHUP
        assert "SIGHUP: stopping after this step and saving a checkpoint\n" == capsys.readouterr().err
        signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
        with graceful_stop() as flag:
            signal.raise_signal(signal.SIGHUP)
        assert not flag.requested and signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_setting_the_data_ignores_is_no_change_to_resume_over():
    """Resuming a finished ADE20K run was refused over 'composites: 4 -> 8', a setting an ADE20K folder ignores (round
    15); for composites, the same change is one."""
    import dataclasses

    from cnx2lite.train.config_files import as_json
    from cnx2lite.train.resume import changed_settings

    for fmt, changed in (("ade20k", []), ("composites", ["composites: 4 -> 8"])):
        config = load_preset("smoke", task="segment", dense_format=fmt, composites=4)
        saved = as_json(config.to_dict())
        assert changed_settings(saved, dataclasses.replace(config, composites=8)) == changed
    assert changed_settings(saved, dataclasses.replace(config, epochs=5)) == [f"epochs: {config.epochs} -> 5"]
