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
# # 2. Sparse convolution: a ConvNet that sees only the visible patches
#
# A Vision Transformer drops masked patches from its token list and is done. A ConvNet slides its kernels over a dense
# grid, so hiding pixels is not so simple. This notebook follows the paper's encoder design (Woo et al., 2023,
# section *Fully Convolutional Masked Autoencoder*, "Encoder design"): view the masked image as a **2-D sparse array of
# pixels** and run **sparse convolutions** on it, which is what makes FCMAE work for ConvNeXt.
#
# Settings: `CNX2LITE_SCALE` = `smoke` (seconds), `cpu` (default) or `gpu`; photos come from `CNX2LITE_DATA_ROOT`.

# %%
# %matplotlib inline
import torch
import torch.nn.functional as F

from cnx2lite.bench import time_steps
from cnx2lite.masking import pixel_mask, random_mask
from cnx2lite.models import create_model
from cnx2lite.notebook.masking_figures import plot_masked_photo
from cnx2lite.notebook.photos import photos
from cnx2lite.notebook.run_scale import pick, scale
from cnx2lite.notebook.sparse_figures import plot_fill_in, plot_leak, plot_sparse_set, plot_speed
from cnx2lite.sparse import available_backends, sparse_forward_features

torch.manual_seed(0)
IMG_SIZE = 224  # every scale: the walkthrough is cheap; only the timing at the end grows with the scale
DEVICE = torch.device("cuda" if scale() == "gpu" and torch.cuda.is_available() else "cpu")
print("scale:", scale(), "| image size:", IMG_SIZE, "| device:", DEVICE)

# %% [markdown]
# One photo and a 60% mask, as in [01_masking](01_masking.ipynb). The encoder's input is the photo with masked
# pixels set to zero (in normalized units, i.e. the dataset's mean colour).

# %%
photo = photos(1, IMG_SIZE)[0]
mask = random_mask(1, IMG_SIZE, ratio=0.6, generator=torch.Generator().manual_seed(0))[0]
visible = (~pixel_mask(mask[None])).float()  # (1, H, W), 1 = visible pixel
masked_photo = photo * visible
plot_masked_photo(photo, mask)

# %% [markdown]
# ## The problem: dense convolutions fill the holes
#
# Run a few convolutions over the masked photo. To make the result something we can look at, each layer is a 7x7
# depthwise conv (ConvNeXt's kernel size) that averages its window, applied to the three colour channels. A dense conv
# computes an output at *every* position, including masked ones, from whatever is in its 7x7 window: after a few layers
# the masked cells are filled with copies of the visible content around them, and from the second layer on these
# invented values flow back into the outputs at visible positions. The network no longer sees "19 visible patches" but
# a smeared full image: the masked region stops being masked, and the features depend on the mask layout in a way they
# never will at fine-tuning time, when there is no mask.
#
# A **submanifold sparse convolution** computes outputs only at the active (visible) sites and reads only active
# inputs; emulated on a dense grid, that is "mask the input, convolve, mask the output". The paper notes exactly this
# equivalence: sparse conv, or a binary mask applied before and after each dense conv.

# %%
kernel = torch.full((3, 1, 7, 7), 1 / 49)  # per channel: the average of a 7x7 window


def dense_conv(x: torch.Tensor) -> torch.Tensor:
    return F.conv2d(x, kernel, padding=3, groups=3)


def sparse_conv(x: torch.Tensor) -> torch.Tensor:
    return dense_conv(x * visible) * visible  # submanifold: active sites in, active sites out


depths = [0, 1, 2, 4, 8]
runs = {"dense": [], "sparse": []}
for name, conv in (("dense", dense_conv), ("sparse", sparse_conv)):
    x = masked_photo[None]
    runs[name].append(x[0])
    for d in range(1, depths[-1] + 1):
        x = conv(x)
        if d in depths:
            runs[name].append(x[0])
plot_fill_in(runs["dense"], runs["sparse"], depths, mask)

# %% [markdown]
# Dark = empty sites (all features exactly zero); "filled" counts masked pixels that are no longer empty. With dense
# convs the holes close from their borders, 3 pixels per 7x7 layer. A ConvNeXt has a 7x7 conv in every block, and after
# each downsampling one step covers 2x more pixels, so the holes would be gone long before the last stage. The sparse
# version keeps every hole exactly empty at any depth.

# %% tags=["nbval-check-output"]
masked_px = pixel_mask(mask[None])[0]
for name in runs:
    print(f"{name:>6} conv, {depths[-1]} layers: every masked pixel still empty: {bool((runs[name][-1][:, masked_px] == 0).all())}")

# %% [markdown]
# ## The masked image as a sparse set
#
# The sparse view stores only what is there: the coordinates of the visible sites (sample, row, column) and a feature
# vector per site. At the input the features are the three colours; after the 4x4 stem (right) the grid is 4x coarser
# and each site carries a C-dimensional feature vector. Sparse conv libraries such as MinkowskiEngine, which the
# official FCMAE code uses, work on exactly this (coordinates, features) pair.

# %% tags=["nbval-check-output"]
active = ~pixel_mask(mask[None])  # (1, H, W) bool
coords = active.nonzero()  # (M, 3): sample, row, column
feats = masked_photo.permute(1, 2, 0)[active[0]]  # (M, 3): RGB of each visible pixel
print(f"dense image: {tuple(masked_photo.shape)} = {masked_photo.numel()} numbers")
print(f"sparse set: coords {tuple(coords.shape)} + feats {tuple(feats.shape)}: {active.sum().item()} of "
      f"{active.numel()} pixels ({active.float().mean():.1%})")
print("first 3 sites (sample, row, col):", coords[:3].tolist())

# %%
plot_sparse_set(photo, mask, stride=4)

# %% [markdown]
# ## Three backends, one answer
#
# `cnx2lite.sparse.sparse_forward_features(model, x, mask, backend)` runs a dense ConvNeXt V2 model's own weights as a
# sparse encoder. Three implementations compute the same function:
#
# - `dense`: the readable reference. Full-size maps, re-masked after every op that could write into a hole (the stem,
#   the 7x7 dwconv, the downsampling convs) and GRN statistics over visible positions only;
# - `gather`: the fast path. Visible positions only, as a token matrix `(M, C)`; per-position ops (LayerNorm, MLP, GRN)
#   run on tokens, the 7x7 dwconv scatters tokens into a zero map, convolves and gathers back;
# - `minkowski`: real sparse tensors from MinkowskiEngine, like the official code (optional install).
#
# We use ConvNeXt V2-Atto with random weights (the math does not care), nudging every parameter away from its
# initialization: GRN's gamma and beta start at zero, which would make GRN an identity and hide bugs in it.

# %%
model = create_model("convnextv2_atto", num_classes=0).eval()
with torch.no_grad():
    gen = torch.Generator().manual_seed(0)
    for p in model.parameters():
        p.add_(0.1 * torch.randn(p.shape, generator=gen))

images = photos(2, IMG_SIZE)
masks = random_mask(2, IMG_SIZE, ratio=0.6, generator=torch.Generator().manual_seed(1))
with torch.no_grad():
    out = {b: sparse_forward_features(model, images, masks, b) for b in available_backends()}
print("backends available here:", available_backends())

# %% tags=["nbval-check-output"]
ref = out["dense"]
print("output:", tuple(ref.shape), "| zero at every masked cell:", bool((ref.abs().sum(1)[masks] == 0).all()))
diff = (out["gather"] - ref).abs().max().item()
print(f"gather vs dense: max |diff| < 1e-3 x max |output|: {diff < 1e-3 * ref.abs().max().item()}")

# %% [markdown]
# The exact differences (float32 rounding, different summation order), and MinkowskiEngine when it is installed:

# %%
scale_ = ref.abs().max().item()
for b, o in out.items():
    print(f"{b:>9} vs dense: max |diff| = {(o - ref).abs().max().item():.2e}  (max |output| = {scale_:.1f})")
if "minkowski" not in out:
    from cnx2lite.sparse import minkowski

    print("MinkowskiEngine is not installed:", minkowski.INSTALL_HINT, "(or: make minkowski)")

# %% [markdown]
# ## Leak test: do hidden pixels reach the visible features?
#
# Here is the property that matters, measured directly. Take one image, change **only its masked pixels** (zeros vs a
# different photo), and compare the last-stage features at the visible cells. A plain dense ConvNeXt
# (`model.forward_features`) changes nearly everywhere: the hidden content leaks into what the encoder reports for the
# visible patches. A sparse encoder must not change at all.

# %%
other = photos(2, IMG_SIZE, seed=1)[1]
hide = pixel_mask(mask[None]).float()  # 1 = masked pixel
a = (photo * (1 - hide))[None]  # masked pixels zero
b = (photo * (1 - hide) + other * hide)[None]  # masked pixels from another photo
with torch.no_grad():
    change = {"plain dense ConvNeXt": (model.forward_features(a) - model.forward_features(b)).abs().amax(1)[0]}
    for backend in available_backends():
        fa = sparse_forward_features(model, a, mask[None], backend)
        fb = sparse_forward_features(model, b, mask[None], backend)
        change[f"sparse: {backend}"] = (fa - fb).abs().amax(1)[0]
plot_leak(change, mask)

# %% tags=["nbval-check-output"]
for name, c in change.items():
    if name.endswith("minkowski"):
        continue  # optional backend: printed in the figure above
    print(f"{name:>22}: visible features changed: {bool(c[~mask].max() > 0)}")

# %% [markdown]
# ## What sparsity buys: speed
#
# The `gather` backend does the per-position work (LayerNorm, the two MLP linears, GRN: most of the FLOPs) on the
# visible 40% of positions only; the 7x7 dwconv still runs on a dense map. We time a forward pass of the three
# encoders on a batch (median of a few interleaved runs; numbers depend on your machine, so this cell is not checked).
# MinkowskiEngine, when installed, is timed too (not at smoke scale); its CPU kernels are slow, so expect it at the
# bottom on a laptop. `cnx2lite bench fcmae` times the full FCMAE training step per backend.

# %%
B, ITERS = pick(smoke=(2, 1), cpu=(8, 3), gpu=(64, 10))
xb = photos(min(B, 8), IMG_SIZE).repeat((B + 7) // 8, 1, 1, 1)[:B].to(DEVICE)
mb = random_mask(B, IMG_SIZE, ratio=0.6, generator=torch.Generator().manual_seed(2)).to(DEVICE)
model = model.to(DEVICE)
steps = {"plain dense (no mask)": lambda: model.forward_features(xb)}
for backend in [b for b in available_backends() if b != "minkowski" or scale() != "smoke"]:
    steps[f"sparse: {backend}"] = lambda backend=backend: sparse_forward_features(model, xb, mb, backend)
with torch.inference_mode():
    speed = time_steps(steps, B, iters=ITERS, warmup=1, device=DEVICE)
plot_speed(speed, reference="plain dense (no mask)")

# %% [markdown]
# ## Takeaways
#
# - Dense convolutions on a masked image fill the holes and let hidden pixels leak into visible features; submanifold
#   sparse convolution (or masking before and after every dense conv) keeps the holes empty and the encoder exact.
# - A masked image is a sparse set of sites: coordinates + features. `dense`, `gather` and `minkowski` are three
#   implementations of the same sparse encoder and agree to float rounding.
# - The encoder's weights are ordinary dense weights: after pre-training, the same model runs densely for fine-tuning
#   (the paper converts the sparse layers back to standard convs).
# - Next, [03_grn](03_grn.ipynb): the layer that ConvNeXt V2 adds to make this pre-training work.
