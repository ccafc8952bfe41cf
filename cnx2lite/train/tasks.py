"""The tasks of the one training loop in ``engine``: FCMAE pretraining and fine-tuning here, the transfer tasks in
:mod:`.dense_tasks`, each a :class:`~.task_base.Task`; :func:`build_task` picks the config's."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch
from timm.data import Mixup
from timm.loss import SoftTargetCrossEntropy
from torch import Tensor, nn
from torch.utils.data import Dataset

from .. import data, transforms
from ..checkpoint_formats import FCMAE_DECODER, fcmae_decoder_state_dict
from ..checkpoints import load_pretrained, read_state_dict
from ..fcmae import FCMAE
from ..masking import effective_mask_ratio, random_mask
from ..models import create_model
from ..models.convnextv2 import architecture
from ..rundir import open_in_run, run_subfolder
from .config import TrainConfig
from .dense_tasks import DetectTask, SegmentTask
from .plots import plot_reconstructions
from .seeding import derive_seed
from .task_base import Task

NUM_RECONSTRUCTIONS = 6


def seeded_masks(seeds: Tensor, img_size: int | tuple[int, int], ratio: float, device: torch.device) -> Tensor:
    """One FCMAE mask per sample ``(N, H/32, W/32)``, drawn from that sample's seed, so a sample's mask
    does not depend on its batch, its process or how many masks were drawn before."""
    masks = [random_mask(1, img_size, ratio, generator=torch.Generator().manual_seed(derive_seed(int(s), "mask")))
             for s in seeds.tolist()]
    return torch.cat(masks).to(device, non_blocking=True)


def _init_from(model: FCMAE, source: str) -> None:
    """Continued pretraining: the encoder from any source :func:`load_pretrained` reads, through a dense model of the
    same architecture (strict: every encoder weight must be there), and the decoder too when the source is an FCMAE
    checkpoint that carries one (ours, or the official one's, whose decoder uses the same names)."""
    encoder = create_model(model.encoder.variant, num_classes=0, in_chans=model.encoder.in_chans,
                           **architecture(model.encoder))
    load_pretrained(encoder, source)  # every check of the source's format and recorded architecture
    state = read_state_dict(source)
    weights = {k: v for k, v in encoder.state_dict().items() if not k.startswith(("norm.", "head."))}
    model.encoder.load_state_dict(weights)
    decoder = fcmae_decoder_state_dict(state)
    if decoder:
        ours = {k: v.shape for k, v in model.state_dict().items() if k.startswith(FCMAE_DECODER)}
        theirs = {k: v.shape for k, v in decoder.items()}
        wrong = sorted(k for k in ours.keys() | theirs.keys() if ours.get(k) != theirs.get(k))
        if any(not k.startswith("pred.") for k in wrong):
            raise ValueError(f"init_encoder {source}: its decoder does not fit this FCMAE ({len(wrong)} key(s) differ, "
                             f"e.g. {wrong[0]}): set decoder_dim/decoder_depth to the checkpoint's")
        # the prediction layer predicts 32x32 x in_chans pixels: with another in_chans it starts fresh
        model.load_state_dict({k: v for k, v in decoder.items() if k not in wrong}, strict=False)


class PretrainTask(Task):
    """FCMAE: loss = masked-patch reconstruction error; evaluation = the same loss on val images."""

    name = "pretrain"
    # The official main_pretrain.py exempts only 1-D parameters and biases from weight decay (timm's
    # add_weight_decay), so GRN gamma/beta and the mask token decay; its fine-tuning exempts them.
    decay_grn_and_mask_token = True

    def notes(self) -> list[str]:
        """The share of each image really masked, where the mask grid rounds ``mask_ratio`` (64 px: 2x2 cells)."""
        c = self.config
        masked = effective_mask_ratio(c.img_size, c.mask_ratio)
        if abs(masked - c.mask_ratio) < 0.005:
            return []
        return [f"mask_ratio {c.mask_ratio:g} masks {masked:.1%} of each image at "
                f"{'x'.join(map(str, transforms.image_hw(c.img_size)))} px: the grid of 32 px "
                f"cells keeps int(cells x (1 - mask_ratio)) of them visible"]

    def build_model(self, num_classes: int) -> FCMAE:
        c = self.config
        model = FCMAE.from_config(c.to_dict())
        if c.init_encoder:
            _init_from(model, c.init_encoder)
        return model

    def frozen_parameters(self, model: FCMAE, epoch: int) -> list[nn.Parameter]:
        """The encoder's parameters during the first ``freeze_encoder_epochs`` epochs: the decoder trains alone."""
        return list(model.encoder.parameters()) if epoch < self.config.freeze_encoder_epochs else []

    def train_transform(self) -> Callable:
        return transforms.pretrain_transform(self.config.img_size, self.config.in_chans)

    def loss(self, model: nn.Module, images: Tensor, targets: Tensor, seeds: Tensor) -> Tensor:
        masks = seeded_masks(seeds, self.config.img_size, self.config.mask_ratio, images.device)
        return model(images, masks)[0]

    def eval_batch(self, model: nn.Module, images: Tensor, targets: Tensor, index: int) -> dict[str, float]:
        """Summed loss over a val batch, with masks fixed by the batch's position."""
        seeds = torch.tensor([derive_seed(self.config.seed, "mask", index, i) for i in range(len(images))])
        loss = self.loss(model, images, targets, seeds)
        return {"val_loss": loss.item() * len(images)}

    @torch.no_grad()
    def save_figures(self, model: FCMAE, dataset: Dataset, folder: Path, epoch: int, last: bool) -> list[Path]:
        """Every ``recon_every`` epochs and at the last: four-panel reconstructions of ``dataset`` images, one per
        class where there are classes, with fixed masks, as ``reconstructions/epoch-<n>.png`` and (the newest)
        ``reconstruction.png``. Returns the figures written."""
        c = self.config
        if epoch % c.recon_every and not last:
            return []
        picks = data.distinct_class_order(dataset.targets)[:NUM_RECONSTRUCTIONS]
        images = torch.stack([dataset[i][0] for i in picks]).to(next(model.parameters()).device)
        generator = torch.Generator().manual_seed(derive_seed(c.seed, "figure"))
        was_training = model.training
        model.eval()
        recon = model.reconstruct(images, model.random_mask(images, generator))
        model.train(was_training)
        path = run_subfolder(folder, "reconstructions") / f"epoch-{epoch:04d}.png"
        note = ("norm-pix target: predictions shown with each true patch's mean and std (brightness and contrast "
                "are the image's)" if c.norm_pix_loss else "")
        plot_reconstructions(recon, path, title=f"{c.model}, epoch {epoch}", note=note)
        with open_in_run(folder / "reconstruction.png", "wb") as newest:
            newest.write(path.read_bytes())
        return [path]


def build_mixup(num_classes: int, mixup: float, cutmix: float, label_smoothing: float) -> Callable | None:
    """timm Mixup/CutMix (switch_prob 0.5, mode 'batch', smoothed soft targets) if mixup or cutmix > 0, else None.

    ``mixup_fn(x, y)``: x (B, C, H, W), y (B,) int -> x mixed, y (B, num_classes) soft targets summing to 1.
    B must be even: build train loaders with ``drop_last=True`` and an even batch size.
    With None, label smoothing moves into the loss: see :func:`build_criterion`.
    """
    if mixup < 0 or cutmix < 0:
        raise ValueError(f"mixup and cutmix must be >= 0 (0 = off), got mixup={mixup}, cutmix={cutmix}")
    if mixup == 0 and cutmix == 0:
        return None
    return Mixup(mixup_alpha=mixup, cutmix_alpha=cutmix, prob=1.0, switch_prob=0.5, mode="batch",
                 label_smoothing=label_smoothing, num_classes=num_classes)


def build_criterion(mixup_fn: Callable | None, label_smoothing: float) -> nn.Module:
    """SoftTargetCrossEntropy for Mixup's soft targets (which carry the smoothing), else smoothed cross-entropy
    (torch's equals timm's LabelSmoothingCrossEntropy used by the official code)."""
    if mixup_fn is not None:
        return SoftTargetCrossEntropy()
    return nn.CrossEntropyLoss(label_smoothing=label_smoothing)


class FinetuneTask(Task):
    """Classification: (Mixup/CutMix +) cross-entropy; evaluation = loss, top-1, top-5."""

    name = "finetune"

    def __init__(self, config: TrainConfig) -> None:
        super().__init__(config)
        self.mixup_fn: Callable | None = None
        self.criterion: nn.Module | None = None

    def build_model(self, num_classes: int) -> nn.Module:
        c = self.config
        model = create_model(c.model, num_classes=num_classes, drop_path_rate=c.drop_path,
                             head_init_scale=c.head_init_scale, block=c.block, grn_aggregation=c.grn_aggregation,
                             block_norm=c.block_norm,
                             in_chans=c.in_chans)
        if c.pretrained:
            self.load_encoder(model, c.pretrained)
        self.mixup_fn = build_mixup(num_classes, c.mixup, c.cutmix, c.label_smoothing)
        self.criterion = build_criterion(self.mixup_fn, c.label_smoothing)
        return model

    def train_transform(self) -> Callable:
        c = self.config
        return transforms.finetune_transform(c.img_size, rand_augment=c.rand_augment, reprob=c.reprob,
                                             in_chans=c.in_chans)

    def loss(self, model: nn.Module, images: Tensor, targets: Tensor, seeds: Tensor) -> Tensor:
        if self.mixup_fn is not None:
            images, targets = self.mixup_fn(images, targets)
        return self.criterion(model(images), targets)

    def eval_batch(self, model: nn.Module, images: Tensor, targets: Tensor, index: int) -> dict[str, float]:
        return classification_stats(model(images), targets)


def classification_stats(logits: Tensor, targets: Tensor) -> dict[str, float]:
    """Summed cross-entropy and top-1/top-5 hits (top-k over at most the number of classes)."""
    k = min(5, logits.shape[1])
    hits = logits.topk(k, dim=1).indices.eq(targets[:, None])
    return {"val_loss": nn.functional.cross_entropy(logits.float(), targets, reduction="sum").item(),
            "val_top1": hits[:, 0].sum().item() * 100.0, "val_top5": hits.any(dim=1).sum().item() * 100.0}


def build_task(config: TrainConfig) -> Task:
    return {"pretrain": PretrainTask, "finetune": FinetuneTask, "segment": SegmentTask,
            "detect": DetectTask}[config.task](config)
