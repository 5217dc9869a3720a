"""CleanNet weights for plain PyTorch and timm: a dataset wrapper and a weighted criterion."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from labelwise.errors import ConfigError, DataError
from labelwise.plugins.cleannet.scorefile import read_scores
from labelwise.plugins.cleannet.scoring import sample_weights
from labelwise.utils.targets import check_soft_targets, check_weights

NORMALIZATIONS = ("weight_sum", "batch")


def weighted_cross_entropy(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, *,
                           normalize: str = "weight_sum") -> torch.Tensor:
    """``sum_i w_i * CE(logits_i, target_i) / Z`` with ``Z = sum_i w_i`` or ``N``.

    Args:
        logits: ``(N, C)``.
        target: ``(N,)`` class ids, or ``(N, C)`` soft targets (the weight multiplies the
            per-sample soft-target loss).
        weight: ``(N,)`` per-sample weights >= 0.
        normalize: ``'weight_sum'`` (default: hard weights equal training on the kept samples;
            an all-zero batch gives 0) or ``'batch'`` (divide by ``N``).
    """
    if normalize not in NORMALIZATIONS:
        raise ConfigError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
    check_weights(weight, name="weighted_cross_entropy")
    if target.dim() == 2:
        check_soft_targets(target, name="weighted_cross_entropy")
    per_sample = F.cross_entropy(logits, target, reduction="none")
    weight = weight.to(per_sample.dtype)
    denom = weight.sum().clamp_min(1e-12) if normalize == "weight_sum" else float(len(weight))
    return (weight * per_sample).sum() / denom


class WeightedCrossEntropy(nn.Module):
    """Criterion for ``(logits, {'target': ..., 'weight': ...})`` pairs, as
    :class:`WeightedDataset` yields; a plain tensor target means weight 1 for every sample.

    Use it as a ``timm.task.ClassificationTask``'s criterion or in your own loop.
    """

    def __init__(self, *, normalize: str = "weight_sum"):
        super().__init__()
        if normalize not in NORMALIZATIONS:
            raise ConfigError(f"normalize must be one of {', '.join(NORMALIZATIONS)}, got {normalize!r}")
        self.normalize = normalize

    def forward(self, logits: torch.Tensor, target) -> torch.Tensor:
        if isinstance(target, dict):
            return weighted_cross_entropy(logits, target["target"], target["weight"], normalize=self.normalize)
        return weighted_cross_entropy(logits, target, torch.ones(len(logits), device=logits.device),
                                      normalize=self.normalize)


class WeightedDataset(torch.utils.data.Dataset):
    """Wrap an ``(input, target)`` dataset so items become ``(input, {'target', 'weight'})``.

    Args:
        dataset: the wrapped dataset.
        ids: the id of each item (e.g. ``DigitScenesDataset.ids``).
        score_file: a CleanNet score file; every id must have a row.
        mode: ``'file'`` (the ``weight`` column), ``'hard'`` or ``'soft'`` (recomputed).
        threshold: for ``'hard'`` weights and for ``drop``.
        drop: keep only samples with weight > 0 (hard mode drops suspected noise).

    Raises:
        DataError: an id has no row in the score file (the message names it).
    """

    def __init__(self, dataset, *, ids, score_file, mode: str = "file", threshold: float | None = None,
                 drop: bool = False):
        if len(ids) != len(dataset):
            raise DataError(f"{len(ids)} ids for a dataset of {len(dataset)} items")
        table = read_scores(score_file)
        index = table.index()
        missing = [i for i in ids if i not in index]
        if missing:
            raise DataError(f"score file {score_file} has no row for {len(missing)} samples, e.g. {missing[0]!r}")
        rows = np.array([index[i] for i in ids], dtype=np.int64)
        if mode == "file":
            weights = table.weights[rows]
        elif mode in ("hard", "soft"):
            weights = sample_weights(table.scores[rows], mode=mode, threshold=threshold)
        else:
            raise ConfigError(f"mode must be one of file, hard, soft, got {mode!r}")
        self.dataset = dataset
        self.weights = np.asarray(weights, dtype=np.float32)
        self.indices = np.flatnonzero(self.weights > 0) if drop else np.arange(len(dataset))

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        i = int(self.indices[index])
        x, target = self.dataset[i]
        return x, {"target": torch.as_tensor(target), "weight": torch.tensor(float(self.weights[i]))}
