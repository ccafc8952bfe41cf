# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. FCMAE pre-training, then fine-tuning: the whole pipeline
#
# The previous notebooks took the pieces apart: masking, the sparse encoder, GRN. This one runs them end to end through
# the library, the way the paper does (Woo et al., 2023, the FCMAE section and appendix A):
#
# 1. **pre-train** ConvNeXt V2 with FCMAE: mask 60% of the 32x32 patches, encode the visible ones with the sparse
#    encoder, predict the missing pixels with a light decoder;
# 2. **look at reconstructions**;
# 3. **fine-tune** the pre-trained encoder for classification, and compare with the same model **trained from
#    scratch** under the same fine-tuning budget;
# 4. see how the same run **scales** to the command line, to 8 GPUs and to the paper's ImageNet-1K recipes.
#
# Every step is one call of `cnx2lite.train` with a preset. `CNX2LITE_SCALE` picks it: `smoke` runs the `smoke`
# preset (2 classes x 8 Imagenette images at 64 px, one epoch of two steps, seconds: it checks the pipeline, its
# numbers mean nothing), `cpu` the `cpu` preset (10 classes x 300 images at 96 px, 20 epochs per run: about 21
# minutes of pre-training and 27 minutes per fine-tuning on a 2-core CPU), `gpu` the `imagenette-gpu` preset (all of
# Imagenette at 224 px, 400 pre-training and 100 fine-tuning epochs). Imagenette comes from `CNX2LITE_DATA_ROOT`
# (`cnx2lite download` fetches it). The outputs stored in this notebook come from a `cpu` run.

# %%
# %matplotlib inline
import tempfile
from pathlib import Path

import torch
from IPython.display import Image, display

from cnx2lite.fcmae import FCMAE
from cnx2lite.notebook.photos import sample_images
from cnx2lite.notebook.run_scale import pick, scale
from cnx2lite.rundir import load_checkpoint
from cnx2lite.train import PRESETS, finetune, load_preset, pretrain
from cnx2lite.train.plots import plot_comparison, plot_reconstructions

PRESET = pick(smoke="smoke", cpu="cpu", gpu="imagenette-gpu")
OUTPUT = Path(tempfile.mkdtemp(prefix="cnx2lite-05-")) if scale() == "smoke" else Path("runs")
print("scale:", scale(), "| preset:", PRESET, "| runs in:", OUTPUT)

# %% [markdown]
# ## 1. Pre-train
#
# The preset is a `TrainConfig`; any field can be overridden by keyword (`pretrain(PRESET, epochs=5)`). The run
# writes its config, metrics (`metrics.csv`), curves, reconstructions and checkpoints to `<output>/<name>`;
# `resume="auto"` makes a re-run of this notebook continue (or reuse) a run already there. The name is the one
# notebook 4 gave its V2 run with the same preset: if you ran notebook 4 at this scale, this cell reuses that run
# instead of training it again (and if the settings differed, it would refuse rather than mix two runs).

# %%
pt_config = load_preset(PRESET, task="pretrain", output=str(OUTPUT), name="fcmae-v2", resume="auto",
                        progress=False)
print({k: getattr(pt_config, k) for k in ("model", "img_size", "num_classes", "images_per_class", "epochs",
                                          "batch_size", "mask_ratio", "decoder_dim", "backend", "lr", "base_lr")})
pt = pretrain(pt_config)
print("checkpoint:", pt.checkpoint)
print("val loss per epoch:", [round(v, 4) for v in pt.metric("val_loss")])

# %% [markdown]
# The loss is the mean squared error on the masked patches only, with each target patch normalized by its own mean and
# standard deviation (`norm_pix_loss`), so predicting the patch's mean color gives about 1.0. A loss clearly below 1
# means the model predicts structure inside the masked patches.
#
# ## 2. Reconstructions
#
# We rebuild the FCMAE from the checkpoint and reconstruct a few photos with a fixed mask. The four panels: the
# original, what the encoder sees (the masked image), the prediction for every patch, and the prediction pasted into
# the masked patches only. Predictions are de-normalized with each patch's own mean and std, which a real application
# would not know; it makes the structure easy to see (the mean and std are taken over all three color channels of a
# patch together, so a prediction of zero shows as a flat grey patch of the right brightness). The mask grid is small
# at these image sizes: 3x3 cells at the `cpu` preset's 96 px (3 of 9 stay visible), 2x2 at `smoke`'s 64 px.

# %%
fcmae = FCMAE(pt_config.model, decoder_dim=pt_config.decoder_dim, decoder_depth=pt_config.decoder_depth,
              mask_ratio=pt_config.mask_ratio, norm_pix_loss=pt_config.norm_pix_loss, backend=pt_config.backend)
fcmae.load_state_dict(load_checkpoint(pt.checkpoint)["model"])
fcmae.eval()
photos = sample_images(4, pt_config.img_size, seed=1)
recon = fcmae.reconstruct(photos, fcmae.random_mask(photos, generator=torch.Generator().manual_seed(0)))
display(Image(filename=plot_reconstructions(recon, OUTPUT / "reconstructions.png",
                                            title=f"FCMAE reconstructions ({scale()} scale, preset {PRESET})")))

# %% [markdown]
# In the stored `cpu` run (validation loss 0.78 after 20 epochs), the masked patches come back as smooth color
# gradients that continue their visible neighbors: the layout of light and color, not yet texture or edges. The
# visible patches come back as noise, because the loss never looks at them (as in MAE). After a smoke run, expect
# flat blocks.

# %% [markdown]
# ## 3. Fine-tune, and the same budget from scratch
#
# `finetune(PRESET, pretrained=<checkpoint>)` loads the encoder from the FCMAE checkpoint (the decoder is dropped; the
# final norm and the classifier start fresh), then trains with the fine-tuning recipe: AdamW, layer-wise lr decay,
# RandAugment, random erasing, EMA of the weights. The baseline is the identical run without `pretrained`. Both see
# the same images in the same order with the same augmentations (same seed), so the pre-training is the only
# difference. Fine-tuning does not count the pre-training epochs: the pre-trained model has had more compute in total.

# %%
ft = finetune(PRESET, output=str(OUTPUT), name="finetune-fcmae", pretrained=str(pt.checkpoint), resume="auto",
              progress=False)
scratch = finetune(PRESET, output=str(OUTPUT), name="finetune-scratch", resume="auto", progress=False)

# %%
ft_config = load_preset(PRESET, task="finetune")
print(f"val top-1 (%) on {ft_config.num_classes or 'all'} classes x {ft_config.val_images_per_class or 'all'} images per "
      f"class, after {ft_config.epochs} fine-tuning epoch(s):")
print(f"{'model':28s}{'final':>8s}{'best':>8s}{'EMA final':>11s}")
for label, run in (("FCMAE pre-trained", ft), ("from scratch", scratch)):
    ema = "-" if run.final_ema_top1 is None else f"{run.final_ema_top1:.1f}"
    print(f"{label:28s}{run.final_top1:8.1f}{run.best_top1:8.1f}{ema:>11s}")

# %% [markdown]
# Epoch by epoch, from each run's history (`run.history`, also in its `metrics.csv`):

# %%
display(Image(filename=plot_comparison({"FCMAE pre-trained": ft.history, "from scratch": scratch.history}, "val_top1",
                                       OUTPUT / "val_top1.png", "val top-1 (%)",
                                       f"Fine-tuning, FCMAE vs scratch ({scale()} scale)")))

# %% [markdown]
# What to look for: at `cpu` and `gpu` scale, whether the pre-trained model ends above the one trained from scratch,
# and how the gap changes with the length of pre-training. At `smoke` scale the validation set has 8 images and each
# run takes two steps, so a difference of one image is 12.5 points: the table only shows that the pipeline runs.
#
# In the stored `cpu` run, the FCMAE-pre-trained model ends 4.8 points above the one trained from scratch (47.0% against
# 42.2% on 500 validation images, chance 10%) and leads from the first epoch on. That is one seed, and a difference
# of 4.8 points on 500 images is about 24 images: suggestive, not proof. The EMA columns are lower because an EMA
# with decay 0.999 averages over about the last 1,000 steps, longer than these 920-step runs; it pays off in long runs.
#
# ## 4. The same runs, scaled up
#
# Everything above is also a command. The CLI takes the same presets and has one flag per config field
# (`cnx2lite pretrain --help`); `--show-config` prints the resulting config as JSON without training:

# %%
checkpoint_name = Path(pt.checkpoint).name
print(f"""\
cnx2lite pretrain --preset {PRESET} --name fcmae-v2
cnx2lite finetune --preset {PRESET} --name finetune-fcmae --pretrained runs/fcmae-v2/{checkpoint_name}
cnx2lite finetune --preset {PRESET} --name finetune-scratch
cnx2lite pretrain --preset {PRESET} --name fcmae-v2 --resume auto   # continue after an interruption""")

# %% [markdown]
# On several GPUs the same command runs under `torchrun`, one process per GPU (DistributedDataParallel). `batch_size`
# is per process; presets that set `global_batch` keep the effective batch fixed (gradient accumulation makes up the
# difference), so the recipe does not change with the number of GPUs:
#
# ```bash
# torchrun --nproc_per_node=8 -m cnx2lite pretrain --preset in1k-atto --data /path/to/data
# torchrun --nproc_per_node=8 -m cnx2lite finetune --preset in1k-atto --data /path/to/data \
#     --pretrained runs/pretrain-convnextv2_atto/<checkpoint>.pt
# ```
#
# The `in1k-<size>` presets are the paper's ImageNet-1K recipes (appendix A), read here from the
# library rather than retyped. `effective lr` is `base_lr * global_batch / 256`.

# %% tags=["nbval-check-output"]
sizes = [name.removeprefix("in1k-") for name in PRESETS["pretrain"] if name.startswith("in1k-")]
print("pre-training (FCMAE):")
print(f"{'preset':12s}{'model':20s}{'epochs':>7s}{'warmup':>7s}{'batch':>7s}{'base lr':>9s}{'eff. lr':>9s}"
      f"{'mask':>6s}{'decoder':>8s}")
for size in sizes:
    c = load_preset(f"in1k-{size}", task="pretrain")
    print(f"{'in1k-' + size:12s}{c.model:20s}{c.epochs:7d}{c.warmup_epochs:7g}{c.global_batch:7d}{c.base_lr:9.2e}"
          f"{c.base_lr * c.global_batch / 256:9.2e}{c.mask_ratio:6.1f}{c.decoder_dim:8d}")
print("\nfine-tuning:")
print(f"{'preset':12s}{'epochs':>7s}{'warmup':>7s}{'batch':>7s}{'base lr':>9s}{'wd':>7s}{'layer decay':>16s}"
      f"{'drop path':>10s}{'mixup':>6s}{'cutmix':>7s}{'smooth':>7s}{'EMA':>8s}")
for size in sizes:
    c = load_preset(f"in1k-{size}", task="finetune")
    decay = f"{c.layer_decay:g} ({c.layer_decay_mode})"
    print(f"{'in1k-' + size:12s}{c.epochs:7d}{c.warmup_epochs:7g}{c.global_batch:7d}{c.base_lr:9.2e}"
          f"{c.weight_decay:7g}{decay:>16s}{c.drop_path:10g}{c.mixup:6g}{c.cutmix:7g}{c.label_smoothing:7g}"
          f"{c.ema_decay:8g}")

# %% [markdown]
# Pre-training ConvNeXt V2-Atto for 800 epochs on ImageNet-1K is a multi-GPU-days job; the paper then fine-tunes it to
# 76.7% top-1 (Table 7 lists the whole family). The pipeline is the one you just ran at smoke scale.
