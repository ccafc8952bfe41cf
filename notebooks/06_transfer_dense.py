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
# # 6. Transfer to dense tasks: segmentation and detection on the pre-trained backbone
#
# ImageNet accuracy is half of the paper's case for FCMAE. The other half is transfer (Woo et al., 2023, section 6):
# the pre-trained encoder becomes the backbone of a **Mask R-CNN** detector, fine-tuned on COCO, and of an
# **UperNet** segmenter, fine-tuned on ADE20K. The paper reports there (its Tables 6 and 7) that ConvNeXt V2 with
# FCMAE pre-training transfers better than ConvNeXt V1 with supervised pre-training at the sizes both were run (Base
# and Large; V1 has no Huge), and better than the Swin transformer at every size it tried.
#
# This notebook builds both on the package's own parts:
#
# 1. **the backbone's four feature maps**, the input of both heads;
# 2. **a dense task a laptop can train on**, with exact labels, since neither COCO nor ADE20K is here;
# 3. **UperNet and Mask R-CNN** in a few lines each;
# 4. **transfer**: short runs from the FCMAE encoder and from a random init, and the report's table of replicated
#    runs when it has been measured.
#
# **Where the numbers come from.** The runs that support a claim take hours: `cnx2lite reproduce --scale cpu`
# trains them after its other tables (table 6 of `reports/cpu/report.md`). The runs in this notebook are short,
# seconds at `CNX2LITE_SCALE=smoke` and a few minutes at the default `cpu` scale (plus about 5 the first time, to
# train the FCMAE encoder the notebooks share). They show what the code does; one short run per init is no evidence
# of which init is better.

# %%
# %matplotlib inline

import numpy as np
import torch
from IPython.display import Markdown, display
from torchmetrics.classification import MulticlassJaccardIndex

from cnx2lite import create_model, data
from cnx2lite.dense.composites import CompositeDataset, instances, random_shape
from cnx2lite.dense.heads import PyramidPooling, UperNet, mask_rcnn, stage_maps
from cnx2lite.notebook import dense_figures, shared_runs
from cnx2lite.notebook.evidence import report_figure, report_section
from cnx2lite.notebook.photos import class_names, sample_images
from cnx2lite.notebook.plotting import as_jpeg, jpeg_file
from cnx2lite.notebook.run_scale import pick, scale
from cnx2lite.notebook.source import show_source
from cnx2lite.notebook.widgets import composite_explorer
from cnx2lite.train import transfer
from cnx2lite.train.dense_tasks import DetectTask, SegmentTask
from cnx2lite.train.optim import param_groups

SIZE = pick(smoke=64, cpu=128, gpu=224)  # composites are SIZE x SIZE
PRESET = "smoke" if scale() == "smoke" else "cpu"
OUTPUT = shared_runs.scratch_folder("06")  # its short runs
FOLDER = data.find_image_folder(data.resolve_data_root(None))
FCMAE_RUN = shared_runs.fcmae_encoder()  # the V2 FCMAE encoder every notebook shares (trained on first use)
print(f"FCMAE encoder: {FCMAE_RUN.name} of the notebooks' shared runs")
print(f"scale: {scale()} | composites {SIZE} px")

# %% [markdown]
# ## 1. Four feature maps
#
# Both heads read the encoder at four resolutions: the output of each stage, at strides 4, 8, 16 and 32, each
# normalized by a LayerNorm of its own (`stage_norms=True`, as the official detection and segmentation backbones
# do). `forward_intermediates` returns them. For a 224 px photo:

# %%
backbone = create_model("convnextv2_atto", num_classes=0, stage_norms=True, pretrained=str(FCMAE_RUN))
photo = sample_images(1, 224)[0]
for i, stage in enumerate(backbone.forward_intermediates(photo[None], norm=True, intermediates_only=True)):
    print(f"stage {i + 1}: {tuple(stage.shape)}")

# %% [markdown]
# Both heads take them through `stage_maps`, keyed `"0"` to `"3"` as torchvision's feature pyramid expects:

# %% tags=["nbval-check-output"]
show_source(stage_maps)

# %% [markdown]
# Each map below is the mean absolute activation over its channels. The early maps are sharp and shallow
# (40 channels at stride 4); the last is coarse and deep (320 channels at stride 32). A detector needs both: small
# objects are only resolved early, and what an object *is* is only known late.

# %%
as_jpeg(dense_figures.plot_stage_maps(backbone, photo))

# %% [markdown]
# ## 2. A dense task with exact labels
#
# No segmentation or detection data set reaches this machine, so `CompositeDataset` makes one from any folder of
# labeled photos. A composite is a photo of one class with one to three shapes (ellipses, polygons, blobs) cut from
# photos of *other* classes pasted on it. By construction every pixel's label is the class of the photo it came from,
# and every pasted shape is an instance with its exact visible mask and box. A composite is a function of `(seed,
# index)` and the photos it draws from: the same seed on other photos of as many classes (each with more than one
# photo) gives the same layouts with other pictures. Training composites come from `train/` photos, evaluation
# composites from `val/` photos (under seed 0), so the two never share a photo; the ones below use seed 1, so their
# layouts are not the evaluation set's. It is a synthetic task: a shape's class is told by the photo inside it, never
# by its outline.

# %%
photos = data.build_dataset(FOLDER, "train", num_classes=pick(smoke=2, cpu=None, gpu=None),
                            images_per_class=pick(smoke=8, cpu=100, gpu=None))
composites = CompositeDataset(photos.samples, photos.classes, size=SIZE, length=8, seed=1)
image, target = composites[0]
print(f"image {tuple(image.shape)}; semantic {tuple(target['semantic'].shape)} {target['semantic'].dtype}; "
      f"boxes {tuple(target['boxes'].shape)}; masks {tuple(target['masks'].shape)}; labels {target['labels'].tolist()}")

# %% [markdown]
# Three of them: the image, its semantic labels (a colour per class) and its instances (each visible mask with its
# tight box).

# %%
as_jpeg(dense_figures.plot_composites(composites, range(3), class_names(FOLDER)))

# %% [markdown]
# The labels are exact because they are written while pasting. Here is the loop of `CompositeDataset.compose` that
# pastes the regions; look at the last two lines, which are all the labelling there is.

# %% tags=["nbval-check-output"]
show_source(CompositeDataset.compose, start="for _ in range(", stop="return canvas")

# %% [markdown]
# Each region takes a class other than the background's, a random shape `mask` with its box, and a photo of that class
# squeezed into the box; the photo's pixels inside the shape replace the canvas's. Then `semantic[mask] = label`
# relabels those pixels, so the semantic label of a pixel is the class of the last region that covers it, or the
# background's. And every earlier region loses the new shape's pixels from its visible mask: with $S_k$ the shape of
# region $k$ of $R$, its visible mask is
#
# $$V_k = S_k \setminus \bigcup_{k' > k} S_{k'}.$$
#
# `instances` turns the regions into detection targets; look for the one condition on a region:

# %% tags=["nbval-check-output"]
show_source(instances, start="kept = ")

# %% [markdown]
# A region is an instance only if $|V_k| \ge 16$ pixels (`min_visible`); its mask is $V_k$, and `boxes_of` gives the
# tight box of $V_k$, not of its whole shape. The last region pasted is never covered, so a composite ends with no
# instance only when that last shape is itself under 16 px and every earlier one is covered or as small.
#
# Explore: pick a composite, allow more regions, and raise the visible pixels an instance needs. *Predict first:* when
# you raise `min visible px`, which of a composite's regions stops being an instance first: the first pasted?

# %%
composite_explorer(composites, class_names(FOLDER))

# %% [markdown]
# The one with the fewest visible pixels (the readout lists them in pasting order): often an early region that later
# shapes partly cover, but a small shape goes first wherever it was pasted, and the last one is never covered.

# %% [markdown]
# ## 3. Two heads in a few lines
#
# **UperNet** (Xiao et al., 2018): pyramid pooling on stage 4 (averages over 1x1, 2x2, 3x3 and 6x6 cells), a feature
# pyramid network (FPN) over the four maps, every level upsampled to stride 4, fused and classified per pixel. The
# FPN is torchvision's; the pooling and fusion are the package's (`cnx2lite/dense/heads.py`). The pooling first; look
# for its four branches, one per grid size $s \in \{1, 2, 3, 6\}$:

# %% tags=["nbval-check-output"]
show_source(PyramidPooling.forward)

# %% [markdown]
# Each branch averages stage 4 over an $s \times s$ grid (`adaptive_avg_pool2d`), projects it with a 1x1 conv and
# upsamples it back to the map's size; `fuse`, a 3x3 conv, mixes the map with its four pooled versions. So every
# position also sees averages over the whole map and over cells a half, a third and a sixth of its side. On this
# notebook's 128 px composites stage 4 is only 4x4 cells, so the 3x3 and 6x6 branches average overlapping windows of
# one or two cells: the pyramid pays off on maps as large as those of the paper's 512 px ADE20K crops (16x16).

# %% [markdown]
# Then the whole head: what to look for is that every level of the pyramid is brought to stride 4 before the fusion.

# %% tags=["nbval-check-output"]
show_source(UperNet.forward)

# %% [markdown]
# `stage_maps` gives the four normed maps; the pooling replaces the last one; torchvision's `FeaturePyramidNetwork`
# adds each coarser level, upsampled, to the next finer one through lateral 1x1 convs, then smooths each level with a
# 3x3 conv; the four levels are upsampled to the size of level 0 (stride 4), concatenated and fused by a 3x3 conv; a
# 1x1 conv classifies each position, and the logits are upsampled bilinearly to the image. The loss is per-pixel
# cross-entropy, averaged over the labelled pixels (`SegmentTask.loss`):

# %% tags=["nbval-check-output"]
show_source(SegmentTask.loss)

# %% [markdown]
# On two composites:

# %%
torch.manual_seed(0)  # the head's random init: the same numbers at every run
segmenter = UperNet(backbone, num_classes=len(photos.classes), channels=128)
logits = segmenter(torch.stack([composites[i][0] for i in range(2)]))
head = sum(p.numel() for name, p in segmenter.named_parameters() if not name.startswith("backbone."))
print(f"logits {tuple(logits.shape)}: (N, classes, H, W); backbone "
      f"{sum(p.numel() for p in backbone.parameters()):,} parameters, head {head:,}")

# %% [markdown]
# The head is more than half the backbone's size, and it starts from random weights whatever the backbone's init:
# transfer trains a large part of the model from scratch, one reason it needs many more steps than fine-tuning a
# classifier.
#
# **Mask R-CNN** (He et al., 2017) is torchvision's whole model (region proposals, RoIAlign, box and mask heads,
# their losses) on the backbone through an FPN. `mask_rcnn` sizes it for images holding a few objects. In training
# mode it takes targets and returns its five losses; in evaluation mode it returns, per image, boxes, labels
# (`1..K`: its 0 is the background), scores and mask probabilities. What the package adds is the backbone it reads
# and the sizes: look for the anchor sizes, one per pyramid level, and the counts of proposals and sampled regions.

# %% tags=["nbval-check-output"]
show_source(mask_rcnn, start="anchors = AnchorGenerator")

# %% [markdown]
# `StagePyramid` is the backbone: the four normed stage maps through a `FeaturePyramidNetwork` with a max-pooled fifth
# level, 128 channels each (`channels`). Anchors of 16 to 256 px sit one size per level at three aspect ratios
# (torchvision's are 32 to 512): on 128 px composites, whose shapes are at most about 85 px across, a 256 px anchor
# never overlaps an instance enough to match it, so the pooled level only ever learns background. The data is already
# normalized, so the model's own normalization is the identity (mean 0, std 1) and `min_size` = `max_size` =
# `img_size` stops it resizing. The box and mask heads are torchvision's, narrowed to 256 and 128 features, with
# `num_classes + 1` outputs for the background. In evaluation mode on two composites:

# %%
detector = mask_rcnn(backbone, num_classes=len(photos.classes), img_size=SIZE)
detector.eval()
with torch.no_grad():
    found = detector(torch.stack([composites[i][0] for i in range(2)]))
print({key: tuple(value.shape) for key, value in found[0].items()})

# %% [markdown]
# Untrained, it returns up to its cap of detections per image (torchvision's `box_detections_per_img`, 100), each with a
# box, a label, a score and a mask of probabilities at the image's size.
#
# ## 4. Transfer
#
# `cnx2lite transfer --task segment|detect` (here its Python twin, `transfer`) trains either head as `finetune`
# trains a classifier: the same run directory, resume, `metrics.csv` and curves, layer-wise lr decay of 0.9 over the
# backbone's blocks (the heads train at the full lr), and `predictions.png` of evaluation composites at the end. The
# scores are torchmetrics', computed once over the whole evaluation split; look for the `average` of each:

# %% tags=["nbval-check-output"]
show_source(SegmentTask.start_scoring)

# %% [markdown]
# `MulticlassJaccardIndex` with `average="macro"` is the mIoU. It counts over every pixel of the split: for class $c$,
# $\mathrm{TP}_c$ pixels labelled $c$ and predicted $c$, $\mathrm{FP}_c$ predicted $c$ but labelled otherwise,
# $\mathrm{FN}_c$ labelled $c$ but predicted otherwise. Then
#
# $$\mathrm{IoU}_c = \frac{\mathrm{TP}_c}{\mathrm{TP}_c + \mathrm{FP}_c + \mathrm{FN}_c}, \qquad
#   \mathrm{mIoU} = \frac{100}{|\mathcal{C}|} \sum_{c \in \mathcal{C}} \mathrm{IoU}_c, \qquad
#   \mathcal{C} = \{c : \mathrm{TP}_c + \mathrm{FP}_c + \mathrm{FN}_c > 0\}:$$
#
# the mean is over the classes that occur in the labels or in the predictions (torchmetrics gives a class that is in
# neither a weight of 0, rather than an IoU of 0). Pixels labelled `IGNORE_INDEX` are left out (composites have none).
# Pixel accuracy is $\sum_c \mathrm{TP}_c$ over the number of pixels. Detection is scored by torchmetrics'
# `MeanAveragePrecision` with the pycocotools backend, which runs COCO's own evaluation on the gathered detections
# (`split_scores.mean_average_precision`: at COCO's own IoU and recall thresholds, which torchmetrics' defaults round to
# float32):

# %% tags=["nbval-check-output"]
show_source(DetectTask.scores, start="metric = ")

# %% [markdown]
# COCO's AP, `bbox_map`: for each IoU threshold $t \in T = \{0.50, 0.55, \dots, 0.95\}$ and each class $k$, the
# detections of class $k$ (at most 100 per image and class, the highest scores) are taken in decreasing score, and
# each is a true positive if its box overlaps a ground-truth box of class $k$ not matched yet with
# $\mathrm{IoU} = |A \cap B| / |A \cup B| \ge t$. This gives a precision $p_{k,t}(r)$ at each recall $r$, and
#
# $$\mathrm{AP} = \frac{100}{|T|\,|K|} \sum_{t \in T} \sum_{k \in K} \frac{1}{101}
#   \sum_{r \in \{0, 0.01, \dots, 1\}} \max_{\tilde r \ge r} p_{k,t}(\tilde r),$$
#
# where $K$ holds the classes with at least one ground-truth instance in the split, and the inner maximum is 0 for a
# recall $r$ the detections never reach. Mask AP (`segm_map`) is the same with the IoU of masks (probabilities
# thresholded at 0.5) in place of boxes; `val_box_ap50` is the term $t = 0.5$ alone.
#
# Two short segmentation runs, from the FCMAE encoder and from a random init, with the same composites and seed:

# %%
short = dict(output=str(OUTPUT), progress=False, data=str(FOLDER),
             **pick(smoke={}, cpu=dict(composites=240, val_composites=64, epochs=2, warmup_epochs=0), gpu={}))
inits = {"FCMAE": str(FCMAE_RUN), "random": None}
segment_runs = {name: transfer("segment", PRESET, pretrained=init, name=f"segment-{name}", **short)
                for name, init in inits.items()}
for name, run in segment_runs.items():
    print(f"{name:>7s} init: val mIoU {run.metric('val_miou')[-1]:5.1f}%, pixel accuracy "
          f"{run.metric('val_pixel_acc')[-1]:5.1f}% after {run.metric('step')[-1]:.0f} steps at lr "
          f"{run.config['lr']:g}")

# %% [markdown]
# After so few steps (printed above) both runs are still near chance (with ten classes of about equal
# share over the split, painting one class over every pixel scores about 10% pixel accuracy), and which one is ahead
# after so little training says nothing about the inits. The report's table trains 750 steps per segmentation run and
# 372 per detection run, two runs per init. What each predicted on the first evaluation composites (labels in the
# middle, prediction on the right):

# %%
for name, run in segment_runs.items():
    print(f"{name} init")
    display(jpeg_file(run.run_dir / "predictions.png", quality=60))

# %% [markdown]
# Detection trains more slowly (region proposals and per-region heads), so here one shorter run, from the same init
# as the first segmentation run. Expect an AP of 0 after its dozen steps: within its first steps Mask R-CNN's
# classifier learns to call nearly every proposal background (most of the regions it samples are), and it takes many
# more steps before it names a class, with a box that overlaps a true one by at least half (the IoU of AP50), often
# enough to score. The figure shows its detections scoring 0.5 or more.

# %%
detect_run = transfer("detect", PRESET, pretrained=inits["FCMAE"], name="detect-FCMAE",
                      **{**short, **pick(smoke={}, cpu=dict(composites=96, epochs=2), gpu={})})
print(f"box AP {detect_run.metric('val_box_ap')[-1]:.1f}%, AP50 {detect_run.metric('val_box_ap50')[-1]:.1f}%, "
      f"mask AP {detect_run.metric('val_mask_ap')[-1]:.1f}% after {detect_run.metric('step')[-1]:.0f} steps")
display(jpeg_file(detect_run.run_dir / "predictions.png", quality=60))

# %% [markdown]
# ### The replicated table
#
# Table 6 of the report transfers four inits (V2 FCMAE, V1 FCMAE, supervised, random), twice each (from two
# pretraining runs, or supervised runs, of the table's own, trained with the other tables' settings), and scores each
# run as the paper does, over the whole evaluation split: mIoU pools the pixels of all composites, and AP ranks the
# detections of all composites together (scored alone, an image would not pay for a confident detection of a class it
# does not hold). Its intervals resample the runs, then the composites: the split's score is recomputed on each
# bootstrap weighting $c_1, \dots, c_N$ of the composites (composite $i$ counting $c_i$ times, its pixels, detections
# and instances alike; `cnx2lite.dense.split_scores`), the same weightings for every run. It is trained after the
# report's other tables.

# %%
section = report_section(6)
if section is not None:
    display(Markdown(section))
    display(jpeg_file(report_figure("transfer")))
else:
    print("Table 6 is not measured yet: `cnx2lite reproduce --scale cpu` trains it after tables 1-5 "
          "(`--hours` lets it train in pieces).")

# %% [markdown]
# ## Takeaways
#
# - Both heads read the encoder's four stage maps, each normalized on its own; UperNet fuses them into one map at
#   stride 4, Mask R-CNN keeps them as a pyramid for its proposals.
# - `CompositeDataset` gives exact labels for both tasks from any class folder, written while the regions are pasted;
#   train and evaluation composites never share a photo, and the evaluation set is the same for every run.
# - `cnx2lite transfer` trains either task with the training loop of `finetune`, scored by torchmetrics' mIoU and
#   COCO AP; table 6 of the report, not these short runs, says whether FCMAE transfers better at this scale.
#
# ## Exercises
#
# 1. **Predict, then run: hidden instances.** Later shapes can cover earlier ones, and an instance left with fewer
#    than 16 visible pixels is no detection target (its pixels keep their class in the semantic labels). Predict the
#    share of pasted regions dropped this way over 200 composites, then count it with `composites.compose(i)`, which
#    returns each region's visible mask.
# 2. **Predict, then run: layer decay.** With `layer_decay=0.9`, atto's 12 blocks and one layer id $\ell$ per block,
#    each parameter's lr is scaled by $0.9^{13 - \ell}$: the stem has $\ell = 1$, the heads $\ell = 13$. Predict the
#    stem's scale, then read it from `cnx2lite.train.optim.param_groups(segmenter, 0.05, 0.9)`.
# 3. **Which stage?** In section 1, which stage maps have cells smaller than the smallest pasted shapes at `SIZE`
#    px? Measure the shapes with `cnx2lite.dense.composites.random_shape`. *Hint:* a shape's radius is a tenth to a
#    third of the composite; an ellipse's semi-axes are half to all of it, but a polygon's vertices sit at random
#    angles (bunched, they make a sliver) and a blob's ellipses are 0.35 to 0.6 of it.
# 4. **mIoU by hand.** Compute the mIoU of the untrained `segmenter`'s `logits` on the two composites of section 3
#    with the formula above (count $\mathrm{TP}_c$, $\mathrm{FP}_c$, $\mathrm{FN}_c$ yourself), and check it against
#    torchmetrics' `MulticlassJaccardIndex`. Why is it not the share of correct pixels?

# %% [markdown]
# **Solution 1.**

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
many = CompositeDataset(photos.samples, photos.classes, size=SIZE, length=200, seed=1)
regions = [mask.sum() for i in range(len(many)) for mask, _ in many.compose(i)[2]]
print(f"{sum(int(n < 16) for n in regions)} of {len(regions)} regions are left with fewer than 16 visible pixels")
# Very few: a later shape must cover almost all of an earlier one, and shapes are placed independently. Most covered
# regions lose part of their pixels and stay instances, with a smaller mask and box.

# %% [markdown]
# **Solution 2.**

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
scales = sorted({group["lr_scale"] for group in param_groups(segmenter, 0.05, 0.9)})
print(f"lr scales from {scales[0]:.3f} to {scales[-1]:.0f}; 0.9 ** 12 = {0.9 ** 12:.3f}")
# The stem (layer id 1) trains at 0.9^12 = 0.28 of the lr and the heads at the full lr: the earliest, most generic
# features of the pretrained encoder move least.

# %% [markdown]
# **Solution 3.**

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
rng = np.random.default_rng(0)
sides = np.array([min(x1 - x0, y1 - y0) for _, (x0, y0, x1, y1) in (random_shape(rng, SIZE) for _ in range(1000))])
print(f"{SIZE} px composites: the shorter box side of 1000 shapes is {sides.min()} px at least, "
      f"{np.percentile(sides, 5):.0f} px at the 5th percentile")
for stage, stride in enumerate((4, 8, 16, 32), 1):
    print(f"stage {stage}: a cell covers {stride} px; {np.mean(sides < stride):.1%} of shapes are narrower than a cell")
# Only stage 1's cells are smaller than every shape; a few slivers are already narrower than a stage-2 cell, more at
# stage 3, and at stage 4, whose cells are a quarter of a 128 px composite, a large share. Only the early maps
# resolve the small shapes, one reason both heads read them through the FPN.

# %% [markdown]
# **Solution 4.**

# %% tags=["solution"] jupyter={"source_hidden": true, "outputs_hidden": true}
truth = torch.stack([composites[i][1]["semantic"] for i in range(2)])
guess = logits.argmax(1)
ious = []
for c in range(len(photos.classes)):
    tp, fp, fn = ((guess == c) & (truth == c)).sum(), ((guess == c) & (truth != c)).sum(), \
        ((guess != c) & (truth == c)).sum()
    if tp + fp + fn > 0:
        ious.append(tp / (tp + fp + fn))
by_hand = 100 * torch.stack(ious).mean().item()
library = 100 * MulticlassJaccardIndex(len(photos.classes), average="macro")(guess, truth).item()
print(f"mIoU by hand {by_hand:.2f}%, torchmetrics {library:.2f}%, over {len(ious)} classes; "
      f"pixel accuracy {100 * (guess == truth).float().mean():.1f}%")
# The same number. Pixel accuracy weighs classes by their pixels, so predicting the large background class
# everywhere scores well; mIoU gives each class present the same weight, and a class predicted where it is not
# (FP) lowers its IoU as much as a class missed (FN).
