"""Notebook 4's figures and small measurements (cnx2lite.notebook.collapse_figures): they use the collapse
definitions of cnx2lite.collapse, and draw what they say."""
from __future__ import annotations

import torch
from matplotlib.colors import to_rgba

from cnx2lite import collapse
from cnx2lite.collapse import LayerCollapse
from cnx2lite.models import create_model
from cnx2lite.notebook.collapse_figures import (
    DEAD_COLOR,
    SATURATED_COLOR,
    channel_flags,
    plot_analysis_images,
    plot_channel_maps,
    plot_collapse_curves,
    plot_distance_by_layer,
    saturated_levels,
    stage_means,
)
from cnx2lite.notebook.widgets import collapse_layer_explorer


def flagged_maps() -> torch.Tensor:
    """``(6, 5, 5)`` GELU maps: 0 dead (zero), 1 saturated on, 2 saturated off at GELU's floor, 3-5 structured."""
    torch.manual_seed(0)
    maps = torch.nn.functional.gelu(3 * torch.randn(6, 5, 5))
    maps[0] = 0.0
    maps[1] = 0.8
    maps[2] = -0.16
    return maps


def test_channel_flags_follow_layer_collapse() -> None:
    maps = flagged_maps()
    dead, saturated = channel_flags(maps)
    assert dead.tolist() == [True, False, False, False, False, False]
    assert saturated.tolist() == [False, True, True, False, False, False]
    stats = collapse.layer_collapse(maps.unsqueeze(0))  # the layer's fractions are the flags' means
    assert stats.dead.item() == dead.double().mean().item()
    assert stats.saturated.item() == saturated.double().mean().item()


def test_channel_maps_frame_and_count_flagged_maps() -> None:
    fig = plot_channel_maps({"a": flagged_maps()}, cols=3, title="t")
    assert "1 dead + 2 saturated = 3 constant" in fig.subfigs[0]._suptitle.get_text()
    frames = [ax.spines["top"].get_edgecolor() for ax in fig.subfigs[0].axes[:6]]
    assert frames[0] == to_rgba(DEAD_COLOR)
    assert frames[1] == frames[2] == to_rgba(SATURATED_COLOR)
    assert all(f not in (to_rgba(DEAD_COLOR), to_rgba(SATURATED_COLOR)) for f in frames[3:])
    shown = fig.subfigs[0].axes[0].images[0].get_array()
    assert float(abs(shown).max()) == 0.0  # a dead map is drawn as 0
    assert float(fig.subfigs[0].axes[2].images[0].get_array().min()) == -1.0  # scaled by its largest |activation|


def test_distance_panels_share_colors_and_legend() -> None:
    a = {"m1": [("stages.0.0.act", 0.4), ("stages.1.0.act", 0.3)], "m2": [("stages.0.0.act", 0.45),
                                                                         ("stages.1.0.act", 0.5)]}
    fig = plot_distance_by_layer(a, a, panel_titles=("raw", "centered"), title="t")
    left, right = fig.axes
    assert [t.get_text() for t in left.get_legend().get_texts()][:2] == ["m1", "m2"]
    assert right.get_legend() is None and right.get_title() == "centered"
    assert [line.get_color() for line in left.lines[:2]] == [line.get_color() for line in right.lines[:2]]
    assert left.get_ylabel() and left.get_xlabel()


def test_collapse_curves_one_panel_per_statistic_fitted_to_its_values() -> None:
    def layer(name: str, saturated: list[float]) -> LayerCollapse:
        values = torch.tensor(saturated, dtype=torch.float64)
        zeros = torch.zeros_like(values)
        return LayerCollapse(name, zeros + 0.45, zeros + 0.45, zeros, zeros, values)

    results = {"m1": [layer("stages.0.0.act", [0.02, 0.04]), layer("stages.1.0.act", [0.0, 0.0])],
               "m2": [layer("stages.0.0.act", [0.01, 0.01]), layer("stages.1.0.act", [0.05, 0.07])]}
    fig = plot_collapse_curves(results, title="t")
    distance, dead, saturated = fig.axes
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["m1", "m2"]  # one legend, the models
    assert all(ax.get_legend() is None for ax in fig.axes)
    assert distance.get_ylim() == (0, 0.55)
    assert dead.get_ylim() == (0, 1.0) and "no dead channel" in dead.texts[0].get_text()  # all zero: a 0-1 % axis
    top = 100 * (0.06 + torch.tensor([0.05, 0.07], dtype=torch.float64).std().item())  # m2's block 2: mean + std, in %
    assert abs(saturated.get_ylim()[1] - 1.15 * top) < 1e-9 and not saturated.texts
    assert list(saturated.lines[1].get_ydata()) == [1.0, 6.0]  # m2's means, in %
    assert all(ax.get_ylabel() for ax in fig.axes) and saturated.get_xlabel() and not distance.xaxis.label.get_visible()


def test_collapse_layer_explorer_shows_the_chosen_block() -> None:
    torch.manual_seed(0)
    models = {"V1": create_model("convnextv2_atto", num_classes=0, block="v1").eval(),
              "V2": create_model("convnextv2_atto", num_classes=0).eval()}
    images = torch.randn(2, 3, 64, 64)
    stats = {label: collapse.collapse_by_layer(model, images) for label, model in models.items()}
    explorer = collapse_layer_explorer(models, images, stats, ["cat", "dog"], block=5, image=1, k=8)
    layer = stats["V2"][4]
    assert explorer.text.startswith(f"block 5 ({layer.name}): 640 channels of 4x4")
    assert f"V2: distance {layer.distance.mean():.3f} ({layer.distance[1]:.3f})" in explorer.text
    assert bytes(explorer.figure.value).startswith(b"\x89PNG")
    block, image = explorer.children[0].children
    block.value, image.value = 12, 0  # observed: redraws
    assert explorer.text.startswith(f"block 12 ({stats['V1'][11].name}): 1280 channels of 2x2")
    assert f"V1: distance {stats['V1'][11].distance.mean():.3f} ({stats['V1'][11].distance[0]:.3f})" in explorer.text


def test_stage_means_average_blocks_and_images() -> None:
    def layer(name: str, d: list[float]) -> LayerCollapse:
        values = torch.tensor(d, dtype=torch.float64)
        zeros = torch.zeros_like(values)
        return LayerCollapse(name, values, values, zeros, zeros, values / 10)

    stages = stage_means([layer("stages.0.0.act", [0.1, 0.3]), layer("stages.0.1.act", [0.5, 0.7]),
                          layer("stages.2.0.act", [0.2, 0.2])])
    assert list(stages) == ["stage 1", "stage 3"]
    assert abs(stages["stage 1"]["distance"] - 0.4) < 1e-12 and abs(stages["stage 3"]["saturated"] - 0.02) < 1e-12


def test_saturated_levels_of_a_random_model_and_images_figure() -> None:
    torch.manual_seed(0)
    model = create_model("convnextv2_atto", num_classes=0).eval()
    images = torch.randn(2, 3, 64, 64)
    levels = saturated_levels(model, images)
    assert levels.dim() == 1 and levels.dtype == torch.float64  # random init: (almost) none saturated
    fig = plot_analysis_images(images, ["a", "b"], cols=2, title="t")
    assert [ax.get_title() for ax in fig.axes] == ["a", "b"]
