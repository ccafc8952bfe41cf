import pytest
import torch

from cnx2lite import VARIANTS, create_model
from conftest import randomize_

PAPER_PARAMS_M = {  # ConvNeXt V2 paper, Table 1 / appendix, with the 1000-class head
    "convnextv2_atto": 3.7,
    "convnextv2_femto": 5.2,
    "convnextv2_pico": 9.1,
    "convnextv2_nano": 15.6,
    "convnextv2_tiny": 28.6,
    "convnextv2_base": 89.0,
    "convnextv2_large": 198.0,
    "convnextv2_huge": 660.0,
}


@pytest.mark.parametrize("name", list(PAPER_PARAMS_M))
def test_parameter_count_matches_paper(name):
    with torch.device("meta"):
        model = create_model(name)
    count = sum(p.numel() for p in model.parameters()) / 1e6
    assert abs(count - PAPER_PARAMS_M[name]) / PAPER_PARAMS_M[name] < 0.02, count


def test_registry_has_every_paper_variant():
    assert set(VARIANTS) == set(PAPER_PARAMS_M)
    assert VARIANTS["convnextv2_huge"] == ((3, 3, 27, 3), (352, 704, 1408, 2816))


def test_shapes_and_head_split():
    model = create_model("convnextv2_atto", num_classes=7).eval()
    x = torch.randn(2, 3, 64, 96)
    feats = model.forward_features(x)
    assert feats.shape == (2, 320, 2, 3)
    logits = model(x)
    assert logits.shape == (2, 7) and logits.dtype == torch.float32
    torch.testing.assert_close(logits, model.forward_head(feats), rtol=0, atol=0)
    assert model.forward_head(feats, pre_logits=True).shape == (2, 320)


def test_parameter_names_follow_official_dense_model():
    names = set(create_model("convnextv2_atto").state_dict())
    expected = {
        "downsample_layers.0.0.weight", "downsample_layers.0.1.bias", "downsample_layers.3.1.weight",
        "stages.0.0.dwconv.weight", "stages.2.5.norm.weight", "stages.3.1.pwconv1.weight",
        "stages.3.1.grn.gamma", "stages.3.1.grn.beta", "stages.3.1.pwconv2.bias", "norm.weight", "head.bias",
    }
    assert expected <= names
    assert not any(".gamma" in n and "grn" not in n for n in names)  # no LayerScale in V2


def test_v1_blocks_have_layer_scale_and_no_grn():
    model = create_model("convnextv2_atto", block="v1")
    names = set(model.state_dict())
    assert "stages.0.0.gamma" in names and not any("grn" in n for n in names)
    torch.testing.assert_close(model.stages[0][0].gamma, torch.full((40,), 1e-6))


def test_v2_block_starts_as_identity_grn():
    """Zero-initialized GRN: the V2 block equals the same block without GRN at init."""
    torch.manual_seed(0)
    model = create_model("convnextv2_atto").eval()
    block = model.stages[0][0]
    x = torch.randn(1, 40, 8, 8)
    y = block(x)
    block.grn = None
    torch.testing.assert_close(block(x), y)


@pytest.mark.parametrize("aggregation", ["l1", "mean"])
def test_grn_aggregation_adds_no_parameters_and_changes_the_function(aggregation):
    """Official (L2) checkpoints load strictly into a model with another aggregation."""
    torch.manual_seed(0)
    l2 = randomize_(create_model("convnextv2_atto", num_classes=3)).eval()
    other = create_model("convnextv2_atto", num_classes=3, grn_aggregation=aggregation).eval()
    other.load_state_dict(l2.state_dict())  # strict: same names and shapes
    assert {b.grn.aggregation for s in other.stages for b in s} == {aggregation}
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert (other(x) - l2(x)).abs().max() > 1e-3


def test_head_init_scale_and_drop_path_rates():
    model = create_model("convnextv2_atto", head_init_scale=0.001, drop_path_rate=0.1)
    assert model.head.weight.std().item() == pytest.approx(0.001 * 0.02, rel=0.05)
    rates = [b.drop_path.drop_prob for s in model.stages for b in s]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)


def test_deterministic_under_seed_and_eval_ignores_drop_path():
    torch.manual_seed(3)
    a = create_model("convnextv2_atto", drop_path_rate=0.5)
    torch.manual_seed(3)
    b = create_model("convnextv2_atto", drop_path_rate=0.5)
    for pa, pb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(pa, pb)
    x = torch.randn(2, 3, 32, 32)
    a.eval()
    assert torch.equal(a(x), a(x))
    a.train()
    torch.manual_seed(1)
    y1 = a(x)
    torch.manual_seed(2)
    assert not torch.equal(y1, a(x))  # drop path is stochastic in training


def test_gradients_match_finite_differences():
    torch.manual_seed(0)
    model = randomize_(create_model("convnextv2_atto", num_classes=3)).double()
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: model(t), (x,), eps=1e-6, atol=1e-5, fast_mode=True)


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (3, 3), (4, 6), (6, 6), (5, 3), (7, 7), (9, 5)])
def test_depthwise_conv_is_nn_conv2d_at_every_map_size(size):
    """Maps smaller than the kernel go through a matrix product, larger ones through the conv: both are nn.Conv2d
    (forward and both gradients, float64), in either memory format, and the product's output is channels-last."""
    from cnx2lite.layers.depthwise import DepthwiseConv2d

    torch.manual_seed(0)
    ours = DepthwiseConv2d(5).double()
    reference = torch.nn.Conv2d(5, 5, 7, padding=3, groups=5).double()
    reference.load_state_dict(ours.state_dict())
    for memory_format in (torch.contiguous_format, torch.channels_last):
        x = torch.randn(3, 5, *size, dtype=torch.float64).contiguous(memory_format=memory_format).requires_grad_()
        y, y_ref = ours(x), reference(x)
        torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
        grad = torch.randn_like(y_ref)
        got = torch.autograd.grad(y, (x, ours.weight, ours.bias), grad)
        expected = torch.autograd.grad(y_ref, (x, reference.weight, reference.bias), grad)
        for a, b in zip(got, expected):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
        if max(size) < 7:
            assert y.is_contiguous(memory_format=torch.channels_last)
    small = torch.randn(1, 5, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ours, (small,))


def test_small_map_conv_made_first_under_inference_mode_still_trains():
    from cnx2lite.layers.depthwise import DepthwiseConv2d

    conv = DepthwiseConv2d(4)
    with torch.inference_mode():
        conv(torch.randn(2, 4, 5, 5))  # the first 5x5 map: its tap matrix is made and cached here
    conv(torch.randn(2, 4, 5, 5)).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_in_chans():
    model = create_model("convnextv2_atto", in_chans=1, num_classes=2)
    assert model(torch.randn(1, 1, 32, 32)).shape == (1, 2)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: create_model("convnextv2_small"), "available: convnextv2_atto, convnextv2_femto"),
        (lambda: create_model("convnextv2_atto", block="v3"), "block must be one of 'v2', 'v1'"),
        (lambda: create_model("convnextv2_atto", grn_aggregation="L2"),
         "grn_aggregation must be one of 'l2', 'l1', 'mean'; got 'L2'"),
        (lambda: create_model("convnextv2_atto", drop_path_rate=1.5), r"drop_path_rate must be in \[0, 1\)"),
        (lambda: create_model("convnextv2_atto", in_chans=0), "in_chans must be a positive int"),
        (lambda: create_model("convnextv2_atto")(torch.randn(1, 3, 50, 64)), "multiples of 32, got 50x64"),
        (lambda: create_model("convnextv2_atto")(torch.randn(1, 1, 64, 64)),
         r"expected 3 input channels \(in_chans=3\)"),
        (lambda: create_model("convnextv2_atto")(torch.randn(3, 64, 64)), r"shaped \(N, 3, H, W\)"),
    ],
)
def test_bad_input_gets_a_clear_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_unknown_option_is_named():
    with pytest.raises(TypeError, match="unknown option.*drop_rate.*allowed: num_classes"):
        create_model("convnextv2_atto", drop_rate=0.1)
