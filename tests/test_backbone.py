"""The encoder as a backbone for dense tasks: forward_intermediates (timm's semantics), per-stage norms, an FPN on
top (torchvision), and layer-wise lr decay through the wrapper."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import timm
import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork

from cnx2lite.checkpoint_formats import export_timm
from cnx2lite.checkpoints import load_pretrained
from cnx2lite.models import create_model
from cnx2lite.train.optim import layer_id, param_groups
from conftest import randomize_


@pytest.mark.parametrize("indices", [None, 2, [0, 2], [-1], (1, -3)])
def test_forward_intermediates_equals_timm(indices):
    torch.manual_seed(0)
    ours = randomize_(create_model("convnextv2_atto", num_classes=0)).eval()
    ref = timm.create_model("convnextv2_atto", num_classes=0).eval()
    ref.load_state_dict(export_timm(ours))
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        last, maps = ours.forward_intermediates(x, indices)
        ref_last, ref_maps = ref.forward_intermediates(x, indices)
    assert len(maps) == len(ref_maps)
    for a, b in zip([*maps, last], [*ref_maps, ref_last]):  # 1e-5 of each map's scale (float32 sums differ)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5 * b.abs().max().item())
    torch.testing.assert_close(last, ours.forward_features(x))


def test_forward_intermediates_shapes_stop_early_and_bad_indices():
    model = create_model("convnextv2_atto", num_classes=0)
    x = torch.randn(1, 3, 64, 64)
    maps = model.forward_intermediates(x, intermediates_only=True)
    assert [tuple(m.shape) for m in maps] == [(1, 40, 16, 16), (1, 80, 8, 8), (1, 160, 4, 4), (1, 320, 2, 2)]
    last, taken = model.forward_intermediates(x, [1], stop_early=True)
    assert last.shape == (1, 80, 8, 8) and torch.equal(taken[0], last)
    for bad in (0, 5, [4], []):
        with pytest.raises(ValueError, match="indices"):
            model.forward_intermediates(x, bad)
    with pytest.raises(ValueError, match="stage_norms=True"):
        model.forward_intermediates(x, norm=True)


class Detector(nn.Module):
    """A ConvNeXt V2 backbone with per-stage norms under torchvision's FPN, as a detection model would hold it."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = create_model("convnextv2_atto", num_classes=0, stage_norms=True)
        self.fpn = FeaturePyramidNetwork(list(self.backbone.dims), out_channels=32)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        maps = self.backbone.forward_intermediates(x, norm=True, intermediates_only=True)
        return self.fpn(OrderedDict((f"p{i + 2}", m) for i, m in enumerate(maps)))


def test_fpn_on_the_backbone_shapes_gradients_and_layer_decay():
    detector = Detector()
    out = detector(torch.randn(2, 3, 128, 96))
    assert [(k, tuple(v.shape)) for k, v in out.items()] == [
        ("p2", (2, 32, 32, 24)), ("p3", (2, 32, 16, 12)), ("p4", (2, 32, 8, 6)), ("p5", (2, 32, 4, 3))]
    sum(v.square().mean() for v in out.values()).backward()
    grads = {n: p.grad for n, p in detector.named_parameters()}
    for name in ("backbone.downsample_layers.0.0.weight", "backbone.stages.0.0.pwconv1.weight",
                 "backbone.stage_norms.2.weight", "fpn.layer_blocks.3.0.weight"):
        assert grads[name] is not None and grads[name].abs().sum() > 0, name
    assert grads["backbone.norm.weight"] is None  # the classification norm is not on the dense path
    depths = detector.backbone.depths
    assert layer_id("backbone.stages.2.4.pwconv1.weight", depths, "single") == 2 + 2 + 4 + 1
    assert (layer_id("backbone.stage_norms.0.weight", depths, "single")
            == layer_id("backbone.stages.0.1.grn.gamma", depths, "single"))
    assert layer_id("fpn.layer_blocks.0.0.weight", depths, "single") == sum(depths) + 1
    scales = {n: g["lr_scale"] for g in param_groups(detector, 0.05, layer_decay=0.8) for n in g["names"]}
    assert scales["fpn.layer_blocks.0.0.weight"] == 1.0
    assert scales["backbone.downsample_layers.0.0.weight"] == pytest.approx(0.8 ** sum(depths))


def test_released_weights_load_into_a_backbone_with_stage_norms():
    plain = randomize_(create_model("convnextv2_atto", num_classes=0))
    backbone = create_model("convnextv2_atto", num_classes=0, stage_norms=True)
    result = load_pretrained(backbone, plain.state_dict())
    assert sorted({k.split(".")[0] for k in result.missing_keys}) == ["stage_norms"]
    torch.testing.assert_close(backbone.stages[3][1].pwconv2.weight, plain.stages[3][1].pwconv2.weight)
