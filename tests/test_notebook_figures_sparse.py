"""Notebook 2's measurements (cnx2lite.notebook.sparse_figures): the fill-in toy and its explorer, the
mask-fading content maps, the feature shift, the per-part step timing, the difference plot, and that every figure
comes with its key."""
from __future__ import annotations

import pytest
import torch

from cnx2lite.fcmae import FCMAE
from cnx2lite.masking import random_mask
from cnx2lite.models import create_model
from cnx2lite.notebook import sparse_figures as sf
from cnx2lite.notebook import step_timing as timing
from cnx2lite.notebook.evidence import Measured
from cnx2lite.reproduce.figures import differences_figure

SIZE = 64


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(2, 3, SIZE, SIZE, generator=gen), random_mask(2, SIZE, 0.5, generator=gen)


@pytest.fixture(scope="module")
def encoder() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("convnextv2_atto", num_classes=0).eval()


def test_depth_maps_has_every_block_input_and_the_output(encoder, batch) -> None:
    x, mask = batch
    maps = sf.depth_maps(encoder, x, mask)
    assert len(maps) == sum(encoder.depths) + 1
    # "after stage i" is the input of stage i + 1, already downsampled to its width
    assert [maps[k].shape[1] for k in sf.stage_ends(encoder.depths)] == [*encoder.dims, encoder.dims[-1]]
    assert maps[-1].shape[-1] == SIZE // 32


def test_sparse_keeps_masked_positions_empty_and_dense_conv_fills_them(encoder, batch) -> None:
    x, mask = batch
    sparse = sf.photo_content(encoder, x, mask, backend="gather")
    dense = sf.photo_content(encoder, x, mask)
    for content in sparse:
        assert (content[sf.at_resolution(mask, content.shape[-1])] == 0).all()
    assert sf.filled_fraction(dense[0], mask) == 0.0  # the stem reads one patch, inside one cell
    assert sf.filled_fraction(dense[-1], mask) > 0.5


def test_feature_shift_is_zero_for_identical_features() -> None:
    feats = torch.randn(100, 8)
    assert sf.channel_shift(feats, feats) == pytest.approx(0.0, abs=1e-6)
    assert sf.channel_shift(feats + feats.std(0), feats) == pytest.approx(1.0, rel=1e-4)


def test_feature_shift_has_a_value_per_depth(encoder, batch) -> None:
    x, mask = batch
    shifts = sf.feature_shift(encoder, encoder, x, mask)
    assert set(shifts) == {"dense conv: masked positions", "dense conv: visible positions", "sparse: visible positions"}
    assert all(len(v) == sum(encoder.depths) + 1 for v in shifts.values())


def test_step_parts_cover_the_step(batch) -> None:
    x, mask = batch
    torch.manual_seed(0)
    model = FCMAE("convnextv2_atto", decoder_dim=64)
    parts = timing.time_step_parts(model, x, mask, ["gather", "dense"], iters=1, warmup=0)
    for backend in ("gather", "dense"):
        assert {part for _, part in parts[backend]} == set(timing.PARTS)
        assert all(t >= 0 for t in parts[backend].values())


def test_amdahl() -> None:
    parts = {("forward", "decoder"): 1.0, ("forward", "rest of encoder"): 3.0}
    assert timing.amdahl(parts, 1.0) == pytest.approx(1.0)
    assert timing.amdahl(parts, 0.0) == pytest.approx(4.0)
    assert timing.amdahl(parts, 0.5) == pytest.approx(4.0 / 2.5)


def test_figures_have_titles_labels_and_keys(encoder, batch) -> None:
    x, mask = batch
    content = {"dense conv": sf.photo_content(encoder, x, mask)}
    figures = [
        sf.plot_mask_fading(content, mask, encoder.depths, sf.stage_ends(encoder.depths), "t"),
        sf.plot_distribution_shift(x, mask, sf.feature_shift(encoder, encoder, x, mask), encoder.depths),
        sf.plot_sparse_set(x[0], mask[0]),
        sf.plot_fill_in(sf.toy_stack(x[0], 2), sf.toy_stack(x[0], 2, sf.visible_pixels(mask[0])), [0, 2], mask[0]),
        differences_figure({"ours": (Measured(1.0, -0.5, 2.0).estimate, None), "paper": (None, 4.4)}, "t", "points"),
        timing.plot_speedups({"a": 1.2, "b": 1.5}, "t"),
    ]
    for fig in figures:
        assert fig.legends or any(ax.get_legend() for ax in fig.axes)
        assert fig.get_suptitle() or any(ax.get_title() for ax in fig.axes)


def test_toy_conv_is_a_7x7_average_and_its_sparse_form_keeps_holes_empty() -> None:
    gen = torch.Generator().manual_seed(0)
    x, mask = torch.randn(3, SIZE, SIZE, generator=gen), random_mask(1, SIZE, 0.5, generator=gen)[0]
    visible = sf.visible_pixels(mask)
    c = SIZE // 2
    assert torch.allclose(sf.toy_conv(x)[:, c, c], x[:, c - 3:c + 4, c - 3:c + 4].mean((1, 2)), atol=1e-6)
    dense, sparse = sf.toy_stack(x * visible, 12), sf.toy_stack(x * visible, 12, visible)
    assert len(dense) == len(sparse) == 13 and torch.equal(dense[0], sparse[0])
    assert sf.filled_pixels(dense[0], mask) == 0.0 and sf.filled_pixels(dense[1], mask) > 0
    assert all(sf.filled_pixels(img, mask) == 0.0 for img in sparse)
    assert torch.equal(sparse[1], sf.toy_conv(x * visible) * visible)


def test_a_lone_masked_cell_fills_after_six_layers() -> None:
    """Each layer moves the border 3 px in from every side; the middle of a 32-px cell is 16 px in."""
    lone = torch.zeros(3, 3, dtype=torch.bool)
    lone[1, 1] = True
    x = torch.rand(3, 96, 96) + 0.5  # no exact zeros
    stack = sf.toy_stack(x * sf.visible_pixels(lone), 6)
    assert [sf.filled_cells(img, lone) for img in stack] == [0, 0, 0, 0, 0, 0, 1]
    assert sf.filled_pixels(stack[5], lone) == pytest.approx(1 - 4 / 32**2)


def test_difference_plot_marks_zero_and_both_rows() -> None:
    """One function draws the report's difference figures and the notebooks' (a row of ours, a row of the paper's,
    or both on one row)."""
    ours = Measured(2.3, 0.8, 3.9, runs=(1.9, 2.7)).estimate
    fig = differences_figure({"ours": (ours, None), "paper": (None, 4.4), "both": (ours, 1.0)}, "t", "points")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "points" and fig.get_suptitle() == "t"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["ours", "paper", "both"]
    assert any(list(line.get_xdata()) == [0, 0] for line in ax.get_lines())  # the line at 0
    assert ax.get_xlim()[0] < 0 < 4.4 < ax.get_xlim()[1]
    diamonds = next(line for line in ax.get_lines() if line.get_marker() == "D")
    assert list(diamonds.get_xdata()) == [4.4, 1.0] and list(diamonds.get_ydata()) == [1, 2]
    assert [list(dots.get_offsets()[:, 0]) for dots in ax.collections if len(dots.get_offsets()) == 2] == [
        [1.9, 2.7], [1.9, 2.7]]  # each run of a row with several
    assert [text.get_text() for text in fig.legends[0].get_texts()][0].startswith("measured")


def test_fill_in_explorer_redraws_with_the_number_of_layers() -> None:
    pytest.importorskip("ipywidgets")
    from cnx2lite.notebook.widgets import fill_in_explorer

    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[1, 1] = True
    explorer = fill_in_explorer(torch.rand(3, 96, 96) + 0.5, mask, layers=0, max_layers=8)
    assert explorer.text.startswith("after 0 dense 7x7 layers: 0% of the masked pixels filled, 0 of 1")
    slider = explorer.children[0].children[0]
    slider.value = 6
    explorer.update()
    assert "after 6 dense 7x7 layers: 100% of the masked pixels filled, 1 of 1" in explorer.text
    assert explorer.text.endswith("after 6 sparse layers: 0% filled")
    assert bytes(explorer.figure.value).startswith(b"\x89PNG")
