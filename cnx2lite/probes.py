"""How good an encoder is, per val image: classifier predictions, weighted kNN, a linear probe.

Self-supervised encoders are judged without fine-tuning by two cheap probes on frozen features
(as the DINO and lightly monitors do):

1. *features*: the encoder's last stage map ``(N, C4, h, w)``, globally average pooled to
   ``(N, C4)``, then layer-normalized without affine parameters (what the classifier's own head
   norm does before its Linear);
2. *kNN*: each val image votes among its ``k`` most cosine-similar labeled training images,
   weighted by ``exp(similarity / temperature)``;
3. *linear probe*: a multinomial logistic regression on standardized cached features, trained
   full-batch with L-BFGS (seconds for thousands of images).

Every function returns per-image results, so two encoders can be compared with the paired
bootstrap of :mod:`cnx2lite.bootstrap`.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from .amp import autocast

PROBE_METHODS = ("knn", "linear")
KNN_K, KNN_TEMPERATURE = 20, 0.07  # as the DINO and lightly kNN monitors


class ProbeWarning(UserWarning):
    """A probe ran other than asked (e.g. fewer neighbours than k): the command line prints it as one line."""


@torch.no_grad()
def _map_batches(model: nn.Module, fn: Callable[[Tensor], Tensor], dataset: Dataset, batch_size: int,
                 device: str | torch.device, amp_dtype: torch.dtype, num_workers: int) -> tuple[Tensor, Tensor]:
    """``fn(images)`` over ``dataset`` in order, ``model`` in eval mode (its mode restored after):
    ``(outputs (N, D) float32, labels (N,))``."""
    device = torch.device(device)
    was_training = model.training
    model.eval()
    outputs, labels = [], []
    try:
        for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers):
            with autocast(device, amp_dtype):
                outputs.append(fn(images.to(device)).float().cpu())
            labels.append(torch.as_tensor(targets))
    finally:
        model.train(was_training)
    return torch.cat(outputs), torch.cat(labels)


def pooled_features(encoder: nn.Module, images: Tensor) -> Tensor:
    """``images (N, 3, H, W)`` -> pooled, layer-normalized features ``(N, C4)`` of a ConvNeXt encoder."""
    pooled = encoder.forward_features(images).float().mean(dim=(-2, -1))
    return F.layer_norm(pooled, pooled.shape[-1:])


def extract_features(encoder: nn.Module, dataset: Dataset, batch_size: int = 128, device: str | torch.device = "cpu",
                     amp_dtype: torch.dtype = torch.float32, num_workers: int = 0) -> tuple[Tensor, Tensor]:
    """Frozen features of every image of a labeled ``dataset``: ``(features (N, C4), labels (N,))``."""
    return _map_batches(encoder, lambda x: pooled_features(encoder, x), dataset, batch_size, device, amp_dtype,
                        num_workers)


def predict(model: nn.Module, dataset: Dataset, batch_size: int = 128, device: str | torch.device = "cpu",
            amp_dtype: torch.dtype = torch.float32, num_workers: int = 0) -> tuple[Tensor, Tensor]:
    """A classifier's logits on every image of ``dataset``: ``(logits (N, classes), labels (N,))``."""
    return _map_batches(model, model, dataset, batch_size, device, amp_dtype, num_workers)


def knn_scores(bank: Tensor, bank_labels: Tensor, queries: Tensor, num_classes: int, k: int = KNN_K,
               temperature: float = KNN_TEMPERATURE, chunk: int = 1024) -> Tensor:
    """Weighted kNN class scores ``(Q, num_classes)`` of ``queries (Q, D)`` against a labeled
    ``bank (B, D)``: cosine similarity, the ``k`` nearest vote with weight ``exp(sim / temperature)``, computed as
    ``exp((sim - max sim) / temperature)``: each query's scores scaled by one factor, so the vote is the same and a
    small temperature cannot overflow float32 (``exp(1 / 0.01)`` would)."""
    if k < 1 or not 0 < temperature < math.inf:  # inf: every weight 1, an unweighted vote that says nothing
        raise ValueError(f"k must be >= 1 and temperature a finite number > 0, got k={k}, temperature={temperature}")
    bank, queries = F.normalize(bank.float(), dim=1), F.normalize(queries.float(), dim=1)
    if k > len(bank):
        warnings.warn(ProbeWarning(f"k={k} is more than the {len(bank)} labeled images of the memory bank: all "
                                   f"{len(bank)} vote"), stacklevel=2)
        k = len(bank)
    scores = []
    for start in range(0, len(queries), chunk):
        similarity, index = (queries[start:start + chunk] @ bank.T).topk(k, dim=1)  # (q, k), most similar first
        weights = ((similarity - similarity[:, :1]) / temperature).exp()  # exp(sim / T), scaled per query: <= 1
        votes = torch.zeros(len(index), num_classes)
        votes.scatter_add_(1, bank_labels[index], weights)
        scores.append(votes)
    return torch.cat(scores)


def linear_probe_scores(train_x: Tensor, train_y: Tensor, queries: Tensor, num_classes: int,
                        weight_decay: float = 1e-4, max_iter: int = 300) -> Tensor:
    """Logits ``(Q, num_classes)`` of a logistic regression fit on ``(train_x (N, D), train_y (N,))``.

    Features are standardized with the training mean and std; L2 penalty ``weight_decay`` on the
    weights; full-batch L-BFGS (deterministic: no sampling)."""
    mean, std = train_x.mean(dim=0), train_x.std(dim=0) + 1e-6
    x, q = (train_x - mean) / std, (queries - mean) / std
    linear = nn.Linear(x.shape[1], num_classes)
    nn.init.zeros_(linear.weight)
    nn.init.zeros_(linear.bias)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=max_iter, history_size=20,
                                  line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(x), train_y) + weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return linear(q)


@dataclass
class ProbeResult:
    """Top-1 of a probe on a val split, with per-image correctness for paired comparisons."""

    method: str
    top1: float  # percent
    correct: Tensor  # (N,) bool, val images in dataset order
    train_images: int

    def __str__(self) -> str:
        return f"{self.method} top-1 {self.top1:.2f}% on {len(self.correct)} val images ({self.train_images} labeled)"


def probe_features(method: str, train_x: Tensor, train_y: Tensor, val_x: Tensor, val_y: Tensor, num_classes: int,
                   k: int = KNN_K, temperature: float = KNN_TEMPERATURE) -> ProbeResult:
    """kNN or linear probe on cached features ``(N, D)`` with labels ``(N,)``."""
    if method not in PROBE_METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, PROBE_METHODS))}; got {method!r}")
    if method == "knn":
        scores = knn_scores(train_x, train_y, val_x, num_classes, k, temperature)
    else:
        scores = linear_probe_scores(train_x, train_y, val_x, num_classes)
    correct = scores.argmax(dim=1).eq(val_y)
    return ProbeResult(method, correct.float().mean().item() * 100.0, correct, len(train_y))


def probe(encoder: nn.Module, train_set: Dataset, val_set: Dataset, num_classes: int, method: str = "knn",
          batch_size: int = 128, device: str | torch.device = "cpu", amp_dtype: torch.dtype = torch.float32,
          num_workers: int = 0, k: int = KNN_K, temperature: float = KNN_TEMPERATURE) -> ProbeResult:
    """kNN or linear probe of a frozen ``encoder``: ``train_set`` gives the labeled features, ``val_set`` the
    queries."""
    train_x, train_y = extract_features(encoder, train_set, batch_size, device, amp_dtype, num_workers)
    val_x, val_y = extract_features(encoder, val_set, batch_size, device, amp_dtype, num_workers)
    return probe_features(method, train_x, train_y, val_x, val_y, num_classes, k, temperature)


# --------------------------------------------------------------------------------------------------
# cnx2lite probe
# --------------------------------------------------------------------------------------------------
