"""The bootstrap of ``cnx2lite.bootstrap``: the hierarchical bootstrap over (pretraining runs, fine-tuning seeds, val
images) on synthetic replicated experiments, and the (seeds, images) functions' numbers, unchanged."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor

from cnx2lite import bootstrap
from cnx2lite.bootstrap import (
    Estimate,
    RunSpread,
    bootstrap_accuracy,
    bootstrap_mean,
    hierarchical_accuracy,
    hierarchical_bootstrap_mean,
    hierarchical_paired_difference,
    paired_bootstrap,
)

pytestmark = pytest.mark.usefixtures("one_thread")

D = torch.double


def synthetic_runs(g: torch.Generator, difficulty: Tensor, pretraining_runs: int, seeds: int, run_sd: float = 0.0,
                   seed_sd: float = 0.0, disagree: float = 0.0, shift: Tensor | float = 0.0) -> Tensor:
    """``(P, S, N)`` correctness of a method's runs on images of ``difficulty`` ``(N,)`` in [0, 1].

    Run ``(p, s)`` has ability ``0.6 + u_p + v_ps + shift``: ``u_p ~ N(0, run_sd)`` for its pretraining run,
    ``v_ps ~ N(0, seed_sd)`` for its fine-tuning seed (0.01 is one point of accuracy); ``shift`` ``(P, S, 1)``
    is a part shared with another method's run ``(p, s)`` (paired runs). It gets image ``i`` right when
    ``difficulty[i]`` plus its own noise on that image (sd ``disagree``: runs disagree image by image) is below
    its ability. The expected accuracy is the same for every method: a true zero effect.
    """
    ability = (0.6 + run_sd * torch.randn(pretraining_runs, 1, 1, generator=g, dtype=D)
               + seed_sd * torch.randn(pretraining_runs, seeds, 1, generator=g, dtype=D) + shift)
    noise = disagree * torch.randn(pretraining_runs, seeds, difficulty.shape[-1], generator=g, dtype=D)
    return difficulty + noise < ability


def width(estimate: Estimate) -> float:
    return estimate.high - estimate.low


def images_only(a: Tensor, b: Tensor, resamples: int, seed: int) -> Estimate:
    """What a single-level analysis does: the paired image bootstrap of each image's mean over all runs."""
    return paired_bootstrap(a.double().mean(dim=(0, 1)), b.double().mean(dim=(0, 1)), resamples, seed)


# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("design", ["fcmae_vs_scratch", "paired_runs"])
def test_interval_covers_a_true_zero_effect_and_images_only_does_not(design):
    """200 synthetic experiments with no true difference but run-to-run noise: the hierarchical 95% interval
    covers 0 about 95% of the time; the images-only interval, blind to the run noise, much less often."""
    g = torch.Generator().manual_seed(0)
    experiments, covered, covered_images_only = 200, 0, 0
    for e in range(experiments):
        difficulty = torch.rand(200, generator=g, dtype=D)
        if design == "fcmae_vs_scratch":  # (3, 3, N) vs (1, 3, N): pretraining runs shift by 3 points, seeds by 1
            a = synthetic_runs(g, difficulty, 3, 3, run_sd=0.03, seed_sd=0.01, disagree=0.1)
            b = synthetic_runs(g, difficulty, 1, 3, seed_sd=0.01, disagree=0.1)
        else:  # (4, 3, N) twice, run (p, s) of both shares a 3 + 1 point shift (same data), plus its own 2 + 1
            shared = (0.03 * torch.randn(4, 1, 1, generator=g, dtype=D)
                      + 0.01 * torch.randn(4, 3, 1, generator=g, dtype=D))
            a, b = (synthetic_runs(g, difficulty, 4, 3, 0.02, 0.01, 0.1, shared) for _ in range(2))
        diff = hierarchical_paired_difference(a, b, resamples=1000, seed=e)
        covered += not diff.excludes_zero
        covered_images_only += not images_only(a, b, 1000, e).excludes_zero
    coverage, coverage_images_only = covered / experiments, covered_images_only / experiments
    assert 0.88 <= coverage <= 0.99, (coverage, coverage_images_only)
    assert coverage_images_only < 0.80 and coverage - coverage_images_only > 0.15, (coverage, coverage_images_only)


def test_pairing_narrows_the_interval():
    g = torch.Generator().manual_seed(1)
    # images: both methods find the same images hard, so the per-image difference cancels most of it
    difficulty = torch.rand(500, generator=g, dtype=D)
    a = synthetic_runs(g, difficulty, 3, 3, run_sd=0.005, seed_sd=0.005, disagree=0.1)
    b = synthetic_runs(g, difficulty, 1, 3, seed_sd=0.005, disagree=0.1)
    paired = hierarchical_paired_difference(a, b, resamples=2000)
    unpaired = hierarchical_paired_difference(a, b, resamples=2000, paired_images=False)
    assert paired.value == unpaired.value == pytest.approx(100 * (a.double().mean() - b.double().mean()).item())
    assert paired.runs is None  # runs of different shapes have no per-run difference
    assert width(paired) < 0.5 * width(unpaired), (paired, unpaired)
    # runs: run (p, s) of both methods shares a large shift (same labeled subset, same data order)
    shared = 0.05 * torch.randn(4, 3, 1, generator=g, dtype=D)
    a, b = (synthetic_runs(g, difficulty, 4, 3, 0.01, 0.005, 0.05, shared) for _ in range(2))
    paired_runs = hierarchical_paired_difference(a, b, resamples=2000)  # paired by default: equal shapes
    unpaired_runs = hierarchical_paired_difference(a, b, resamples=2000, paired_runs=False)
    assert width(paired_runs) < 0.7 * width(unpaired_runs), (paired_runs, unpaired_runs)
    assert len(paired_runs.runs) == 12 and unpaired_runs.runs is None
    assert paired_runs.runs.values == pytest.approx((100 * (a.double() - b.double()).mean(dim=2)).flatten().tolist())


@pytest.mark.parametrize("seed_effect", ["shared", "own"])
def test_paired_seeds_cover_a_true_zero_effect_and_narrow_it_where_seeds_share_their_labeled_images(seed_effect):
    """FCMAE (2, 3, N) vs scratch (1, 3, N), no true difference. Seed s of both fine-tunes on the same labeled images,
    which shift both by 3 points ("shared"), or each arm's seeds shift it by 2 points of its own ("own": the pairing
    must stay valid). Drawing the seeds once for both arms keeps the interval's coverage of 0 (the crossed design's
    double counting makes it conservative: measured 1.00 and 0.94 on 100 experiments) and, where the seeds share a
    shift, narrows it (measured: 0.75 of the width with each arm's seeds drawn on their own)."""
    g = torch.Generator().manual_seed(2)
    experiments, covered, ratios = 100, 0, []
    for e in range(experiments):
        difficulty = torch.rand(200, generator=g, dtype=D)
        shared = 0.03 * torch.randn(1, 3, 1, generator=g, dtype=D) if seed_effect == "shared" else 0.0
        seed_sd = 0.005 if seed_effect == "shared" else 0.02
        a = synthetic_runs(g, difficulty, 2, 3, run_sd=0.01, seed_sd=seed_sd, disagree=0.05, shift=shared)
        b = synthetic_runs(g, difficulty, 1, 3, seed_sd=seed_sd, disagree=0.05, shift=shared)
        paired = hierarchical_paired_difference(a, b, resamples=1000, seed=e, paired_seeds=True)
        unpaired = hierarchical_paired_difference(a, b, resamples=1000, seed=e)
        assert paired.value == unpaired.value
        covered += not paired.excludes_zero
        ratios.append(width(paired) / width(unpaired))
    median = torch.tensor(ratios).median().item()
    assert covered / experiments >= 0.88, (covered / experiments, median)
    assert median < 0.8 if seed_effect == "shared" else 0.9 < median < 1.15, (covered / experiments, median)
    with pytest.raises(ValueError, match=r"paired seeds need as many fine-tuning seeds in every arm, got \[3, 2\]"):
        hierarchical_paired_difference(a, b[:, :2], resamples=10, paired_seeds=True)


def test_run_levels_widen_the_interval_only_with_run_noise():
    """Nesting: without run-to-run shifts the hierarchical interval is the images-only one; with large shifts
    it is several times wider."""
    def ratio(run_sd: float, own_difficulty: float, disagree: float, seed: int) -> float:
        g = torch.Generator().manual_seed(seed)
        difficulty = torch.rand(1000, generator=g, dtype=D)
        other = difficulty + own_difficulty * torch.randn(1000, generator=g, dtype=D)  # b's own hard images
        a = synthetic_runs(g, difficulty, 4, 3, run_sd, run_sd / 3, disagree)
        b = synthetic_runs(g, other, 4, 3, run_sd, run_sd / 3, disagree)
        diff = hierarchical_paired_difference(a, b, resamples=2000, seed=seed, paired_runs=False)
        return width(diff) / width(images_only(a, b, 2000, seed))

    for seed in (0, 1):
        assert 0.8 < ratio(0.0, 0.3, 0.0, seed) < 1.25  # all runs identical: only the images vary
        assert 0.8 < ratio(0.0, 0.3, 0.03, seed) < 1.25  # runs differ on a few images, methods on many
        assert ratio(0.1, 0.3, 0.03, seed) > 2.5  # pretraining runs shift accuracy by 10 points, seeds by 3
        # Known and documented: when runs differ only image by image (no shifts) and the methods alike, every
        # resampled level counts that run-by-image noise again, about 4x its variance: a 2x wider interval.
        assert 1.5 < ratio(0.0, 0.0, 0.1, seed) < 2.5


def test_deterministic_for_a_seed_and_clear_errors():
    g = torch.Generator().manual_seed(2)
    difficulty = torch.rand(300, generator=g, dtype=D)
    a = synthetic_runs(g, difficulty, 2, 3, 0.03, 0.01, 0.1)
    b = synthetic_runs(g, difficulty, 1, 3, 0.0, 0.01, 0.1)
    first, again = (hierarchical_paired_difference(a, b, resamples=500, seed=3) for _ in range(2))
    assert first == again
    other = hierarchical_paired_difference(a, b, resamples=500, seed=4)
    assert other.value == first.value and (other.low, other.high) != (first.low, first.high)
    assert abs(other.low - first.low) < 2 and abs(other.high - first.high) < 2  # only slightly
    assert hierarchical_accuracy(a, 500, 3) == hierarchical_accuracy(a, 500, 3)
    assert hierarchical_accuracy(a, 500, 3) != hierarchical_accuracy(a, 500, 4)

    def fails(match: str, call, *args, **kwargs) -> None:
        with pytest.raises(ValueError, match=match) as error:
            call(*args, **kwargs)
        assert "\n" not in str(error.value)

    fails(r"^values must be shaped \(P, S, N\)", hierarchical_bootstrap_mean, torch.zeros(3, 5))
    fails(r"^values must be shaped \(P, S, N\).*got \(2, 0, 5\)", hierarchical_bootstrap_mean, torch.zeros(2, 0, 5))
    fails(r"^correct must be shaped \(P, S, N\)", hierarchical_accuracy, torch.zeros(5))
    fails(r"^correct_a must be shaped \(P, S, N\).*got \(3, 300\)", hierarchical_paired_difference, a[0], b)
    fails(r"^correct_b must be shaped \(P, S, N\)", hierarchical_paired_difference, a, torch.zeros(1, 1, 1, 300))
    fails(r"^correct_a and correct_b must score the same N val images, got N=300 and N=299",
          hierarchical_paired_difference, a, b[..., :-1])
    fails(r"^paired_runs needs correct_a and correct_b of the same \(P, S, N\).*\(2, 3, 300\) and \(1, 3, 300\)",
          hierarchical_paired_difference, a, b, paired_runs=True)
    fails(r"^resamples must be >= 2 \(the interval of one resample has no width\)", hierarchical_accuracy, a, 0)
    fails(r"^resamples must be >= 2", hierarchical_accuracy, a, 1)


def test_estimate_and_run_spread():
    old = Estimate(1.25, -0.5, 3.0)  # Estimate stays as it was: three numbers, same text, same test
    assert (str(old), old.runs, old.excludes_zero, Estimate(1, 2, 3) == Estimate(1, 2, 3)) == (
        "1.2 [-0.5, 3.0]", None, False, True)
    spread = RunSpread([35.44, 31.2, 33.0])
    assert (spread.min, spread.max, str(spread), len(spread), spread.values) == (
        31.2, 35.44, "31.2..35.4", 3, (35.44, 31.2, 33.0))
    hash(Estimate(1.0, 0.0, 2.0, spread))  # frozen and hashable, like Estimate
    with pytest.raises(ValueError, match="at least one"):
        RunSpread([])
    correct = torch.zeros(2, 2, 10)
    correct[0, 0, :3], correct[0, 1, :4], correct[1, 0, :6], correct[1, 1, :5] = 1, 1, 1, 1
    top1 = hierarchical_accuracy(correct, resamples=200)
    assert top1.runs.values == pytest.approx((30.0, 40.0, 60.0, 50.0)) and str(top1.runs) == "30.0..60.0"
    assert top1.value == pytest.approx(45.0) and str(top1).startswith("45.0 [")


# ---------------------------------------------------------------------------------------------------------------
def fixed_inputs() -> tuple[Tensor, Tensor, Tensor]:
    """Inputs built without a random generator: ``a, b`` ``(3, 300)`` bool, ``x`` ``(2, 150)`` float64."""
    i, s = torch.arange(300), torch.arange(3)[:, None]
    a = ((i * 7919 + s * 104729) % 100) < 70
    b = ((i * 6007 + s * 15485863 + 11) % 100) < 60
    x = ((i[:150] * 37 + torch.arange(2)[:, None] * 101) % 97).double() / 97
    return a, b, x


def test_seed_by_image_functions_give_the_numbers_they_always_gave():
    """Expected numbers computed by the (S, N) code before the hierarchical bootstrap was added."""
    a, b, x = fixed_inputs()
    expected = {
        "acc_seeds": (bootstrap_accuracy(a, resamples=1234, seed=5), (70.0, 66.66666666666667, 73.33333333333333)),
        "acc_one": (bootstrap_accuracy(a[0]), (70.0, 64.66666666666667, 75.0)),
        "diff_seeds": (paired_bootstrap(a, b, resamples=2000, seed=3), (10.0, 4.888888888888889, 15.0)),
        "diff_one": (paired_bootstrap(a[1], b[1]), (10.0, 2.0, 17.666666666666668)),
        "mean_float": (bootstrap_mean(x, resamples=777, seed=11, chunk=100),
                       (0.49147766323024056, 0.44691408934707905, 0.5348109965635739)),
    }
    for name, (got, want) in expected.items():
        assert (got.value, got.low, got.high) == pytest.approx(want, abs=1e-9), name
        assert got.runs is None, name
    # the (S, N) bootstrap is the hierarchical one with P = 1, draw for draw
    same = hierarchical_bootstrap_mean(x[None], resamples=777, seed=11, chunk=100)
    assert (same.value, same.low, same.high) == expected["mean_float"][1]
    same = hierarchical_paired_difference(a[None], b[None], resamples=2000, seed=3)
    assert (same.value, same.low, same.high) == expected["diff_seeds"][1]
    assert str(same.runs) == "10.0..10.0"  # each seed's difference (these inputs are regular)


def test_memory_blocks_do_not_change_the_numbers(monkeypatch):
    a, b, _ = fixed_inputs()
    a, b = a.view(3, 1, 300).expand(3, 2, 300) ^ (torch.arange(300) % 7 == 0), b[None]
    whole = hierarchical_paired_difference(a, b, resamples=300, seed=1, chunk=120)
    seeds = bootstrap_mean(b[0] * 1.0, resamples=300, seed=2)  # (S, N) = (3, 300)
    monkeypatch.setattr(bootstrap, "_GATHER_ELEMENTS", 5000)  # a few resamples' gather at a time
    assert hierarchical_paired_difference(a, b, resamples=300, seed=1, chunk=120) == whole
    assert bootstrap_mean(b[0] * 1.0, resamples=300, seed=2) == seeds


def test_contrast_is_the_unpaired_difference_and_covers_a_true_zero_interaction():
    """``hierarchical_contrast`` with weights (1, -1) gives the unpaired difference's numbers draw for draw; the
    co-design interaction (1, -1, -1, 1) of four methods with no true effect covers 0 about 95% of the time."""
    g = torch.Generator().manual_seed(1)
    difficulty = torch.rand(300, generator=g, dtype=D)
    a = synthetic_runs(g, difficulty, 2, 3, run_sd=0.03, seed_sd=0.01, disagree=0.1)
    b = synthetic_runs(g, difficulty, 1, 3, seed_sd=0.01, disagree=0.1)
    difference = hierarchical_paired_difference(a, b, resamples=500, seed=3)
    contrast = bootstrap.hierarchical_contrast([a * 100.0, b * 100.0], (1, -1), resamples=500, seed=3)
    assert (contrast.value, contrast.low, contrast.high) == pytest.approx(
        (difference.value, difference.low, difference.high), abs=1e-12)
    experiments, covered = 120, 0
    for e in range(experiments):
        difficulty = torch.rand(200, generator=g, dtype=D)
        arms = [synthetic_runs(g, difficulty, p, 3, run_sd=0.03 if p > 1 else 0.0, seed_sd=0.01, disagree=0.1)
                for p in (2, 1, 2, 1)]  # V2 FCMAE, V2 scratch, V1 FCMAE, V1 scratch
        covered += not bootstrap.hierarchical_contrast([arm * 1.0 for arm in arms], (1, -1, -1, 1), resamples=500,
                                                    seed=e).excludes_zero
    assert 0.85 <= covered / experiments <= 0.99, covered / experiments  # measured: 0.92 (2 runs: a bit narrow)
    with pytest.raises(ValueError, match="as long"):
        bootstrap.hierarchical_contrast([a, b], (1,))


def test_a_percentage_is_not_taken_for_a_correctness():
    from cnx2lite.bootstrap import bootstrap_accuracy, hierarchical_accuracy, paired_bootstrap
    with pytest.raises(ValueError, match="correct must hold per-image correctness .* from 50 to 100"):
        bootstrap_accuracy(torch.tensor([50.0, 80.0, 100.0]))
    with pytest.raises(ValueError, match="correct_b must hold per-image correctness"):
        paired_bootstrap(torch.tensor([1, 0]), torch.tensor([50.0, 100.0]))
    with pytest.raises(ValueError, match="correct must hold"):
        hierarchical_accuracy(torch.full((1, 1, 3), 2.0))
    assert bootstrap_accuracy(torch.tensor([True, False, True, True]), resamples=10).value == 75.0


def test_nan_is_refused_not_averaged():
    from cnx2lite.bootstrap import bootstrap_mean, hierarchical_bootstrap_mean
    with pytest.raises(ValueError, match="values hold nan or inf"):
        bootstrap_mean(torch.tensor([1.0, float("nan"), 2.0]))
    with pytest.raises(ValueError, match="values holds nan or inf"):
        hierarchical_bootstrap_mean(torch.full((1, 1, 3), float("inf")))
