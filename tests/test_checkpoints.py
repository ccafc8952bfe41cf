"""Checkpoint conversion: timm both ways, the official MinkowskiEngine FCMAE format, training
checkpoints, and the errors for checkpoints that do not fit."""
import functools
import re
from typing import Callable

import pytest
import torch
from torch import Tensor, nn

from cnx2lite import VARIANTS, create_model
from cnx2lite.checkpoint_formats import export_timm, timm_name
from cnx2lite.checkpoints import load_pretrained

timm = pytest.importorskip("timm")

FINAL_KEYS = ["norm.weight", "norm.bias", "head.weight", "head.bias"]


def randomized(build: Callable[[], nn.Module], seed: int = 0) -> nn.Module:
    """``build()`` with every parameter small and random, so zero or one inits (GRN, biases, norms,
    LayerScale) cannot hide a mapping bug. Built on the meta device, which skips the slow init."""
    with torch.device("meta"):
        model = build()
    model.to_empty(device="cpu")
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.1, generator=g)
    return model.eval()


@functools.cache
def ours(name: str = "convnextv2_atto", seed: int = 0, **kwargs) -> nn.Module:
    """A randomized model of ours, shared between tests: read it, do not load into it."""
    return randomized(functools.partial(create_model, name, **kwargs), seed)


def images(seed: int = 0) -> Tensor:
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(seed))


def to_minkowski(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """Our dense state dict -> the official FCMAE checkpoint layout, straight from its definition:
    MinkowskiEngine kernels ``(K*K, [Cin,] Cout)`` with offset ``i_h + K * i_w``, ``(1, C)`` conv
    biases and GRN parameters, wrapped ``.ln`` / ``.linear`` modules, an ``encoder.`` prefix, no final
    norm or head, and decoder parameters."""
    out = {}
    for key, v in state_dict.items():
        module, param = key.rsplit(".", 1)
        if key.startswith(("norm.", "head.")):
            continue
        is_dwconv = module.endswith(".dwconv")
        is_downsample_conv = re.fullmatch(r"downsample_layers\.[123]\.1", module)
        if (is_dwconv or is_downsample_conv) and param == "weight":
            k = v.shape[-1]
            if is_dwconv:
                v = v[:, 0].permute(2, 1, 0).reshape(k * k, v.shape[0])
            else:
                v = v.permute(3, 2, 1, 0).reshape(k * k, v.shape[1], v.shape[0])
            param = "kernel"
        elif is_dwconv or is_downsample_conv or module.endswith(".grn"):  # conv biases, GRN gamma/beta
            v = v.reshape(1, -1)
        elif module.endswith(".norm") or re.fullmatch(r"downsample_layers\.[123]\.0", module):
            module += ".ln"
        elif module.endswith((".pwconv1", ".pwconv2")):
            module += ".linear"
        out[f"encoder.{module}.{param}"] = v.clone()
    d = 512
    out.update({"proj.weight": torch.randn(d, 320, 1, 1), "mask_token": torch.zeros(1, d, 1, 1),
                "decoder.0.dwconv.weight": torch.randn(d, 1, 7, 7), "pred.weight": torch.randn(3072, d, 1, 1)})
    return out


@pytest.mark.parametrize("name,block", [
    ("convnextv2_atto", "v2"),  # timm's atto..nano MLPs are 1x1 convs
    ("convnextv2_femto", "v2"),
    ("convnextv2_atto", "v1"),  # -> timm's ConvNeXt V1 convnext_atto
])
def test_timm_round_trip(name, block):
    """timm -> ours with load_pretrained, then ours -> a fresh timm model with export_timm. Every
    model is randomized, so a key that is not loaded shows in the logits."""
    model = randomized(lambda: create_model(name, num_classes=10, block=block), seed=1)
    build_timm = functools.partial(timm.create_model, timm_name(model), num_classes=10)
    pretrained = randomized(build_timm, seed=2)
    result = load_pretrained(model, pretrained.state_dict())
    assert (result.source_format, result.missing_keys, result.unexpected_keys) == ("timm", [], [])

    exported = randomized(build_timm, seed=3)
    exported.load_state_dict(export_timm(model), strict=True)
    with torch.no_grad():
        logits = pretrained(images())
        torch.testing.assert_close(model(images()), logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(exported(images()), logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("block", ["v2", "v1"])
@pytest.mark.parametrize("name", list(VARIANTS))
def test_export_timm_every_variant(name, block):
    """Names and shapes (tiny and up have Linear MLPs in timm) fit timm's model: strict load on the
    meta device, which allocates nothing."""
    with torch.device("meta"):
        model = create_model(name, num_classes=10, block=block)
        if (name, block) == ("convnextv2_huge", "v1"):
            with pytest.raises(ValueError, match="timm has no ConvNeXt V1 model"):
                export_timm(model)
            return
        timm.create_model(timm_name(model), num_classes=10).load_state_dict(export_timm(model), strict=True)


def test_official_fcmae_minkowski():
    pretrained = ours()
    model = create_model("convnextv2_atto").eval()
    final = {k: v.clone() for k, v in model.state_dict().items() if k in FINAL_KEYS}
    result = load_pretrained(model, {"model": to_minkowski(pretrained.state_dict())})
    assert result.source_format == "fcmae_minkowski"
    assert sorted(result.missing_keys) == sorted(FINAL_KEYS) and result.unexpected_keys == []
    assert any("final norm and head keep their initialization" in note for note in result.notes)
    assert all(torch.equal(model.state_dict()[k], v) for k, v in final.items())
    with torch.no_grad():
        assert torch.equal(model.forward_features(images()), pretrained.forward_features(images()))


@pytest.mark.parametrize("kind", ["classifier", "fcmae"])
def test_training_checkpoint(tmp_path, kind):
    weights, ema = ours(seed=1).state_dict(), ours(seed=2).state_dict()
    if kind == "fcmae":  # an FCMAE module: encoder (whose norm and head are unused) + decoder
        weights, ema = ({"encoder." + k: v for k, v in sd.items()} | {"mask_token": torch.zeros(1, 512, 1, 1)}
                        for sd in (weights, ema))
    path = tmp_path / "checkpoint.pth"
    torch.save({"model": weights, "ema": ema, "epoch": 3, "optimizer": {"state": {}}}, path)
    model = create_model("convnextv2_atto")
    for use_ema, source in ((False, weights), (True, ema)):
        result = load_pretrained(model, path, use_ema=use_ema)
        assert result.source_format == ("fcmae" if kind == "fcmae" else "dense")
        assert sorted(result.missing_keys) == (sorted(FINAL_KEYS) if kind == "fcmae" else [])
        for key, value in model.state_dict().items():
            if key not in result.missing_keys:
                assert torch.equal(value, source["encoder." + key if kind == "fcmae" else key]), key


def test_other_variant_is_an_error():
    expected = r"shape mismatch.*\(48, 3, 4, 4\) vs model \(40, 3, 4, 4\).*looks like convnextv2_femto"
    with pytest.raises(ValueError, match=expected):
        load_pretrained(create_model("convnextv2_atto"), ours("convnextv2_femto").state_dict())


def test_not_a_checkpoint_is_an_error(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(bytes(range(256)))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_pretrained(create_model("convnextv2_atto"), path)


def test_head_size():
    checkpoint = ours(num_classes=10).state_dict()
    model = create_model("convnextv2_atto", num_classes=5)
    with pytest.raises(ValueError, match=r"head\.weight: checkpoint \(10, 320\) vs model \(5, 320\).*num_classes=10"):
        load_pretrained(model, checkpoint)
    head = model.head.weight.clone()
    result = load_pretrained(model, checkpoint, skip_head=True)
    assert result.missing_keys == ["head.weight", "head.bias"] and torch.equal(model.head.weight, head)
    assert torch.equal(model.norm.weight, checkpoint["norm.weight"])


def test_create_model_keeps_a_classifier_of_its_size_and_says_when_it_cannot(tmp_path):
    trained = ours(num_classes=3)
    torch.save(trained.state_dict(), tmp_path / "classifier.pt")
    model = create_model("convnextv2_atto", num_classes=3, pretrained=tmp_path / "classifier.pt")
    assert torch.equal(model.head.weight, trained.head.weight)  # a fine-tuned classifier, not a fresh head
    with pytest.warns(UserWarning, match=r"classifier was not loaded: the model keeps its own head \(5 classes"):
        create_model("convnextv2_atto", num_classes=5, pretrained=tmp_path / "classifier.pt")


@pytest.mark.parametrize("content", [[1, 2], torch.zeros(3)])
def test_a_file_holding_no_dict_is_one_line(tmp_path, content):
    from cnx2lite import load_model
    torch.save(content, tmp_path / "odd.pt")
    with pytest.raises(ValueError, match=f"holds a {type(content).__name__}, not a state dict or a checkpoint"):
        load_model(tmp_path / "odd.pt")
