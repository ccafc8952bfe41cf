"""What can take GRN's place in a block (cnx2lite.layers.block_norm): each module against a plain dense reference, each
exact in every sparse backend (the same tests the GRN blocks pass), and the option carried by configs and weights."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_sparse import OTHERS, assert_backends_agree, border_mask

from cnx2lite import FCMAE, create_model
from cnx2lite.layers import BLOCK_NORMS, AllPositions, TokenPositions, create_block_norm
from cnx2lite.layers.block_norm import CBAM, SqueezeExcite, VisibleBatchNorm
from cnx2lite.masking import pixel_mask, random_mask
from cnx2lite.sparse import available_backends, sparse_forward_features
from conftest import randomize_

ALTERNATIVES = [name for name in BLOCK_NORMS if name != "grn"]


def test_lrn_ln_bn_match_torch_on_dense_maps():
    torch.manual_seed(0)
    x = torch.randn(2, 5, 6, 16, dtype=torch.float64)  # (N, H, W, C)
    lrn = create_block_norm("lrn", 16)
    expected = torch.nn.LocalResponseNorm(5, 1e-4, 0.75, 2.0)(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    torch.testing.assert_close(lrn(x), expected)
    ln = randomize_(create_block_norm("ln", 16)).double()
    torch.testing.assert_close(ln(x), F.layer_norm(x, (16,), ln.weight, ln.bias, 1e-6))
    bn, reference = randomize_(create_block_norm("bn", 16)).double(), torch.nn.BatchNorm1d(16).double()
    reference.load_state_dict(bn.state_dict())
    for train in (True, True, False):  # two updates of the running statistics, then evaluation with them
        bn.train(train), reference.train(train)
        torch.testing.assert_close(bn(x), reference(x.reshape(-1, 16)).view(x.shape))
    torch.testing.assert_close(bn.running_var, reference.running_var)
    assert bn.num_batches_tracked.item() == 2


def test_batchnorm_statistics_come_from_the_visible_tokens_only():
    torch.manual_seed(1)
    tokens = torch.randn(7, 8, dtype=torch.float64)  # 3 + 4 visible tokens of two samples
    bn = VisibleBatchNorm(8).double()
    reference = torch.nn.BatchNorm1d(8).double()
    torch.testing.assert_close(bn(tokens, TokenPositions(torch.tensor([3, 4]))), reference(tokens))
    torch.testing.assert_close(bn.running_mean, reference.running_mean)


def test_se_and_cbam_match_a_direct_dense_computation():
    torch.manual_seed(2)
    x = torch.randn(2, 5, 6, 16, dtype=torch.float64)
    se = randomize_(SqueezeExcite(16)).double()
    gate = torch.sigmoid(se.fc2(torch.relu(se.fc1(x.mean(dim=(1, 2))))))
    torch.testing.assert_close(se(x), x * gate[:, None, None, :])
    cbam = randomize_(CBAM(16)).double()
    mlp = cbam.mlp
    channel = torch.sigmoid(mlp(x.mean(dim=(1, 2))) + mlp(x.amax(dim=(1, 2))))[:, None, None, :]
    y = x * channel
    spatial = torch.sigmoid(cbam.spatial(torch.stack([y.mean(-1), y.amax(-1)], dim=1))).permute(0, 2, 3, 1)
    torch.testing.assert_close(cbam(x), y * spatial)
    # on tokens with their coordinates: what the dense module gives at those positions, masked ones read as zeros
    visible = torch.rand(2, 5, 6) > 0.4
    coords = visible.nonzero()
    positions = TokenPositions(visible.flatten(1).sum(1), coords, (5, 6))
    tokens = x[visible]
    dense = cbam(x * visible[..., None], _MaskedZeros(visible))
    torch.testing.assert_close(cbam(tokens, positions), dense[visible])
    with pytest.raises(ValueError, match="carry no coordinates"):
        cbam(tokens, TokenPositions(visible.flatten(1).sum(1)))


class _MaskedZeros(AllPositions):
    """Dense maps already zero where masked, statistics over the visible positions only (the reference above)."""

    def __init__(self, visible):
        self.visible = visible[..., None].double()

    def sum(self, x):
        return super().sum(x * self.visible)

    def amax(self, x):
        return super().amax(x.masked_fill(self.visible == 0, float("-inf")))


@pytest.mark.parametrize("backend", OTHERS)
@pytest.mark.parametrize("block_norm", ALTERNATIVES)
@pytest.mark.parametrize("ratio", [0.6, border_mask])  # equal / unequal visible counts per sample
def test_backends_agree_for_every_block_norm(backend, block_norm, ratio):
    torch.manual_seed(0)
    model = randomize_(FCMAE("convnextv2_atto", decoder_dim=64, backend="dense", block_norm=block_norm))
    assert model.encoder.block_norm == block_norm and model.encoder.stages[1][0].grn is None
    imgs = torch.randn(2, 3, 96, 96)
    mask = ratio(2, 3, 3) if callable(ratio) else random_mask(2, 96, ratio, generator=torch.Generator().manual_seed(0))
    assert_backends_agree(model, imgs, mask, backend)


@pytest.mark.parametrize("backend", available_backends())
@pytest.mark.parametrize("block_norm", ALTERNATIVES)
def test_visible_outputs_ignore_masked_pixels_for_every_block_norm(backend, block_norm):
    torch.manual_seed(0)
    model = randomize_(create_model("convnextv2_atto", num_classes=0, block_norm=block_norm)).double()
    imgs = torch.randn(2, 3, 96, 64, dtype=torch.float64)
    mask = random_mask(2, (96, 64), 0.5, generator=torch.Generator().manual_seed(3))
    noise = 10 * torch.randn_like(imgs) * pixel_mask(mask).unsqueeze(1)
    with torch.no_grad():
        a = sparse_forward_features(model, imgs, mask, backend)
        b = sparse_forward_features(model, imgs + noise, mask, backend)
        full = sparse_forward_features(model, imgs, torch.zeros_like(mask), backend)
    assert torch.allclose(a, b, atol=1e-12) and (a * mask.unsqueeze(1) == 0).all()
    if block_norm in ("bn", "se", "cbam"):  # statistics over positions: what is masked changes the visible outputs
        assert (a - full * (~mask).unsqueeze(1)).abs().max() > 1e-6


@pytest.mark.parametrize("block_norm", ALTERNATIVES)
def test_zero_ratio_is_the_dense_model_and_the_option_changes_the_function(block_norm):
    torch.manual_seed(0)
    model = randomize_(create_model("convnextv2_atto", num_classes=0, block_norm=block_norm)).double()
    imgs = torch.randn(2, 3, 64, 64, dtype=torch.float64)
    with torch.no_grad():
        for backend in available_backends():
            torch.testing.assert_close(sparse_forward_features(model, imgs, torch.zeros(2, 2, 2, dtype=torch.bool),
                                                               backend), model.forward_features(imgs))
        grn = randomize_(create_model("convnextv2_atto", num_classes=0)).double()
        assert (grn.forward_features(imgs) - model.forward_features(imgs)).abs().max() > 1e-3


def test_the_option_is_recorded_with_the_weights_and_checked(tmp_path):
    from cnx2lite.checkpoints import load_pretrained
    from cnx2lite.factory import load_model
    from cnx2lite.hub import save_pretrained

    se = create_model("convnextv2_atto", num_classes=0, block_norm="se")
    folder = save_pretrained(se, tmp_path / "se")
    loaded, _ = load_model(folder)
    assert loaded.block_norm == "se" and loaded.stages[0][0].mlp_norm is not None
    with pytest.raises(ValueError, match="block_norm: saved 'se', model 'grn'"):
        load_pretrained(create_model("convnextv2_atto", num_classes=0), folder)
    assert create_model("convnextv2_atto", block="v1").block_norm == "none"
    assert create_model("convnextv2_atto", block="v1", block_norm="grn").stages[0][0].grn is not None
    with pytest.raises(ValueError, match="block_norm must be one of"):
        create_model("convnextv2_atto", block_norm="gn")


def test_grn_removed_or_added_at_fine_tuning():
    """The paper's ablation of GRN in pretraining vs fine-tuning: a V2 encoder's weights load into a model without GRN
    (GRN's weights dropped), a V1 encoder's into V1 blocks with GRN added (the identity at first: same function)."""
    from cnx2lite.checkpoints import load_pretrained

    torch.manual_seed(0)
    images = torch.randn(2, 3, 64, 64)
    v2 = randomize_(create_model("convnextv2_atto", num_classes=0))
    without = create_model("convnextv2_atto", num_classes=0, block_norm="none")
    with pytest.raises(ValueError):  # only when asked for (fine-tuning asks)
        load_pretrained(without, v2.state_dict())
    result = load_pretrained(without, v2.state_dict(), grn_change=True)
    assert any("GRN removed" in note for note in result.notes)
    torch.testing.assert_close(without.stages[2][1].pwconv1.weight, v2.stages[2][1].pwconv1.weight)
    v1 = randomize_(create_model("convnextv2_atto", num_classes=0, block="v1"))
    with_grn = create_model("convnextv2_atto", num_classes=0, block="v1", block_norm="grn")
    result = load_pretrained(with_grn, v1.state_dict(), grn_change=True)
    assert any("GRN added" in note for note in result.notes)
    with torch.no_grad():
        torch.testing.assert_close(with_grn.eval()(images), v1.eval()(images))
    # a V2 source that merely lacks its GRN weights is still refused
    broken = {k: v for k, v in v2.state_dict().items() if ".grn." not in k}
    with pytest.raises(ValueError, match="grn"):
        load_pretrained(create_model("convnextv2_atto", num_classes=0), broken, grn_change=True)


def test_grn_changes_at_fine_tuning_only_where_the_block_norm_is_named(tmp_path, capsys, one_thread):
    """QA round 22 B03/B02/B05: a V2 encoder pretrained without GRN, fine-tuned with the default block norm, got 12
    GRNs it never had, silently; GRN removed or added on request said nothing; resuming a V2 run spelled 'grn' instead
    of its 'auto' was refused as another architecture."""
    from cnx2lite.train import finetune, pretrain
    from conftest import make_image_folder

    folder = make_image_folder(tmp_path / "images")
    common = dict(data=str(folder), output=str(tmp_path / "runs"), epochs=1, batch_size=4)
    without = pretrain("smoke", name="pre-none", block_norm="none", **common).run_dir
    with pytest.raises(ValueError, match=r"block_norm: saved 'none', model 'grn'.*--block-norm"):
        finetune("smoke", name="ft-auto", pretrained=str(without), **common)
    capsys.readouterr()
    added = finetune("smoke", name="ft-grn", pretrained=str(without), block_norm="grn", **common)
    assert "weights: GRN added" in capsys.readouterr().out and added.config["block_norm"] == "grn"
    with_grn = pretrain("smoke", name="pre-v2", **common).run_dir
    finetune("smoke", name="ft-none", pretrained=str(with_grn), block_norm="none", **common)
    assert "weights: GRN removed" in capsys.readouterr().out
    resumed = pretrain("smoke", name="pre-v2", block_norm="grn", resume="auto", **common)  # the same run, finished
    assert [row["epoch"] for row in resumed.history if row["kind"] == "epoch"] == [1]
    with pytest.raises(ValueError, match="block_norm: 'auto' -> 'none'"):  # another architecture still is refused
        pretrain("smoke", name="pre-v2", block_norm="none", resume="auto", **common)


def test_a_record_or_a_resume_compares_block_norm_auto_as_the_block_styles_own():
    from cnx2lite.train.config_files import comparable

    assert comparable({"block": "v2", "block_norm": "auto"}) == comparable({"block": "v2", "block_norm": "grn"})
    assert comparable({"block": "v1", "block_norm": None}) == {"block": "v1", "block_norm": "none"}
    assert comparable({"block": "v1", "block_norm": "auto"}) != comparable({"block": "v1", "block_norm": "grn"})
    assert comparable({"lr": (1, 2)}) == {"lr": [1, 2]}  # JSON's types, as config.json holds them


@pytest.mark.parametrize("task, settings, values", [
    ("pretrain", dict(img_size=64, batch_size=1), 1),  # 2x2 cells, 1 of them visible at mask ratio 0.6
    ("finetune", dict(img_size=32, batch_size=1), 1),  # a 1x1 last stage
])
def test_batchnorm_that_would_see_one_value_per_channel_is_refused(task, settings, values):
    """QA round 22 B09: it trained, putting out its bias whatever the input, its running variance 0.9^steps."""
    from cnx2lite.train import load_preset

    with pytest.raises(ValueError, match=f"BatchNorm would see {values} value per channel"):
        load_preset("smoke", task=task, block_norm="bn", **settings)
    load_preset("smoke", task=task, block_norm="bn", **{**settings, "batch_size": 2})  # two values: it normalizes
    load_preset("smoke", task=task, **settings)  # GRN's statistics are per sample: nothing to refuse
