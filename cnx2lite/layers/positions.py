"""Which positions of each sample count, for the per-sample statistics inside a block's MLP (GRN, and the modules that
can take its place in :mod:`cnx2lite.layers.block_norm`).

A dense model passes nothing (:class:`AllPositions`: every position of a map ``(N, H, W, C)``). The sparse backends
of :mod:`cnx2lite.sparse` pass where the visible positions are, so that masked ones never enter a statistic:
:class:`MaskedPositions` for dense maps whose masked positions hold garbage, :class:`TokenPositions` for a flat
matrix of visible tokens ``(M, C)``. Each gives per-sample sums and maxima, the way back from per-sample values to
every position (:meth:`expand`), and, for a module that convolves over space (CBAM), the features as a map with zeros
at masked positions (:meth:`to_map`) and back (:meth:`from_map`): exactly what a submanifold sparse conv sees.
"""
from __future__ import annotations

import torch
from torch import Tensor


class AllPositions:
    """Dense maps ``(N, H, W, C)``: statistics over all positions, ``(N, 1, 1, C)``, which broadcast."""

    def sum(self, x: Tensor) -> Tensor:
        return x.sum(dim=(1, 2), keepdim=True)

    def amax(self, x: Tensor) -> Tensor:
        return x.amax(dim=(1, 2), keepdim=True)

    def expand(self, values: Tensor) -> Tensor:
        return values

    def to_map(self, x: Tensor) -> Tensor:
        return x

    def from_map(self, x: Tensor) -> Tensor:
        return x


class MaskedPositions(AllPositions):
    """Dense maps whose masked positions hold garbage: statistics over positions where ``visible``
    ``(N, H, W, 1)`` is 1."""

    def __init__(self, visible: Tensor) -> None:
        self.visible = visible

    def sum(self, x: Tensor) -> Tensor:
        return super().sum(x * self.visible)

    def amax(self, x: Tensor) -> Tensor:
        return super().amax(x.masked_fill(self.visible == 0, float("-inf")))

    def to_map(self, x: Tensor) -> Tensor:
        return x * self.visible


class TokenPositions:
    """A flat set of visible tokens ``(M, C)`` sorted by sample, ``lengths[n]`` of them for sample
    ``n``: statistics ``(N, C)``, expanded back to ``(M, C)`` by :meth:`expand`. Equal lengths (the
    usual case: every FCMAE mask keeps the same number of cells) take a faster reshape path.
    ``coords`` ``(M, 3)`` (sample, row, column of each token) and ``size`` ``(H, W)`` place the tokens
    on a map, for :meth:`to_map`; or ``visible`` ``(N, H, W)`` bool, the tokens being its True positions in
    row-major order, turned into coordinates only when a module asks (no device sync otherwise)."""

    def __init__(self, lengths: Tensor, coords: Tensor | None = None, size: tuple[int, int] | None = None,
                 visible: Tensor | None = None) -> None:
        self.lengths = lengths
        self.uniform = bool((lengths == lengths[0]).all())
        self._coords, self.visible = coords, visible
        self.size = tuple(visible.shape[1:]) if visible is not None else size

    @property
    def coords(self) -> Tensor | None:
        if self._coords is None and self.visible is not None:
            self._coords = self.visible.nonzero()
        return self._coords

    def _reduce(self, x: Tensor, how: str) -> Tensor:
        if self.uniform:
            grouped = x.view(len(self.lengths), -1, x.shape[-1])
            return grouped.sum(dim=1) if how == "sum" else grouped.amax(dim=1)
        return torch.segment_reduce(x, how, lengths=self.lengths, axis=0)

    def sum(self, x: Tensor) -> Tensor:
        return self._reduce(x, "sum")

    def amax(self, x: Tensor) -> Tensor:
        return self._reduce(x, "max")

    def expand(self, values: Tensor) -> Tensor:
        """Per-sample ``(N, C)`` -> per-token ``(M, C)``."""
        if self.uniform:
            n, c = values.shape
            return values.unsqueeze(1).expand(n, int(self.lengths[0]), c).reshape(-1, c)
        return values.repeat_interleave(self.lengths, dim=0)

    def to_map(self, x: Tensor) -> Tensor:
        """Tokens ``(M, C)`` -> map ``(N, H, W, C)``, zero at masked positions."""
        if self.coords is None or self.size is None:
            raise ValueError("these token positions carry no coordinates: this backend cannot convolve over space "
                             "inside a block")
        sample, row, col = self.coords.unbind(1)
        return x.new_zeros(len(self.lengths), *self.size, x.shape[-1]).index_put((sample, row, col), x)

    def from_map(self, x: Tensor) -> Tensor:
        """Map ``(N, H, W, C)`` -> the tokens' rows ``(M, C)``."""
        sample, row, col = self.coords.unbind(1)
        return x[sample, row, col]


Positions = AllPositions | TokenPositions
