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


def auroc_per_class(scores, labels) -> np.ndarray:
    """Area under the ROC curve of each class, on known labels only.

    As :func:`sklearn.metrics.roc_auc_score` on the known entries of each class (a tie between
    a positive and a negative counts one half).

    Args:
        scores: ``(N, C)`` real scores.
        labels: ``(N, C)`` with 1 / 0 / -1 (or NaN).

    Returns:
        ``(C,)`` float64 in [0, 1]; NaN for a class whose known labels lack a positive or a negative.
    """
    from sklearn.metrics import roc_auc_score

    scores, labels = _check_scores(scores, labels)
    auc = np.full(labels.shape[1], np.nan)
    for c in _defined_classes(labels):
        known = labels[:, c] >= 0
        auc[c] = roc_auc_score(labels[known, c], scores[known, c])
    return auc


def mean_auroc(scores, labels) -> float:
    """Mean over classes of :func:`auroc_per_class` (classes with NaN skipped), in %."""
    auc = auroc_per_class(scores, labels)
    if np.isnan(auc).all():
        raise ValueError("mean AUROC is undefined: no class has both a known positive and a known negative")
    return float(np.nanmean(auc) * 100.0)


def undefined_classes(labels) -> dict:
    """The classes ranking metrics must leave out: ``{class index: reason}``.

    A class needs a known positive and a known negative for AP and AUROC; the reason is
    ``'no known label'``, ``'no known positive'`` or ``'no known negative'``.

    Args:
        labels: ``(N, C)`` with 1 / 0 / -1 (or NaN).
    """
    labels = check_partial_labels(labels, name="labels")
    out = {}
    for c in range(labels.shape[1]):
        pos, neg = bool((labels[:, c] == 1).any()), bool((labels[:, c] == 0).any())
        if not (pos and neg):
            out[c] = "no known label" if not (pos or neg) else ("no known negative" if pos else "no known positive")
    return out


def partial_label_metrics(scores, labels, *, classes=None) -> dict:
    """mAP, mean AUROC and their per-class values on a partially labelled split.

    Only known entries count (-1 never does); a class without a known positive or without a
    known negative is left out of both means and listed in ``left_out`` with the reason.

    Args:
        scores: ``(N, C)`` real scores (logits or probabilities).
        labels: ``(N, C)`` with 1 / 0 / -1 (or NaN).
        classes: ``C`` class names for ``left_out`` (default: the indices).

    Returns:
        ``{"mAP": %, "mAUROC": %, "AP": (C,), "AUROC": (C,), "num_classes": the number of classes
        averaged, "left_out": {class name or index: reason}}``; the means are NaN when no class
        is defined.
    """
    scores, labels = _check_scores(scores, labels)
    if classes is not None and len(classes) != labels.shape[1]:
        raise ValueError(f"{len(classes)} class names for {labels.shape[1]} classes")
    ap, auc = average_precision_per_class(scores, labels), auroc_per_class(scores, labels)
    defined = ~np.isnan(ap)
    names = list(range(labels.shape[1])) if classes is None else list(classes)
    return {
        "mAP": float(ap[defined].mean() * 100.0) if defined.any() else float("nan"),
        "mAUROC": float(auc[defined].mean() * 100.0) if defined.any() else float("nan"),
        "AP": ap,
        "AUROC": auc,
        "num_classes": int(defined.sum()),
        "left_out": {names[c]: why for c, why in undefined_classes(labels).items()},
    }


def _check_scores(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = check_partial_labels(labels, name="labels")
    if scores.shape != labels.shape:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must have the same shape")
    if not np.isfinite(scores).all():
        raise ValueError("scores hold NaN or infinite values")
    return scores, labels


def _defined_classes(labels: np.ndarray) -> list[int]:
    return [c for c in range(labels.shape[1]) if (labels[:, c] == 1).any() and (labels[:, c] == 0).any()]


def top1_accuracy(scores, targets) -> float:
    """Top-1 accuracy in %: ``scores (N, C)``, ``targets (N,)`` class ids."""
    scores = np.asarray(scores)
    targets = np.asarray(targets)
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"expected scores (N, C) and targets (N,), got {scores.shape} and {targets.shape}")
    return float((scores.argmax(1) == targets).mean() * 100.0)
