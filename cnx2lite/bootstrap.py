"""Uncertainty of accuracies and their differences: the paired, hierarchical bootstrap.

Two models evaluated on the same ``N`` val images give per-image correctness ``a, b`` of shape ``(N,)``,
or ``(S, N)`` for ``S`` training seeds. A bootstrap resample draws ``N`` images with replacement and,
with several seeds, ``S`` seeds with replacement, the *same* draw for both models (paired); the mean
over the drawn seeds and images is one resampled value. Its 2.5 and 97.5 percentiles over
``RESAMPLES`` draws are the 95% interval: how much the number would move with other val images (and
other training seeds). Seed ``s`` of ``a`` is paired with seed ``s`` of ``b`` (same data order).

Replicated self-supervised experiments nest one level deeper: ``P`` pretraining runs, ``S`` fine-tuning
seeds from each, all scored on the same ``N`` val images, a ``(P, S, N)`` tensor per method (a method
without pretraining, scratch, is naturally ``(1, S, N)``). :func:`hierarchical_bootstrap_mean` resamples
every level in turn: ``P`` pretraining runs with replacement, ``S`` fine-tuning seeds with replacement
within each drawn run, then ``N`` images with replacement (one image draw per resample, shared by all
runs, since every run is scored on the same images). Each level answers its own question:

* images alone answer "do *these* trained models differ on new images from the same distribution?";
  run-to-run noise (a lucky pretraining run, a lucky fine-tuning seed) is then fixed, not uncertain;
* fine-tuning seeds add "... and would fine-tuning these pretrained weights again still give it?";
* pretraining runs add "would the *method* win when rerun from scratch?", the claim a paper makes.
  An interval without the run levels can exclude zero for a difference that is only one lucky run.

:func:`hierarchical_paired_difference` always shares the image draw between the two methods (same val
images: the per-image pairing removes the images' shared difficulty). It shares the run draws too only
when the runs are really paired (``paired_runs``, e.g. both arms fine-tuned the same pretraining runs),
which needs equal shapes; otherwise (FCMAE ``(2, 3, N)`` vs scratch ``(1, 3, N)``) each method's runs are
drawn independently, and with ``paired_seeds`` the fine-tuning seeds once for all: where seed ``s`` of every
run of every arm trained on the same labeled images in the same order, the seeds are a block factor crossed
with runs and arms, and a lucky labeled subset lifts both arms instead of widening their difference. With
``P = 1`` the hierarchical bootstrap is the ``(S, N)`` bootstrap above, draw for draw (:func:`bootstrap_mean`).

Two known biases pull in opposite directions. With few runs the run levels are estimated too small:
resampling ``P`` runs with replacement gives ``(P - 1) / P`` of their variance, and an interval over
two runs can only be as wide as their disagreement. And the runs and images are crossed, not nested
(every run sees every image), so each resampled level counts the run-by-image disagreement (runs that
differ image by image without shifting the accuracy) once more, like the "pigeonhole" bootstrap of
crossed designs (McCullagh 2000; Owen 2007): when that is all that differs, the interval is about twice
as wide as it needs to be; conservative. In the synthetic experiments of ``tests/test_bootstrap.py``
(pretraining runs shift accuracy by 3 points, seeds by 1) the 95% interval of a true zero difference,
FCMAE ``(3, 3, N)`` vs scratch ``(1, 3, N)``, covered 0 in 94% of them, the images-only one in 69%.
Report each run's number as well (:class:`RunSpread`, ``Estimate.runs``: "31.2..35.4"), so a reader sees
the spread behind the interval.

A statistic of all images together (an effective rank, a split's mIoU or AP: no per-image value to average) is
resampled by weighting: :func:`image_counts` says how often each resample draws each image, the statistic is
recomputed on every weighting (:class:`Resampled`), and :func:`resampled_contrast` draws the runs on top.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

RESAMPLES = 10_000
_GATHER_ELEMENTS = 1 << 24  # numbers gathered at once (128 MiB of float64)
_SHAPE = "(P, S, N) = (pretraining runs, fine-tuning seeds per run, val images)"


@dataclass(frozen=True)
class RunSpread:
    """Each run's own mean (accuracy in percent, or a difference in points), over its ``N`` images, in
    (pretraining run, fine-tuning seed) order: ``P * S`` numbers. ``str`` gives "min..max"."""

    values: tuple[float, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))
        if not self.values:
            raise ValueError("RunSpread needs at least one run's value")

    @property
    def min(self) -> float:
        return min(self.values)

    @property
    def max(self) -> float:
        return max(self.values)

    def __len__(self) -> int:
        return len(self.values)

    def __str__(self) -> str:
        return f"{self.min:.1f}..{self.max:.1f}"


@dataclass(frozen=True)
class Estimate:
    """A mean (an accuracy or a difference, in percent) with its 95% bootstrap interval, and, from the
    hierarchical bootstrap, each run's own number (``runs``; ``None`` from the ``(S, N)`` functions)."""

    value: float
    low: float
    high: float
    runs: RunSpread | None = None

    def __str__(self) -> str:
        return f"{self.value:.1f} [{self.low:.1f}, {self.high:.1f}]"

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _seeds_by_images(values: Tensor) -> Tensor:
    """``(N,)`` or ``(S, N)`` -> ``(S, N)`` float64."""
    values = torch.as_tensor(values).double()
    if values.dim() == 1:
        values = values[None]
    if values.dim() != 2 or values.numel() == 0:
        raise ValueError(f"values must be shaped (N,) or (seeds, N) with N >= 1, got {tuple(values.shape)}")
    if not torch.isfinite(values).all():
        raise ValueError("values hold nan or inf: a mean and its interval are undefined")
    return values


def _runs_by_seeds_by_images(values: Tensor, name: str) -> Tensor:
    """``(P, S, N)`` -> ``(P, S, N)`` float64, or a one-line ValueError naming the argument ``name``."""
    values = torch.as_tensor(values)
    if values.dim() != 3 or values.numel() == 0:
        raise ValueError(f"{name} must be shaped {_SHAPE}, each >= 1, got {tuple(values.shape)} "
                         f"(for a single pretraining run, add a leading axis: x[None])")
    if not torch.isfinite(values.double()).all():
        raise ValueError(f"{name} holds nan or inf: a mean and its interval are undefined")
    return values.double()


def _correctness(values: Tensor, name: str) -> Tensor:
    """``values`` when they are per-image correctness (bool, 0/1, or a share of runs in [0, 1]), else a one-line
    ValueError naming ``name``: a percentage would be read as a correctness and its "accuracy" come out in the
    thousands."""
    values = torch.as_tensor(values)
    if values.dtype != torch.bool and not ((values >= 0) & (values <= 1)).all():
        raise ValueError(f"{name} must hold per-image correctness (bool, or in [0, 1]), got values from "
                         f"{values.min().item():g} to {values.max().item():g}")
    return values


def _draw_runs(runs: int, seeds: int, size: int, generator: torch.Generator, drawn: Tensor | None = None) -> Tensor:
    """``(size, P * S)`` flat (run, seed) indices ``run * S + seed`` drawn by ``size`` resamples: ``P`` runs
    with replacement, then ``S`` seeds with replacement within each drawn run (or ``drawn (size, S)`` in all).

    With ``P = 1`` the run draw (always run 0) is skipped, so the generator advances exactly as in the
    ``(S, N)`` bootstrap and both give the same numbers for a seed.
    """
    picked = (torch.randint(seeds, (size, runs, seeds), generator=generator) if drawn is None
              else drawn[:, None, :].expand(size, runs, seeds))  # (size, P, S)
    if runs > 1:
        picked = torch.randint(runs, (size, runs, 1), generator=generator) * seeds + picked
    return picked.view(size, runs * seeds)


def _drawn_mean(values: Tensor, picked: Tensor) -> Tensor:
    """``(size, N)``: per image, the mean of ``values`` ``(P, S, N)`` over the drawn runs ``picked``
    ``(size, P * S)``; gathered ``_GATHER_ELEMENTS`` numbers at a time."""
    p, s, n = values.shape
    rows, block = values.reshape(p * s, n), max(1, _GATHER_ELEMENTS // (p * s * n))
    return torch.cat([rows[picked[i:i + block]].mean(dim=1) for i in range(0, len(picked), block)])


def _resampled(arms: Sequence[Tensor], resamples: int, seed: int, chunk: int, share_runs: bool = False,
               share_images: bool = True, weights: Sequence[float] | None = None, share_seeds: bool = False) -> Tensor:
    """``(resamples,)`` resampled values of ``sum(weights[i] * mean(arms[i]))``: the mean of one arm (default weights
    ``(1,)``), a difference ``(1, -1)`` or any contrast; each arm ``(P, S, N)`` float64. ``share_runs`` draws the runs
    once for all arms (equal shapes), ``share_seeds`` the seeds (equal ``S``), ``share_images`` the images."""
    if resamples < 2 or chunk < 1:
        raise ValueError(f"resamples must be >= 2 (the interval of one resample has no width) and chunk >= 1, got "
                         f"{resamples} and {chunk}")
    if share_seeds and len({arm.shape[1] for arm in arms}) != 1:
        raise ValueError(f"paired seeds need as many fine-tuning seeds in every arm, got {[a.shape[1] for a in arms]}")
    weights = (1.0, -1.0)[:len(arms)] if weights is None else tuple(weights)
    generator = torch.Generator().manual_seed(seed)
    n = arms[0].shape[-1]
    draws = []
    for start in range(0, resamples, chunk):  # bounded memory: a few chunk x N tensors at a time
        size = min(chunk, resamples - start)
        per_image, picked = [], None
        seed_draw = torch.randint(arms[0].shape[1], (size, arms[0].shape[1]), generator=generator) if (
            share_seeds and not share_runs) else None
        for arm in arms:
            if picked is None or not share_runs:
                picked = _draw_runs(arm.shape[0], arm.shape[1], size, generator, seed_draw)
            per_image.append(_drawn_mean(arm, picked))  # (size, N): the drawn runs' mean, per image
        if share_images:
            images = torch.randint(n, (size, n), generator=generator)  # (size, N)
            value = sum(w * x for w, x in zip(weights, per_image))
            draws.append(value.gather(1, images).mean(dim=1))
        else:
            means = [x.gather(1, torch.randint(n, (size, n), generator=generator)).mean(dim=1) for x in per_image]
            draws.append(sum(w * m for w, m in zip(weights, means)))
    return torch.cat(draws)


def _interval(draws: Tensor) -> tuple[float, float]:
    low, high = torch.quantile(draws, torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
    return low, high


def _spread(values: Tensor) -> RunSpread:
    """Each run's mean over the images of ``(P, S, N)`` ``values``."""
    return RunSpread(values.mean(dim=2).flatten().tolist())


def hierarchical_bootstrap_mean(values: Tensor, resamples: int = RESAMPLES, seed: int = 0,
                                chunk: int = 500) -> Estimate:
    """Mean of per-image ``values`` ``(P, S, N)`` with its 95% interval, resampling pretraining runs, then
    fine-tuning seeds within each drawn run, then images (see the module docstring). ``runs`` holds each
    (run, seed)'s mean. Memory is bounded by ``chunk`` resamples of ``N`` at a time."""
    values = _runs_by_seeds_by_images(values, "values")
    low, high = _interval(_resampled([values], resamples, seed, chunk))
    return Estimate(values.mean().item(), low, high, _spread(values))


def hierarchical_accuracy(correct: Tensor, resamples: int = RESAMPLES, seed: int = 0) -> Estimate:
    """Top-1 in percent of per-image ``correct`` ``(P, S, N)``, with a 95% hierarchical bootstrap interval and
    each run's top-1 (``runs``, e.g. printed as "31.2..35.4")."""
    correct = _runs_by_seeds_by_images(_correctness(correct, "correct"), "correct")
    return hierarchical_bootstrap_mean(correct * 100.0, resamples, seed)


def hierarchical_paired_difference(correct_a: Tensor, correct_b: Tensor, resamples: int = RESAMPLES, seed: int = 0,
                                   paired_runs: bool | None = None, paired_images: bool = True,
                                   chunk: int = 500, paired_seeds: bool = False) -> Estimate:
    """Accuracy of ``a`` minus accuracy of ``b`` in points, with a 95% hierarchical bootstrap interval.

    ``correct_a`` ``(Pa, Sa, N)`` and ``correct_b`` ``(Pb, Sb, N)``: per-image correctness of each method's
    runs on the same ``N`` val images. The image draw is shared by both (``paired_images=False`` draws
    them independently, as if the methods had been scored on different images: only for comparison).
    ``paired_runs`` (default: the shapes are equal) also shares the run and seed draws, for runs that are
    truly paired (seed ``s`` of both used the same labeled subset); ``runs`` then holds each pair's
    difference. Unpaired, each method's runs are drawn independently and ``runs`` is ``None``: take each
    method's spread from :func:`hierarchical_accuracy`. ``paired_seeds`` shares only the fine-tuning seed draw
    (equal ``S``; see the module docstring).
    """
    a = _runs_by_seeds_by_images(_correctness(correct_a, "correct_a"), "correct_a") * 100.0
    b = _runs_by_seeds_by_images(_correctness(correct_b, "correct_b"), "correct_b") * 100.0
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"correct_a and correct_b must score the same N val images, got N={a.shape[-1]} and "
                         f"N={b.shape[-1]}")
    if paired_runs is None:
        paired_runs = a.shape == b.shape
    if paired_runs and a.shape != b.shape:
        raise ValueError(f"paired_runs needs correct_a and correct_b of the same {_SHAPE} shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if paired_runs and paired_images:  # the resampled difference is the resampled mean of per-image differences
        return hierarchical_bootstrap_mean(a - b, resamples, seed, chunk)
    draws = _resampled([a, b], resamples, seed, chunk, paired_runs, paired_images, share_seeds=paired_seeds)
    low, high = _interval(draws)
    runs = _spread(a - b) if paired_runs else None
    return Estimate(a.mean().item() - b.mean().item(), low, high, runs)


def hierarchical_contrast(values: Sequence[Tensor], weights: Sequence[float], resamples: int = RESAMPLES,
                          seed: int = 0, chunk: int = 500, paired_seeds: bool = False) -> Estimate:
    """``sum(weights[i] * mean(values[i]))`` over several methods' per-image ``values`` ``(Pi, Si, N)`` (the same
    ``N`` val images; correctness times 100 for accuracies in percent), with a 95% hierarchical bootstrap interval:
    each method's runs are drawn on their own, the images (and with ``paired_seeds`` the seeds) once for all. For
    example the co-design interaction, (V2 FCMAE - V2 scratch) - (V1 FCMAE - V1 scratch): ``weights=(1, -1, -1, 1)``."""
    if len(values) != len(weights) or not values:
        raise ValueError(f"values and weights must be as long and not empty, got {len(values)} and {len(weights)}")
    arms = [_runs_by_seeds_by_images(v, f"values[{i}]") for i, v in enumerate(values)]
    if len({arm.shape[-1] for arm in arms}) != 1:
        raise ValueError(f"every method must score the same N val images, got N={[arm.shape[-1] for arm in arms]}")
    low, high = _interval(_resampled(arms, resamples, seed, chunk, weights=weights, share_seeds=paired_seeds))
    return Estimate(sum(w * arm.mean().item() for w, arm in zip(weights, arms)), low, high)


def bootstrap_mean(values: Tensor, resamples: int = RESAMPLES, seed: int = 0, chunk: int = 500) -> Estimate:
    """Mean of per-image ``values`` ``(N,)`` or ``(S, N)`` with its 95% interval, resampling images and seeds:
    :func:`hierarchical_bootstrap_mean` with one pretraining run (``P = 1``)."""
    estimate = hierarchical_bootstrap_mean(_seeds_by_images(values)[None], resamples, seed, chunk)
    return Estimate(estimate.value, estimate.low, estimate.high)


def bootstrap_accuracy(correct: Tensor, resamples: int = RESAMPLES, seed: int = 0) -> Estimate:
    """Top-1 in percent of per-image ``correct`` ``(N,)`` / ``(S, N)``, with a 95% bootstrap interval."""
    return bootstrap_mean(_seeds_by_images(_correctness(correct, "correct")) * 100.0, resamples, seed)


def paired_bootstrap(correct_a: Tensor, correct_b: Tensor, resamples: int = RESAMPLES, seed: int = 0) -> Estimate:
    """Accuracy of ``a`` minus accuracy of ``b`` in points, with a 95% paired bootstrap interval: each resample
    draws the same images (and seeds) for both."""
    a, b = (_seeds_by_images(_correctness(c, name)) for c, name in ((correct_a, "correct_a"), (correct_b, "correct_b")))
    if a.shape != b.shape:
        raise ValueError(f"paired correctness must cover the same seeds and images, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return bootstrap_mean((a - b) * 100.0, resamples, seed)


# ------------------------------------------------------------------------ statistics of the whole image sample
def image_counts(images: int, resamples: int, seed: int = 0) -> Tensor:
    """``(resamples, images)`` float64: how many times each of ``images`` images is drawn (with replacement) by each
    bootstrap resample; every row sums to ``images``. Weights to recompute a statistic of the whole sample on; give
    the same counts to every method scored on the same images, so that their contrasts are paired by image."""
    if images < 1 or resamples < 1:
        raise ValueError(f"images and resamples must be >= 1, got {images} and {resamples}")
    picked = torch.randint(images, (resamples, images), generator=torch.Generator().manual_seed(seed))
    return torch.zeros(resamples, images, dtype=torch.float64).scatter_add_(1, picked, torch.ones_like(picked).double())


@dataclass(frozen=True)
class Resampled:
    """A statistic (any shape ``S``, e.g. one value per layer) of ``P`` runs scored on the same images: ``value``
    ``(P, *S)`` on the images as they are, ``draws`` ``(B, P, *S)`` recomputed on the ``B`` weightings of
    :func:`image_counts`."""

    value: Tensor
    draws: Tensor

    def __post_init__(self) -> None:
        if self.draws.dim() < 2 or self.draws.shape[1:] != self.value.shape:
            raise ValueError(f"draws must be shaped (resamples, *value.shape) = (B, {tuple(self.value.shape)}), got "
                             f"{tuple(self.draws.shape)}")

    @classmethod
    def mean_of(cls, values: Tensor, counts: Tensor) -> Resampled:
        """The mean over images of per-image ``values`` ``(P, N, *S)``, resampled by ``counts`` ``(B, N)``."""
        values = values.double()
        drawn = torch.einsum("bn,pn...->bp...", counts, values) / counts.shape[1]
        return cls(values.mean(dim=1), drawn)


def resampled_contrast(arms: Sequence[Resampled], weights: Sequence[float] = (1.0,),
                       seed: int = 0, paired_runs: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """``sum(weights[i] * mean over runs of arms[i])``, shape ``S``, with its 95% interval ``(value, low, high)``.
    Each resample draws every arm's ``P`` runs with replacement, on their own (with ``paired_runs``, once for all
    arms: run ``p`` of every arm is one block, e.g. trained on the same data in the same order), and takes their draws
    on that resample's images (the same images for every arm: the arms must share the :func:`image_counts`).

    The interval is the normal bootstrap one, ``value +- 1.96 * sd`` of the resampled values: a statistic of the whole
    sample is biased on a resample (an effective rank drops: a duplicated image adds no direction), so the interval is
    centred on the value as measured, its width from the draws' spread, which few resamples (an effective rank's 50)
    estimate more steadily than 2.5% tails: how much the value would move with as many other runs and images."""
    if len(arms) != len(weights) or not arms:
        raise ValueError(f"arms and weights must be as long and not empty, got {len(arms)} and {len(weights)}")
    if len(resamples := {arm.draws.shape[0] for arm in arms}) != 1:
        raise ValueError(f"every arm must be resampled on the same image draws, got {sorted(resamples)} resamples")
    if paired_runs and len({arm.value.shape[0] for arm in arms}) != 1:
        raise ValueError(f"paired runs need as many runs in every arm, got {[arm.value.shape[0] for arm in arms]}")
    generator, drawn, picked = torch.Generator().manual_seed(seed), 0.0, None
    value = sum(w * arm.value.mean(dim=0) for w, arm in zip(weights, arms))
    for w, arm in zip(weights, arms):
        if picked is None or not paired_runs:
            b, p = arm.draws.shape[:2]
            picked = torch.randint(p, (b, p), generator=generator) if p > 1 else torch.zeros(b, 1, dtype=torch.long)
        runs = arm.draws[torch.arange(b)[:, None], picked]  # (B, P, *S): the drawn runs on each resample's images
        drawn = drawn + w * runs.mean(dim=1)
    half_width = 1.96 * drawn.std(dim=0) if len(drawn) > 1 else torch.zeros_like(value)
    return value, value - half_width, value + half_width
