"""Uncertainty of accuracies and their differences: the (paired, two-level) bootstrap.

Two models evaluated on the same ``N`` val images give per-image correctness ``a, b`` of shape ``(N,)``,
or ``(S, N)`` for ``S`` training seeds. A bootstrap resample draws ``N`` images with replacement and,
with several seeds, ``S`` seeds with replacement, the *same* draw for both models (paired); the mean
over the drawn seeds and images is one resampled value. Its 2.5 and 97.5 percentiles over
``RESAMPLES`` draws are the 95% interval: how much the number would move with other val images (and
other training seeds). Seed ``s`` of ``a`` is paired with seed ``s`` of ``b`` (same data order).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

RESAMPLES = 10_000


@dataclass(frozen=True)
class Estimate:
    """A mean (an accuracy or a difference, in percent) with its 95% bootstrap interval."""

    value: float
    low: float
    high: float

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
    return values


def bootstrap_mean(values: Tensor, resamples: int = RESAMPLES, seed: int = 0, chunk: int = 500) -> Estimate:
    """Mean of per-image ``values`` ``(N,)`` or ``(S, N)`` with its 95% interval, resampling images and seeds."""
    values = _seeds_by_images(values)
    s, n = values.shape
    generator = torch.Generator().manual_seed(seed)
    means = []
    for start in range(0, resamples, chunk):  # bounded memory: chunk x N indices at a time
        size = min(chunk, resamples - start)
        seeds = torch.randint(s, (size, s), generator=generator)  # (size, S)
        images = torch.randint(n, (size, n), generator=generator)  # (size, N)
        per_image = values[seeds].mean(dim=1)  # (size, N): the drawn seeds' mean, per image
        means.append(per_image.gather(1, images).mean(dim=1))
    low, high = torch.quantile(torch.cat(means), torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
    return Estimate(values.mean().item(), low, high)


def bootstrap_accuracy(correct: Tensor, resamples: int = RESAMPLES, seed: int = 0) -> Estimate:
    """Top-1 in percent of per-image ``correct`` ``(N,)`` / ``(S, N)``, with a 95% bootstrap interval."""
    return bootstrap_mean(_seeds_by_images(correct) * 100.0, resamples, seed)


def paired_bootstrap(correct_a: Tensor, correct_b: Tensor, resamples: int = RESAMPLES, seed: int = 0) -> Estimate:
    """Accuracy of ``a`` minus accuracy of ``b`` in points, with a 95% paired bootstrap interval: each resample
    draws the same images (and seeds) for both."""
    a, b = _seeds_by_images(correct_a), _seeds_by_images(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"paired correctness must cover the same seeds and images, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    return bootstrap_mean((a - b) * 100.0, resamples, seed)
