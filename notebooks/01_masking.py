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
# upsampled recursively up to the finest resolution*. We will see why that is the natural choice for a ConvNet with four
# stages.
#
# Settings: `CNX2LITE_SCALE` = `smoke` (seconds), `cpu` (default) or `gpu`; photos come from `CNX2LITE_DATA_ROOT`.

# %%
# %matplotlib inline
import torch

from cnx2lite.masking import mask_grid, num_visible, random_mask, stage_masks, upsample_mask
from cnx2lite.models import VARIANTS, create_model
from cnx2lite.notebook.masking_figures import plot_masked_photo, plot_stage_masks
from cnx2lite.notebook.photos import photos
from cnx2lite.notebook.run_scale import scale
from cnx2lite.notebook.widgets import mask_explorer

IMG_SIZE = 224  # masking is cheap: the real size at every CNX2LITE_SCALE
print("scale:", scale(), "| image size:", IMG_SIZE)

# %% [markdown]
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
        print(f"stage {i + 1}: {tuple(x.shape[1:])}  -> one position covers {224 // x.shape[-1]}x{224 // x.shape[-1]} px")

# %% [markdown]
# A position of the last stage covers a 32x32 block of input pixels, and those blocks tile the image without overlap
# (strides 4·2·2·2 = 32). So if we mask whole 32x32 patches, every position of the last stage is either entirely
# visible or entirely masked. That is the mask grid: one boolean cell per 32x32 patch, 7x7 = 49 cells for 224 px.

# %% tags=["nbval-check-output"]
h, w = mask_grid(224)
print(f"mask grid {h}x{w} = {h * w} cells; at ratio 0.6, {num_visible(h * w, 0.6)} cells stay visible")

# %% [markdown]
# ## A 60% mask on a real photo
#
# `random_mask` ranks random noise per image and keeps the `int(49 * 0.4) = 19` cells with the lowest noise, so every
# image in a batch has exactly the same number of visible cells (handy for batching sparse tensors). True means masked.

# %% tags=["nbval-check-output"]
gen = torch.Generator().manual_seed(0)
mask = random_mask(1, IMG_SIZE, ratio=0.6, generator=gen)[0]
print(mask.shape, mask.dtype, "| masked:", int(mask.sum()), "| visible:", int((~mask).sum()))
print(mask.int())

# %%
photo = photos(1, IMG_SIZE)[0]
plot_masked_photo(photo, mask)

# %% [markdown]
# ## The same mask at every stage
#
# Upsampling a mask is plain repetition: each cell becomes an `s x s` block at a stage whose positions cover
# `32 / s` pixels each. Finest first, `stage_masks` gives the masks for the four stages (`s` = 8, 4, 2, 1).

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
# ## Explore
#
# Move the sliders: the mask ratio (the paper picks 0.6 after sweeping it), the seed, the image size (a multiple of 32:
# the grid grows with the image, the cell size does not) and the stage to look at. The readout counts visible cells;
# at stage *i* each cell is `s x s` positions of the feature map.

# %%
mask_explorer(ratio=0.6, img_size=IMG_SIZE, stage=1, dims=VARIANTS["convnextv2_atto"][1])

# %% [markdown]
# ## Takeaways
#
# - One mask cell per 32x32 patch = one position of the last stage; upsampled by 2, 4, 8 it stays aligned with every
#   downsampling layer, so each stage's map splits cleanly into visible and masked positions.
# - Every image keeps exactly `int(L * (1 - ratio))` cells (19 of 49 at 224 px and ratio 0.6).
# - Next, [02_sparse_convolution](02_sparse_convolution.ipynb): how the encoder computes on the visible positions
#   only, and why a plain dense ConvNet cannot.
