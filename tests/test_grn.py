import torch

from cnx2lite.layers import GRN, MaskedL2, TokenL2


def reference_grn(x, gamma, beta, eps=1e-6):
    """The paper's pseudo-code (Algorithm 1), written out for (N, H, W, C) input."""
    gx = torch.sqrt((x**2).sum(dim=(1, 2), keepdim=True))
    nx = gx / (gx.mean(dim=-1, keepdim=True) + eps)
    return gamma * (x * nx) + beta + x


def random_grn(dim):
    """A GRN with random gamma/beta (both start at zero, which would hide most mistakes)."""
    torch.manual_seed(0)
    grn = GRN(dim)
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


def test_statistics_are_per_sample():
    torch.manual_seed(0)
    grn = GRN(8)
    with torch.no_grad():
        grn.gamma.fill_(1.0)
    a, b = torch.randn(1, 4, 4, 8), torch.randn(1, 4, 4, 8)
    torch.testing.assert_close(grn(torch.cat([a, b]))[:1], grn(a))


def test_masked_and_token_aggregation_agree_and_ignore_masked_positions():
    grn = random_grn(8).double()
    x = torch.randn(2, 4, 4, 8, dtype=torch.float64)
    visible = (torch.rand(2, 4, 4, 1) > 0.5).double()
    dense = grn(x, MaskedL2(visible))
    garbage = x + 100 * (1 - visible) * torch.randn_like(x)
    torch.testing.assert_close(grn(garbage, MaskedL2(visible)) * visible, dense * visible)
    keep = visible[..., 0].bool()
    lengths = keep.flatten(1).sum(1)
    assert lengths[0] != lengths[1]  # the general (segment) path
    torch.testing.assert_close(grn(x[keep], TokenL2(lengths)), dense[keep])
    even = torch.ones(2, 4, 4, dtype=torch.bool)  # the uniform (reshape) path
    torch.testing.assert_close(grn(x[even], TokenL2(even.flatten(1).sum(1))), grn(x)[even])


def test_gradcheck_dense_and_tokens():
    grn = random_grn(4).double()
    x = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(grn, (x,))
    t = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    for lengths in ([3, 4], [0, 7]):
        assert torch.autograd.gradcheck(lambda v: grn(v, TokenL2(torch.tensor(lengths))), (t,))
    t = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: grn(v, TokenL2(torch.tensor([4, 4]))), (t,))
