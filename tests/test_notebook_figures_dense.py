"""Notebook 6's figures (cnx2lite.notebook.dense_figures): the stage maps say what their colour is, and the composites'
key names only the classes the shown composites hold."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from cnx2lite.dense.composites import CompositeDataset
from cnx2lite.models import create_model
from cnx2lite.notebook import dense_figures

COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48), (145, 30, 180)]


def flat_dataset(tmp_path, length: int) -> CompositeDataset:
    """Composites of flat photos, one colour per class (six classes, so a few composites leave some out)."""
    samples = []
    for label, color in enumerate(COLORS):
        path = tmp_path / f"c{label}.png"
        Image.new("RGB", (40, 30), color).save(path)
        samples.append((str(path), label))
    return CompositeDataset(samples, [f"c{k}" for k in range(len(COLORS))], size=32, length=length, seed=0)


def test_composites_key_lists_only_the_classes_shown(tmp_path) -> None:
    dataset = flat_dataset(tmp_path, length=2)
    present = sorted(set().union(*(dataset[i][1]["semantic"].unique().tolist() for i in range(2))))
    assert len(present) < len(COLORS)  # else the test checks nothing
    fig = dense_figures.plot_composites(dataset, range(2), {"c0": "tench"})
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [
        "tench" if k == 0 else f"c{k}" for k in present]


def test_stage_maps_name_their_colour() -> None:
    torch.manual_seed(0)
    backbone = create_model("convnextv2_atto", num_classes=0, stage_norms=True)
    fig = dense_figures.plot_stage_maps(backbone, torch.randn(3, 64, 64))
    assert len(fig.axes) == 5 and [ax.get_title() for ax in fig.axes[1:]][-1] == "stage 4: (320, 2, 2)"
    assert "mean |activation|" in fig._supxlabel.get_text()


def test_composite_explorer_says_what_was_pasted_and_kept_and_leaves_the_dataset_alone(tmp_path) -> None:
    pytest.importorskip("ipywidgets")
    from cnx2lite.notebook.widgets import composite_explorer

    dataset = flat_dataset(tmp_path, length=4)
    explorer = composite_explorer(dataset, {"c0": "tench"})
    index, regions, visible = explorer.children[0].children + explorer.children[1].children
    pasted = [int(mask.sum()) for mask, _ in dataset.compose(0)[2]]
    assert explorer.text.startswith(f"{len(pasted)} region(s) pasted, {sum(n >= 16 for n in pasted)} kept")
    visible.value = max(pasted) + 1  # more than any region shows: no instance left
    assert explorer.text.startswith(f"{len(pasted)} region(s) pasted, 0 kept as instances")
    assert len(dataset.compose(3)[2]) == 3
    regions.value, index.value = 6, 3
    assert explorer.text.startswith("6 region(s) pasted")  # more pasted on the same composite's first three
    assert (dataset.max_regions, dataset.min_visible) == (3, 16) and bytes(explorer.figure.value).startswith(b"\x89PNG")
