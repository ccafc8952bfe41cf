"""Notebook 3's support code: the redundancy measure, the GRN capture of an encoder, its figures,
and the GRN explorer's first view."""
from __future__ import annotations

import pytest
import torch

from cnx2lite.layers.grn import global_response_norm
from cnx2lite.models import create_model
from cnx2lite.notebook import grn_figures as G


@pytest.fixture(scope="module")
def capture() -> G.GRNCapture:
    model = create_model("convnextv2_atto", num_classes=0).eval()
    with torch.no_grad():  # a "trained" GRN in one block, so that it is not the identity there
        model.stages[1][0].grn.gamma.normal_(generator=torch.Generator().manual_seed(0), std=0.1)
        model.stages[1][0].grn.beta.fill_(0.05)
    return G.capture_grn(model, torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1)))


def test_mean_abs_correlation_measures_copies_and_ignores_per_channel_affine_maps():
    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 5, 5, 1, generator=g)
    copies = torch.cat([base, -2 * base + 1, 3 * base], dim=-1)  # affine copies of one map
    assert torch.allclose(G.mean_abs_correlation(copies), torch.ones(3, dtype=torch.float64))
    x = torch.randn(3, 5, 5, 8, generator=g)
    r = G.mean_abs_correlation(x)
    assert r.shape == (3,) and bool(((r > 0) & (r < 1)).all())
    out = global_response_norm(x, torch.randn(8, generator=g), torch.randn(8, generator=g))
    assert torch.allclose(G.mean_abs_correlation(out), r, atol=1e-5)


def test_capture_grn_records_every_block_with_its_gain(capture):
    names = list(capture.inputs)
    assert len(names) == 12 and names[2] == "stages.1.0.act" and G.block_label(names[2]) == "stage 2, block 1"
    x = capture.inputs["stages.1.0.act"]
    assert x.shape == (2, 8, 8, 320)  # 64 px: stage 2 is an 8x8 map (stride 8) of 4 x 80 channels
    assert torch.equal(capture.outputs["stages.0.0.act"], capture.inputs["stages.0.0.act"])  # zero-init: identity
    gain = capture.gain("stages.1.0.act")
    assert gain.shape == (2, 320)
    expected = gain[:, None, None, :] * x + 0.05
    assert torch.allclose(capture.outputs["stages.1.0.act"], expected, atol=1e-5)
    per_stage = G.stage_gains(capture)  # stage 2 (blocks 3, 4): 2 images x 2 blocks x 320 channels
    assert len(per_stage) == 4 and all(r.shape == g.shape for r, g in per_stage) and len(per_stage[1][0]) == 1280
    assert torch.equal(per_stage[1][1][:640], gain.flatten()) and bool(per_stage[0][1].eq(1).all())
    stats = G.grn_redundancy(capture)
    assert set(stats) == {"distance before", "distance after", "|r| before", "|r| after"}
    assert all(len(v) == 12 for v in stats.values())
    assert stats["|r| before"] == pytest.approx(stats["|r| after"], abs=1e-5)
    assert stats["distance after"][2] != pytest.approx(stats["distance before"][2], abs=1e-6)  # beta moves it


def test_figures_say_which_channels_they_show(capture):
    x = capture.inputs["stages.1.0.act"][:1]
    labels = [ax.get_xlabel() for ax in G.plot_grn_steps(x, "test").axes]
    assert all("all 320" in label for label in labels)
    fig = G.plot_batch_dependence({"a": [x.flatten()[:320]] * 3}, ["1", "2", "3"])
    assert "first 40 of 320" in fig.axes[0].get_xlabel()
    fig = G.plot_gain_vs_response(capture)
    panels, colorbar = fig.axes[:4], fig.axes[4]
    assert len(fig.axes) == 5 and colorbar.get_ylabel() and panels[0].get_ylabel()
    assert all(ax.get_title() and ax.get_xlabel() for ax in panels)
    for fig in (G.plot_learned_grn(capture), G.plot_redundancy({"m": capture})):
        assert fig.get_suptitle() and fig.legends and all(ax.get_ylabel() for ax in fig.axes)


def test_grn_explorer_opens_on_an_informative_view(capture):
    pytest.importorskip("ipywidgets")
    from cnx2lite.notebook.widgets import grn_explorer

    explorer = grn_explorer(capture.inputs["stages.1.0.act"][:1])
    assert "(identity)" not in explorer.text and explorer.figure.value
