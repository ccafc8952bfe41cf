"""Feature-collapse analysis: the cosine distance itself, and activation capture on our and timm's models."""
from __future__ import annotations

import pytest
import torch

from cnx2lite import analysis
from cnx2lite.models import create_model


def naive_distance(features: torch.Tensor) -> float:
    """The paper's formula written as loops: per image, 1/C^2 sum_i sum_j (1 - cos(X_i, X_j)) / 2."""
    per_image = []
    for x in features.double():
        c = len(x)
        total = 0.0
        for i in range(c):
            for j in range(c):
                total += (1 - torch.nn.functional.cosine_similarity(x[i].flatten(), x[j].flatten(), dim=0).item()) / 2
        per_image.append(total / c**2)
    return sum(per_image) / len(per_image)


def test_identical_channels_have_zero_distance() -> None:
    channel = torch.randn(1, 1, 6, 6)
    assert analysis.feature_cosine_distance(channel.expand(2, 16, 6, 6)) == pytest.approx(0.0, abs=1e-9)
    # a positive rescaling of a channel does not change its direction
    scaled = channel * torch.arange(1.0, 17.0).view(1, 16, 1, 1)
    assert analysis.feature_cosine_distance(scaled) == pytest.approx(0.0, abs=1e-9)


def test_independent_random_channels_are_near_one_half() -> None:
    torch.manual_seed(0)
    c = 64
    value = analysis.feature_cosine_distance(torch.randn(4, c, 32, 32))
    # off-diagonal pairs have cos ~ 0 (distance 1/2), the C diagonal terms have distance 0
    assert value == pytest.approx(0.5 * (1 - 1 / c), abs=0.01)


def test_matches_naive_double_loop() -> None:
    torch.manual_seed(1)
    x = torch.nn.functional.gelu(torch.randn(3, 7, 4, 5))
    x[1, 2] = 0.0  # a dead channel: cosine 0 with everything, by convention
    assert analysis.feature_cosine_distance(x) == pytest.approx(naive_distance(torch.nan_to_num(x)), abs=1e-9)


def test_ours_v1_and_v2_capture_gelu_outputs_in_block_order() -> None:
    for block in ("v1", "v2"):
        model = create_model("convnextv2_atto", num_classes=0, block=block)
        names = analysis.find_mlp_activations(model)
        assert names[0] == "stages.0.0.act" and names[-1] == "stages.3.1.act" and len(names) == sum(model.depths)
        feats = analysis.mlp_activations(model, torch.randn(2, 3, 64, 64))
        assert list(feats) == names
        assert tuple(feats["stages.0.0.act"].shape) == (2, 4 * 40, 16, 16)  # (N, 4C, H, W)
        assert tuple(feats["stages.3.1.act"].shape) == (2, 4 * 320, 2, 2)


def test_layout_is_nchw_matching_the_grn_input() -> None:
    model = create_model("convnextv2_atto", num_classes=0).eval()
    grn_in = {}
    handle = model.stages[1][0].grn.register_forward_hook(lambda m, args, out: grn_in.update(x=args[0]))
    images = torch.randn(1, 3, 64, 64)
    feats = analysis.mlp_activations(model, images)
    handle.remove()
    assert torch.equal(feats["stages.1.0.act"], grn_in["x"].permute(0, 3, 1, 2))


def test_timm_convnextv2_atto_has_the_same_layers_and_values() -> None:
    timm = pytest.importorskip("timm")
    from cnx2lite.checkpoints import export_timm

    ours = create_model("convnextv2_atto", num_classes=0).eval()
    theirs = timm.create_model("convnextv2_atto", pretrained=False, num_classes=0).eval()
    theirs.load_state_dict(export_timm(ours), strict=False)
    assert len(analysis.find_mlp_activations(theirs)) == len(analysis.find_mlp_activations(ours))
    images = torch.randn(2, 3, 64, 64)
    a = analysis.cosine_distance_by_layer(ours, images)
    b = analysis.cosine_distance_by_layer(theirs, images)
    assert len(a) == len(b) == 12  # atto: depths (2, 2, 6, 2)
    assert [v for _, v in a] == pytest.approx([v for _, v in b], abs=1e-4)


def test_timm_convnext_v1_and_conv_mlp_layout() -> None:
    timm = pytest.importorskip("timm")
    images = torch.randn(1, 3, 64, 64)
    for kwargs in ({}, {"conv_mlp": True}):  # channels-last Linear MLP, and the 1x1 conv MLP (NCHW)
        model = timm.create_model("convnext_atto", pretrained=False, num_classes=0, **kwargs)
        feats = analysis.mlp_activations(model, images)
        assert len(feats) == 12
        assert tuple(next(iter(feats.values())).shape) == (1, 160, 16, 16)


def test_hooks_are_removed_and_mode_restored() -> None:
    model = create_model("convnextv2_atto", num_classes=0).train()
    analysis.cosine_distance_by_layer(model, torch.randn(3, 3, 64, 64), batch_size=2)
    analysis.channel_maps(model, torch.randn(3, 64, 64), layer=2, k=8)
    assert model.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with pytest.raises(KeyError):
        analysis.mlp_activations(model, torch.randn(1, 3, 64, 64), layers=["stages.0.0.nope"])
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_channel_maps_and_figures() -> None:
    model = create_model("convnextv2_atto", num_classes=0)
    maps = analysis.channel_maps(model, torch.randn(3, 64, 64), layer="stages.2.0.act", k=16)
    assert tuple(maps.shape) == (16, 4, 4)
    maps[3] = 0.0  # a constant map is drawn flat and counted
    fig = analysis.plot_channel_maps({"a": maps, "b": maps}, cols=4)
    assert "1 constant" in fig.subfigs[0]._suptitle.get_text()
    fig = analysis.plot_distance_by_layer({"a": [("x", 0.1), ("y", 0.2)]})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][0] == "a"
