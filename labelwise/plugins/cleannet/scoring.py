"""Scoring with a trained CleanNet: relevance per sample, the threshold, and per-sample weights."""
from __future__ import annotations

import math

import numpy as np
import torch

from labelwise.errors import ConfigError, DataError
from labelwise.plugins.cleannet.config import DEFAULT_THRESHOLD

#: How a relevance score becomes a training weight: ``'hard'`` = ``1[s >= threshold]``
#: (drop suspected noise), ``'soft'`` = ``max(0, s)``.
WEIGHT_MODES = ("hard", "soft")


def check_features(features, labels, *, num_classes: int | None = None, norm: str = "log",
                   name: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Validate ``features (N, D)`` and ``labels (N,)``; return them as float32 / int64 arrays.

    Raises:
        DataError: wrong shapes, non-finite features, a label out of range, or negative
            features with ``norm='log'`` (``log(1 + x)`` needs ``x > -1``; pooled ReLU features
            are ``>= 0``: extract features before any signed projection, or use ``norm='l2'``).
    """
    features = np.asarray(features, dtype=np.float32)
    labels = np.asarray(labels)
    if features.ndim != 2:
        raise DataError(f"{name}: expected a 2-D (N, D) feature array, got shape {features.shape}")
    if labels.shape != (features.shape[0],):
        raise DataError(f"{name}: expected {features.shape[0]} labels, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{name}: labels must be integer class ids, got dtype {labels.dtype}")
    if not np.isfinite(features).all():
        row = int(np.argwhere(~np.isfinite(features))[0, 0])
        raise DataError(f"{name}: feature row {row} holds NaN or infinity")
    if labels.size and labels.min() < 0:
        raise DataError(f"{name}: labels must be >= 0, got {labels.min()}")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise DataError(f"{name}: label {labels.max()} is out of range for {num_classes} classes")
    if norm == "log" and features.size and features.min() <= -1:
        raise DataError(f"{name}: norm='log' computes log(1 + x) and needs features > -1, got minimum "
                        f"{features.min():.4g} (use norm='l2' for signed features)")
    return features, labels.astype(np.int64)


@torch.no_grad()
def score_samples(model, features, labels, references, *, batch_size: int = 1024,
                  device: str | torch.device = "cpu") -> np.ndarray:
    """Relevance ``s = cos(phi_q, phi_s(label))`` of every sample to its label.

    Every class embedding is computed once, then queries are scored in batches; each score
    depends only on its own sample, so the result does not depend on the order of the samples
    or on ``batch_size`` (up to float rounding).

    Args:
        model: a :class:`~labelwise.plugins.cleannet.model.CleanNet` (put in eval mode here).
        features: ``(N, D)`` raw features.
        labels: ``(N,)`` the (noisy) class ids to score against.
        references: ``(C, K, D)`` reference sets.
        batch_size: queries per forward pass.
        device: where to compute.

    Returns:
        ``(N,)`` float32 scores in [-1, 1].
    """
    features, labels = check_features(features, labels, num_classes=len(references), norm=model.norm)
    if int(batch_size) < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    model = model.to(device).eval()
    phi_s = model.encode_classes(torch.as_tensor(np.asarray(references, dtype=np.float32), device=device))
    out = np.empty(len(features), dtype=np.float32)
    for start in range(0, len(features), int(batch_size)):
        stop = start + int(batch_size)
        q = torch.as_tensor(features[start:stop], device=device)
        _, phi_q, _ = model.encode_queries(q)
        cls = phi_s[torch.as_tensor(labels[start:stop], device=device)]
        out[start:stop] = torch.nn.functional.cosine_similarity(phi_q, cls, dim=-1, eps=1e-12).cpu().numpy()
    return out


def detection_accuracy(scores, verification, threshold: float) -> float:
    """Share of verified samples whose flag equals ``1[score >= threshold]``.

    Args:
        scores: ``(N,)`` relevance scores.
        verification: ``(N,)`` 1 (label correct) / 0 (label wrong).
        threshold: predict "correct" when ``score >= threshold``.

    Returns:
        The noise-detection accuracy in [0, 1] (``nan`` for no samples); the error is
        ``1 - accuracy``.
    """
    scores = np.asarray(scores, dtype=np.float64)
    verification = np.asarray(verification)
    if scores.shape != verification.shape:
        raise DataError(f"scores {scores.shape} and verification {verification.shape} differ in shape")
    if scores.size == 0:
        return float("nan")
    return float(np.mean((scores >= threshold) == (verification == 1)))


def choose_threshold(scores, verification, *, default: float = DEFAULT_THRESHOLD) -> float:
    """The threshold maximising :func:`detection_accuracy` on verified (validation) samples.

    Candidates are the midpoints between consecutive distinct scores and one step beyond each
    end; among the best, the one closest to ``default`` wins (so a flat optimum keeps the
    paper's 0.1). With no verified sample, ``default`` is returned.

    Args:
        scores: ``(N,)`` scores of verified samples.
        verification: ``(N,)`` their flags, 1 / 0.
        default: the fall-back and tie-break anchor (default 0.1).

    Returns:
        The threshold (a float).
    """
    scores = np.asarray(scores, dtype=np.float64)
    verification = np.asarray(verification)
    if scores.size == 0:
        return float(default)
    u = np.unique(scores)
    candidates = np.concatenate([[u[0] - 1e-6], (u[:-1] + u[1:]) / 2, [u[-1] + 1e-6], [default]])
    correct = verification == 1
    acc = np.array([np.mean((scores >= t) == correct) for t in candidates])
    best = np.flatnonzero(acc >= acc.max() - 1e-12)
    return float(candidates[best[np.argmin(np.abs(candidates[best] - default))]])


def sample_weights(scores, *, mode: str, threshold: float | None = None) -> np.ndarray:
    """Training weights from scores: ``'hard'`` = ``1[s >= threshold]``, ``'soft'`` = ``max(0, s)``.

    Raises:
        ConfigError: unknown ``mode``, or ``'hard'`` without a finite threshold.
    """
    scores = np.asarray(scores, dtype=np.float64)
    if mode == "hard":
        if threshold is None:
            raise ConfigError("weight mode 'hard' needs a threshold")
        if not math.isfinite(float(threshold)):
            raise ConfigError(f"threshold must be a finite number, got {threshold!r}")
        return (scores >= float(threshold)).astype(np.float32)
    if mode == "soft":
        return np.maximum(scores, 0.0).astype(np.float32)
    raise ConfigError(f"weight mode must be one of {', '.join(WEIGHT_MODES)}, got {mode!r}")
