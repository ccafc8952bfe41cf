"""Uncertainty of accuracy differences: the paired bootstrap over evaluation images.

Two models evaluated on the same ``N`` images give per-image correctness ``a, b`` of shape ``(N,)``
(or ``(S, N)`` over ``S`` seeds, averaged per image first). Resampling the *images* with replacement,
the same resample for both models, gives the distribution of the accuracy difference that another
draw of val images would show; its 2.5 and 97.5 percentiles are the 95% interval.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Estimate:
    """An accuracy (or difference) in percent with its 95% bootstrap interval."""

    value: float
    low: float
    high: float

    def __str__(self) -> str:
        return f"{self.value:.1f} [{self.low:.1f}, {self.high:.1f}]"

    @property
    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


def _per_image(correct: Tensor) -> Tensor:
    """``(N,)`` or ``(S, N)`` correctness -> ``(N,)`` float, averaged over seeds."""
    correct = torch.as_tensor(correct).float()
    if correct.dim() == 2:
        correct = correct.mean(dim=0)
    if correct.dim() != 1 or correct.numel() == 0:
        raise ValueError(f"correctness must be shaped (N,) or (seeds, N) with N >= 1, got {tuple(correct.shape)}")
    return correct


def bootstrap_mean(values: Tensor, resamples: int = 10_000, seed: int = 0) -> Estimate:
    """Mean of per-image ``values (N,)`` with the 2.5 and 97.5 percentiles of its bootstrap distribution."""
    values = torch.as_tensor(values).double()
    generator = torch.Generator().manual_seed(seed)
    index = torch.randint(len(values), (resamples, len(values)), generator=generator)
    low, high = torch.quantile(values[index].mean(dim=1), torch.tensor([0.025, 0.975], dtype=torch.double)).tolist()
    return Estimate(values.mean().item(), low, high)


def bootstrap_accuracy(correct: Tensor, resamples: int = 10_000, seed: int = 0) -> Estimate:
    """Top-1 in percent of per-image ``correct`` ``(N,)`` / ``(S, N)``, with a 95% bootstrap interval."""
    return bootstrap_mean(_per_image(correct) * 100.0, resamples, seed)


def paired_bootstrap(correct_a: Tensor, correct_b: Tensor, resamples: int = 10_000, seed: int = 0) -> Estimate:
    """Accuracy of ``a`` minus accuracy of ``b`` in points, with a 95% paired bootstrap interval over images:
    each resample draws the same images for both."""
    a, b = _per_image(correct_a), _per_image(correct_b)
    if a.shape != b.shape:
        raise ValueError(f"paired correctness must cover the same images, got {tuple(a.shape)} and {tuple(b.shape)}")
    return bootstrap_mean((a - b) * 100.0, resamples, seed)
