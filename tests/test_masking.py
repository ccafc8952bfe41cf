import pytest
import torch

from cnx2lite.masking import (
    check_mask,
    effective_mask_ratio,
    mask_grid,
    num_visible,
    pixel_mask,
    random_mask,
    stage_masks,
    upsample_mask,
)


def test_keeps_exactly_the_papers_count():
    mask = random_mask(8, 224, 0.6)
    assert mask.shape == (8, 7, 7) and mask.dtype == torch.bool
    assert num_visible(49, 0.6) == 19
    assert ((~mask).flatten(1).sum(1) == 19).all()


@pytest.mark.parametrize("size, ratio", [((64, 96), 0.6), (128, 0.0), ((96, 320), 0.9), (32, 0.5)])
def test_counts_and_shapes_for_any_size(size, ratio):
    mask = random_mask(3, size, ratio)
    h, w = mask_grid(size)
    assert mask.shape == (3, h, w)
    assert ((~mask).flatten(1).sum(1) == int(h * w * (1 - ratio))).all()


def test_reproducible_under_a_generator_and_varies_per_sample():
    a = random_mask(4, 224, generator=torch.Generator().manual_seed(7))
    b = random_mask(4, 224, generator=torch.Generator().manual_seed(7))
    c = random_mask(4, 224, generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert len({tuple(m.flatten().tolist()) for m in a}) == 4


def test_masks_are_uniform_over_cells():
    mask = random_mask(4000, 64, 0.5, generator=torch.Generator().manual_seed(0))
    freq = mask.float().mean(0)
    assert torch.allclose(freq, torch.full_like(freq, 0.5), atol=0.03)


def test_upsampling_repeats_cells_at_every_stage():
    mask = random_mask(2, (64, 96), 0.5)
    stages = stage_masks(mask)
    assert [tuple(m.shape[1:]) for m in stages] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    for m, scale in zip(stages, (8, 4, 2, 1)):
        assert torch.equal(m[:, ::scale, ::scale], mask)
        blocks = m.view(2, 2, scale, 3, scale)
        assert torch.equal(blocks.amin(dim=(2, 4)), blocks.amax(dim=(2, 4)))  # constant inside a cell
    assert pixel_mask(mask).shape == (2, 64, 96)
    assert torch.equal(upsample_mask(mask, 1), mask)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda: random_mask(2, 224, 1.0), ValueError, r"ratio .* must be in \[0, 1\)"),
        (lambda: random_mask(2, 224, -0.1), ValueError, r"ratio .* must be in \[0, 1\)"),
        (lambda: random_mask(2, 100, 0.6), ValueError, "multiples of patch_size=32"),
        (lambda: random_mask(0, 224), ValueError, "batch_size must be a positive int"),
        (lambda: upsample_mask(torch.zeros(7, 7, dtype=torch.bool), 2), ValueError, r"shaped \(N, h, w\)"),
        (lambda: upsample_mask(torch.zeros(1, 7, 7, dtype=torch.bool), 0), ValueError, "scale must be a positive int"),
        (lambda: check_mask(torch.zeros(2, 7, 6), 2, (7, 7)), ValueError, r"\(2, 7, 7\)"),
        (lambda: check_mask(torch.full((2, 7, 7), 0.5), 2, (7, 7)), ValueError, "only 0/1"),
        (lambda: check_mask([[0]], 2, (7, 7)), TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_gets_a_clear_error(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_check_mask_accepts_01_numbers():
    mask = check_mask(torch.tensor([[[0, 1], [1, 0]]]), 1, (2, 2))
    assert mask.dtype == torch.bool and mask.sum() == 2


def test_effective_mask_ratio_counts_the_rounded_down_visible_cells():
    assert effective_mask_ratio(96, 0.6) == pytest.approx(6 / 9)  # 3x3 cells, int(9 * 0.4) = 3 kept
    assert effective_mask_ratio(224, 0.6) == pytest.approx(30 / 49)  # 19 of 49 kept, as the paper's code
    assert effective_mask_ratio(64, 0.6) == pytest.approx(3 / 4)
    assert effective_mask_ratio((64, 96), 0.5) == pytest.approx(1 / 2)
