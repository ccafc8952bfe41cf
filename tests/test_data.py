"""Data: subsets, RGB conversion, corrupt files, data-root settings, offline download, transforms."""
from __future__ import annotations

import functools
import random
import warnings
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from cnx2lite import data as D
from cnx2lite import image_files, imagenette, images, transforms
from cnx2lite.image_cache import DecodedImages
from cnx2lite.notebook.photos import class_names, sample_images
from conftest import make_image_folder, write_images

CLASSES = [f"n0{i}" for i in range(8)]


def _save(path: Path, mode: str = "RGB", size: tuple[int, int] = (12, 10), color=None, noise: bool = False, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    if noise:
        img = Image.frombytes("RGB", size, random.Random(str(path)).randbytes(size[0] * size[1] * 3)).convert(mode)
    else:
        img = Image.new(mode, size, color if color is not None else 0)
    img.save(path, **kw)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """ImageFolder with 8 classes: train 5 images each, val 3 each (val classes in reverse creation order)."""
    for label, name in enumerate(CLASSES):
        for i in range(5):
            _save(tmp_path / "train" / name / f"img_{i}.JPEG", color=(label * 30, i * 40, 0))
        for i in range(3):
            _save(tmp_path / "val" / name / f"val_{i}.jpg", color=(label * 30, 0, i * 40))
    return tmp_path


@pytest.fixture
def odd_folder(tmp_path: Path) -> Path:
    """Two classes: 'modes' (greyscale, CMYK, palette, RGBA, webp, odd extensions) and 'bad' (corrupt files)."""
    modes = tmp_path / "train" / "modes"
    _save(modes / "grey.jpg", "L", color=128)
    _save(modes / "cmyk.JPG", "CMYK", color=(0, 50, 100, 0))
    _save(modes / "palette.png", "P", color=3, transparency=3)
    _save(modes / "rgba.PNG", "RGBA", color=(10, 20, 30, 0))
    _save(modes / "photo.WebP", "RGB", color=(1, 2, 3))
    _save(modes / "browser.jfif", "RGB", color=(4, 5, 6))  # a JPEG as Windows browsers save it (round 19's N15)
    (modes / "notes.txt").write_text("not an image")
    _save(modes / ".hidden.jpg")
    bad = tmp_path / "train" / "bad"
    _save(bad / "a_good.jpg", size=(64, 64), noise=True)
    _save(bad / "b_trunc.jpg", size=(64, 64), noise=True)
    data = (bad / "b_trunc.jpg").read_bytes()
    (bad / "b_trunc.jpg").write_bytes(data[: len(data) // 2])
    (bad / "c_not_image.jpg").write_text("plain text with a .jpg name")
    _save(bad / "d_good.jpg")
    _save(bad / "e_good.jpg")
    return tmp_path


def _names(ds: D.ImageFolderSubset) -> list[tuple[str, str, int]]:
    return [(Path(p).parent.name, Path(p).name, label) for p, label in ds.samples]


# ----------------------------------------------------------------------------------------------- data root
def test_resolve_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(D.ENV_VAR, str(tmp_path / "env"))
    assert D.resolve_data_root(tmp_path / "arg") == tmp_path / "arg"
    assert D.resolve_data_root(str(tmp_path / "arg")) == tmp_path / "arg"
    assert D.resolve_data_root() == tmp_path / "env"
    monkeypatch.delenv(D.ENV_VAR)
    assert D.resolve_data_root() == D.REPO / "data" == Path(D.__file__).resolve().parents[1] / "data"


def test_find_image_folder(folder, tmp_path):
    assert D.find_image_folder(folder) == folder
    nested = tmp_path / "root"
    (nested / "imagenette" / "train").mkdir(parents=True)
    assert D.find_image_folder(nested) == nested / "imagenette"
    download = tmp_path / "dl"
    (download / "imagenette2-320" / "train").mkdir(parents=True)
    assert D.find_image_folder(download) == download / "imagenette2-320"
    with pytest.raises(D.DataNotFoundError) as err:
        D.find_image_folder(tmp_path / "nowhere")
    assert isinstance(err.value, FileNotFoundError)
    for hint in ("--data", D.ENV_VAR, "train/<class>/*.JPEG", "cnx2lite download imagenette", "download_imagenette"):
        assert hint in str(err.value)


def test_download_offline_raises_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.datasets.imagenette.download_and_extract_archive", offline)
    with pytest.raises(D.DataNotFoundError, match="Could not download Imagenette") as err:
        imagenette.download_imagenette(tmp_path / "dl" / "new")
    assert not (tmp_path / "dl").exists()  # the folders it created for the download are gone again
    msg = str(err.value)
    assert "name resolution" in msg and "imagenette2-320.tgz" in msg and "--data" in msg
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no urllib traceback attached
    with pytest.raises(ValueError, match="size must be one of"):
        imagenette.download_imagenette(tmp_path / "dl", size="64px")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text('{"task": "finetune"}')  # a training run's folder (round 20's N03)
    with pytest.raises(ValueError, match=f"cannot download into {tmp_path / 'run'}: it is inside the training run"):
        imagenette.download_imagenette(tmp_path / "run")
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["config.json"]


def test_two_downloads_under_the_data_root_are_named_not_downloaded_into(tmp_path, monkeypatch):
    """imagenette2-160/ and imagenette2-320/ under the root: which one is meant cannot be told. Refused as the
    dataset name's ambiguity, naming both; it was a DataNotFoundError, which find_or_download took for no data and
    answered with "holds images but no folder of classes"."""
    monkeypatch.setattr(imagenette, "download_imagenette", lambda root: pytest.fail("downloaded"))
    for size in ("160", "320"):
        _save(tmp_path / f"imagenette2-{size}" / "train" / "cat" / "a.jpg")
    with pytest.raises(ValueError, match=r"holds 2 folders named imagenette\* \(imagenette2-160, imagenette2-320\): "
                                         "name one with --dataset, or give it as --data"):
        imagenette.find_or_download(tmp_path)


def test_imagenette_is_downloaded_only_into_a_new_or_empty_folder(tmp_path, monkeypatch):
    """demo --data <a folder of photos, or an ADE20K tree, or documents> started a 300 MB download into it (round 19's
    N35, round 20's N02)."""
    asked = []
    monkeypatch.setattr(imagenette, "download_imagenette", lambda root: asked.append(root) or root)
    _save(tmp_path / "photos" / "holiday" / "beach.jpg")
    with pytest.raises(D.DataNotFoundError, match=r"photos holds images \(e.g. .*beach.jpg\) but no folder of classes"):
        imagenette.find_or_download(tmp_path / "photos")
    _save(tmp_path / "scans" / "page.png")  # at the top of the folder
    with pytest.raises(D.DataNotFoundError, match=r"scans holds images \(e.g. .*page.png\)"):
        imagenette.find_or_download(tmp_path / "scans")
    _save(tmp_path / "archive" / "README-scans" / "page.png")  # a folder is no README, whatever its name
    with pytest.raises(D.DataNotFoundError, match=r"archive holds images \(e.g. .*README-scans.page.png\)"):
        imagenette.find_or_download(tmp_path / "archive")
    (tmp_path / "documents" / "letters").mkdir(parents=True)  # files of the user's, no images (round 20's N02)
    (tmp_path / "documents" / "notes.txt").write_text("mine")
    with pytest.raises(D.DataNotFoundError, match=r"documents holds no images but files of its own \(e.g. "
                                                  r".*letters\): Imagenette is downloaded only into a new or empty"):
        imagenette.find_or_download(tmp_path / "documents")
    (tmp_path / "fresh").mkdir()
    (tmp_path / "fresh" / "README.md").write_text("the demo's data root")  # the repository's data/ holds one
    (tmp_path / "fresh" / ".DS_Store").write_text("")
    (tmp_path / "fresh" / "imagenette2-320.tgz").write_text("part")  # an interrupted download
    _save(tmp_path / "fresh" / "imagenette2-320" / "val" / "n0" / "half.jpg")  # an interrupted extraction
    for root in (tmp_path / "fresh", tmp_path / "new"):
        imagenette.find_or_download(root)
    assert asked == [tmp_path / "fresh", tmp_path / "new"]
    assert sorted(p.name for p in (tmp_path / "documents").iterdir()) == ["letters", "notes.txt"]


# ----------------------------------------------------------------------------------------------- subsets
def test_a_tuning_split_that_takes_a_whole_class_is_refused_by_name(folder):
    with pytest.raises(ValueError, match=r"tune_fraction=0.95 leaves no fit images in class"):
        D.build_dataset(folder, "train", tune_fraction=0.95)


def test_images_outside_class_folders_are_refused(folder):
    _save(folder / "train" / "stray.png")  # whose class is it?
    with pytest.raises(D.DataNotFoundError, match=r"1 image file\(s\) outside any class folder \(e.g. stray.png\)"):
        D.build_dataset(folder, "train")


def test_subset_first_is_deterministic(folder):
    ds = D.build_dataset(folder, "train", num_classes=3, images_per_class=2)
    assert ds.classes == CLASSES[:3] and ds.class_to_idx == {c: i for i, c in enumerate(CLASSES[:3])}
    assert _names(ds) == [(c, f"img_{i}.JPEG", label) for label, c in enumerate(CLASSES[:3]) for i in range(2)]
    assert ds.targets == [0, 0, 1, 1, 2, 2]
    assert ds.samples == D.build_dataset(folder, "train", num_classes=3, images_per_class=2).samples
    assert len(D.build_dataset(folder, "train")) == 40  # defaults: everything
    with pytest.warns(D.ShortClassWarning):
        assert len(D.build_dataset(folder, "train", images_per_class=99)) == 40  # at most N per class


def test_classes_with_fewer_images_than_asked_are_named(folder):
    for extra in range(3):  # n00 gets 3 more images than the others
        _save(folder / "train" / "n00" / f"extra_{extra}.png")
    with pytest.warns(D.ShortClassWarning, match=r"images_per_class=8: 7 of 8 class\(es\) .* hold fewer images and "
                      r"keep all they have: n01 \(5\), n02 \(5\), n03 \(5\), n04 \(5\), n05 \(5\) ...$"):
        assert len(D.build_dataset(folder, "train", images_per_class=8)) == 8 + 7 * 5
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # enough images everywhere, or none asked for: no warning
        D.build_dataset(folder, "train", images_per_class=5)
        D.build_dataset(folder, "train")


def test_subset_random_is_seeded(folder):
    def build(seed, **kw):
        return D.build_dataset(folder, "train", num_classes=3, class_selection="random", seed=seed, **kw)

    assert build(0).samples == build(0).samples
    assert build(0).classes != build(1).classes
    for seed in (0, 1):
        assert build(seed).classes == sorted(build(seed).classes) and set(build(seed).classes) <= set(CLASSES)
    picks = build(0, images_per_class=2, image_selection="random")
    assert picks.samples == build(0, images_per_class=2, image_selection="random").samples
    by_seed = {s: _names(D.build_dataset(folder, "train", images_per_class=2, image_selection="random", seed=s))
               for s in range(4)}
    assert len({tuple(v) for v in by_seed.values()}) > 1


def test_explicit_classes_define_labels_and_val_agrees(folder):
    train = D.build_dataset(folder, "train", classes=["n05", "n02"], images_per_class=1)
    assert train.class_to_idx == {"n05": 0, "n02": 1} and _names(train) == [("n05", "img_0.JPEG", 0),
                                                                           ("n02", "img_0.JPEG", 1)]
    train = D.build_dataset(folder, "train", num_classes=4, class_selection="random", seed=3)
    val = D.build_dataset(folder, "val", classes=train.classes)
    assert val.classes == train.classes and len(val) == 12
    assert all(Path(p).parent.name == train.classes[label] for p, label in val.samples)
    assert val[0][1] == train.class_to_idx[Path(val.samples[0][0]).parent.name]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(split="test"), ValueError, r"split must be one of \('train', 'val'\)"),
    (dict(class_selection="best"), ValueError, r"class_selection must be one of \('first', 'random'\)"),
    (dict(image_selection="last"), ValueError, "image_selection must be one of"),
    (dict(classes=["n01", "n99999999"]), ValueError,
     r"no folder for 1 of the 2 class\(es\) asked for: \['n99999999'\]; its class folders \(8\): \['n00', 'n01'"),
    (dict(classes="n01"), ValueError, "got the string"),
    (dict(classes=["n01", "n01"]), ValueError, "distinct"),
    (dict(classes=["n01"], num_classes=2), ValueError, "disagrees"),
    (dict(num_classes=9), ValueError, r"num_classes must be in 1..8"),
    (dict(num_classes=0), ValueError, "num_classes"),
    (dict(images_per_class=0), ValueError, "images_per_class must be >= 1"),
])
def test_bad_arguments(folder, kwargs, error, match):
    kwargs = {"split": "train", **kwargs}
    with pytest.raises(error, match=match):
        D.build_dataset(folder, **kwargs)


def test_missing_split_is_data_not_found(odd_folder):
    with pytest.raises(D.DataNotFoundError, match=r"Split 'val' not found(.|\n)*--data"):
        D.build_dataset(odd_folder, "val")


def test_class_names(folder):
    assert class_names(folder) == {c: c for c in CLASSES}
    (folder / "CLASSES.tsv").write_text("n00\ttench\nn01\tEnglish springer\n\n")
    assert class_names(folder) == {"n00": "tench", "n01": "English springer"}


# ----------------------------------------------------------------------------------------------- decoding
def test_every_mode_becomes_rgb(odd_folder):
    ds = D.build_dataset(odd_folder, "train", classes=["modes"])
    assert sorted(Path(p).name for p, _ in ds.samples) == [
        "browser.jfif", "cmyk.JPG", "grey.jpg", "palette.png", "photo.WebP", "rgba.PNG"]  # no .txt, no hidden file
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. PIL's warning on palette transparency
        items = [ds[i] for i in range(len(ds))]
    for x, label in items:
        assert x.shape == (3, 10, 12) and x.dtype == torch.float32 and label == 0
    grey = items[[Path(p).name for p, _ in ds.samples].index("grey.jpg")][0]
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2]) and grey.mean() > 0


def test_corrupt_file_error_names_the_file(odd_folder):
    ds = D.build_dataset(odd_folder, "train", classes=["bad"])
    assert len(ds) == 5 and ds.skipped == []
    truncated = r"cannot read image .*b_trunc\.jpg: OSError: image file is trunc"
    with pytest.raises(images.CorruptImageError, match=truncated):
        ds[1]
    with pytest.raises(images.CorruptImageError, match=r"c_not_image\.jpg"):
        ds[2]
    loader = DataLoader(torch.utils.data.Subset(ds, [2]), num_workers=1)
    with pytest.raises(images.CorruptImageError, match=r"c_not_image\.jpg"):  # re-raised from a worker process
        next(iter(loader))


def test_skip_corrupt_counts_and_keeps_good_files(odd_folder):
    ds = D.build_dataset(odd_folder, "train", classes=["modes", "bad"], skip_corrupt=True)
    assert [Path(p).name for p, _ in ds.skipped] == ["b_trunc.jpg", "c_not_image.jpg"]
    assert [n for c, n, _ in _names(ds) if c == "bad"] == ["a_good.jpg", "d_good.jpg", "e_good.jpg"]
    assert len(ds) == 9 and "2 skipped" in repr(ds)
    batches = list(DataLoader(ds, batch_size=1, num_workers=0))
    assert len(batches) == 9
    # N per class: the next readable files take the place of the skipped ones
    two = D.build_dataset(odd_folder, "train", classes=["bad"], images_per_class=2, skip_corrupt=True)
    assert [n for _, n, _ in _names(two)] == ["a_good.jpg", "d_good.jpg"] and len(two.skipped) == 2
    one = D.build_dataset(odd_folder, "train", classes=["bad"], images_per_class=1, skip_corrupt=True)
    assert [n for _, n, _ in _names(one)] == ["a_good.jpg"] and one.skipped == []  # only candidates are checked


# ----------------------------------------------------------------------------------------------- transforms
def test_finetune_transform_is_timm_randaugment():
    text = repr(transforms.finetune_transform(224))
    for part in ("RandomResizedCropAndInterpolation(size=(224, 224), scale=(0.08, 1.0)", "interpolation=bicubic",
                 "RandomHorizontalFlip(p=0.5)", "RandAugment(n=2", "m=9, mstd=0.5", "name=SolarizeIncreasing",
                 "RandomErasing(p=0.25, mode=pixel, count=(1, 1))"):
        assert part in text, part
    assert "ColorJitter" not in text
    plain = repr(transforms.finetune_transform(160, rand_augment=None, reprob=0.0))
    assert "RandAugment" not in plain and "RandomErasing" not in plain
    pre = repr(transforms.pretrain_transform(224))
    assert "scale=(0.2, 1.0)" in pre and "bicubic" in pre and "RandomHorizontalFlip" in pre


def test_randaugment_posterize_at_full_magnitude_gives_black_not_an_error():
    # 'inc1' posterize asks for 0 bits at magnitude 10, which Pillow >= 13 rejects; it must behave as Pillow < 13 did
    ops = [op for op in transforms._augment_ops(transforms.finetune_transform(64)) if op.name.startswith("Posterize")]
    assert ops, "the default RandAugment has a posterize op"
    image = Image.new("RGB", (64, 48), (200, 120, 40))
    for op in ops:
        op.prob, op.magnitude, op.magnitude_std = 1.0, 10, 0.0
        out = op(image)
        assert out.size == image.size and out.mode == "RGB"
        assert out.getextrema() == ((0, 0), (0, 0), (0, 0))
        op.magnitude = 5  # 2 bits kept: 200 -> 192, 120 -> 64, 40 -> 0
        assert op(image).getpixel((0, 0)) == (192, 64, 0)


def test_transforms_on_a_real_photo(shared_data):
    img = images.load_image(shared_data / "samples" / "n01440764_tench.JPEG")
    for transform in (transforms.pretrain_transform(224), transforms.finetune_transform(224),
                      transforms.eval_transform(224)):
        x = transform(img)
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
    assert torch.equal(transforms.eval_transform(224)(img), transforms.eval_transform(224)(img))
    assert transforms.eval_transform(384)(img).shape == (3, 384, 384)
    with pytest.raises(ValueError, match="crop_pct"):
        transforms.eval_transform(224, crop_pct=1.5)


def test_sample_images_real(shared_data):
    x = sample_images(4, 224, data=str(shared_data), seed=0)
    assert x.shape == (4, 3, 224, 224) and x.dtype == torch.float32
    assert torch.equal(x, sample_images(4, 224, data=str(shared_data), seed=0))
    shown = transforms.denormalize(x)
    assert shown.min() >= 0 and shown.max() <= 1 and shown.std() > 0.1


def test_sample_images_fallback_and_missing(folder, tmp_path, monkeypatch):
    assert sample_images(2, 32, data=folder).shape == (2, 3, 32, 32)  # no samples/: the val split
    monkeypatch.setenv(D.ENV_VAR, str(tmp_path / "empty"))
    with pytest.raises(D.DataNotFoundError, match="--data"):
        sample_images()
    with pytest.raises(ValueError, match=r"n must be in 1..24"):
        sample_images(25, 32, data=folder)


def test_real_imagenette_subset(shared_data):
    folder = D.find_image_folder(shared_data)
    train = D.build_dataset(folder, "train", num_classes=3, images_per_class=4,
                            transform=transforms.eval_transform(224))
    val = D.build_dataset(folder, "val", classes=train.classes, images_per_class=2)
    assert len(train) == 12 and len(val) == 6 and val.classes == train.classes
    assert class_names(folder)[train.classes[0]] == "tench"
    x, label = train[5]
    assert x.shape == (3, 224, 224) and label == 1


def test_an_empty_class_folder_is_refused_by_name(tmp_path):
    for name, count in (("cat", 2), ("dog", 0)):
        folder = tmp_path / "train" / name
        folder.mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", (8, 8)).save(folder / f"{i}.png")
    with pytest.raises(D.DataNotFoundError, match=r"class folder .*train/dog has no images"):
        D.build_dataset(tmp_path, "train")
    assert D.build_dataset(tmp_path, "train", num_classes=1).classes == ["cat"]


# --- images decoded once (cnx2lite.image_cache) -------------------------------------------------------------------

def test_decoded_images_give_the_decoded_pixels_and_shrink_only_large_ones(tmp_path):
    from cnx2lite.image_cache import cache_side

    rng = np.random.default_rng(0)
    small, large, grey = tmp_path / "small.png", tmp_path / "large.jpg", tmp_path / "grey.png"
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(small)
    Image.fromarray(rng.integers(0, 255, (300, 200, 3), dtype=np.uint8)).save(large, quality=95)
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(grey)
    assert cache_side(64) == 160 and cache_side((64, 96)) == 240
    cache = DecodedImages([str(small), str(large), str(grey), str(small)], max_side=100)
    assert len(cache) == 3 and str(small) in cache and str(tmp_path / "other.png") not in cache
    for path in (small, grey):  # at most max_side: exactly what load_image decodes
        np.testing.assert_array_equal(np.asarray(cache[str(path)]), np.asarray(images.load_image(path)))
    shrunk = cache[str(large)]
    assert shrunk.size == (100, 150) and shrunk.mode == "RGB"  # shorter side 200 -> 100, aspect kept
    np.testing.assert_array_equal(np.asarray(shrunk), np.asarray(images.load_image(large, max_side=100)))


def test_decoded_images_are_refused_when_they_would_not_fit_in_memory(tmp_path, monkeypatch):
    from cnx2lite import image_cache

    write_images(tmp_path, 3, 64, np.random.default_rng(0))
    monkeypatch.setattr(image_cache, "available_memory", lambda: 2 * 3 * 64 * 64 * 3 - 1)  # half of it < 3 images
    message = r"^cache_images: the 3 images take 0\.0 GiB decoded .* pass --no-cache-images$"
    with pytest.raises(ValueError, match=message):
        image_cache.DecodedImages(sorted(map(str, tmp_path.glob("*.png"))), max_side=160)


def test_a_dataset_reads_decoded_images_instead_of_its_files(tmp_path):
    from cnx2lite.image_cache import DecodedImages

    make_image_folder(tmp_path, classes=2, train=3, val=1, size=32)
    dataset = D.build_dataset(tmp_path, "train")
    expected = [dataset[i][0] for i in range(len(dataset))]
    dataset.decoded = DecodedImages([path for path, _ in dataset.samples], max_side=160)
    for path, _ in dataset.samples:
        Path(path).unlink()  # only the cache can answer now
    for i, image in enumerate(expected):
        torch.testing.assert_close(dataset[i][0], image, rtol=0, atol=0)


# --- the tuning split and random labeled subsets (choosing settings without val/) ---------------------------------

def test_the_tuning_split_is_fixed_disjoint_from_fit_and_val_and_subsets_follow_the_seed(tmp_path):
    make_image_folder(tmp_path, classes=2, train=20, val=4, size=32)
    build = functools.partial(D.build_dataset, tmp_path, "train", tune_fraction=0.2)
    tune = {path for path, _ in build(part="tune").samples}
    fit = {path for path, _ in build(part="fit").samples}
    val = {path for path, _ in D.build_dataset(tmp_path, "val").samples}
    assert len(tune) == 8 and len(fit) == 32 and not tune & fit and not (tune | fit) & val
    assert tune == {path for path, _ in build(part="tune", seed=7).samples}  # the run's seed does not move it
    picks = {seed: [p for p, _ in build(images_per_class=5, image_selection="random", seed=seed).samples]
             for seed in (0, 0, 1, 2)}
    assert picks[0] == [p for p, _ in build(images_per_class=5, image_selection="random", seed=0).samples]
    assert len({tuple(v) for v in picks.values()}) == 3 and all(set(v) <= fit for v in picks.values())
    with pytest.raises(ValueError, match="tune_fraction must be in \\[0, 1\\) and carves train/ only"):
        D.build_dataset(tmp_path, "val", tune_fraction=0.1)
    with pytest.raises(ValueError, match="part must be one of"):
        build(part="val")


def test_evaluating_on_the_tuning_split_needs_one():
    from cnx2lite.train import load_preset

    with pytest.raises(ValueError, match="eval_split='tune' needs a tuning split"):
        load_preset("smoke", eval_split="tune")
    with pytest.raises(ValueError, match="image_selection must be one of"):
        load_preset("smoke", image_selection="last")
    assert load_preset("smoke", eval_split="tune", tune_fraction=0.1).eval_split == "tune"


# ---------------------------------------------------------------------------------------------------- one decoder
def test_every_mode_decodes_with_its_range_scaled(tmp_path):
    """16-bit greyscale is not clipped to white, [0, 1] floats are not clipped to black: mid-grey stays mid-grey."""
    grey16 = np.full((8, 8), 32768, dtype=np.uint16)
    Image.fromarray(grey16).save(tmp_path / "grey16.png")
    Image.fromarray(np.full((8, 8), 0.5, dtype=np.float32), "F").save(tmp_path / "float.tiff")
    Image.fromarray(np.full((8, 8), 128, dtype=np.uint8), "L").save(tmp_path / "grey8.png")
    for name in ("grey16.png", "float.tiff", "grey8.png"):
        pixels = np.asarray(images.load_image(tmp_path / name))
        assert pixels.shape == (8, 8, 3) and np.abs(pixels.astype(int) - 128).max() <= 1, (name, pixels[0, 0])


def test_exif_orientation_is_applied_and_the_cache_agrees(tmp_path):
    """A phone photo stored sideways (EXIF orientation 6: turn 90 degrees clockwise) is decoded upright, by the
    decoder and by the image cache, whose layout is read from the headers."""
    pixels = np.zeros((20, 40, 3), dtype=np.uint8)  # 40 wide, 20 high; the left half red
    pixels[:, :20, 0] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(pixels).save(tmp_path / "sideways.jpg", exif=exif, quality=95)
    upright = np.asarray(images.load_image(tmp_path / "sideways.jpg"))
    assert upright.shape == (40, 20, 3) and images.oriented_size(tmp_path / "sideways.jpg") == (20, 40)
    assert upright[:20, :, 0].mean() > 200 and upright[20:, :, 0].mean() < 50  # red is now on top
    cached = np.asarray(DecodedImages([str(tmp_path / "sideways.jpg")], max_side=10)[str(tmp_path / "sideways.jpg")])
    assert cached.shape == (20, 10, 3) and cached[:10, :, 0].mean() > 200


# ---------------------------------------------------------------------------------------------------- one scanner
def test_links_neither_loop_nor_relabel_images(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=2, train=3, val=1)
    (folder / "train" / "class0" / "again").symlink_to(".")  # a loop back to the class folder
    (folder / "train" / "class0" / "up").symlink_to("..")  # and up to every class
    with pytest.raises(ValueError, match="outside the class folder"):
        D.build_dataset(folder, "train")
    (folder / "train" / "class0" / "up").unlink()
    dataset = D.build_dataset(folder, "train")
    assert [label for _, label in dataset.samples] == [0, 0, 0, 1, 1, 1]  # each image once, under its own class
    (folder / "train" / "class1" / "borrowed.png").symlink_to(folder / "train" / "class0" / "0.png")
    with pytest.raises(ValueError, match="borrowed.png links to"):
        D.build_dataset(folder, "train")


def test_skipping_corrupt_files_never_leaves_a_class_empty(tmp_path):
    folder = make_image_folder(tmp_path / "data", classes=2, train=2, val=1)
    for path in (folder / "train" / "class1").iterdir():
        path.write_bytes(b"not an image")
    with pytest.raises(D.DataNotFoundError, match="class1 has no readable image"):
        D.build_dataset(folder, "train", skip_corrupt=True)


def test_a_photo_collection_with_a_train_folder_is_refused_for_pretraining(tmp_path):
    """Images beside a train/ folder: neither reading (a labeled tree, or all of them) may silently drop the rest."""
    photos = tmp_path / "photos"
    write_images(photos / "train", 2, 32, np.random.default_rng(0))  # a trip to a railway station, say
    write_images(photos / "holiday", 3, 32, np.random.default_rng(1))
    with pytest.raises(D.DataNotFoundError, match="3 image\\(s\\) lie outside train/ and val/"):
        D.find_image_folder(photos, unlabeled_ok=True)
    assert D.find_image_folder(photos) == photos  # asked for a labeled tree: it is one
    write_images(tmp_path / "album" / "trips" / "val", 2, 32, np.random.default_rng(2))  # val/ alone: no advice to
    with pytest.raises(D.DataNotFoundError, match=r"trips/val exists: rename .*trips/val \(or move it out\)"):
        D.find_image_folder(tmp_path / "album", unlabeled_ok=True)  # pass a folder that is refused the same way


def test_gifs_are_images_and_an_unlistable_folder_stops_the_scan(tmp_path, monkeypatch):
    """Every file load_image decodes is listed (GIFs were silently left out), and a subfolder that cannot be listed
    (permissions) raises its error instead of silently dropping its images."""
    folder = tmp_path / "photos"
    (folder / "more").mkdir(parents=True)
    Image.new("RGB", (8, 8), "red").save(folder / "a.gif")
    Image.new("RGB", (8, 8), "blue").save(folder / "more" / "b.png")
    assert [Path(p).name for p in image_files.list_images(folder)] == ["a.gif", "b.png"]
    scandir = image_files.os.scandir

    def refuse_more(path):
        if str(path).endswith("more"):
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(image_files.os, "scandir", refuse_more)
    with pytest.raises(PermissionError, match="more"):
        image_files.list_images(folder)


def test_a_nan_or_inf_pixel_does_not_blank_a_float_image():
    pixels = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    pixels[3, 3], pixels[4, 4] = np.nan, np.inf
    rgb = np.asarray(images.to_rgb(Image.fromarray(pixels, "F")))
    assert rgb.max() == 255 and rgb[0, 1, 0] == 4 and rgb[4, 4, 0] == 255
