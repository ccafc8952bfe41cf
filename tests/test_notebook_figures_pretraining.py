"""Notebook 5's baselines and anatomy (cnx2lite.notebook.pretraining_figures): what a norm-pix loss is compared with
must itself be right."""
from __future__ import annotations

import pytest
import torch
from torch.utils.data import TensorDataset

from cnx2lite.fcmae import FCMAE, patchify
from cnx2lite.masking import random_mask
from cnx2lite.notebook import anatomy
from cnx2lite.notebook import pretraining_figures as pf
from cnx2lite.train.seeding import derive_seed
from cnx2lite.train.tasks import seeded_masks

D = 32 * 32 * 3


@pytest.fixture(scope="module")
def small_fcmae() -> FCMAE:
    torch.manual_seed(0)
    return FCMAE("convnextv2_atto", decoder_dim=16).eval()


def test_patch_mean_baseline_is_zero_on_a_constant_patch_and_about_one_otherwise():
    flat = torch.full((1, 3, 64, 64), 0.3)
    target = pf.normalized_patches(flat)  # (1, 4, D)
    mask = torch.ones(1, 2, 2, dtype=torch.bool)
    assert target.abs().max() == 0
    assert pf.masked_patch_losses(pf.zero_prediction(target), target, mask).max() == 0

    noisy = pf.normalized_patches(torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)))
    losses = pf.masked_patch_losses(pf.zero_prediction(noisy), noisy, torch.ones(2, 2, 2, dtype=torch.bool))
    # mean square of a normalized patch: (D - 1) / D, as torch's variance divides by D - 1
    assert torch.allclose(losses, torch.full_like(losses, (D - 1) / D), atol=1e-5)


def test_masked_patch_losses_score_masked_patches_only():
    target = torch.zeros(1, 4, D)
    pred = torch.zeros(1, 4, D)
    pred[0, 0] = 5.0  # wrong only on a visible patch
    mask = torch.tensor([[[False, True], [True, False]]])
    losses = pf.masked_patch_losses(pred, target, mask)
    assert losses.shape == (2,) and losses.max() == 0


def test_nearest_visible_copies_the_closest_visible_cell_first_in_row_major_order():
    target = torch.arange(9.0).view(1, 9, 1).expand(1, 9, 4).clone()  # cell i holds the value i
    mask = torch.ones(1, 3, 3, dtype=torch.bool)
    mask[0, 0, 0] = mask[0, 0, 2] = False  # visible: cells 0 and 2
    source = pf.nearest_visible_prediction(target, mask)[0, :, 0]
    # visible cells copy themselves; cell 1 is as close to 0 as to 2: the first wins; 5 and 8 are nearer to 2
    assert source.tolist() == [0, 0, 2, 0, 0, 2, 0, 0, 2]


def test_loss_comparison_reproduces_the_model_loss_on_the_engine_masks(small_fcmae):
    imgs = torch.randn(6, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    dataset = TensorDataset(imgs, torch.zeros(6, dtype=torch.long))
    config = {"amp": "fp32", "batch_size": 4, "seed": 3, "img_size": 64, "mask_ratio": 0.6}
    result = pf.loss_comparison(small_fcmae, dataset, config)
    expected = []
    for index, batch in enumerate(imgs.split(4)):
        seeds = torch.tensor([derive_seed(3, "mask", index, i) for i in range(len(batch))])
        mask = seeded_masks(seeds, 64, 0.6, batch.device)
        with torch.no_grad():
            expected.append(small_fcmae(batch, mask)[0] * int(mask.sum()))
    total_masked = len(result.model)
    assert result.images == 6 and len(result.patch_mean) == len(result.nearest_visible) == total_masked
    assert result.means()["FCMAE model"] == pytest.approx((sum(expected) / total_masked).item(), rel=1e-5)
    assert result.means()["predict the patch mean (0)"] == pytest.approx((D - 1) / D, abs=1e-4)


def test_parameter_counts_add_up_and_decoder_steps_end_in_patches(small_fcmae):
    counts = anatomy.parameter_counts(small_fcmae)
    assert sum(counts.values()) == sum(p.numel() for p in small_fcmae.parameters())
    assert counts["decoder mask token"] == 16
    imgs = torch.zeros(2, 3, 64, 64)
    mask = random_mask(2, 64, 0.6, generator=torch.Generator().manual_seed(0))
    steps = anatomy.decoder_steps(small_fcmae, imgs, mask)
    assert steps[1][1] == (2, 320, 2, 2) and steps[-1][1] == (2, 4, D)
    assert sum(params for _, _, params in steps) == sum(counts.values())
    assert patchify(imgs).shape == steps[-1][1]


def test_recipe_table_reads_the_presets():
    rows = {row[0]: row[1:] for row in anatomy.recipe_table()}
    assert rows["image size (px)"] == ("96", "96", "224")
    assert rows["mask grid (32 px cells)"][2] == "7x7 (30 masked, 19 visible)"
    assert rows["decoder width x depth"][2] == "512 x 1"


def test_figures_have_titles_and_legends(small_fcmae):
    imgs = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    mask = random_mask(2, 64, 0.6, generator=torch.Generator().manual_seed(0))
    fig = pf.plot_normalized_reconstructions(small_fcmae, imgs, mask, "recon")
    assert fig.legends and fig.get_suptitle() == "recon"
    budget = anatomy.plot_parameter_budget({"small": anatomy.parameter_counts(small_fcmae)}, "budget")
    assert budget.axes[0].get_legend() is not None and budget.axes[0].get_xlabel()
    assert anatomy.plot_block_diagrams().axes[0].get_legend() is not None


def test_knn_curve_reads_the_epochs_that_measured_it():
    history = [{"kind": "train", "epoch": "0.5", "val_loss": "", "knn_top1": ""},
               {"kind": "epoch", "epoch": "1.0", "val_loss": "", "knn_top1": ""},
               {"kind": "epoch", "epoch": "2.0", "val_loss": "0.8", "knn_top1": "30.0"}]
    assert pf.epoch_series(history, "knn_top1") == ([2.0], [30.0])
    assert pf.top1_standard_error(50.0, 100) == pytest.approx(5.0)
    fig = pf.plot_knn_curve({"run": history}, val_images=100, title="knn")
    assert fig.get_suptitle() == "knn" and all(ax.get_xlabel() and ax.get_ylabel() for ax in fig.axes)
    assert fig.axes[0].get_legend() is not None


def test_reconstruction_explorer_reads_the_loss_of_the_view_it_shows(small_fcmae):
    from cnx2lite.notebook.widgets import reconstruction_explorer

    imgs = torch.randn(3, 3, 96, 96, generator=torch.Generator().manual_seed(4))
    explorer = reconstruction_explorer(small_fcmae, imgs, seed=1)
    (image_w, seed_w), (ratio_w,) = explorer.children[0].children, explorer.children[1].children
    assert ratio_w.value == 0.6 and max(ratio_w.options) == 0.85  # a 3x3 grid keeps one cell visible up to 0.85

    def loss(i: int, seed: int, ratio: float) -> float:
        mask = random_mask(1, 96, ratio, generator=torch.Generator().manual_seed(seed))
        with torch.no_grad():
            return small_fcmae(imgs[i:i + 1], mask)[0].item()

    assert explorer.text.startswith(f"loss {loss(0, 1, 0.6):.3f} on the 6 masked of 9 cells")
    image_w.value, seed_w.value, ratio_w.value = 2, 7, 0.3  # each change redraws
    assert explorer.text.startswith(f"loss {loss(2, 7, 0.3):.3f} on the 3 masked of 9 cells")
    assert bytes(explorer.figure.value).startswith(b"\x89PNG")
