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
# # 1. Masking for a hierarchical ConvNet
#
# FCMAE, the pre-training method of ConvNeXt V2 (Woo et al., CVPR 2023, [arXiv 2301.00808](https://arxiv.org/abs/2301.00808),
# Fig. 2), hides most of an image and trains the network to paint the hidden part back. This notebook is about the first
# step only: **which pixels to hide**. The paper's answer (section *Fully Convolutional Masked Autoencoder*,
# "Masking") is short: remove 60% of the 32x32 patches at random, with the mask *generated at the last stage and
# upsampled recursively up to the finest resolution*, and use minimal data augmentation. We will see why that is the
# natural choice for a ConvNet with four stages, and what "60%" really means.
#
# In every figure a masked cell is **opaque grey**: the encoder sees nothing of it, so neither do you. The key under
# each figure says which is which.
#
# Settings: `CNX2LITE_SCALE` = `smoke` (seconds), `cpu` (default) or `gpu`; photos come from `CNX2LITE_DATA_ROOT`.

# %%
# %matplotlib inline
import torch
import torchvision

from cnx2lite.bootstrap import RESAMPLES
from cnx2lite.masking import effective_mask_ratio, mask_grid, num_visible, random_mask, stage_masks, upsample_mask
from cnx2lite.models import VARIANTS, create_model
from cnx2lite.notebook.evidence import measured, report_figure, report_run_config
from cnx2lite.notebook.masking_figures import (
    plot_effective_ratio,
    plot_masked_photos,
    plot_pretrain_views,
    plot_reconstruction_excerpt,
    plot_stage_masks,
    pretrain_views,
)
from cnx2lite.notebook.photos import photos
from cnx2lite.notebook.plotting import as_jpeg, to_pil
from cnx2lite.notebook.run_scale import scale
from cnx2lite.notebook.source import show_source
from cnx2lite.notebook.widgets import mask_explorer
from cnx2lite.transforms import pretrain_transform

IMG_SIZE = 224  # masking is cheap: the real size at every CNX2LITE_SCALE
print("scale:", scale(), "| image size:", IMG_SIZE)

# %% [markdown]
# ## What the masks are for
#
# First the why. The committed report of `cnx2lite reproduce --scale cpu` (`reports/cpu/`) pretrained ConvNeXt
# V2-Atto with FCMAE on Imagenette, on 2 CPU cores, twice with different seeds. Its first pretraining run is called
# `pretrain-v2-p0`; here are its settings, from the record the report keeps of it.

# %%
config = report_run_config("pretrain-v2-p0")
run_size, run_ratio = config["img_size"], config["mask_ratio"]
print(f"{config['name']}: {config['model']}, {run_size} px, mask ratio {run_ratio}, "
      f"{config['epochs']} epochs on {config['train_images']} unlabeled images")

# %% [markdown]
# Below are the first two rows of the report's reconstruction figure, from the end of that pretraining: the photo,
# the masked input, the decoder's prediction, and the prediction pasted into the hidden cells. (This figure is drawn
# by the training code, which paints a masked cell as the value the encoder receives, 0 after normalization: the
# ImageNet mean colour.) Two things to see. The loss is computed on masked cells only (paper, Fig. 2), so the
# predictions at *visible* cells are unconstrained and look like noise. And after 8 short epochs the hidden cells are
# blurry guesses of colour and shading from their context, nothing like sharp detail. Count the visible cells of each
# masked input: 3 of 9, not the 3.6 a 60% ratio suggests. Why is below.

# %%
as_jpeg(plot_reconstruction_excerpt(report_figure("reconstruction"), rows=2))

# %% [markdown]
# Did those blurry guesses train a useful encoder? The report fine-tuned both pretraining runs, and randomly
# initialized encoders, on 50 labeled images per class, each with several fine-tuning seeds (top-1 on 1966 val
# images, 95% bootstrap intervals; then how many single runs each number averages, and their range):

# %%
for row in ("K=50 FCMAE", "K=50 scratch", "K=50 FCMAE - scratch"):
    m = measured(1, row)
    print(f"{row:22s} {m}   {len(m.runs)} runs, {min(m.runs):.1f}..{max(m.runs):.1f}")
print("the claim:", measured(1, "K=50 FCMAE - scratch").verdict("FCMAE init beats scratch"))
print("paper, all of ImageNet-1K:", measured(1, "K=all FCMAE - scratch").paper)
print(f"intervals: 2.5th and 97.5th percentiles of {RESAMPLES:,} bootstrap resamples")

# %% [markdown]
# **What the brackets are.** `cnx2lite.bootstrap` computes them (`hierarchical_accuracy`, and for the difference
# `hierarchical_paired_difference`). For one method, $c_{psn} \in \{0, 1\}$ says whether fine-tuning seed $s$ from
# pretraining run $p$ classifies val image $n$ correctly ($P$ runs, $S$ seeds per run, $N$ images). The number before
# the brackets is the mean of all the $c_{psn}$, in percent. A bootstrap resample $b$ draws, each with replacement,
# $P$ runs $p^*_1, \dots, p^*_P$, then $S$ seeds $s^*_{i1}, \dots, s^*_{iS}$ within each drawn run $i$, then $N$
# images $n^*_1, \dots, n^*_N$, and takes the same mean over what it drew:
#
# $$\hat\theta^{*b} = \frac{100}{N} \sum_{j=1}^{N} \frac{1}{PS} \sum_{i=1}^{P} \sum_{k=1}^{S}
#   c_{p^*_i \, s^*_{ik} \, n^*_j}$$
#
# The 95% interval is the percentile interval $\left[\hat\theta^{*}_{(2.5\%)},\ \hat\theta^{*}_{(97.5\%)}\right]$
# of the $B$ resampled means, $B$ as printed. For the difference FCMAE $-$ scratch, each resample draws each
# method's runs and seeds on its own but the *same* images for both, and the interval is that of
# $\hat\theta^{*b}_{\text{FCMAE}} - \hat\theta^{*b}_{\text{scratch}}$: an image that is hard for both cancels out.
# With a single run and seed ($P = S = 1$) only the images are resampled, and the interval says how much the number
# would move on other val images, not how much it would move if the runs were trained again. The report has
# $P \cdot S$ single runs per FCMAE number (printed above: its pretraining runs times their fine-tuning seeds), so
# its intervals also say how much a rerun would move it.
#
# The claim's verdict reads the interval of FCMAE $-$ scratch: "reproduces" when it lies entirely above 0,
# "contradicted" when it lies entirely below, "not shown" when it contains 0, which shows nothing either way. The
# paper's own gain is for V2-Base with all of ImageNet's labels, after 800 epochs of pretraining (as printed), a
# different regime from 50 labels per class after 8 epochs at 96 px. Notebook 5 looks at these numbers in detail, at
# every label budget. Now, how the masks are made.
#
# ## Four stages, four resolutions
#
# A ConvNeXt turns a 224x224 image into feature maps at four resolutions: a 4x4 stride-4 *stem* gives 56x56, and each
# of the three downsampling layers (2x2 stride-2 convs) halves it: 28x28, 14x14, 7x7. Here is the smallest model of the
# family, ConvNeXt V2-Atto, with random weights (only shapes matter here).

# %% tags=["nbval-check-output"]
model = create_model("convnextv2_atto", num_classes=0).eval()
x = torch.zeros(1, 3, 224, 224)
with torch.no_grad():
    for i, (down, stage) in enumerate(zip(model.downsample_layers, model.stages)):
        x = stage(down(x))
        print(f"stage {i + 1}: {tuple(x.shape[1:])}  -> one position covers "
              f"{224 // x.shape[-1]}x{224 // x.shape[-1]} px")

# %% [markdown]
# A position of the last stage covers a 32x32 block of input pixels, and those blocks tile the image without overlap
# (strides 4·2·2·2 = 32). So if we mask whole 32x32 patches, every position of the last stage is either entirely
# visible or entirely masked. That is the mask grid: one boolean cell per 32x32 patch, 7x7 = 49 cells for 224 px.

# %% tags=["nbval-check-output"]
h, w = mask_grid(224)
print(f"mask grid {h}x{w} = {h * w} cells; at ratio 0.6, {num_visible(h * w, 0.6)} cells stay visible")

# %% [markdown]
# ## The effective ratio is not exactly 60%
#
# Write $r$ for the mask ratio, the share of cells to hide, and $L = \frac{H}{32} \cdot \frac{W}{32}$ for the number
# of cells of an $H \times W$ image. Every image in a batch keeps the same number of visible cells (handy for
# batching the sparse tensors of notebook 2), so that number must be whole. The package rounds it as the paper's code
# does; look for the `int()`:

# %% tags=["nbval-check-output"]
show_source(num_visible)

# %% [markdown]
# `int()` of a positive number rounds down. So the visible count $V$, and the share of cells really masked, which
# `effective_mask_ratio` computes from it, are
#
# $$V = \left\lfloor L\,(1 - r) \right\rfloor, \qquad
#   r_{\text{eff}} = 1 - \frac{V}{L} = 1 - \frac{\left\lfloor L\,(1 - r) \right\rfloor}{L}.$$
#
# Rounding down can only hide more. With $\{x\} = x - \lfloor x \rfloor$, the part of a cell that rounding drops,
#
# $$r_{\text{eff}} - r = \frac{\{L\,(1 - r)\}}{L}, \qquad 0 \le r_{\text{eff}} - r < \frac{1}{L}:$$
#
# the excess is less than one cell's share of the image, and on a small grid a cell is a large share. At the paper's
# 224 px and at the 96 px of our CPU run:

# %% tags=["nbval-check-output"]
ratio = 0.6
for size in (224, 96):
    h, w = mask_grid(size)
    kept, masked = num_visible(h * w, ratio), effective_mask_ratio(size, ratio)
    print(f"{size:3d} px: L = {h}x{w} = {h * w:2d}; L(1 - r) = {h * w * (1 - ratio):5.2f} -> V = {kept:2d} visible, "
          f"{h * w - kept:2d} masked: r_eff = {masked:.3f}, {100 * (masked - ratio):.1f} points above r")

# %% [markdown]
# At 96 px the grid is $3 \times 3$: $L = 9$, $V = \lfloor 9 \times 0.4 \rfloor = \lfloor 3.6 \rfloor = 3$ and
# $r_{\text{eff}} = 6/9$. Rounding drops $\{3.6\} = 0.6$ of a cell at both sizes, but 0.6 of 49 cells is 1.2 points
# and 0.6 of 9 cells is 6.7 points. So our CPU run masks two thirds of each image, not 60%. Over all sizes:

# %%
plot_effective_ratio(0.6, marked=(96, 224))

# %% [markdown]
# ## A 60% mask on a real photo
#
# Which cells stay visible is drawn by `random_mask`. Look for the line that turns random noise into a mask: after
# checking its arguments, it is four lines.

# %% tags=["nbval-check-output"]
show_source(random_mask, start="h, w = mask_grid")

# %% [markdown]
# Line by line: the grid is $h \times w$ cells and `keep` is $V$; each cell $\ell$ of each image gets a noise value
# $u_\ell \sim \mathcal{U}(0, 1)$; `argsort` twice gives each cell the rank of its noise within its image
# ($0, \dots, L - 1$); and a cell is masked when its rank is $V$ or more,
#
# $$M_\ell = \mathbb{1}\left[\operatorname{rank}(u_\ell) \ge V\right],$$
#
# so the $V$ cells with the lowest noise stay visible, and every set of $V$ cells is equally likely. The noise is drawn
# on the CPU from `generator` and only the mask moves to `device`, so a seed gives the same masks on every device.
# With $L = 49$, $V = 19$ at 224 px (True means masked):

# %% tags=["nbval-check-output"]
gen = torch.Generator().manual_seed(0)
mask = random_mask(1, IMG_SIZE, ratio=0.6, generator=gen)[0]
print(mask.shape, mask.dtype, "| masked:", int(mask.sum()), "| visible:", int((~mask).sum()))
print(mask.int())

# %% [markdown]
# Here it is on a photo, next to the same photo at 96 px with a 3x3 mask, which is what the CPU run's encoder saw.

# %%
photo = photos(1, IMG_SIZE)[0]
small_photo = photos(1, run_size)[0]
small_mask = random_mask(1, run_size, ratio=run_ratio, generator=torch.Generator().manual_seed(0))[0]
as_jpeg(plot_masked_photos([photo, photo, small_photo], [None, mask, small_mask],
                           [f"photo, {IMG_SIZE} px", f"{IMG_SIZE} px: {int(mask.sum())} of {mask.numel()} cells masked",
                            f"{run_size} px: {int(small_mask.sum())} of {small_mask.numel()} cells masked"]))

# %% [markdown]
# ## The same mask at every stage
#
# Upsampling a mask is plain repetition: each cell becomes an $s \times s$ block at a stage whose positions cover
# $32 / s$ pixels each.

# %% tags=["nbval-check-output"]
show_source(upsample_mask)

# %% [markdown]
# `repeat_interleave` repeats every row $s$ times, then every column: position $(i, j)$ of the upsampled mask is cell
# $(\lfloor i / s \rfloor, \lfloor j / s \rfloor)$ of the grid, $M^{(s)}_{ij} = M_{\lfloor i/s \rfloor, \lfloor j/s
# \rfloor}$. Each cell becomes $s^2$ positions, visible or masked alike, so the visible share stays $V / L$ at every
# stage. `stage_masks` applies it with $s = 2^{3 - i}$ for stage $i + 1$ ($i = 0, \dots, 3$), finest first:

# %% tags=["nbval-check-output"]
show_source(stage_masks)

# %% [markdown]
# The four masks of the photo's mask, with the visible share of each ($19/49 = 0.388$ at every stage):

# %% tags=["nbval-check-output"]
masks = stage_masks(mask[None])
for i, m in enumerate(masks):
    print(f"stage {i + 1}: mask {tuple(m.shape[1:])}, visible fraction {(~m).float().mean():.3f}")

# %% [markdown]
# Below, the red square is one mask cell. It is one position at stage 4, a 2x2 block at stage 3, 4x4 at stage 2 and 8x8
# at stage 1: the dark lines (cell borders) are where every downsampling layer's 2x2 windows line up, so **no
# downsampling window ever mixes a visible and a masked cell**. The visible fraction is the same at every stage.

# %%
plot_stage_masks(mask, photo, dims=VARIANTS["convnextv2_atto"][1])

# %% [markdown]
# That alignment is exactly what a smaller mask patch would break. With 16x16 cells, one last-stage position would
# cover 2x2 cells, some visible and some masked: the final features could not be "visible or not", and the 2x2
# downsampling convs would mix hidden and visible content. We check it directly: a 2x2 max-pool (the footprint of a
# downsampling conv) must see either only masked or only visible positions, at the inputs of all three downsampling
# layers. With 32x32 cells it does; with 16x16 cells (a 14x14 grid at 224 px) the last downsampling layer mixes them.

# %% tags=["nbval-check-output"]
def windows_uniform(m: torch.Tensor) -> bool:
    """Is every 2x2 window of a (N, h, w) mask all-masked or all-visible? (max-pool == min-pool)"""
    f = m[:, None].float()
    return torch.equal(torch.nn.functional.max_pool2d(f, 2), -torch.nn.functional.max_pool2d(-f, 2))


print("32x32 cells:", [windows_uniform(m) for m in masks[:-1]])
small = random_mask(1, IMG_SIZE, ratio=0.6, patch_size=16, generator=torch.Generator().manual_seed(0))
print("16x16 cells:", [windows_uniform(upsample_mask(small, 2 ** k)) for k in (2, 1, 0)])

# %% [markdown]
# ## Minimal augmentation for pretraining
#
# The paper uses "minimal data augmentation, only including random resized cropping" for FCMAE pretraining; the
# official code adds a horizontal flip, and so does `cnx2lite.transforms.pretrain_transform`. Compare fine-tuning, which
# adds RandAugment, random erasing, mixup and cutmix. MAE (He et al., CVPR 2022) found the same for ViTs: masking is
# already a strong corruption, so cropping alone works well and color jitter hurts. The crop keeps 20% to 100% of
# the photo's area (the supervised default goes down to 8%), at an aspect ratio from 3:4 to 4:3:

# %% tags=["nbval-check-output"]
augment = pretrain_transform(IMG_SIZE)
crop, flip = augment.transforms[:2]
print(f"{type(crop).__name__}: output {crop.size}, area scale {crop.scale}, aspect ratio "
      f"({crop.ratio[0]:.2f}, {crop.ratio[1]:.2f}), {crop.interpolation.value}")
print(f"{type(flip).__name__}: p = {flip.p}")
print("then:", [type(t).__name__ for t in augment.transforms[2:]])

# %% [markdown]
# Four draws on the photo (a 384 px square crop of it here; the data loader crops the full photo the same way), each
# then masked at 60%: this is all the variety the encoder gets in a pretraining step. The boxes on the left show which
# part of the photo each view came from.

# %%
source = to_pil(photos(1, 384)[0])
views = pretrain_views(source, augment, n=4, seed=0)
view_masks = random_mask(len(views), IMG_SIZE, ratio=0.6, generator=torch.Generator().manual_seed(1))
title = "FCMAE pretraining input: random resized crop (20-100% of the area) + flip, then a 60% mask"
as_jpeg(plot_pretrain_views(source, views, view_masks, title))

# %% [markdown]
# ## Explore
#
# Move the sliders: the mask ratio (the paper picks 0.6 after sweeping it), the seed, the image size (a multiple of 32:
# the grid grows with the image, the cell size does not) and the stage to look at. The readout counts visible cells;
# at stage *i* each cell is `s x s` positions of the feature map. On GitHub you see one static frame.

# %%
mask_explorer(ratio=0.6, img_size=IMG_SIZE, stage=1, dims=VARIANTS["convnextv2_atto"][1])

# %% [markdown]
# ## Takeaways
#
# - One mask cell per 32x32 patch = one position of the last stage; upsampled by 2, 4, 8 it stays aligned with every
#   downsampling layer, so each stage's map splits cleanly into visible and masked positions.
# - Every image keeps exactly $V = \lfloor L\,(1 - r) \rfloor$ visible cells, so it masks
#   $r_{\text{eff}} = 1 - V / L$, up to one cell's share more than $r$: 19 of 49 visible at 224 px (61% masked), 3 of
#   9 at 96 px (67% masked), as printed above.
# - Pretraining needs no strong augmentation: a random resized crop and a flip, then the mask.
# - The loss looks only at the masked cells; the report's reconstructions show what 8 CPU epochs of it learn.
# - Next, [02_sparse_convolution](02_sparse_convolution.ipynb): how the encoder computes on the visible positions
#   only, and why a plain dense ConvNet cannot.
#
# ## Exercises
#
# 1. **Predict, then run.** MAE masks 75% of a ViT's patches. Before running anything, predict how many cells stay
#    visible and what share is really masked with $r = 0.75$, at 224 px and at 96 px. Then set `ratio = 0.75` in
#    the effective-ratio cell and check. *Hint:* $49 \times 0.25 = 12.25$ and $9 \times 0.25 = 2.25$; `int()` rounds
#    down.
# 2. Which square image sizes up to 384 px give exactly 60%, and what does a 32 px image give? Read it off the
#    effective-ratio figure, then explain it. *Hint:* $r_{\text{eff}} = r$ exactly when $L\,(1 - r) = 2L / 5$ is a
#    whole number, that is when 5 divides $L = (S / 32)^2$, that is when 5 divides $S / 32$.
# 3. **Predict, then run.** Masking 64x64 patches: with `random_mask(1, 256, ratio=0.6, patch_size=64, ...)`, the
#    inputs of the three downsampling layers see the mask upsampled by 16, 8 and 4. Will `windows_uniform` be True for
#    all three? Check with `upsample_mask`, then try the same at 224 px. *Hint:* a 64x64 cell is a 2x2 block of
#    last-stage positions, so alignment survives; but 224 is not a multiple of 64, and larger cells mean fewer, larger
#    holes for the decoder to fill.
# 4. **Predict, then run.** Give the crop the supervised default scale: `augment8 = torchvision.transforms.Compose(
#    [torchvision.transforms.RandomResizedCrop(IMG_SIZE, scale=(0.08, 1.0)), *augment.transforms[1:]])`, and draw
#    200 views with `pretrain_views(source, augment8, n=200)`. About what share of views now keeps less than a
#    quarter of the photo, against the pretraining crop? Count both. *Hint:* the area fraction is drawn uniformly from
#    the scale range (boxes that do not fit are redrawn), so roughly $(0.25 - 0.08) / 0.92$ against
#    $(0.25 - 0.2) / 0.8$.

# %% [markdown]
# **Solution 1.**

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
for size in (224, 96):
    h, w = mask_grid(size)
    print(f"{size} px, r = 0.75: V = int({h * w} x 0.25) = {num_visible(h * w, 0.75)} visible, "
          f"r_eff = {effective_mask_ratio(size, 0.75):.3f}")
# 12.25 -> 12 and 2.25 -> 2: a quarter of a cell is dropped at both sizes, 0.25/49 = 0.5 points at 224 px but
# 0.25/9 = 2.8 points at 96 px. At 96 px, MAE's 75% would really mask 7 of 9 cells.

# %% [markdown]
# **Solution 2.**

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
exact = [size for size in range(32, 385, 32) if abs(effective_mask_ratio(size, 0.6) - 0.6) < 1e-9]
print("exactly 60% at", exact, "px; 32 px:", f"r_eff = {effective_mask_ratio(32, 0.6):.0%}")
# 160 px (5x5 = 25 cells, 10 visible) and 320 px (10x10 = 100 cells, 40 visible): S / 32 is a multiple of 5, so
# L * 0.4 is whole and nothing is rounded. At 32 px one cell: int(0.4) = 0 visible, everything masked, and
# training refuses it (cnx2lite.masking.check_mask_ratio) since the encoder would see nothing.

# %% [markdown]
# **Solution 3.**

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
big = random_mask(1, 256, ratio=0.6, patch_size=64, generator=torch.Generator().manual_seed(0))
print(f"64x64 cells at 256 px: grid {tuple(big.shape[1:])}, uniform 2x2 windows at the three downsampling inputs:",
      [windows_uniform(upsample_mask(big, scale)) for scale in (16, 8, 4)])
try:
    random_mask(1, 224, ratio=0.6, patch_size=64)
except ValueError as error:
    print("224 px:", error)
# True for all three: every 2x2 window of a downsampling layer lies inside one 64x64 cell. But the grid has 16 cells
# (6 visible), not 64: fewer, larger holes, and only sizes that are multiples of 64 work.

# %% [markdown]
# **Solution 4.**

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
augment8 = torchvision.transforms.Compose(
    [torchvision.transforms.RandomResizedCrop(IMG_SIZE, scale=(0.08, 1.0)), *augment.transforms[1:]])
for name, transform in (("pretraining crop, scale (0.2, 1)", augment), ("supervised crop, scale (0.08, 1)", augment8)):
    drawn = pretrain_views(source, transform, n=200, seed=0)
    small_share = sum(v.box[2] * v.box[3] < 0.25 * source.width * source.height for v in drawn) / len(drawn)
    print(f"{name}: {small_share:.0%} of 200 views keep less than a quarter of the photo")
# The supervised crop gives over twice as many views that show less than a quarter of the photo (the hint's
# estimates are 18% and 6%; 200 draws are a noisy count). Mask 60% of such a view and little of it is left to see.
