import pytest
import torch

from cnx2lite.layers import GRN, GRN_AGGREGATIONS, AllPositions, MaskedPositions, TokenPositions
from cnx2lite.layers.grn import GRN_NORMALIZATIONS, global_response_norm, grn_aggregate, grn_normalize
from cnx2lite.models import create_model


def reference_grn(x, gamma, beta, eps=1e-6):
    """The paper's pseudo-code (Algorithm 1), written out for (N, H, W, C) input."""
    gx = torch.sqrt((x**2).sum(dim=(1, 2), keepdim=True))
    nx = gx / (gx.mean(dim=-1, keepdim=True) + eps)
    return gamma * (x * nx) + beta + x


def random_grn(dim, aggregation="l2"):
    """A GRN with random gamma/beta (both start at zero, which would hide most mistakes)."""
    torch.manual_seed(0)
    grn = GRN(dim, aggregation=aggregation)
    with torch.no_grad():
        grn.gamma.normal_()
        grn.beta.normal_()
    return grn


def test_zero_init_is_identity():
    x = torch.randn(2, 5, 6, 8)
    torch.testing.assert_close(GRN(8)(x), x, rtol=0, atol=0)


def test_matches_paper_formula():
    grn = random_grn(16)
    x = torch.randn(3, 4, 5, 16)
    torch.testing.assert_close(grn(x), reference_grn(x, grn.gamma, grn.beta))


# One sample, a 2x2 map, 2 channels: channel 0 holds [[1, -2], [3, 4]], channel 1 [[0, 2], [-1, 1]].
HAND_X = torch.tensor([[[[1.0, 0.0], [-2.0, 2.0]], [[3.0, -1.0], [4.0, 1.0]]]])
HAND_G = {  # per channel, by hand
    "l2": [30**0.5, 6**0.5],  # sqrt(1 + 4 + 9 + 16), sqrt(0 + 4 + 1 + 1)
    "l1": [10.0, 4.0],  # 1 + 2 + 3 + 4, 0 + 2 + 1 + 1
    "mean": [1.5, 0.5],  # (1 - 2 + 3 + 4) / 4, (0 + 2 - 1 + 1) / 4
}


@pytest.mark.parametrize("aggregation", GRN_AGGREGATIONS)
def test_each_aggregation_is_its_hand_computed_formula(aggregation):
    grn = GRN(2, aggregation=aggregation)
    with torch.no_grad():
        grn.gamma.copy_(torch.tensor([2.0, 3.0]).view(1, 1, 1, 2))
        grn.beta.copy_(torch.tensor([0.5, -1.0]).view(1, 1, 1, 2))
    g = torch.tensor(HAND_G[aggregation])
    torch.testing.assert_close(grn_aggregate(HAND_X, aggregation).flatten(), g)
    n = g / (g.mean() + 1e-6)
    expected = torch.tensor([2.0, 3.0]) * HAND_X * n + torch.tensor([0.5, -1.0]) + HAND_X
    torch.testing.assert_close(grn(HAND_X), expected)


def test_model_grn_equals_the_function_the_notebook_calls():
    """The GRN inside a ConvNeXt V2 block and global_response_norm with the paper's choices (L2,
    divisive, residual): per-channel parameters, and one float for all channels as notebook 3 uses."""
    grn = create_model("convnextv2_atto", num_classes=0).stages[1][0].grn
    x = torch.randn(2, 7, 7, grn.gamma.shape[-1])
    with torch.no_grad():
        grn.gamma.normal_(generator=torch.Generator().manual_seed(0))
        grn.beta.normal_(generator=torch.Generator().manual_seed(1))
    out = global_response_norm(x, grn.gamma.view(-1), grn.beta.view(-1), "l2", "divisive", residual=True)
    torch.testing.assert_close(grn(x), out, rtol=0, atol=1e-6)
    torch.testing.assert_close(out, reference_grn(x, grn.gamma, grn.beta), rtol=0, atol=1e-5)
    with torch.no_grad():
        grn.gamma.fill_(1.0)
        grn.beta.fill_(0.1)
    torch.testing.assert_close(grn(x), global_response_norm(x, gamma=1.0, beta=0.1), rtol=0, atol=1e-6)


@pytest.mark.parametrize("normalization", GRN_NORMALIZATIONS)
@pytest.mark.parametrize("aggregation", GRN_AGGREGATIONS)
def test_every_variant_is_its_hand_written_formula(aggregation, normalization):
    torch.manual_seed(0)
    x = torch.randn(2, 4, 5, 8, dtype=torch.float64)
    gamma, beta = torch.randn(8, dtype=torch.float64), torch.randn(8, dtype=torch.float64)
    g = {"l2": (x**2).sum(dim=(1, 2), keepdim=True).sqrt(),
         "l1": x.abs().sum(dim=(1, 2), keepdim=True),
         "mean": x.mean(dim=(1, 2), keepdim=True)}[aggregation]
    mean, std = g.mean(dim=-1, keepdim=True), g.std(dim=-1, keepdim=True)
    n = {"divisive": g / (mean + 1e-6), "standardize": (g - mean) / (std + 1e-6), "none": g}[normalization]
    torch.testing.assert_close(grn_aggregate(x, aggregation), g)
    torch.testing.assert_close(grn_normalize(g, normalization), n)
    for residual in (True, False):
        expected = gamma * (x * n) + beta + (x if residual else 0)
        torch.testing.assert_close(global_response_norm(x, gamma, beta, aggregation, normalization, residual), expected)


def test_statistics_are_per_sample():
    torch.manual_seed(0)
    grn = GRN(8)
    with torch.no_grad():
        grn.gamma.fill_(1.0)
    a, b = torch.randn(1, 4, 4, 8), torch.randn(1, 4, 4, 8)
    torch.testing.assert_close(grn(torch.cat([a, b]))[:1], grn(a))


@pytest.mark.parametrize("aggregation", GRN_AGGREGATIONS)
def test_masked_and_token_positions_agree_and_ignore_masked_positions(aggregation):
    grn = random_grn(8, aggregation).double()
    x = torch.randn(2, 4, 4, 8, dtype=torch.float64)
    visible = (torch.rand(2, 4, 4, 1, generator=torch.Generator().manual_seed(1)) > 0.5).double()
    dense = grn(x, MaskedPositions(visible))
    garbage = x + 100 * (1 - visible) * torch.randn_like(x)
    torch.testing.assert_close(grn(garbage, MaskedPositions(visible)) * visible, dense * visible)
    keep = visible[..., 0].bool()
    lengths = keep.flatten(1).sum(1)
    assert lengths[0] != lengths[1]  # the general (segment) path
    tokens = x[keep]
    torch.testing.assert_close(grn(tokens, TokenPositions(lengths)), dense[keep])
    # the statistics of visible positions alone: a mean divides by the visible count, not by H * W
    per_sample = [tokens[:lengths[0]], tokens[lengths[0]:]]
    expected = torch.stack([{"l2": t.norm(dim=0), "l1": t.abs().sum(0), "mean": t.mean(0)}[aggregation]
                            for t in per_sample])
    torch.testing.assert_close(grn_aggregate(tokens, aggregation, TokenPositions(lengths)), expected)
    torch.testing.assert_close(grn_aggregate(x, aggregation, MaskedPositions(visible)).view(2, 8), expected)
    even = torch.ones(2, 4, 4, dtype=torch.bool)  # the uniform (reshape) path
    torch.testing.assert_close(grn(x[even], TokenPositions(even.flatten(1).sum(1))), grn(x)[even])


@pytest.mark.parametrize("aggregation", GRN_AGGREGATIONS)
def test_gradcheck_dense_and_tokens(aggregation):
    grn = random_grn(4, aggregation).double()
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(grn, (x,))
    t = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    for lengths in ([3, 4], [0, 7]):
        assert torch.autograd.gradcheck(lambda v: grn(v, TokenPositions(torch.tensor(lengths))), (t,))
    t = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: grn(v, TokenPositions(torch.tensor([4, 4]))), (t,))


@pytest.mark.parametrize("aggregation", GRN_AGGREGATIONS)
def test_statistics_are_float32_under_bf16_autocast(aggregation):
    """Large activations over many positions: bf16 statistics would be off by ~2**-9 relative; the
    float32 ones match a float64 reference of the same (bf16) input to 1e-5."""
    grn = random_grn(16, aggregation)
    gen = torch.Generator().manual_seed(0)
    x = (300 * torch.randn(2, 14, 14, 16, generator=gen) + 50).bfloat16()  # squares ~1e5, 196 positions
    with torch.autocast("cpu", dtype=torch.bfloat16):
        gx = grn_aggregate(x, aggregation, AllPositions())
        out = grn(x)
    assert gx.dtype == torch.float32 and out.dtype == torch.bfloat16
    reference = GRN(16, aggregation=aggregation).double()
    reference.load_state_dict(grn.state_dict())
    expected = grn_aggregate(x.double(), aggregation)
    rel = ((gx.double() - expected).abs().max() / expected.abs().max()).item()
    assert rel < 1e-5, rel
    assert ((expected.bfloat16().double() - expected).abs().max() / expected.abs().max()).item() > 1e-4  # bf16 is not
    expected_out = reference(x.double())  # the output itself is bf16: equal to ~2**-8 of its magnitude
    assert ((out.double() - expected_out).abs().max() / expected_out.abs().max()).item() < 1e-2


def test_unknown_aggregation_is_a_clear_error():
    with pytest.raises(ValueError, match="aggregation must be one of 'l2', 'l1', 'mean'; got 'max'"):
        GRN(8, aggregation="max")
    with pytest.raises(ValueError, match="aggregation must be one of 'l2', 'l1', 'mean'; got 'L2'"):
        global_response_norm(torch.randn(1, 2, 2, 4), 1.0, 0.0, aggregation="L2")
    with pytest.raises(ValueError, match="normalization must be one of 'divisive', 'standardize', 'none'; got 'max'"):
        global_response_norm(torch.randn(1, 2, 2, 4), 1.0, 0.0, normalization="max")


def test_grn_statistics_stay_float32_where_a_float16_square_overflows():
    """Activations of a few hundred overflow float16 when squared (65504 is its largest value): GRN's norm is taken
    in float32, so a float16 input still gives the float32 answer (to float16 precision)."""
    grn = GRN(8)
    with torch.no_grad():
        grn.gamma.fill_(0.5)
        grn.beta.fill_(0.1)
    x = torch.randn(2, 4, 4, 8) * 300  # squares up to ~1e6
    assert torch.isinf(x.half().square()).any()
    expected = grn(x)
    half = grn.half()(x.half())
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half.float(), expected, rtol=2e-3, atol=0.5)


# --- FusedGRN: the training path, against the three reference steps ---------------------------------------------

def _grads(out, inputs, seed=1):
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed), dtype=out.dtype)
    return torch.autograd.grad(out, inputs, grad)


@pytest.mark.parametrize("positions", ["dense", "uniform tokens"])
def test_fused_training_path_equals_the_three_steps(positions):
    """Values and gradients (x, gamma, beta) of GRN.forward with and without FusedGRN, including a channel that is
    zero everywhere (the norm's zero subgradient) and a sample whose channels are all zero but one."""
    grn = random_grn(6)
    x = torch.randn(3, 4, 5, 6)
    x[0, ..., 2] = 0
    x[1, ..., :5] = 0
    args = (x.reshape(-1, 6), TokenPositions(torch.tensor([20, 20, 20]))) if positions == "uniform tokens" else (x,)
    results = []
    for fused in (True, False):
        grn.fused = fused
        inp = args[0].clone().requires_grad_()
        out = grn(inp, *args[1:])
        results.append((out, *_grads(out, (inp, grn.gamma, grn.beta))))
    for fused, reference in zip(*results):
        torch.testing.assert_close(fused, reference, rtol=1e-5, atol=1e-6)
    assert torch.isfinite(results[0][1]).all()


def test_fused_grn_gradcheck_in_float64():
    from cnx2lite.layers.grn import FusedGRN

    x = torch.randn(3, 7, 5, dtype=torch.float64)
    x[0, :, 1] = 0  # a zero channel: gradcheck skips no point, the subgradient there is 0 as for vector_norm
    x.requires_grad_()
    gamma = torch.randn(5, dtype=torch.float64, requires_grad=True)
    beta = torch.randn(5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *a: FusedGRN.apply(*a, 1e-6), (x, gamma, beta))


def test_fused_only_where_it_applies_and_set_fused_turns_it_off():
    """The fused function runs in training mode with gradients on, for L2 over all positions; no-grad, eval mode
    (inference; export traces it), other aggregations and unequal token sets take the three steps. set_fused(model,
    False) reaches every GRN."""
    from cnx2lite.layers.grn import FusedGRN, set_fused

    calls = []
    original = FusedGRN.apply
    FusedGRN.apply = staticmethod(lambda *a: calls.append(1) or original(*a))
    try:
        x = torch.randn(2, 3, 3, 8, requires_grad=True)
        random_grn(8)(x)
        assert len(calls) == 1
        with torch.no_grad():
            random_grn(8)(x)
        random_grn(8).eval()(x)
        random_grn(8, "l1")(x)
        random_grn(8)(torch.randn(7, 8, requires_grad=True), TokenPositions(torch.tensor([3, 4])))
        assert len(calls) == 1
        model = create_model("convnextv2_atto", num_classes=0)
        set_fused(model, False)
        assert not any(m.fused for m in model.modules() if isinstance(m, GRN))
        model(torch.randn(1, 3, 64, 64)).sum().backward()
        assert len(calls) == 1
    finally:
        FusedGRN.apply = original


def test_fused_statistics_are_float32_under_bf16_autocast():
    grn = random_grn(16)
    gen = torch.Generator().manual_seed(0)
    x = (300 * torch.randn(2, 14, 14, 16, generator=gen) + 50).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = grn(x)
    assert out.dtype == torch.bfloat16
    expected = reference_grn(x.detach().double(), grn.gamma.double(), grn.beta.double())
    assert ((out.double() - expected).abs().max() / expected.abs().max()).item() < 1e-2
    out.float().sum().backward()
    assert x.grad.dtype == torch.bfloat16 and torch.isfinite(x.grad).all()
