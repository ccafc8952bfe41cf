"""Per-image correctness on the val split of the grid's runs (:class:`Evaluator`): fine-tuned top-1 and the kNN of
frozen encoders, each measured once and kept in the grid's records (:mod:`.records`)."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from .. import collapse_curves, data, transforms
from ..amp import AMP_DTYPES, resolve_amp
from ..factory import load_model
from ..models import ConvNeXtV2
from ..probes import KNN_K, extract_features, predict, probe_features
from .grid import TUNE_FRACTION, Cell, Grid, arch_options, shot_label


class Evaluator:
    """Per-image correctness on the val split, for fine-tuned runs and frozen-encoder kNN. Each run's is measured
    once and kept in the grid's records, under a key naming the precision and the val images it was measured in and
    on (:meth:`key`)."""

    def __init__(self, grid: Grid, device: torch.device) -> None:
        self.grid, self.device = grid, device
        s = grid.scale
        self.amp_dtype = resolve_amp(s.eval_amp, device)  # bf16 without it in the CPU: amp.Float32Products
        self.precision = next(name for name, dtype in AMP_DTYPES.items() if dtype == self.amp_dtype)
        self.folder = data.find_image_folder(Path(grid.folder))
        self.transform = transforms.eval_transform(s.img_size)
        # the training runs' classes, in their label order (one image per class is enough to list them)
        self.classes = data.build_dataset(self.folder, "train", num_classes=s.num_classes, images_per_class=1).classes
        self.val_set = data.build_dataset(self.folder, "val", self.transform, classes=self.classes,
                                          images_per_class=s.val_images_per_class,
                                          warn_short=False)  # the runs' notes say it
        listing = "\n".join(f"{Path(path).relative_to(self.folder)} {label}" for path, label in self.val_set.samples)
        self.val_id = hashlib.sha1(listing.encode()).hexdigest()[:10]  # which val images, in which order
        self.cache: dict[Cell | tuple, Tensor] = {}

    def key(self, what: str) -> str:
        """The records' key of a measurement ``what`` made by this evaluator: ``<what>-<precision>@<val id>``."""
        return f"{what}-{self.precision}@{self.val_id}"

    def finetuned(self, k: int | None, init: str, block: str = "v2", tuned: str | None = None) -> Tensor:
        """``(P, S, N)`` correctness of a cell's fine-tuned runs: pretraining runs (1 for scratch), fine-tuning seeds,
        val images (trained on first use, evaluated once)."""
        cell = Cell(k, init, block, tuned)
        if cell not in self.cache:
            self.cache[cell] = torch.stack([torch.stack([self.val_correct(k, init, block, seed, p, tuned)
                                                         for seed in seeds]) for p, seeds in self.grid.origins(init)])
        return self.cache[cell]

    def val_correct(self, k: int | None, init: str, block: str, seed: int, pretrain_seed: int,
                     tuned: str | None) -> Tensor:
        """``(N,)`` correctness of one fine-tuned run on the val images: recorded, else measured and recorded."""
        name = self.grid.finetune_name(k, init, block, seed, pretrain_seed=pretrain_seed, tuned=tuned)
        key = self.key("val_correct")
        correct = self.grid.records.measured(name, key)
        if correct is None:
            run = self.grid.finetune(k, init, block, seed, pretrain_seed=pretrain_seed, tuned=tuned, weights=True)
            model = load_model(run.run_dir, classifier=True)[0]
            logits, labels = predict(model.to(self.device), self.val_set, 128, self.device, self.amp_dtype)
            correct = self.grid.records.keep_measured(name, key, logits.argmax(dim=1).eq(labels))
        return correct

    def labeled(self, k: int | None, seed: int) -> data.ImageFolderSubset:
        """The ``k`` labeled images per class (None: all) that fine-tuning seed ``seed`` trains on, at eval
        transform."""
        return data.build_dataset(self.folder, "train", self.transform, classes=self.classes,
                                  images_per_class=k or self.grid.scale.images_per_class, seed=seed,
                                  image_selection="random", tune_fraction=TUNE_FRACTION,
                                  warn_short=False)  # the fine-tuning runs' notes say it

    @staticmethod
    def knn_neighbours(k: int | None) -> int:
        """The kNN's neighbours with ``k`` labeled images per class: :data:`KNN_K`, never more than ``k``."""
        return KNN_K if k is None else min(KNN_K, k)

    def knn(self, k: int | None, init: str, block: str = "v2") -> Tensor:
        """``(P, S, N)`` kNN correctness of frozen encoders: each pretraining run ('fcmae', 'fcmae-denseconv') or a
        random init per pretraining seed ('scratch'); the memory bank of seed ``s`` is fine-tuning seed ``s``'s
        labeled images (one bank with every label)."""
        key = ("knn", k, init, block)
        if key not in self.cache:
            self.cache[key] = torch.stack([self.knn_correct(k, init, block, p)
                                           for p in range(self.grid.scale.pretrain_seeds)])
        return self.cache[key]

    def knn_correct(self, k: int | None, init: str, block: str, pretrain_seed: int) -> Tensor:
        """``(S, N)`` kNN correctness of one frozen encoder, a row per memory bank (fine-tuning seed; one bank with
        every label): recorded under the encoder's name, else measured and recorded."""
        seeds = range(self.grid.scale.finetune_seeds) if k is not None else [0]
        owner = self.encoder_name(init, block, pretrain_seed)
        keys = [self.key(f"knn-k{shot_label(k)}-s{seed}") for seed in seeds]
        rows = [self.grid.records.measured(owner, key) for key in keys]
        if any(row is None for row in rows):
            encoder = self.encoder(init, block, pretrain_seed).to(self.device)
            val_x, val_y = self._features(encoder, self.val_set)
            for i, (seed, key) in enumerate(zip(seeds, keys)):
                if rows[i] is None:
                    bank_x, bank_y = self._features(encoder, self.labeled(k, seed))
                    correct = probe_features("knn", bank_x, bank_y, val_x, val_y, len(self.classes),
                                             min(self.knn_neighbours(k), len(bank_x))).correct
                    rows[i] = self.grid.records.keep_measured(owner, key, correct)
        return torch.stack(rows)

    def collapse_statistics(self, owner: str, load: Callable[[], nn.Module], images: Tensor, point: str,
                            rank_counts: Tensor) -> dict:
        """:func:`cnx2lite.collapse_curves.run_statistics` of the encoder ``load`` gives, on ``images (N, 3, H, W)``
        (the first ``N`` val images in alternating-class order): recorded under ``owner``, else measured (loading the
        encoder) and recorded."""
        key = f"collapse-{point}-{images.shape[-1]}px-{len(images)}images-{len(rank_counts)}ranks@{self.val_id}"
        statistics = self.grid.records.measured(owner, key)
        if statistics is None:
            model = load().to(self.device)
            statistics = self.grid.records.keep_measured(
                owner, key, collapse_curves.run_statistics(model, images, rank_counts, point))
        return statistics

    def _features(self, encoder: ConvNeXtV2, dataset: data.ImageFolderSubset) -> tuple[Tensor, Tensor]:
        return extract_features(encoder, dataset, 128, self.device, self.amp_dtype)

    def encoder_name(self, init: str, block: str = "v2", pretrain_seed: int = 0) -> str:
        """The name :meth:`encoder`'s measurements are recorded under: its pretraining run, else
        ``random-<block>-p<seed>``."""
        if init == "scratch":
            return f"random-{block}-p{pretrain_seed}"
        return self.grid.pretrain_name(block, init == "fcmae", pretrain_seed)

    def encoder(self, init: str, block: str = "v2", pretrain_seed: int = 0) -> ConvNeXtV2:
        """A frozen encoder: pretraining run ``pretrain_seed`` ('fcmae', 'fcmae-denseconv') or a random init from that
        seed ('scratch')."""
        if init == "scratch":
            return load_model("random", self.grid.scale.model, arch_options(block)["block"], seed=pretrain_seed)[0]
        run = self.grid.pretrain(block, sparse=init == "fcmae", seed=pretrain_seed, weights=True)
        return load_model(run.run_dir)[0]
