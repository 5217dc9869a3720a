"""The two query streams of CleanNet training: verified batches and class-balanced unverified ones."""
from __future__ import annotations

import torch

from labelwise.errors import DataError


class EpochBatches:
    """Batches of ``batch_size`` indices from ``0 .. n - 1``, reshuffled at every pass.

    A batch that runs past the end of a pass is completed from the start of the next one (as
    the reference code's data batcher does), so every batch is full and every sample is seen
    once per pass.
    """

    def __init__(self, n: int, batch_size: int, *, generator: torch.Generator):
        if n < 1:
            raise DataError("no verified training sample: CleanNet needs some verified queries")
        self.n, self.batch_size, self.generator = int(n), int(batch_size), generator
        self._order = torch.randperm(self.n, generator=generator)
        self._pos = 0

    def next(self) -> torch.Tensor:
        parts, need = [], self.batch_size
        while need:
            if self._pos == self.n:
                self._order = torch.randperm(self.n, generator=self.generator)
                self._pos = 0
            take = min(need, self.n - self._pos)
            parts.append(self._order[self._pos:self._pos + take])
            self._pos += take
            need -= take
        return torch.cat(parts)

    def state_dict(self) -> dict:
        return {"order": self._order.clone(), "pos": self._pos}

    def load_state_dict(self, state: dict) -> None:
        self._order, self._pos = state["order"].clone(), int(state["pos"])


class ClassBalancedBatches:
    """Class-balanced sampling: a class uniformly at random (among the classes that have
    samples), then a sample of that class uniformly at random, independently per draw.

    Args:
        labels: ``(N,)`` int64 class ids of the pool.
        batch_size: draws per batch.
        generator: the random source.
    """

    def __init__(self, labels: torch.Tensor, batch_size: int, *, generator: torch.Generator):
        labels = torch.as_tensor(labels, dtype=torch.int64)
        if labels.numel() == 0:
            raise DataError("the unverified pool is empty: nothing to sample class-balanced batches from")
        order = torch.argsort(labels, stable=True)
        self.classes, counts = torch.unique(labels, return_counts=True)
        self.order, self.counts = order, counts
        self.starts = torch.cumsum(counts, 0) - counts
        self.batch_size, self.generator = int(batch_size), generator

    def next(self) -> torch.Tensor:
        """Indices ``(batch_size,)`` into the pool."""
        c = torch.randint(len(self.classes), (self.batch_size,), generator=self.generator)
        offset = (torch.rand(self.batch_size, generator=self.generator, dtype=torch.float64)
                  * self.counts[c]).long().clamp_max(self.counts[c] - 1)
        return self.order[self.starts[c] + offset]
