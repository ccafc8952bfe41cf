"""Feature-collapse analysis: the cosine distance itself, and activation capture on our and timm's models."""
from __future__ import annotations

import math

import pytest
import torch

from cnx2lite import collapse
from cnx2lite.models import create_model
from cnx2lite.notebook.collapse_figures import plot_channel_maps, plot_distance_by_layer


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
    assert collapse.feature_cosine_distance(channel.expand(2, 16, 6, 6)) == pytest.approx(0.0, abs=1e-9)
    # a positive rescaling of a channel does not change its direction
    scaled = channel * torch.arange(1.0, 17.0).view(1, 16, 1, 1)
    assert collapse.feature_cosine_distance(scaled) == pytest.approx(0.0, abs=1e-9)


def test_independent_random_channels_are_near_one_half() -> None:
    torch.manual_seed(0)
    c = 64
    value = collapse.feature_cosine_distance(torch.randn(4, c, 32, 32))
    # off-diagonal pairs have cos ~ 0 (distance 1/2), the C diagonal terms have distance 0
    assert value == pytest.approx(0.5 * (1 - 1 / c), abs=0.01)


def test_matches_naive_double_loop() -> None:
    torch.manual_seed(1)
    x = torch.nn.functional.gelu(torch.randn(3, 7, 4, 5))
    x[1, 2] = 0.0  # a dead channel: cosine 0 with everything, by convention
    assert collapse.feature_cosine_distance(x) == pytest.approx(naive_distance(torch.nan_to_num(x)), abs=1e-9)


def test_ours_v1_and_v2_capture_gelu_outputs_in_block_order() -> None:
    for block in ("v1", "v2"):
        model = create_model("convnextv2_atto", num_classes=0, block=block)
        names = collapse.find_mlp_activations(model)
        assert names[0] == "stages.0.0.act" and names[-1] == "stages.3.1.act" and len(names) == sum(model.depths)
        feats = collapse.mlp_activations(model, torch.randn(2, 3, 64, 64))
        assert list(feats) == names
        assert tuple(feats["stages.0.0.act"].shape) == (2, 4 * 40, 16, 16)  # (N, 4C, H, W)
        assert tuple(feats["stages.3.1.act"].shape) == (2, 4 * 320, 2, 2)


def test_layout_is_nchw_matching_the_grn_input() -> None:
    model = create_model("convnextv2_atto", num_classes=0).eval()
    grn_in = {}
    handle = model.stages[1][0].grn.register_forward_hook(lambda m, args, out: grn_in.update(x=args[0]))
    images = torch.randn(1, 3, 64, 64)
    feats = collapse.mlp_activations(model, images)
    handle.remove()
    assert torch.equal(feats["stages.1.0.act"], grn_in["x"].permute(0, 3, 1, 2))


def test_timm_convnextv2_atto_has_the_same_layers_and_values() -> None:
    timm = pytest.importorskip("timm")
    from cnx2lite.checkpoint_formats import export_timm

    ours = create_model("convnextv2_atto", num_classes=0).eval()
    theirs = timm.create_model("convnextv2_atto", pretrained=False, num_classes=0).eval()
    theirs.load_state_dict(export_timm(ours), strict=False)
    assert len(collapse.find_mlp_activations(theirs)) == len(collapse.find_mlp_activations(ours))
    images = torch.randn(2, 3, 64, 64)
    a = collapse.cosine_distance_by_layer(ours, images)
    b = collapse.cosine_distance_by_layer(theirs, images)
    assert len(a) == len(b) == 12  # atto: depths (2, 2, 6, 2)
    assert [v for _, v in a] == pytest.approx([v for _, v in b], abs=1e-4)


def test_timm_convnext_v1_and_conv_mlp_layout() -> None:
    timm = pytest.importorskip("timm")
    images = torch.randn(1, 3, 64, 64)
    for kwargs in ({}, {"conv_mlp": True}):  # channels-last Linear MLP, and the 1x1 conv MLP (NCHW)
        model = timm.create_model("convnext_atto", pretrained=False, num_classes=0, **kwargs)
        feats = collapse.mlp_activations(model, images)
        assert len(feats) == 12
        assert tuple(next(iter(feats.values())).shape) == (1, 160, 16, 16)


def test_hooks_are_removed_and_mode_restored() -> None:
    model = create_model("convnextv2_atto", num_classes=0).train()
    collapse.cosine_distance_by_layer(model, torch.randn(3, 3, 64, 64), batch_size=2)
    collapse.channel_maps(model, torch.randn(3, 64, 64), layer=2, k=8)
    assert model.training
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    with pytest.raises(KeyError):
        collapse.mlp_activations(model, torch.randn(1, 3, 64, 64), layers=["stages.0.0.nope"])
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_channel_maps_and_figures() -> None:
    model = create_model("convnextv2_atto", num_classes=0)
    maps = collapse.channel_maps(model, torch.randn(3, 64, 64), layer="stages.2.0.act", k=16)
    assert tuple(maps.shape) == (16, 4, 4)
    maps[3] = 0.0  # a constant map is drawn flat and counted
    fig = plot_channel_maps({"a": maps, "b": maps}, cols=4)
    assert "1 constant" in fig.subfigs[0]._suptitle.get_text()
    fig = plot_distance_by_layer({"a": [("x", 0.1), ("y", 0.2)]})
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()][0] == "a"


def test_dead_channels_are_counted_exactly() -> None:
    torch.manual_seed(2)
    c = 16
    x = torch.nn.functional.gelu(torch.randn(3, c, 6, 6))
    x[0, [1, 5, 9]] = 0.0
    x[1, 4] = 0.0
    x[1, 7] = 0.9 * collapse.DEAD_TOL * torch.rand(6, 6).sign()  # below the tolerance everywhere: dead
    x[2, 3] = 0.0
    x[2, 3, 2, 2] = 1.1 * collapse.DEAD_TOL  # one position above it: alive
    stats = collapse.layer_collapse(x, "layer")
    assert stats.name == "layer"
    assert stats.dead.tolist() == pytest.approx([3 / c, 2 / c, 0.0], abs=1e-12)
    assert stats.saturated.tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-12)  # zero maps are dead, not saturated
    # the distance is the paper's, per image
    assert stats.distance.tolist() == pytest.approx([naive_distance(x[i:i + 1]) for i in range(3)], abs=1e-9)


def test_constant_channels_are_saturated() -> None:
    torch.manual_seed(3)
    c = 20
    x = torch.nn.functional.gelu(torch.randn(2, c, 5, 5))
    x[0, 0] = 0.84  # GELU(1) everywhere
    x[0, 1] = -0.1
    x[0, 2] = 0.5 + 0.02 * torch.randn(5, 5)  # nearly constant: std / RMS ~ 0.04
    x[0, 3] = 0.0  # dead
    x[1, 2] = 0.5 + 0.2 * torch.randn(5, 5)  # std / RMS ~ 0.4: structure, not saturated
    stats = collapse.layer_collapse(x)
    assert stats.saturated.tolist() == pytest.approx([3 / c, 0.0], abs=1e-12)
    assert stats.dead.tolist() == pytest.approx([1 / c, 0.0], abs=1e-12)
    with pytest.raises(ValueError, match="2 positions"):
        collapse.layer_collapse(x[:, :, :1, :1])


def test_dead_and_saturated_channels_of_a_model_ours_and_timm() -> None:
    """Kill k channels of one MLP (weights 0, bias -10: GELU(-10) ~ 0) and pin s more to a constant
    (weights 0, bias 1): that layer has exactly k/4C dead and s/4C saturated channels in every image,
    through our hooks and through timm's, with the same weights."""
    timm = pytest.importorskip("timm")
    from cnx2lite.checkpoint_formats import export_timm

    ours = create_model("convnextv2_atto", num_classes=0)
    k, s, layer = 5, 3, 3  # stages.1.1: 4C = 320 channels
    fc1 = ours.stages[1][1].pwconv1
    with torch.no_grad():
        fc1.weight[:k + s] = 0.0
        fc1.bias[:k] = -10.0
        fc1.bias[k:k + s] = 1.0
    theirs = timm.create_model("convnextv2_atto", pretrained=False, num_classes=0)
    theirs.load_state_dict(export_timm(ours), strict=False)
    torch.manual_seed(4)
    images = torch.randn(3, 3, 64, 64)
    a, b = collapse.collapse_by_layer(ours, images), collapse.collapse_by_layer(theirs, images, batch_size=2)
    assert len(a) == len(b) == 12
    assert a[layer].name == "stages.1.1.act" and b[layer].name == "stages.1.blocks.1.mlp.act"
    assert a[layer].dead.tolist() == pytest.approx([k / 320] * 3, abs=1e-12)
    assert a[layer].saturated.tolist() == pytest.approx([s / 320] * 3, abs=1e-12)
    assert all(off >= k / 320 for off in a[layer].off.tolist())  # dead at GELU(-10) is below 0 too
    for x, y in zip(a, b):
        for stat in collapse.STATS:
            assert getattr(x, stat).shape == (3,)
            assert getattr(x, stat).tolist() == pytest.approx(getattr(y, stat).tolist(), abs=1e-4)


def test_spread_across_images_is_zero_for_identical_images_only() -> None:
    model = create_model("convnextv2_atto", num_classes=0)
    torch.manual_seed(5)
    images = torch.randn(4, 3, 64, 64)
    same = collapse.collapse_by_layer(model, images[:1].expand(4, -1, -1, -1).contiguous())
    different = collapse.collapse_by_layer(model, images, batch_size=3)  # 2 batches, concatenated in order
    for layer in same:
        summary = layer.summary()
        assert all(summary[f"{stat}_std"] == pytest.approx(0.0, abs=1e-9) for stat in collapse.STATS)
    assert all(layer.summary()["distance_std"] > 1e-4 for layer in different)
    assert [layer.distance[:1].item() for layer in different] == pytest.approx(
        [layer.distance[0].item() for layer in same], abs=1e-6)
    # the old entry point is the mean over images
    assert [v for _, v in collapse.cosine_distance_by_layer(model, images)] == pytest.approx(
        [layer.distance.mean().item() for layer in different], abs=1e-7)  # float32 sums in other batch sizes
    assert math.isnan(collapse.layer_collapse(torch.randn(1, 4, 3, 3)).summary()["dead_std"])


def test_effective_rank_counts_the_directions_used():
    g = torch.Generator().manual_seed(0)
    isotropic = torch.randn(20000, 16, generator=g, dtype=torch.float64)
    assert 15.5 < collapse.effective_rank(isotropic) <= 16
    line = torch.randn(500, 1, generator=g, dtype=torch.float64) * torch.randn(1, 16, generator=g, dtype=torch.float64)
    assert collapse.effective_rank(line) == pytest.approx(1.0, abs=1e-6)
    two = torch.cat([isotropic[:, :2], torch.zeros(20000, 14, dtype=torch.float64)], dim=1)
    assert collapse.effective_rank(two) == pytest.approx(2.0, abs=0.05)
    rotation = torch.linalg.qr(torch.randn(16, 16, generator=g, dtype=torch.float64))[0]
    assert collapse.effective_rank(3.0 * two @ rotation) == pytest.approx(collapse.effective_rank(two), abs=1e-9)
    maps = two[:18432].reshape(2, 96, 96, 16).permute(0, 3, 1, 2)  # (N, C, H, W): positions are the samples
    assert collapse.layer_effective_rank(maps) == pytest.approx(2.0, abs=0.05)


def test_centered_distance_ignores_a_common_offset_and_off_counts_channels_below_zero() -> None:
    torch.manual_seed(6)
    maps = torch.randn(2, 6, 4, 4, dtype=torch.float64)
    # two channels parked near GELU's floor: off, not dead
    maps[:, :2] = -0.17 + 0.01 * torch.rand(2, 2, 4, 4, dtype=torch.float64)
    stats = collapse.layer_collapse(maps)
    shifted = collapse.layer_collapse(maps + 5.0)  # a common offset makes every channel alike...
    assert shifted.distance.max() < 0.1 < stats.distance.min()
    # ...but leaves the spatial patterns, which the centered distance compares
    assert shifted.centered_distance.tolist() == pytest.approx(stats.centered_distance.tolist(), abs=1e-9)
    centered = maps - maps.mean(dim=(2, 3), keepdim=True)
    # the two flat channels keep no spatial pattern: only the other four are compared
    assert stats.centered_distance.tolist() == pytest.approx(
        [collapse.feature_cosine_distance(m[2:]) for m in centered], abs=1e-9)
    assert collapse.layer_collapse(torch.ones(1, 3, 2, 2)).centered_distance.tolist() == [0.0]  # nothing to compare
    assert stats.off.tolist() == pytest.approx([2 / 6, 2 / 6]) and stats.dead.tolist() == [0.0, 0.0]


def test_grn_point_is_what_the_second_pointwise_conv_sees_ours_and_timm() -> None:
    timm = pytest.importorskip("timm")
    from cnx2lite.checkpoint_formats import export_timm

    ours = create_model("convnextv2_atto", num_classes=0)
    with torch.no_grad():  # GRN starts as the identity (gamma = beta = 0): make it act
        for block in (b for stage in ours.stages for b in stage):
            block.grn.gamma.normal_(0, 0.5)
            block.grn.beta.normal_(0, 0.1)
    theirs = timm.create_model("convnextv2_atto", pretrained=False, num_classes=0)
    theirs.load_state_dict(export_timm(ours), strict=False)
    images = torch.randn(2, 3, 64, 64)
    grn = collapse.mlp_activations(ours, images, point="grn")
    assert list(grn)[:2] == ["stages.0.0.grn", "stages.0.1.grn"] and len(grn) == 12
    block = ours.stages[0][0]
    seen = {}
    handle = block.pwconv2.register_forward_pre_hook(lambda m, args: seen.setdefault("x", args[0]))
    ours.eval()(images)
    handle.remove()
    assert torch.allclose(grn["stages.0.0.grn"], seen["x"].permute(0, 3, 1, 2), atol=1e-6)
    timm_grn = collapse.mlp_activations(theirs, images, point="grn")
    for x, y in zip(grn.values(), timm_grn.values()):
        assert torch.allclose(x, y, atol=1e-4)
    with pytest.raises(ValueError, match="GRN"):
        collapse.find_mlp_activations(create_model("convnextv2_atto", block="v1"), point="grn")
    with pytest.raises(ValueError, match="point must be one of gelu, grn"):
        collapse.find_mlp_activations(ours, point="ln")


def test_effective_rank_of_samples_with_nan_is_one_line():
    with pytest.raises(ValueError, match="samples hold nan or inf"):
        collapse.effective_rank(torch.full((4, 3), float("nan")))


def test_collapse_statistics_of_features_with_nan_are_one_line():
    with pytest.raises(ValueError, match="the features hold nan or inf"):
        collapse.feature_cosine_distance(torch.full((1, 4, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="the features hold nan or inf"):
        collapse.layer_collapse(torch.full((1, 4, 2, 2), float("inf")))


def test_grn_change_is_zero_at_init_and_gamma_times_the_normalized_response_when_it_acts() -> None:
    """||GRN(x) - x|| / ||x||: GRN at init is the identity (0 exactly); with gamma = c and beta = 0 it adds
    c * x * N(x), N the channel's spatial L2 norm over the mean of them (the paper's eq.), computed here from the
    GELU point's activations, what enters GRN."""
    model = create_model("convnextv2_atto", num_classes=0).train()
    images = torch.randn(3, 3, 64, 64)
    change = collapse.grn_change_by_layer(model, images, batch_size=2)
    assert list(change)[:2] == ["stages.0.0.grn", "stages.0.1.grn"] and len(change) == 12
    assert all(c.shape == (3,) and c.dtype == torch.float64 and (c == 0).all() for c in change.values())
    with torch.no_grad():
        model.stages[1][0].grn.gamma.fill_(0.3)
    change = collapse.grn_change_by_layer(model, images)
    assert model.training  # its mode is restored
    x = collapse.mlp_activations(model, images, ["stages.1.0.act"])["stages.1.0.act"].double()  # (N, C, H, W)
    strength = x.flatten(2).norm(dim=-1)  # (N, C)
    normalized = strength / (strength.mean(dim=1, keepdim=True) + 1e-6)
    expected = 0.3 * (x * normalized[..., None, None]).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1)
    torch.testing.assert_close(change["stages.1.0.grn"], expected, rtol=1e-4, atol=0)
    assert all((c == 0).all() for name, c in change.items() if name != "stages.1.0.grn")  # each GRN its own change
    with pytest.raises(ValueError, match="GRN"):
        collapse.grn_change_by_layer(create_model("convnextv2_atto", block="v1"), images)
