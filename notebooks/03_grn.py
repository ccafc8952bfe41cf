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
# # 3. Global Response Normalization (GRN)
#
# Pre-training ConvNeXt V1 with FCMAE works poorly: the paper (Woo et al., 2023, section *Global Response
# Normalization*, Fig. 3 and 4) finds **feature collapse** in the MLP of the blocks: many channels dead or saturated,
# and the remaining ones redundant. The fix is a small layer placed after the GELU of every block's MLP (the V2 block of
# Fig. 5, which also drops V1's LayerScale). GRN measures how strongly each channel responds over the whole image,
# compares that with the other channels, and rescales each channel by a learned function of the comparison.
#
# This notebook takes GRN apart step by step on real feature maps, then asks what the GRNs of an encoder that was
# actually pre-trained with FCMAE learned to do, and whether they make its channels less redundant. It ends with a
# pitfall of the sparse (pre-training) version.
#
# Settings: photos from `CNX2LITE_DATA_ROOT`; everything runs in seconds at any `CNX2LITE_SCALE`. The trained
# encoder is the notebooks' shared FCMAE run (`make notebooks` trains it; the stored outputs come from it);
# `CNX2LITE_WEIGHTS=path/to/convnextv2_atto checkpoint` uses an official checkpoint instead.

# %%
# %matplotlib inline
import math
import os

import torch

from cnx2lite.collapse import feature_cosine_distance, mlp_activations
from cnx2lite.factory import load_model
from cnx2lite.layers.grn import GRN, global_response_norm, grn_aggregate, grn_calibrate, grn_normalize
from cnx2lite.notebook import shared_runs
from cnx2lite.notebook.evidence import measured, measured_rows, report_figure
from cnx2lite.notebook.grn_figures import (
    block_label,
    capture_grn,
    channel_norms,
    grn_redundancy,
    mean_abs_correlation,
    plot_batch_dependence,
    plot_channel_norms,
    plot_gain_vs_response,
    plot_grn_steps,
    plot_learned_grn,
    plot_redundancy,
    stage_gains,
)
from cnx2lite.notebook.photos import photos
from cnx2lite.notebook.plotting import as_jpeg, jpeg_file
from cnx2lite.notebook.run_scale import scale
from cnx2lite.notebook.source import show_source
from cnx2lite.notebook.widgets import grn_explorer

torch.manual_seed(0)
IMG_SIZE = 96  # the resolution the cpu run pre-trained at; a few forward passes, the same at every scale
NUM_PHOTOS = 16
print("scale:", scale(), "| image size:", IMG_SIZE, "| photos:", NUM_PHOTOS)

# %% [markdown]
# ## Two encoders: FCMAE-trained and random
#
# We compare two ConvNeXt V2-Atto encoders: the FCMAE encoder the notebooks share (`cnx2lite.notebook.shared_runs`:
# 4 epochs on Imagenette at 96 px at the `cpu` scale, trained once by `make notebooks` or on first use), and the same
# architecture at its random initialization.

# %%
random_model, _ = load_model("random")
if os.environ.get("CNX2LITE_WEIGHTS"):
    trained_model, _ = load_model(os.environ["CNX2LITE_WEIGHTS"], model="convnextv2_atto")
    TRAINED = "official checkpoint"
    print("trained encoder:", os.environ["CNX2LITE_WEIGHTS"])
else:
    trained_model, config = load_model(shared_runs.fcmae_encoder())
    TRAINED = "FCMAE-trained"
    print(f"trained encoder: {config['name']}, {config['model']}, {config['epochs']} epochs of FCMAE at "
          f"{config['img_size']} px on {config['dataset']}, mask ratio {config['mask_ratio']}")

# %% [markdown]
# We run 16 photos (of 16 different classes, from the data root's `samples/` folder) through both encoders and
# record, in every block, the MLP's hidden features after GELU, which is what enters the GRN (channels-last
# `(N, H, W, 4C)`), and what leaves it. Most figures zoom in on **stage 2, block 1** (`model.stages[1][0]`,
# 4 x 80 = 320 channels, a 12 x 12 map at 96 px) and on one image.

# %%
images = photos(NUM_PHOTOS, IMG_SIZE)
captures = {"random init": capture_grn(random_model, images), TRAINED: capture_grn(trained_model, images)}
BLOCK = "stages.1.0.act"
feats = captures[TRAINED].inputs[BLOCK]  # (16, 12, 12, 320)
x = feats[:1]  # image 1: (1, 12, 12, 320)

# %% tags=["nbval-check-output"]
print(f"GRN input of {block_label(BLOCK)} (N, H, W, C):", tuple(feats.shape))

# %% [markdown]
# ## Step 1, aggregate: one number per channel
#
# GRN first summarizes each channel $X_i$ (an $H \times W$ map) by its L2 norm over space,
#
# $$\mathcal{G}(X)_i = \lVert X_i \rVert_2 = \Big(\sum_{h=1}^{H} \sum_{w=1}^{W} X_{h,w,i}^2\Big)^{1/2},$$
#
# a global measure of how strongly channel $i$ responds to this image. The paper's ablation (Table 2, ConvNeXt V2-Base
# pre-trained with FCMAE, ImageNet-1K top-1 after fine-tuning) compares it with the L1 norm and global average pooling:
# **L2 84.6, L1 84.3, average 83.7**. Average pooling is not a magnitude: GELU outputs down to -0.17, so a channel's
# mean can be small or negative while the channel is very active, and positive and negative responses cancel.
# This is step 1 in `cnx2lite`; the three aggregations are its three branches:

# %% tags=["nbval-check-output"]
show_source(grn_aggregate)

# %% [markdown]
# `positions.sum` sums over the positions of each sample: all $H \times W$ of a dense map, keeping the shape
# `(N, 1, 1, C)`, or only the visible ones in the sparse encoder of notebook 2. The `"l2"` branch is
# $\mathcal{G}(X)_i$: square, sum, square root; `clamp_min(tiny)` gives a channel that is zero everywhere a zero
# gradient instead of the square root's infinite one at 0. The `promote_types` line takes the statistics in float32
# at least, because sums of thousands of squares lose too much in bfloat16. `"l1"` ($\sum_{h,w} |X_{h,w,i}|$) and
# `"mean"` are the ablation's alternatives.
#
# ## Step 2, normalize: compare channels with each other
#
# Then each channel's norm is divided by the mean norm over the $C$ channels:
#
# $$\mathcal{N}(\mathcal{G}(X))_i = \frac{\mathcal{G}(X)_i}{\frac{1}{C}\sum_{j=1}^{C} \mathcal{G}(X)_j}.$$
#
# (The paper's Eq. 2 divides by the sum over channels; its pseudo-code, the official code and ours use the mean, which
# only rescales $\gamma$ by $C$; asked upstream as facebookresearch/ConvNeXt-V2 #76.) We write $N_i$ for short:
# $N_i > 1$ means "stronger than the average channel". This divisive normalization is what creates competition: a
# channel can only be large relative to the others. The alternative in the normalization ablation, standardization
# $(\mathcal{G}_i - \mu_{\mathcal{G}}) / \sigma_{\mathcal{G}}$ (mean and standard deviation over channels), gives
# negative values that flip the sign of a channel's response in step 3.

# %% tags=["nbval-check-output"]
show_source(grn_normalize)

# %% [markdown]
# The `"divisive"` branch is the formula above with one addition: `eps` ($\epsilon = 10^{-6}$) in the denominator,
# $N_i = \mathcal{G}_i / (\frac{1}{C}\sum_j \mathcal{G}_j + \epsilon)$, so that a feature map that is zero everywhere
# gives $N = 0$ instead of a division by zero. `dim=-1` is the channel axis (channels-last); `keepdim=True` keeps the
# `(N, 1, 1, 1)` mean broadcastable against the `(N, 1, 1, C)` norms.
#
# The figure shows **all 320 channels** of stage 2, block 1 of the trained encoder, for image 1, sorted by their L2
# norm (left: the three aggregates, each divided by its mean over channels; right: the two normalizations).

# %%
plot_grn_steps(x, where=f"{TRAINED} encoder, {block_label(BLOCK)}, image 1")

# %% [markdown]
# L1 and L2 rank the channels almost alike; the average jumps around and goes negative for channels that are strongly
# active in some places and slightly negative (GELU's floor) in many others.
#
# ## Step 3, calibrate, with a residual
#
# The response $N_i$ scales its channel, with learned per-channel $\gamma_i$ and $\beta_i$ and a residual connection:
#
# $$X_i \leftarrow \gamma_i \, X_i \, N_i + \beta_i + X_i = (1 + \gamma_i N_i)\, X_i + \beta_i.$$
#
# So each channel is multiplied by a **gain** $1 + \gamma_i N_i$ that depends on how it compares with the other
# channels in this image, and shifted by $\beta_i$. The code computes the right-hand form:

# %% tags=["nbval-check-output"]
show_source(grn_calibrate)

# %% [markdown]
# `gain` is one number per sample and channel (`nx` has shape `(N, 1, 1, C)`), so `torch.addcmul(beta, x, gain)`,
# $\beta + X \cdot \text{gain}$, is the only pass over the full feature map. `residual=False` drops the $+X_i$ (a
# switch of the explorer below); `expand` is for the sparse encoder's token layout.
#
# The `GRN` layer holds $\gamma$ and $\beta$ and chains the three steps:

# %% tags=["nbval-check-output"]
show_source(GRN, start="def __init__", stop="def extra_repr")

# %% [markdown]
# `gamma` and `beta` are parameters of shape `(1, 1, 1, C)` (the layout of the official checkpoints), **initialized
# to zero**: the gain is 1 and the shift 0, so a fresh GRN is exactly the identity and training starts from a plain
# ConvNeXt block. `forward` flattens them to `(C,)` and calls `global_response_norm`, steps 1 to 3 with the paper's
# choices. In training with gradients on, it takes `FusedGRN` instead: the same values with a hand-written backward
# that reads the activations fewer times (the tests compare the two, values and gradients). A fresh `GRN` is in
# training mode, so the cell below runs `FusedGRN`: it checks the identity at initialization, then, with $\gamma = 1$
# and $\beta = 0.1$, the layer against the three steps written out by hand:

# %% tags=["nbval-check-output"]
grn = GRN(x.shape[-1])
print("zero-initialized GRN is the identity:", torch.equal(grn(x), x))
with torch.no_grad():
    grn.gamma.fill_(1.0)
    grn.beta.fill_(0.1)
aggregated = x.norm(dim=(1, 2), keepdim=True)                          # step 1: (N, 1, 1, C), L2 over H, W
normalized = aggregated / (aggregated.mean(dim=-1, keepdim=True) + 1e-6)  # step 2: relative to the mean channel
written_out = 1.0 * (x * normalized) + 0.1 + x                           # step 3: gamma, beta, residual
print("matches the three steps written out:", torch.allclose(grn(x), written_out, atol=1e-6))

# %% [markdown]
# What does a positive $\gamma$ do? With $\gamma_i = 1$ for every channel and $\beta_i = 0$, channel $i$ is multiplied
# by $1 + N_i$: channels above the average response get a larger factor than channels below it. The norms before and
# after (all 320 channels, sorted by strength) show the strong channels pulled further away from the weak ones.

# %%
plot_channel_norms(x, global_response_norm(x, gamma=1.0, beta=0.0),
                   title=f"gamma = 1, beta = 0 for every channel ({block_label(BLOCK)}, image 1)")

# %% tags=["nbval-check-output"]
before, after = channel_norms(x), channel_norms(global_response_norm(x, gamma=1.0, beta=0.0))
n = grn_normalize(grn_aggregate(x)).flatten()
print("after / before = 1 + gamma_i N_i for every channel:", torch.allclose(after / before, 1 + n, atol=1e-4))

# %% [markdown]
# ## Why GRN should reduce redundancy, and what the paper shows
#
# The intuition is **feature competition across channels**. A channel's gain depends on its share of the total
# response, so no channel can grow without lowering every other channel's `N`. This is divisive normalization in the
# spirit of lateral inhibition in neuroscience and of AlexNet's local response normalization, but taken over all
# channels and the whole image at once: $\partial N_i / \partial \mathcal{G}_j \le 0$ for every $j \ne i$.
# During training the gradient of every channel passes through that shared denominator, and the hope is that this
# pushes channels towards different, non-redundant features instead of collapsing onto a few.
#
# That is a motivation, not a proof: the paper's case is **empirical**. Fig. 4 measures the feature cosine distance of
# FCMAE-pre-trained V1 and V2 models (V2 keeps its channels more diverse), and Table 2 compares GRN with other
# layers at the same place, as reported in the paper's Table 2 (ConvNeXt V2-Base, FCMAE, fine-tuned top-1): local
# response normalization (LRN) 83.2, Batch Norm 80.5, Layer Norm 83.8, squeeze-and-excitation (SE) 84.4, CBAM 84.5,
# **GRN 84.6**. SE and CBAM reach almost the same accuracy but add parameters; GRN adds only $\gamma$ and $\beta$,
# $2C$ numbers per block.
#
# The rest of this notebook checks both halves on our small encoder: what did its GRNs learn, and are its channels
# less redundant after GRN than before?
#
# ## What the trained GRNs learned
#
# Every block's $\gamma$ and $\beta$ (one value per channel; all channels of all 12 blocks), after 4 epochs of FCMAE.
# The random encoder's are all exactly 0, so each of its GRNs is the identity (gain 1 for every channel).

# %%
plot_learned_grn(captures[TRAINED], title=f"learned GRN parameters of the {TRAINED} encoder")


# %%
def describe_stages(capture) -> None:
    """Per stage: the learned gammas, and the gains 1 + gamma_i N_i they give on the photos."""
    for stage, (response, gain) in enumerate(stage_gains(capture)):
        gamma = torch.cat([g for name, g in capture.gamma.items() if name.startswith(f"stages.{stage}.")])
        print(f"stage {stage + 1}: median gamma {gamma.median():+.3f}, {(gamma < 0).float().mean():4.0%} < 0; "
              f"gain over {len(images)} images {gain.min():.2f} to {gain.max():.2f}, median {gain.median():.2f}; "
              f"median gain {gain[response < 1].median():.2f} below the mean channel (N < 1), "
              f"{gain[response > 2].median():.2f} for strong channels (N > 2)")


describe_stages(captures[TRAINED])

# %% [markdown]
# The trained GRNs are far from the $\gamma = 1$ picture above. After 4 short epochs the gammas moved only a few
# hundredths from 0: the gains stay between about 0.76 and 1.22, with medians of 0.97 to 1.00 per stage, a mild
# rescaling. In stages 2 to 4 nearly all gammas (91% to 99%) are **negative**, so a channel's gain
# $1 + \gamma_i N_i$ is below 1 and falls as its own response $N_i$ grows. Stage 1 has gammas of both signs.
#
# Whether GRN damps or amplifies the *dominant* channels of an image depends on which channels have which gamma. The
# figure shows every (image, channel) pair of each stage, its gain against its response, as a 2D histogram (the
# pairs overlap by the thousand), with the median gain along the response axis in red:

# %%
as_jpeg(plot_gain_vs_response(captures[TRAINED], title=f"gain against response of every channel of the {TRAINED} "
                                                       f"encoder, {len(images)} images"))

# %% [markdown]
# Three behaviours, as the printout's last two columns say. Stage 1 **amplifies** its strong channels (median gain
# 1.05 for $N_i > 2$, 1.00 below the mean): competition as in the $\gamma = 1$ picture, mildly. Stage 2 damps all its
# channels about equally (0.98 below the mean, 0.99 for strong ones). Stages 3 and 4 **damp** the strong channels
# most (0.95 and 0.94, against 0.97 and 0.98 below the mean), pulling the channel norms of an image towards each
# other.

# %% [markdown]
# ## Does GRN make the trained channels less redundant?
#
# Two redundancy measures of every block's channels, per image, averaged over the 16 photos, before and after its
# GRN. The paper's feature cosine distance (`cnx2lite.collapse.feature_cosine_distance`) over the $C$ channel maps
# $X_i$, flattened over space,
#
# $$D = \frac{1}{C^2} \sum_{i=1}^{C} \sum_{j=1}^{C} \frac{1 - \cos(X_i, X_j)}{2}, \qquad
#   \cos(X_i, X_j) = \frac{X_i \cdot X_j}{\lVert X_i \rVert_2 \, \lVert X_j \rVert_2},$$
#
# is about 0.5 for unrelated zero-mean channels; lower = more redundant. The mean absolute Pearson correlation
# $\overline{|r|}$ over the pairs $i \ne j$ is the same with each map's spatial mean subtracted first; higher = more
# redundant.

# %%
plot_redundancy(captures, title=f"MLP channel redundancy in every block: {TRAINED} vs random, before and after GRN")

# %%
for label, capture in captures.items():
    stats = {key: value.mean() for key, value in grn_redundancy(capture).items()}
    print(f"{label:>14}, mean over blocks: cosine distance {stats['distance before']:.3f} before GRN, "
          f"{stats['distance after']:.3f} after; |r| {stats['|r| before']:.3f} before, {stats['|r| after']:.3f} after")


def distance(features: torch.Tensor) -> float:
    """The paper's feature cosine distance of channels-last features (N, H, W, C)."""
    return feature_cosine_distance(features.permute(0, 3, 1, 2))


print(f"{block_label(BLOCK)}, {TRAINED}: cosine distance {distance(feats):.3f} before GRN, "
      f"{distance(captures[TRAINED].outputs[BLOCK]):.3f} after, "
      f"{distance(global_response_norm(feats, captures[TRAINED].gamma[BLOCK], 0.0)):.3f} after GRN with beta set to 0")

# %% [markdown]
# Honest answer: **within one image, GRN cannot make channels less redundant.** For a given image it multiplies each
# channel by one number (its gain $1 + \gamma_i N_i$) and adds one number ($\beta_i$): an affine map per channel. A
# correlation between two channels' maps does not change under such maps (for a positive gain; a negative one only
# flips its sign), so $\overline{|r|}$ is exactly the same before and after (the dashed lines lie on the solid ones).
# The cosine distance does not subtract the mean, so it sees $\beta$: in the trained encoder it moves by a few
# thousandths (0.466 to 0.464 on average over blocks, in the printout), and with $\beta$ set to 0 it is back to its
# value before GRN, since a gain alone does not change a cosine. The invariance of $\overline{|r|}$ holds for any
# $\gamma$ and $\beta$:

# %% tags=["nbval-check-output"]
with torch.no_grad():
    grn.gamma.normal_(generator=torch.Generator().manual_seed(0))
    grn.beta.normal_(generator=torch.Generator().manual_seed(1))
print("|r| between channels unchanged by a GRN with random gamma and beta:",
      torch.allclose(mean_abs_correlation(feats), mean_abs_correlation(grn(feats)), atol=1e-5))

# %% [markdown]
# So if GRN reduces redundancy, it does it **through training**: the layers before it learn different features
# because GRN is there. That is what the paper's Fig. 4 compares (separately trained V1 and V2 models), and what the
# committed cpu report measured for its V1 and V2 FCMAE encoders, two pretraining runs each (section 4 of
# `reports/cpu/report.md`, at the training resolution of 96 px). First the paper's measure, the feature cosine
# distance of the MLP features before GRN, averaged over blocks, 95% interval over runs and images:

# %%
METRIC = "feature cosine distance"
distances = {row: measured(4, f"{row} at 96 px", METRIC) for row in ("V1 FCMAE", "V2 FCMAE", "V2 random init")}
for row, m in distances.items():
    print(f"{row:>15}: {m}")
for row in ("V1 FCMAE", "V2 FCMAE"):
    below = distances[row].high < distances["V2 random init"].low
    print(f"{row} {'below' if below else 'not below'} the random init's interval")

# %% [markdown]
# The paper's claim is that V2's channels stay more diverse than V1's: a higher distance. V1 and V2 blocks differ in
# two ways, though: V2 adds GRN and drops V1's LayerScale (a per-channel scale that starts at $10^{-6}$), so this
# compares the blocks, not GRN alone. The report's paired difference, V2 FCMAE minus V1 FCMAE, and its verdict on
# the claim; then the same for a second measure, the
# effective rank of the channels (notebook 4, section 8: how many directions the channels spread over, as a share
# of them; higher is less collapsed):

# %%
for metric in (METRIC, "effective rank / channels"):
    diff = measured(4, "V2 FCMAE - V1 FCMAE at 96 px", metric)
    print(f"{metric}: {diff.verdict('V2 blocks (GRN, no LayerScale) keep FCMAE less collapsed than V1 blocks')}")

# %% [markdown]
# Read the two verdicts together: the paper's own measure and the effective rank need not agree, and notebook 4
# shows why they can differ (the raw distance also counts channels that share an offset). Either way, the report's 8
# epochs at 96 px are a tiny fraction of the paper's 800 epochs on ImageNet-1K, and the gammas above have barely
# moved, so this says little about the paper's setting; it does say that GRN is no instant cure for what the
# paper's measure sees. Notebook 4 looks at collapse in more detail.
#
# ## GRN against what could take its place, at CPU scale
#
# The paper's Table 2 is the other half of its case: the same place in the block (after the MLP's GELU) filled with
# nothing, LRN, BatchNorm, LayerNorm, SE or CBAM gating, or GRN with another aggregation, and GRN kept in only one of
# pretraining and fine-tuning. Table 5 of the committed report runs that comparison on our encoder: each arm is
# pretrained twice with FCMAE and fine-tuned with three seeds at 50 labels per class. Each row is the difference
# $\text{top-1}_{\text{GRN}} - \text{top-1}_{\text{alternative}}$ in points, with its 95% interval over runs and val
# images, beside the paper's (ConvNeXt V2-B, ImageNet-1K). The grid trains over several sittings and the report
# writes the rows it has, naming the others; this prints the rows the committed report holds:

# %%
grn_rows = measured_rows(5)
for row, diff in grn_rows.items():
    if row.startswith("GRN - "):
        alternative = row.removeprefix("GRN - ")
        print(f"{alternative}: top-1 {grn_rows[alternative]}, GRN minus it {diff} (paper: {diff.paper})")
        ours = "GRN in both phases" if " in pretraining, " in alternative else "GRN"
        print(f"    {diff.verdict(f'{ours} is better')}")

# %%
jpeg_file(report_figure("grn_ablation"))

# %% [markdown]
# When these outputs were stored the report held all ten rows. Four intervals exclude 0, all in GRN's favour:
# LayerNorm, SE and CBAM in GRN's place lose 1.7 to 2.3 points, and GRN with the mean aggregation loses 20. That one
# is an instability more than a design choice: the mean of signed responses after GELU, GRN's divisor, goes near or
# below 0 in some images and blocks, so $N(X)$ explodes (its pretraining loss rose after epoch 2 in both runs; the
# README gives the numbers). Nothing, LRN, BatchNorm, the L1 aggregation and GRN in one phase only are not told apart
# from GRN, and for nothing, BatchNorm and GRN in one phase only the interval lies below the paper's difference: an
# effect of the paper's size is ruled out at this scale. The intervals draw the fine-tuning seeds once for both arms,
# since seed $s$ fine-tunes on the same labeled images in every arm (drawn on their own, as before 2026-12-07, the
# LayerNorm, SE and CBAM intervals reached just below 0). GRN removed at fine-tuning starts from GRN's own pretraining
# runs, so its difference is paired run by run, and its interval is about $\pm 0.6$ points: at this scale removing
# GRN at fine-tuning costs at most about 0.6 points, where the paper lost 5.8. Not because GRN does nothing: on the
# table's L1-aggregation encoders (the L2 ones trained on another machine; a one-off check of 2026-12-07, not stored)
# it changed its input by about 15%, $\lVert \mathrm{GRN}(X) - X \rVert / \lVert X \rVert$ averaged over blocks
# (`collapse.grn_change_by_layer`), with gammas of 0.02 to 0.08; the fine-tuned encoders simply do as well without
# it. Whether GRN matters more with a longer pretraining is what `scripts/collapse_budget.sh` measures.
#
# ## Explore
#
# One $\gamma$ and one $\beta$ for all channels (a trained GRN has one per channel, see above), and each design choice
# switchable, on image 1's features in stage 2, block 1. The readout gives the spread of channel norms (max / mean)
# before and after and how far the output is from the input. It opens at $\gamma = -0.2$, the sign the trained
# encoder learned in stages 2 to 4, about ten times larger so the effect is visible: the strong channels are damped
# and the spread shrinks (the readout: from 3.40 to 1.60 on the trained features). Try: $\gamma = 0$ with the residual
# on (identity); standardization with a large $\gamma$ (channels below average flip sign, their norm dips to zero then
# grows again); the residual off with $\gamma = 0$ (everything is erased to $\beta$).

# %%
grn_explorer(x, gamma=-0.2)

# %% [markdown]
# ## The sparse pitfall: statistics over the batch
#
# In FCMAE pre-training the encoder is sparse, and GRN must aggregate over each sample's **visible** positions. The
# official sparse implementation computes the norm over the feature matrix of the whole sparse tensor, i.e. over all
# visible positions of **all samples in the batch** at once. That is not what the dense GRN does (per sample), and it
# couples the samples: an image's output then depends on which other images share its batch. This was reported
# upstream as facebookresearch/ConvNeXt-V2 issue #86, *Normalization mismatch between dense and sparse in GRN*
# (with a proposed fix in pull request #85).
#
# We check it numerically on the trained features of stage 2, block 1: the same image A, in a batch with image B, then
# in a batch with C.

# %%
a, b = feats[:1], feats[1:2]
c = torch.flip(b, dims=(1, 2)) * 2.0  # a third "image": B rotated by 180 degrees, twice as strong


def batch_wide(x: torch.Tensor) -> torch.Tensor:
    """GRN response with one norm per channel over the whole batch (all samples, all positions)."""
    return grn_normalize(torch.linalg.vector_norm(x, dim=(0, 1, 2), keepdim=True)).expand(len(x), 1, 1, -1)


def per_sample(x: torch.Tensor) -> torch.Tensor:
    """GRN response per sample, as the dense GRN (and cnx2lite's sparse backends) compute it."""
    return grn_normalize(grn_aggregate(x))


responses = {name: [f(torch.cat([a, other]))[0].flatten() for other in (b, c)] + [f(a)[0].flatten()]
             for name, f in (("batch-wide norms (official sparse GRN)", batch_wide), ("per-sample norms", per_sample))}
plot_batch_dependence(responses, labels=["A in batch (A, B)", "A in batch (A, C)", "A alone"])

# %% tags=["nbval-check-output"]
for name, (with_b, with_c, alone) in responses.items():
    print(f"{name}: A's response depends on the batch: {not torch.allclose(with_b, with_c)}")

# %% [markdown]
# The same holds for the whole GRN layer: sample A's output, with the layer's random `gamma` and `beta` from above.

# %% tags=["nbval-check-output"]
out_ab, out_ac = grn(torch.cat([a, b]))[:1], grn(torch.cat([a, c]))[:1]
print("per-sample GRN: A's output identical with B or with C:", torch.equal(out_ab, out_ac))
batch_ab = grn_calibrate(a, batch_wide(torch.cat([a, b]))[:1], grn.gamma.view(-1), grn.beta.view(-1))
batch_ac = grn_calibrate(a, batch_wide(torch.cat([a, c]))[:1], grn.gamma.view(-1), grn.beta.view(-1))
print("batch-wide GRN: A's output identical with B or with C:", torch.equal(batch_ab, batch_ac))

# %% [markdown]
# Batch-wide statistics make pre-training outputs depend on batch composition and size (and per GPU under data
# parallelism), and differ from the per-sample GRN the same weights run at fine-tuning. `cnx2lite`'s sparse backends
# (see [02_sparse_convolution](02_sparse_convolution.ipynb)) take the norms per sample over visible positions, so a
# sample's features are the same whatever batch it is in, and equal the dense model's on a mask-free image.
#
# ## Takeaways
#
# - GRN = aggregate, normalize, calibrate:
#   $\mathcal{G}(X)_i = \lVert X_i \rVert_2$ over $H \times W$;
#   $N_i = \mathcal{G}(X)_i / (\frac{1}{C}\sum_j \mathcal{G}(X)_j + \epsilon)$;
#   $X_i \leftarrow \gamma_i X_i N_i + \beta_i + X_i$, i.e. a gain $1 + \gamma_i N_i$ per channel plus $\beta_i$.
#   Zero-initialized, it is the identity.
# - Divisive normalization makes channels compete: a channel's gain depends on its response relative to all the others.
#   The paper motivates GRN by this and justifies it empirically (Fig. 4; Table 2: L2 84.6 vs L1 84.3 vs average
#   83.7, and better than LRN, BN, LN, SE and CBAM in its setting).
# - Our 4-epoch FCMAE encoder learned small gammas, 91-99% of them negative in stages 2 to 4 (median gains 0.97 to
#   0.98): its GRNs amplify the strong channels of stage 1 and damp those of stages 3 and 4, mildly. Within an image
#   GRN leaves the channel correlations exactly unchanged; any redundancy reduction has to come through training. At
#   its budget the report finds none on the paper's cosine distance (V2 FCMAE below V1) but finds it on the effective
#   rank (V2 above V1): the verdicts, with their intervals, are printed above.
# - In a sparse encoder, take the statistics per sample over visible positions: batch-wide norms leak information
#   between the samples of a batch (ConvNeXt-V2 #86).
#
# ## Exercises
#
# 1. **Predict, then run.** In the explorer, choose `standardize` and set $\gamma$ to 2. Before moving the slider,
#    predict where, in the sorted order of the 320 channels, the norm after GRN dips to (nearly) zero, and whether the
#    channels to its right come out weaker or stronger than before. *Hint:* the gain is $1 + 2 N_i$; find the $N_i$
#    that makes it 0 on the red curve of the step-2 figure.
# 2. **Duplicated channels.** Replace channel 1 of `x` by `3 * x[..., 0]` and apply `global_response_norm(x, 1.0,
#    0.0)`. Predict the correlation between the two channels after GRN, and the ratio of their norms, then check.
#    Can GRN, on its own, ever tell two copies of a feature apart? *Hint:* each channel's gain depends only on its own
#    $N_i$; compute $1 + N_0$ and $1 + N_1$ with $N_1 = 3 N_0$.
# 3. **Predict, then run: resolution.** At 192 px instead of 96, does the random encoder's $\overline{|r|}$ in stage 4
#    (blocks 11 and 12) go up or down, and by how much? Predict, then measure it at both sizes. *Hint:* at 96 px stage 4
#    is a 3 x 3 map; two unrelated maps of only $n = 9$ positions already correlate by chance, on average
#    $\overline{|r|} \approx \sqrt{2 / (\pi (n - 1))}$.
# 4. **The batch pitfall.** Make image C an exact copy of B (`c = b.clone()`) and predict whether the batch-wide
#    response of A still changes between the batches (A, B) and (A, C). Then try `c = 2 * b`. *Hint:* the batch-wide
#    norm of a channel is the square root of a sum of squares over both samples.
# 5. **Official weights.** Load the official ConvNeXt V2-Atto FCMAE checkpoint (`load_model("convnextv2_atto.fcmae")`
#    downloads it once; offline, give the path of a copy in `CNX2LITE_WEIGHTS`) and describe its GRNs per stage at
#    224 px, the size it was trained at, with `describe_stages`. Do its gammas, trained on ImageNet for 1,600 epochs,
#    keep the sign pattern of our 4-epoch run, and do they amplify or damp the strong channels? *Hint:* compare its
#    lines with ours, stage by stage: the share of negative gammas and the two median gains.

# %% [markdown]
# **Solution 1.**

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
order = torch.argsort(grn_aggregate(x).flatten(), descending=True)
standardized = grn_normalize(grn_aggregate(x), "standardize").flatten()[order]  # N_i, strongest channel first
ratio = channel_norms(global_response_norm(x, 2.0, 0.0, normalization="standardize"))[order] / channel_norms(x)[order]
dip = int(ratio.argmin())
print(f"the norm dips at channel {dip} of {len(ratio)} (N_i = {standardized[dip]:+.2f}, after / before "
      f"{ratio[dip]:.2f}); of the {len(ratio) - dip - 1} weaker channels, {int((ratio[dip + 1:] > 1).sum())} come out "
      f"stronger, {int((standardized[dip + 1:] < -0.5).sum())} flipped in sign")
# The gain 1 + 2 N_i is 0 at N_i = -0.5, half a standard deviation below the mean channel. Every channel weaker than
# that gets a negative gain: its map is flipped in sign, and its norm |1 + 2 N_i| ||X_i|| grows again; it exceeds the
# norm before only where N_i < -1, one standard deviation below the mean.

# %% [markdown]
# **Solution 2.**

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
copied = x.clone()
copied[..., 1] = 3 * copied[..., 0]
out = global_response_norm(copied, 1.0, 0.0)
n = grn_normalize(grn_aggregate(copied)).flatten()
r = torch.corrcoef(torch.stack([out[..., 0].flatten(), out[..., 1].flatten()]))[0, 1]
print(f"after GRN: r = {r:.4f}; norm ratio {channel_norms(out)[1] / channel_norms(out)[0]:.3f}, "
      f"predicted 3 (1 + N_1) / (1 + N_0) = {3 * (1 + n[1]) / (1 + n[0]):.3f} with N_0 = {n[0]:.2f}, N_1 = {n[1]:.2f}")
# Each channel is multiplied by its own positive gain, so the copies stay exact copies (r = 1), and the louder one
# gets the larger gain: the ratio grows from 3 to 3 (1 + 3 N_0) / (1 + N_0), here almost 6. GRN widens the gap in
# strength but sees a channel's norm, not its pattern: it cannot tell copies apart. Only the layers before it,
# through training, can make them differ.

# %% [markdown]
# **Solution 3.**

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
stage4 = [name for name in captures["random init"].inputs if name.startswith("stages.3.")]  # blocks 11 and 12
maps = {IMG_SIZE: [captures["random init"].inputs[name] for name in stage4],
        192: [f.permute(0, 2, 3, 1) for f in mlp_activations(random_model, photos(NUM_PHOTOS, 192), stage4).values()]}
for size, blocks in maps.items():
    n = blocks[0].shape[1] * blocks[0].shape[2]
    abs_r = ", ".join(f"{mean_abs_correlation(f).mean():.3f}" for f in blocks)
    print(f"{size} px: stage 4 is {blocks[0].shape[1]} x {blocks[0].shape[2]}, n = {n}: random encoder |r| {abs_r}; "
          f"chance for unrelated maps sqrt(2 / (pi (n - 1))) = {math.sqrt(2 / (math.pi * (n - 1))):.3f}")
# Down, by about half: at 192 px stage 4 is 6 x 6, and chance correlation falls from 0.28 (n = 9) to 0.13 (n = 36).
# Most of the random encoder's stage-4 |r| at 96 px is this small-sample chance, not shared structure: a redundancy
# measure on a 3 x 3 map says little, and the same holds for the trained encoder's stage 4.

# %% [markdown]
# **Solution 4.**

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
alone_with_b = batch_wide(torch.cat([a, b]))[0]
for name, other in (("c = b.clone()", b.clone()), ("c = 2 * b", 2 * b)):
    print(f"{name}: A's batch-wide response the same as in (A, B): "
          f"{torch.allclose(alone_with_b, batch_wide(torch.cat([a, other]))[0])}")
# A channel's batch-wide norm is sqrt(||A_i||^2 + ||C_i||^2): it sees only C's channel norms. An exact copy of B has
# B's norms, so A's response is the same; 2 B doubles them, and A's response changes. The leak runs through the other
# samples' norms, so it is there whenever they differ, which in a real batch is always.

# %% [markdown]
# **Solution 5.**

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
try:
    official, _ = load_model(os.environ.get("CNX2LITE_WEIGHTS") or "convnextv2_atto.fcmae", model="convnextv2_atto")
except OSError:
    print("offline: would load convnextv2_atto.fcmae and print its gammas' signs and gains per stage at 224 px; "
          "set CNX2LITE_WEIGHTS to a local copy")
else:
    describe_stages(capture_grn(official, photos(NUM_PHOTOS, 224)))
# Online, the four lines read like ours above. Our 4-epoch gammas moved a few hundredths from 0 (median gains 0.97 to
# 1.00); a model trained 1,600 epochs on ImageNet has had time to move them far from 0, so look at how far the gains
# spread from 1, whether the sign pattern by stage is ours, and whether the strong channels (N > 2) are amplified or
# damped.
