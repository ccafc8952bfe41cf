"""Copy the Imagenette train and val splits, re-encoded small, into gpu-data/ (ignored by git) for the device scripts
(scripts/gpu_check.sh, scripts/gpu_evidence.sh).

The device machine receives only the repository (64 MiB in all, carried paths included) and cannot reach
../shared, so its runs read this copy: shorter side 112 px, JPEG quality 80, about 36 MiB for the 9,469 train
images and 7 MiB for val. Usage: python scripts/make_gpu_data.py [--data ../shared/data] [--out gpu-data]
[--splits train val]
"""
from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image

from cnx2lite.data import build_dataset, find_image_folder, resolve_data_root

SHORTER_SIDE, QUALITY = 112, 80


def shrink(source: str, target: Path) -> int:
    with Image.open(source) as img:
        img = img.convert("RGB")
        scale = SHORTER_SIDE / min(img.size)
        img = img.resize((round(img.width * scale), round(img.height * scale)), Image.Resampling.BICUBIC)
        target.parent.mkdir(parents=True, exist_ok=True)
        img.save(target, quality=QUALITY)
    return target.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="data root holding imagenette/ (default: $CNX2LITE_DATA_ROOT)")
    parser.add_argument("--out", default="gpu-data", help="output root (default: gpu-data)")
    parser.add_argument("--splits", nargs="+", choices=("train", "val"), default=["train", "val"],
                        help="splits to copy (default: train val)")
    args = parser.parse_args()
    folder = find_image_folder(resolve_data_root(args.data))
    for split in args.splits:
        images = build_dataset(folder, split)
        out = Path(args.out) / "imagenette" / split
        jobs = [(path, out / images.classes[label] / Path(path).name) for path, label in images.samples]
        with ThreadPoolExecutor() as pool:
            sizes = list(pool.map(lambda job: shrink(*job), jobs))
        print(f"{len(sizes)} images, {sum(sizes) / 2**20:.1f} MiB in {out}")


if __name__ == "__main__":
    main()
