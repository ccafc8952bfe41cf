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
# # 4. Feature collapse: ConvNeXt V1 vs V2 after FCMAE pre-training
#
# Notebook 3 took GRN apart. Here we look at *why* the paper added it. Woo et al. (2023, in the GRN section) pre-train a
# ConvNeXt V1 with FCMAE and visualize the MLP of its blocks: many of the expanded channels (the `4C` features after
# the GELU) are dead or saturated, and the rest repeat each other. They call this **feature collapse** (Fig. 3) and
# measure it (Fig. 4) with the mean pairwise cosine distance between channels, layer by layer: ConvNeXt V1 pre-trained
# with FCMAE has low distances (redundant channels), ConvNeXt V2 with GRN keeps them high.
#
# We run the same measurement on two encoders that we pre-train with the training API, identical except for the block
# style: `block="v1"` (no GRN, LayerScale) and `block="v2"` (GRN).
#
# **What the run scale means here.** Collapse is something pre-training *produces*; the paper's figure comes from
# 800-epoch ImageNet-1K runs. `CNX2LITE_SCALE=smoke` trains each model for two optimizer steps on 16 images (seconds):
# the models are barely changed from their initialization, and nothing below should be read as showing or refuting
# collapse at that scale. `cpu` uses the `cpu` preset (20 epochs on 3,000 Imagenette images at 96 px, about 20
# minutes per model on a 2-core CPU), `gpu` the `imagenette-gpu` preset (400 epochs at 224 px); only the longer runs
# can show the effect, and even they are far shorter than the paper's.
#
# Settings: `CNX2LITE_SCALE` = `smoke`, `cpu` (default) or `gpu`; Imagenette and photos from `CNX2LITE_DATA_ROOT`.
# The outputs stored in this notebook come from a `cpu` run.

# %%
# %matplotlib inline
import tempfile
from pathlib import Path

import torch

from cnx2lite import analysis
from cnx2lite.checkpoints import load_pretrained
from cnx2lite.models import create_model
from cnx2lite.notebook.collapse_figures import plot_channel_maps, plot_distance_by_layer
from cnx2lite.notebook.photos import sample_images
from cnx2lite.notebook.run_scale import pick, scale
from cnx2lite.train import load_preset, pretrain

PRESET = pick(smoke="smoke", cpu="cpu", gpu="imagenette-gpu")
IMG_SIZE = pick(smoke=128, cpu=192, gpu=224)  # analysis resolution (the models are fully convolutional)
NUM_IMAGES = pick(smoke=8, cpu=20, gpu=20)  # photos of different classes for the distance
OUTPUT = Path(tempfile.mkdtemp(prefix="cnx2lite-04-")) if scale() == "smoke" else Path("runs")
print("scale:", scale(), "| preset:", PRESET, "| analysis image size:", IMG_SIZE, "| runs in:", OUTPUT)

# %% [markdown]
# ## Pre-train a V1-style and a V2 encoder
#
# Same preset, same seed, same images and masks; only the block differs (`block="v1"`: LayerScale, no GRN).
# `resume="auto"` makes a re-run continue (or reuse) the runs already in the output folder; it refuses a run there that
# was trained with other settings rather than mixing the two.

# %%
config = load_preset(PRESET, task="pretrain", output=str(OUTPUT))
print({k: getattr(config, k) for k in ("model", "img_size", "num_classes", "images_per_class", "epochs", "batch_size",
                                       "mask_ratio")})
runs = {block: pretrain(config, block=block, name=f"fcmae-{block}", resume="auto", progress=False)
        for block in ("v1", "v2")}
for block, run in runs.items():
    print(f"{block}: final train loss {run.metric('train_loss')[-1]:.4f}, val loss {run.metric('val_loss')[-1]:.4f}")

# %% [markdown]
# The pre-training checkpoints hold the whole FCMAE (encoder + decoder); `load_pretrained` takes the encoder's weights
# into a plain classifier-less model of the same block style.

# %%
encoders = {}
for block, run in runs.items():
    encoder = create_model(config.model, num_classes=0, block=block).eval()
    result = load_pretrained(encoder, str(run.checkpoint), strict=False)
    assert not [k for k in result.missing_keys if k.startswith("stages.")], result.missing_keys
    encoders[f"{'V1 (no GRN)' if block == 'v1' else 'V2 (GRN)'}, FCMAE"] = encoder
images = sample_images(NUM_IMAGES, IMG_SIZE)
print("analysis images:", tuple(images.shape))

# %% [markdown]
# ## Where we measure: the MLP's expanded activations
#
# `analysis.mlp_activations` hooks the GELU of every block (the input of GRN in a V2 block) and returns each as
# `(N, 4C, H, W)`. It finds the blocks by structure, so it works the same on timm's `convnext_*` and `convnextv2_*`
# models. ConvNeXt-Atto has 2 + 2 + 6 + 2 = 12 blocks:

# %% tags=["nbval-check-output"]
some_encoder = next(iter(encoders.values()))
feats = analysis.mlp_activations(some_encoder, images[:1])
for name, f in feats.items():  # channels and resolution do not depend on the run scale; the map size does
    print(f"{name:16s} {f.shape[1]:5d} channels at 1/{IMG_SIZE // f.shape[-1]} of the input size")

# %% [markdown]
# ## Activation maps, channel by channel
#
# The first 64 of the 320 expanded channels of the last block of stage 2, for one photo, each map scaled to its own
# min-max range (so a weak but structured channel stays visible; a constant map is drawn black and counted in the
# title). Collapse would look like many black (dead) or featureless (saturated) maps, and many maps that repeat each
# other. Compare the two grids: do the V1 maps look more alike than the V2 maps?

# %%
LAYER = "stages.1.1.act"
photo = images[0]
fig = plot_channel_maps({label: analysis.channel_maps(m, photo, LAYER, k=64) for label, m in encoders.items()},
                        title=f"{LAYER}: first 64 channels, one photo ({scale()} scale, preset {PRESET})")
fig

# %% [markdown]
# ## Feature cosine distance, layer by layer
#
# For one image and one layer, with `X_i` channel *i*'s flattened map:
#
# `distance = 1/C^2 * sum_i sum_j (1 - cos(X_i, X_j)) / 2`
#
# 0 means every channel is the same map up to scale (complete collapse). Independent zero-mean channels would give
# about 0.5 (the dashed line); GELU outputs are mostly non-negative, which pushes cosines above 0 and the distance
# below 0.5. We average over the photos (of different classes), as the paper does on ImageNet validation images.
#
# A third line is the model before any training, to see how far pre-training moved each layer. One is enough: at
# initialization GRN is the identity and V1's LayerScale only shrinks the residual branches, so the two styles start at
# nearly the same distances.

# %%
torch.manual_seed(0)
models = {**encoders, "random init": create_model(config.model, num_classes=0).eval()}
distances = {label: analysis.cosine_distance_by_layer(m, images) for label, m in models.items()}
print(f"{'block':16s}" + "".join(f"{label:>22s}" for label in distances))
for i, name in enumerate(dict(distances[next(iter(distances))])):
    print(f"{name:16s}" + "".join(f"{values[i][1]:22.4f}" for values in distances.values()))
print(f"{'mean':16s}" + "".join(f"{sum(v for _, v in values) / len(values):22.4f}" for values in distances.values()))

# %%
plot_distance_by_layer(distances, title=f"Feature cosine distance ({scale()} scale, preset {PRESET}, "
                                        f"{NUM_IMAGES} photos)")

# %% [markdown]
# **Reading the numbers.** In the paper (Fig. 4), the FCMAE-pre-trained V1 model's distance drops in many layers
# while the V2 model with GRN stays high, close to or above the supervised baseline. What to look for in your run: is
# the V2 line consistently above the V1 line, and by how much, especially in the deeper blocks?
#
# What the stored `cpu` run shows (20 epochs on 3,000 images at 96 px, a tiny fraction of the paper's 800 ImageNet
# epochs): both models start near 0.49 and pre-training lowers the distance in most layers, but neither collapses, and
# the gap between them goes both ways. V1 is lower in the first blocks and V2 in stage 3; their means over the 12
# blocks are about equal (0.458 and 0.453). The channel maps above look different from the numbers: many V1 channels
# repeat the same coarse, photo-shaped pattern while V2's look more varied, yet at that very layer (`stages.1.1`) V1's
# distance is the higher one (0.468 against 0.445). The maps are min-max scaled one by one and show shape only; the
# cosine also weighs each map's offset and contrast, over 20 photos rather than one. Neither is evidence of collapse
# at this budget; the paper's gap needs far longer pre-training: try the `gpu` scale, or measure the official
# checkpoints (below).
#
# At `smoke` scale (two optimizer steps), the three lines stay close to the random initialization: nothing at that
# scale is evidence either way.
#
# The analysis takes any model: e.g. `analysis.cosine_distance_by_layer(timm.create_model("convnextv2_atto.fcmae",
# pretrained=True), images)` measures the official FCMAE checkpoint when timm can download it.
