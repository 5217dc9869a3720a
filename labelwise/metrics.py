"""Evaluation metrics in the project's label convention (numpy in, floats out)."""
from __future__ import annotations

import numpy as np

from labelwise.labels import check_partial_labels


def average_precision_per_class(scores, labels) -> np.ndarray:
    """Average precision of each class, on known labels only.

    Step-wise AP with tied scores grouped, as :func:`sklearn.metrics.average_precision_score`
    computes it (mmpretrain's ``AveragePrecision`` does not group ties).

    Args:
        scores: ``(N, C)`` real scores (logits or probabilities; only their order matters).
        labels: ``(N, C)`` with 1 / 0 / -1 (or NaN) = positive / negative / unknown.

    Returns:
        ``(C,)`` float64; NaN for a class whose known labels lack a positive or a negative.
    """
    from sklearn.metrics import average_precision_score

    scores = np.asarray(scores, dtype=np.float64)
    labels = check_partial_labels(labels, name="labels")
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must have the same shape")
    ap = np.full(labels.shape[1], np.nan)
    for c in range(labels.shape[1]):
        known = labels[:, c] >= 0
        y = labels[known, c]
        if y.min(initial=1) == 0 and y.max(initial=0) == 1:
            ap[c] = average_precision_score(y, scores[known, c])
    return ap


def mean_average_precision(scores, labels) -> float:
    """Mean over classes of :func:`average_precision_per_class` (classes with NaN AP skipped), in %."""
    ap = average_precision_per_class(scores, labels)
    if np.isnan(ap).all():
        raise ValueError("mAP is undefined: no class has both a known positive and a known negative")
    return float(np.nanmean(ap) * 100.0)


def top1_accuracy(scores, targets) -> float:
    """Top-1 accuracy in %: ``scores (N, C)``, ``targets (N,)`` class ids."""
    scores = np.asarray(scores)
    targets = np.asarray(targets)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"expected scores (N, C) and targets (N,), got {scores.shape} and {targets.shape}")
    return float((scores.argmax(1) == targets).mean() * 100.0)
