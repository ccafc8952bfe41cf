"""Notebook 1's figures (cnx2lite.notebook.masking_figures) and the masked convention every notebook shares
(cnx2lite.notebook.plotting): masked cells opaque grey, a masked / visible key on every masked figure."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgb as color_rgb
from PIL import Image
from torchvision import transforms as T

from cnx2lite.masking import random_mask
from cnx2lite.notebook import masking_figures as mf
from cnx2lite.notebook.evidence import REPORT
from cnx2lite.notebook.plotting import MASK_COLOR, as_jpeg, draw_masked_photo, mask_legend, subplots, to_pil, to_rgb
from cnx2lite.transforms import pretrain_transform


def image(size: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(3, size, size, generator=torch.Generator().manual_seed(seed))


def labels(legend) -> list[str]:
    return [t.get_text() for t in legend.get_texts()]


def test_masked_cells_are_opaque_and_visible_cells_untouched() -> None:
    img, mask = image(), torch.tensor([[True, False], [False, True]])
    _, ax = subplots()
    draw_masked_photo(ax, img, mask)
    shown, photo = np.asarray(ax.images[0].get_array()), to_rgb(img)
    for rows, cols in ((slice(0, 32), slice(0, 32)), (slice(32, 64), slice(32, 64))):
        assert np.allclose(shown[rows, cols], color_rgb(MASK_COLOR))  # nothing of the photo shows through
    for rows, cols in ((slice(0, 32), slice(32, 64)), (slice(32, 64), slice(0, 32))):
        assert np.allclose(shown[rows, cols], photo[rows, cols])


def test_mask_legend_on_a_figure_and_on_axes() -> None:
    fig, ax = subplots()
    on_fig, on_ax = mask_legend(fig), mask_legend(ax, loc="upper right")
    for legend in (on_fig, on_ax):
        assert labels(legend) == ["masked", "visible"]
        assert np.allclose(legend.legend_handles[0].get_facecolor()[:3], color_rgb(MASK_COLOR))
    assert fig.legends == [on_fig] and ax.get_legend() is on_ax


@pytest.mark.parametrize("draw", [
    lambda: mf.plot_masked_photo(image(), random_mask(1, 64)[0]),
    lambda: mf.plot_masked_photos([image(64), image(96)], [None, random_mask(1, 96)[0]], ["a", "b"]),
    lambda: mf.plot_stage_masks(random_mask(1, 64)[0], image()),
    lambda: mf.plot_stage_masks(random_mask(1, 64)[0], stages=(3,)),
])
def test_every_masked_figure_has_the_key(draw) -> None:
    fig = draw()
    assert len(fig.legends) == 1 and labels(fig.legends[0])[:2] == ["masked", "visible"]


def test_effective_ratio_rounds_visible_cells_down() -> None:
    assert mf.masked_percent(224, 0.6) == pytest.approx(100 * 30 / 49)
    assert mf.masked_percent(96, 0.6) == pytest.approx(100 * 6 / 9)
    assert mf.masked_percent(160, 0.6) == pytest.approx(60.0)
    assert mf.masked_percent(32, 0.6) == 100.0  # one cell, int(0.4) = 0 visible
    fig = mf.plot_effective_ratio(0.6, sizes=(96, 160, 224))
    line = fig.axes[0].lines[0]
    assert list(line.get_xdata()) == [96, 160, 224]
    assert np.allclose(line.get_ydata(), [100 * 6 / 9, 60.0, 100 * 30 / 49])


def test_pretrain_views_are_what_the_transform_returns() -> None:
    photo = to_pil(image(80)).resize((100, 80))  # not square: boxes must respect both sides
    transform = pretrain_transform(32)
    state = torch.random.get_rng_state()
    views = mf.pretrain_views(photo, transform, n=6, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)  # the global random state is untouched
    torch.manual_seed(3)
    for view in views:
        assert torch.equal(view.image, transform(photo))
        top, left, h, w = view.box
        assert 0 <= top and 0 <= left and top + h <= photo.height and left + w <= photo.width
    assert {v.flipped for v in mf.pretrain_views(photo, transform, n=20, seed=0)} == {True, False}
    fig = mf.plot_pretrain_views(photo, views, random_mask(len(views), 32), "title")
    assert labels(fig.legends[0])[:2] == ["masked", "visible"] and len(fig.axes) == len(views) + 1


def test_pretrain_views_need_a_random_resized_crop() -> None:
    with pytest.raises(ValueError, match="RandomResizedCrop"):
        mf.pretrain_views(to_pil(image()), T.Compose([T.ToTensor()]), n=1)


def figure_like(tmp_path, rows: int) -> tuple[str, list[tuple[int, int]]]:
    """A white PNG with a 10 px 'title' band and ``rows`` 60 px 'panel' bands."""
    rgb = np.full((20 + 70 * rows, 50, 3), 255, np.uint8)
    rgb[4:14, 10:40] = 0
    spans = [(20 + 70 * i, 80 + 70 * i) for i in range(rows)]
    for top, bottom in spans:
        rgb[top:bottom, 5:45] = 120
    path = tmp_path / "grid.png"
    Image.fromarray(rgb).save(path)
    return path, spans


def test_panel_rows_skip_text(tmp_path) -> None:
    path, spans = figure_like(tmp_path, rows=3)
    assert mf.panel_rows(np.asarray(Image.open(path), dtype=np.float32) / 255) == spans


def test_reconstruction_excerpt_keeps_the_title_and_first_rows(tmp_path) -> None:
    path, spans = figure_like(tmp_path, rows=3)
    fig = mf.plot_reconstruction_excerpt(path, rows=2)
    assert fig.axes[0].images[0].get_array().shape[0] == spans[1][1] + 4
    assert labels(fig.legends[0])[1] == "visible"
    with pytest.raises(ValueError, match="rows of panels"):
        mf.plot_reconstruction_excerpt(path, rows=4)


@pytest.mark.skipif(not (REPORT / "reconstruction.png").is_file(), reason="no committed report figure")
def test_the_report_figure_has_panel_rows() -> None:
    fig = mf.plot_reconstruction_excerpt(REPORT / "reconstruction.png", rows=2)
    shown = as_jpeg(fig)
    assert shown.format == "jpeg" and shown.data[:2] == b"\xff\xd8"
