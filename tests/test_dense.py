"""Transfer to dense tasks: the composite data (labels exact by construction, deterministic, sources kept apart) and
the two heads on the backbone (shapes, gradients into the backbone)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnx2lite.dense import composites
from cnx2lite.dense.composites import CompositeDataset, box_of
from cnx2lite.dense.heads import UperNet, mask_rcnn
from cnx2lite.models import create_model
from cnx2lite.train.dense_tasks import DetectTask

COLORS = [(230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48)]  # one flat colour per class


@pytest.fixture(scope="module")
def flat_photos(tmp_path_factory) -> list[tuple[str, int]]:
    """Three photos per class, each a flat colour of its class: a composite's pixel then tells its source class."""
    root = tmp_path_factory.mktemp("flat")
    samples = []
    for label, color in enumerate(COLORS):
        for i in range(3):
            path = root / f"c{label}" / f"{i}.png"
            path.parent.mkdir(exist_ok=True)
            Image.new("RGB", (40 + 10 * i, 30 + 7 * label), color).save(path)
            samples.append((str(path), label))
    return samples


def test_every_pixels_label_is_the_class_of_the_photo_it_came_from(flat_photos):
    dataset = CompositeDataset(flat_photos, [f"c{k}" for k in range(len(COLORS))], size=64, length=40, seed=3)
    palette = np.array(COLORS)
    counts = []
    for index in range(len(dataset)):
        canvas, semantic, regions = dataset.compose(index)
        source = np.abs(canvas[:, :, None, :].astype(int) - palette).sum(-1).argmin(-1)  # (H, W): the colour's class
        assert (source == semantic).all(), index
        visible = [mask for mask, _ in regions]
        assert not (np.sum(visible, axis=0) > 1).any()  # a pixel shows at most one region
        for mask, label in regions:
            assert (semantic[mask] == label).all()
        background = semantic[~np.any(visible, axis=0)]
        assert len(set(background.tolist())) <= 1 and not set(background.tolist()) & {label for _, label in regions}
        counts.append(len(regions))
    assert set(counts) == {1, 2, 3}


def test_instances_are_the_visible_regions_with_tight_boxes(flat_photos):
    dataset = CompositeDataset(flat_photos, [f"c{k}" for k in range(len(COLORS))], size=64, length=30, seed=0,
                               min_visible=120)
    dropped = 0
    for index in range(len(dataset)):
        image, target = dataset[index]
        _, semantic, regions = dataset.compose(index)
        kept = [(mask, label) for mask, label in regions if mask.sum() >= 120]
        dropped += len(regions) - len(kept)
        assert image.shape == (3, 64, 64) and target["semantic"].shape == (64, 64)
        assert target["semantic"].dtype == torch.int64 and torch.equal(target["semantic"], torch.from_numpy(semantic))
        assert target["masks"].shape == (len(kept), 64, 64) and target["labels"].tolist() == [c for _, c in kept]
        for mask, box in zip(target["masks"], target["boxes"]):
            x0, y0, x1, y1 = box.int().tolist()
            assert mask[y0:y1, x0:x1].sum() == mask.sum() and mask[y0, x0:x1].any() and mask[y1 - 1, x0:x1].any()
            assert mask[y0:y1, x0].any() and mask[y0:y1, x1 - 1].any()
    assert dropped > 0  # some regions are hidden by later ones: they are no detection target
    assert box_of(np.eye(5, dtype=bool)[::-1]) == (0, 0, 5, 5)


def test_composites_are_a_function_of_seed_and_index_and_read_only_their_photos(flat_photos, monkeypatch):
    classes = [f"c{k}" for k in range(len(COLORS))]
    train, val = flat_photos[0::3] + flat_photos[1::3], flat_photos[2::3]
    read: list[str] = []
    load = composites.load_image

    def recording(path, **kwargs):
        read.append(str(path))
        return load(path, **kwargs)

    monkeypatch.setattr(composites, "load_image", recording)
    a, b = CompositeDataset(train, classes, 48, 8, seed=1), CompositeDataset(train, classes, 48, 8, seed=1)
    for index in (0, 5, 7):
        assert torch.equal(a[index][0], b[index][0]) and torch.equal(a[index][1]["masks"], b[index][1]["masks"])
    other = CompositeDataset(train, classes, 48, 8, seed=2)
    assert not all(torch.equal(a[i][1]["semantic"], other[i][1]["semantic"]) for i in range(8))
    assert set(read) <= {path for path, _ in train}
    read.clear()
    for index in range(8):
        CompositeDataset(val, classes, 48, 8, seed=1)[index]
    assert read and set(read) <= {path for path, _ in val}


@pytest.mark.parametrize("kwargs, match", [
    (dict(samples=[("a.png", 0), ("b.png", 0)]), "at least 2 classes"),
    (dict(size=0), "size must be a positive int"),
    (dict(length=2.5), "length must be a positive int"),
    (dict(min_visible=0), "min_visible must be a positive int"),
    (dict(classes=["c0"]), "has label 1, outside the 1 classes"),
    (dict(seed=-1), "seed must be a non-negative int, got -1"),
    (dict(samples=["a.png", "b.png"]), r"samples must be \(path, class index\) pairs"),
    (dict(samples=[("a.png", 0), ("b.png", 1.5)]), r"samples must be \(path, class index\) pairs"),
])
def test_bad_settings_are_one_clear_error(flat_photos, kwargs, match):
    settings = dict(samples=flat_photos, classes=["c0", "c1"], size=32, length=4) | kwargs
    with pytest.raises(ValueError, match=match):
        CompositeDataset(**settings)


def test_a_composite_index_past_the_end_ends_iteration(flat_photos):
    dataset = CompositeDataset(flat_photos, [f"c{k}" for k in range(len(COLORS))], size=32, length=3)
    assert len(list(dataset)) == 3
    for index in (3, -1):
        with pytest.raises(IndexError, match="out of range 0..2"):
            dataset[index]


@pytest.mark.parametrize("build, match", [
    (lambda: UperNet(_backbone(), num_classes=0), "num_classes must be a positive int"),
    (lambda: UperNet("convnextv2_atto", num_classes=3), "backbone must be a ConvNeXtV2"),
    (lambda: mask_rcnn(_backbone(), num_classes=3, img_size=0), "img_size must be a positive int"),
])
def test_bad_heads_are_one_clear_error(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def _backbone() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("convnextv2_atto", num_classes=0, stage_norms=True)


def test_upernet_gives_per_pixel_logits_and_trains_the_backbone():
    model = UperNet(_backbone(), num_classes=5, channels=32)
    images = torch.randn(2, 3, 64, 96)
    logits = model(images)
    assert logits.shape == (2, 5, 64, 96)
    torch.nn.functional.cross_entropy(logits, torch.randint(0, 5, (2, 64, 96))).backward()
    grads = {name: p.grad.abs().mean() for name, p in model.named_parameters() if p.grad is not None}
    for name in ("backbone.downsample_layers.0.0.weight", "backbone.stage_norms.3.weight", "pooling.fuse.0.weight",
                 "fpn.inner_blocks.0.0.weight", "classifier.weight"):
        assert grads.get(name, 0) > 0, name
    pooled = [grads[f"pooling.branches.{i}.0.weight"] for i in range(4)]  # 1x1, 2x2, 3x3 and 6x6 cells
    assert min(pooled) > 0.05 * max(pooled), pooled  # the global context learns as much as the finer cells
    with pytest.raises(ValueError, match="stage_norms=True"):
        UperNet(create_model("convnextv2_atto", num_classes=0), num_classes=5)


def test_mask_rcnn_on_the_backbone_trains_and_predicts(flat_photos):
    dataset = CompositeDataset(flat_photos, [f"c{k}" for k in range(len(COLORS))], size=64, length=2, seed=0)
    images, targets = DetectTask.collate([dataset[i] for i in range(2)])
    assert [t["labels"].tolist() for t in targets] == [(dataset[i][1]["labels"] + 1).tolist() for i in range(2)]
    detector = mask_rcnn(_backbone(), num_classes=len(COLORS), img_size=64, channels=32)
    losses = detector(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_mask", "loss_objectness", "loss_rpn_box_reg"}
    sum(losses.values()).backward()
    stem = detector.backbone.backbone.downsample_layers[0][0].weight.grad
    assert stem is not None and stem.abs().sum() > 0
    detector.eval()
    with torch.no_grad():
        found = detector(images)
    assert len(found) == 2 and set(found[0]) == {"boxes", "labels", "scores", "masks"}
    assert found[0]["masks"].shape[-3:] == (1, 64, 64) and len(found[0]["boxes"]) == len(found[0]["scores"])
