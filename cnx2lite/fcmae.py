"""FCMAE: the fully convolutional masked autoencoder of the ConvNeXt V2 paper.

An image goes from pixels to loss in five steps:

1. a random mask is drawn on the last stage's grid, one cell per 32x32 patch (``masking``);
2. the sparse encoder sees only the visible patches (``sparse``), giving ``(N, C4, h, w)``;
   ``sparse=False`` is the paper's dense-conv ablation instead (83.7 sparse vs 79.3 dense, ConvNeXt
   V1-B before GRN was added, 800 epochs): the plain dense encoder runs on the image with masked patches zeroed;
3. a 1x1 projection to ``decoder_dim`` and a learned mask token at every masked cell;
4. one ConvNeXt V2 block (the light decoder), then a 1x1 prediction of each patch's pixels;
5. the mean squared error on masked patches only, against per-patch normalized pixels by default.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from .masking import check_mask, mask_grid, pixel_mask, random_mask
from .models import PATCH_SIZE, Block, ConvNeXtV2, create_model
from .models.convnextv2 import init_weights
from .sparse import BACKENDS, check_backend


def patchify(imgs: Tensor, patch_size: int = PATCH_SIZE) -> Tensor:
    """``(N, C, H, W)`` -> ``(N, L, p*p*C)`` with patches in row-major order, pixels as (row, col, channel)."""
    n, c, height, width = imgs.shape
    h, w, p = height // patch_size, width // patch_size, patch_size
    x = imgs.reshape(n, c, h, p, w, p).permute(0, 2, 4, 3, 5, 1)
    return x.reshape(n, h * w, p * p * c)


def unpatchify(patches: Tensor, grid: tuple[int, int], patch_size: int = PATCH_SIZE) -> Tensor:
    """Inverse of :func:`patchify`: ``(N, L, p*p*C)`` -> ``(N, C, h*p, w*p)`` for ``grid = (h, w)``."""
    n, _, dim = patches.shape
    (h, w), p = grid, patch_size
    c = dim // (p * p)
    x = patches.reshape(n, h, w, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(n, c, h * p, w * p)


def patch_statistics(patches: Tensor, eps: float = 1e-6) -> tuple[Tensor, Tensor]:
    """Per-patch mean and standard deviation ``(N, L, 1)`` of ``(N, L, D)`` patches (norm-pix target)."""
    mean = patches.mean(dim=-1, keepdim=True)
    std = (patches.var(dim=-1, keepdim=True) + eps).sqrt()
    return mean, std


def pretraining_encoder(encoder: str | ConvNeXtV2, block: str = "v2", grn_aggregation: str = "l2",
                        in_chans: int = 3, block_norm: str | None = None) -> ConvNeXtV2:
    """The encoder that FCMAE trains: ``create_model(encoder, ...)`` for a variant name, else a copy
    of the given model. Pretraining never pools: like the official FCMAE encoder, it has no final
    norm or head, so its state dict holds the stem, downsampling layers and stages only."""
    if isinstance(encoder, str):
        encoder = create_model(encoder, num_classes=0, block=block, grn_aggregation=grn_aggregation, in_chans=in_chans,
                               block_norm=block_norm)
    elif isinstance(encoder, ConvNeXtV2):
        encoder = copy.deepcopy(encoder)
    else:
        raise TypeError(f"encoder must be a model name or a ConvNeXtV2, got {type(encoder).__name__}")
    encoder.norm, encoder.head = nn.Identity(), nn.Identity()
    return encoder


class Reconstruction(NamedTuple):
    """Four ``(N, C, H, W)`` panels in the input's pixel space, for MAE-style figures."""

    original: Tensor
    masked: Tensor  # masked patches set to zero
    reconstruction: Tensor  # the decoder's prediction everywhere
    pasted: Tensor  # prediction at masked patches, input at visible ones


class FCMAE(nn.Module):
    """Sparse ConvNeXt V2 encoder + light ConvNeXt V2 decoder, trained to predict masked patches.

    ``encoder`` is a variant name or a :class:`ConvNeXtV2`: FCMAE trains its own encoder, built from
    the name (``block``, ``grn_aggregation`` and ``block_norm`` configure it) or copied from the given model, which is
    left as it is. Its parameter names are those of the dense model, so ``fcmae.encoder.state_dict()``
    loads into ``create_model(name)`` for fine-tuning (with a fresh final norm and head). The decoder
    is always the paper's (V2 blocks, L2 GRN). ``backend`` picks the sparse encoder implementation
    (``"dense"``, ``"gather"``, ``"minkowski"``); ``sparse=False`` replaces the sparse encoder by the
    dense one on the masked image (an ablation)."""

    def __init__(
        self,
        encoder: str | ConvNeXtV2 = "convnextv2_atto",
        decoder_dim: int = 512,
        decoder_depth: int = 1,
        mask_ratio: float = 0.6,
        norm_pix_loss: bool = True,
        backend: str = "gather",
        block: str = "v2",
        grn_aggregation: str = "l2",
        sparse: bool = True,
        in_chans: int = 3,
        block_norm: str | None = None,
    ) -> None:
        super().__init__()
        # initialized first, as seeded runs expect
        self.encoder = pretraining_encoder(encoder, block, grn_aggregation, in_chans, block_norm)
        if decoder_depth < 1 or decoder_dim < 1:
            raise ValueError(f"decoder_depth and decoder_dim must be >= 1, got {decoder_depth}, {decoder_dim}")
        random_mask(1, PATCH_SIZE, mask_ratio)  # validates mask_ratio with a clear message
        check_backend(backend)
        self.mask_ratio, self.norm_pix_loss, self.backend, self.sparse = mask_ratio, norm_pix_loss, backend, sparse
        self.patch_size = PATCH_SIZE
        self.proj = nn.Conv2d(self.encoder.dims[-1], decoder_dim, kernel_size=1)
        self.mask_token = nn.Parameter(torch.zeros(1, decoder_dim, 1, 1))
        self.decoder = nn.Sequential(*[Block(decoder_dim) for _ in range(decoder_depth)])
        self.pred = nn.Conv2d(decoder_dim, PATCH_SIZE**2 * self.encoder.in_chans, kernel_size=1)
        for module in (self.proj, self.decoder, self.pred):
            module.apply(init_weights)
        nn.init.normal_(self.mask_token, std=0.02)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FCMAE:
        """The FCMAE a pretraining config describes: a run's ``config.json`` or ``TrainConfig.to_dict()`` (fields
        missing from older runs take their defaults)."""
        return cls(config["model"], decoder_dim=config["decoder_dim"], decoder_depth=config["decoder_depth"],
                   mask_ratio=config["mask_ratio"], norm_pix_loss=config["norm_pix_loss"], backend=config["backend"],
                   block=config.get("block", "v2"), grn_aggregation=config.get("grn_aggregation", "l2"),
                   sparse=config.get("sparse_encoder", True), in_chans=config.get("in_chans", 3),
                   block_norm=config.get("block_norm"))

    def random_mask(self, imgs: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """A fresh ``(N, H/32, W/32)`` mask at ``self.mask_ratio`` for ``imgs``."""
        return random_mask(imgs.shape[0], tuple(imgs.shape[-2:]), self.mask_ratio, generator=generator,
                           device=imgs.device)

    def forward_encoder(self, imgs: Tensor, mask: Tensor) -> Tensor:
        """``imgs (N, C, H, W)``, bool ``mask (N, h, w)`` -> encoder map ``(N, C4, h, w)``, ``h = H/32``.

        Sparse: visible patches only, zero at masked cells. Dense (the ablation): the plain encoder
        on the image with masked patches zeroed, so convolutions and GRN see masked positions too."""
        if self.sparse:
            return BACKENDS[self.backend](self.encoder, imgs, mask)
        return self.encoder.forward_features(imgs * ~pixel_mask(mask, self.patch_size).unsqueeze(1))

    def forward_decoder(self, latent: Tensor, mask: Tensor) -> Tensor:
        """Encoder map ``(N, C4, h, w)`` -> pixel predictions ``(N, p*p*C, h, w)``; ``D = decoder_dim``."""
        x = self.proj(latent)  # (N, D, h, w)
        masked = mask.unsqueeze(1).to(x.dtype)  # (N, 1, h, w)
        x = x * (1 - masked) + self.mask_token.to(x.dtype) * masked  # the mask token at masked cells
        x = self.decoder(x)  # (N, D, h, w)
        return self.pred(x)

    def forward_loss(self, imgs: Tensor, pred: Tensor, mask: Tensor) -> Tensor:
        """Mean over masked patches of the per-patch MSE between ``pred (N, p*p*C, h, w)`` and the
        (norm-pix) target patches of ``imgs (N, C, H, W)``. Zero when nothing is masked."""
        target = patchify(imgs, self.patch_size)  # (N, L, p*p*C), L = h*w
        if self.norm_pix_loss:
            mean, std = patch_statistics(target)
            target = (target - mean) / std
        pred = pred.flatten(2).transpose(1, 2)  # (N, L, p*p*C)
        per_patch = (pred.float() - target.float()).square().mean(dim=-1)  # (N, L)
        weights = mask.flatten(1).to(per_patch.dtype)  # (N, L), 1 = masked
        return (per_patch * weights).sum() / weights.sum().clamp_min(1)

    def forward(self, imgs: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """``imgs (N, C, H, W)`` -> ``(loss, pred (N, p*p*C, H/32, W/32), mask (N, H/32, W/32))``.
        A random mask at ``mask_ratio`` is drawn (from torch's global RNG) unless one is given."""
        self.encoder.check_input(imgs)
        if mask is None:
            mask = self.random_mask(imgs)
        else:
            mask = check_mask(mask, imgs.shape[0], mask_grid(tuple(imgs.shape[-2:]))).to(imgs.device)
        latent = self.forward_encoder(imgs, mask)  # (N, C4, h, w)
        pred = self.forward_decoder(latent, mask)  # (N, p*p*C, h, w)
        loss = self.forward_loss(imgs, pred, mask)
        return loss, pred, mask

    @torch.no_grad()
    def reconstruct(self, imgs: Tensor, mask: Tensor | None = None) -> Reconstruction:
        """Four panels for figures; predictions of a norm-pix model are de-normalized with each
        target patch's own mean and std (which a real application would not know)."""
        _, pred, mask = self(imgs, mask)
        grid = tuple(mask.shape[1:])
        pred = pred.flatten(2).transpose(1, 2)
        if self.norm_pix_loss:
            mean, std = patch_statistics(patchify(imgs, self.patch_size))
            pred = pred * std + mean
        recon = unpatchify(pred, grid, self.patch_size)
        pixels = pixel_mask(mask, self.patch_size).unsqueeze(1)
        return Reconstruction(imgs, imgs * ~pixels, recon, torch.where(pixels, recon, imgs))
