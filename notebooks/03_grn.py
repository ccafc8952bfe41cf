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
# Normalization*, Fig. 3 and 4) finds **feature collapse** in the MLP of the blocks: many channels dead or saturated, and
# the remaining ones redundant. The fix is a small layer placed after the GELU of every block's MLP (the V2 block of
# Fig. 5, which also drops V1's LayerScale). GRN makes channels compete: it measures how strongly each channel responds
# over the whole image, then boosts channels relative to the average one.
#
# This notebook takes GRN apart on a real feature map, step by step, tries the alternatives the paper ablates
# (Table 2), and ends with a pitfall of the sparse (pre-training) version.
#
# Settings: photos from `CNX2LITE_DATA_ROOT` (everything here runs in seconds at any `CNX2LITE_SCALE`);
# optionally `CNX2LITE_WEIGHTS=path/to/convnextv2_atto checkpoint` for trained features.

# %%
# %matplotlib inline
import os

import torch

from cnx2lite.checkpoints import load_pretrained
from cnx2lite.layers.grn import GRN, global_response_norm, grn_aggregate, grn_calibrate, grn_normalize
from cnx2lite.models import create_model
from cnx2lite.notebook.grn_figures import channel_norms, plot_batch_dependence, plot_channel_norms, plot_grn_steps
from cnx2lite.notebook.photos import photos
from cnx2lite.notebook.run_scale import scale
from cnx2lite.notebook.widgets import grn_explorer

torch.manual_seed(0)
IMG_SIZE = 224  # one forward pass of a small model: the same at every scale
print("scale:", scale(), "| image size:", IMG_SIZE)

# %% [markdown]
# ## A real feature map: the input of a GRN
#
# We run two photos through ConvNeXt V2-Atto and record what enters the GRN of the first block of stage 2: the MLP's
# hidden features after GELU, channels-last `(N, H, W, 4C)`. Without a checkpoint the weights are **random** (the
# default here): the statistics below are those of an untrained network, fine for seeing what each step computes, not
# for the paper's collapse story. Set `CNX2LITE_WEIGHTS` to an official ConvNeXt V2-Atto checkpoint to use trained
# weights instead.

# %%
model = create_model("convnextv2_atto", num_classes=0).eval()
if os.environ.get("CNX2LITE_WEIGHTS"):
    print(load_pretrained(model, os.environ["CNX2LITE_WEIGHTS"], strict=False))
captured = {}
hook = model.stages[1][0].grn.register_forward_hook(lambda m, args, out: captured.update(x=args[0].detach()))
with torch.no_grad():
    model.forward_features(photos(2, IMG_SIZE))
hook.remove()
x = captured["x"][:1]  # one sample: (1, H, W, C)

# %% tags=["nbval-check-output"]
print("GRN input (N, H, W, C):", tuple(captured["x"].shape))

# %% [markdown]
# ## Step 1, aggregate: one number per channel
#
# GRN first summarizes each channel `X_i` (an `H x W` map) by its L2 norm over space, `G(X)_i = ||X_i||`: a global
# measure of how strongly channel *i* responds to this image. The paper's ablation of the aggregation (Table 2)
# compares this with the L1 norm and with global average pooling and keeps L2. Average pooling lets positive and
# negative responses cancel; the norms do not.
#
# ## Step 2, normalize: compare channels with each other
#
# Then each channel's norm is divided by the mean norm over channels, `N_i = G_i / mean_j(G_j)`. (The paper's Eq. 2
# divides by the sum over channels; its pseudo-code, the official code and ours use the mean, which only rescales gamma
# by C.) `N_i > 1` means "stronger than the average channel". This divisive normalization is what creates competition:
# a channel can only be large relative to the others. The alternative in the normalization ablation (Table 2),
# standardization `(G_i - mean) / std`, gives negative values that flip the sign of a channel's response in step 3.

# %%
plot_grn_steps(x)

# %% [markdown]
# ## Step 3, calibrate, with a residual
#
# The response `N_i` scales its channel, with learned per-channel `gamma` and `beta` and a residual connection:
#
# `GRN(X)_i = gamma_i * (X_i * N_i) + beta_i + X_i`
#
# `gamma` and `beta` are initialized to zero, so a fresh GRN is exactly the identity and training starts from a plain
# ConvNeXt block; the residual keeps that starting point while gamma moves. This is the `GRN` layer in `cnx2lite`:

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
# What does that do to the channels? With `beta = 0`, channel *i* is multiplied by `1 + gamma * N_i`: channels above
# the average response get a larger factor than channels below it. With `gamma = 1`, the norms before and after (one
# curve, sorted by strength) show the strong channels pulled further away from the weak ones.

# %%
plot_channel_norms(x, global_response_norm(x, gamma=1.0, beta=0.0),
                   title="gamma = 1, beta = 0 (same for every channel)")

# %% tags=["nbval-check-output"]
before, after = channel_norms(x), channel_norms(global_response_norm(x, gamma=1.0, beta=0.0))
n = grn_normalize(grn_aggregate(x)).flatten()
print("after / before = 1 + gamma * N_i for every channel:", torch.allclose(after / before, 1 + n, atol=1e-4))

# %% [markdown]
# ## Explore
#
# One `gamma` and one `beta` for all channels (a trained GRN has one per channel), and each design choice switchable.
# The readout gives the spread of channel norms (max / mean) before and after and how far the output is from the input.
# Try: gamma = 0 with the residual on (identity); standardization with a large gamma (channels below average flip
# sign, their norm dips to zero then grows again); the residual off with gamma = 0 (everything is erased to beta).

# %%
grn_explorer(x)

# %% [markdown]
# ## The sparse pitfall: statistics over the batch
#
# In FCMAE pre-training the encoder is sparse, and GRN must aggregate over each sample's **visible** positions. The
# official sparse implementation computes the norm over the feature matrix of the whole sparse tensor, i.e. over all
# visible positions of **all samples in the batch** at once. That is not what the dense GRN does (per sample), and it
# couples the samples: an image's output then depends on which other images share its batch.
#
# We check it numerically: the same sample A, in a batch with B, then in a batch with C.

# %%
feats = captured["x"]  # (2, H, W, C): two images
a, b = feats[:1], feats[1:]
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
# The same holds for the whole GRN layer: sample A's output, with the layer's parameters nudged away from zero.

# %% tags=["nbval-check-output"]
with torch.no_grad():
    grn.gamma.normal_(generator=torch.Generator().manual_seed(0))
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
# - GRN = aggregate (L2 norm over space, per channel) -> normalize (divide by the mean over channels) -> calibrate
#   (`gamma * X * N + beta + X`). Zero-initialized, it is the identity.
# - Divisive normalization makes channels compete: after GRN a channel's gain grows with its response relative to the
#   others. Standardization instead flips weak channels' sign.
# - In a sparse encoder, take the statistics per sample over visible positions: batch-wide norms leak information
#   between the samples of a batch.
