"""A synthetic CFT problem like the reference cost measurement (for benchmarks and tests).

Features are Gaussian; category ``c`` is present when a noisy linear score exceeds the
quantile that gives it prevalence ``p_c`` (spread evenly over ``prevalence``). Training and
validation labels hide each entry with probability ``unknown``; the test labels are complete.
The head to calibrate is trained the way CFT's input models are: unknown labels assumed
negative, asymmetric loss, full-batch Adam.
"""
from __future__ import annotations

import numpy as np
import torch

from labelwise.plugins.cft.gradient import asymmetric_loss

__all__ = ["make_synthetic_problem"]


def make_synthetic_problem(*, n_train: int = 5000, n_val: int = 2000, n_test: int = 2000, dim: int = 512,
                           num_classes: int = 20, prevalence=(0.02, 0.30), unknown: float = 0.5,
                           label_noise: float = 1.0, head_steps: int = 300, head_lr: float = 1e-2,
                           seed: int = 0) -> dict:
    """Return ``{"train_features", "train_labels", "val_features", "val_labels", "test_features",
    "test_labels", "weight", "bias"}`` as numpy arrays (features float32, labels int8 1/0/-1).

    Args:
        n_train, n_val, n_test: rows per split.
        dim: feature dimension ``D``.
        num_classes: categories ``C``.
        prevalence: ``(low, high)``: category ``c`` has prevalence
            ``low + (high - low) c / (C - 1)``.
        unknown: probability that a train / validation label is hidden (-1).
        label_noise: standard deviation of the noise added to the true linear score.
        head_steps, head_lr: full-batch Adam steps and learning rate of the head's training
            (assume negative, asymmetric loss with gamma_neg 4, gamma_pos 0, clip 0.05).
        seed: everything is a function of it (a local generator; nothing global is seeded).
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_val + n_test
    features = rng.standard_normal((n, dim)).astype(np.float32)
    true_w = rng.standard_normal((num_classes, dim)) / np.sqrt(dim)
    logits = features @ true_w.T + label_noise * rng.standard_normal((n, num_classes))
    low, high = prevalence
    prev = low + (high - low) * np.arange(num_classes) / max(num_classes - 1, 1)
    thresholds = np.array([np.quantile(logits[:, c], 1 - prev[c]) for c in range(num_classes)])
    labels = (logits > thresholds).astype(np.int8)
    hidden = rng.random((n_train + n_val, num_classes)) < unknown
    partial = labels[: n_train + n_val].copy()
    partial[hidden] = -1
    out = {"train_features": features[:n_train], "train_labels": partial[:n_train],
           "val_features": features[n_train:n_train + n_val], "val_labels": partial[n_train:],
           "test_features": features[n_train + n_val:], "test_labels": labels[n_train + n_val:]}
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(num_classes, dim, generator=generator) * 0.01).requires_grad_(True)
    bias = torch.zeros(num_classes, requires_grad=True)
    adam = torch.optim.Adam([weight, bias], lr=head_lr)
    x = torch.from_numpy(out["train_features"])
    assumed = torch.from_numpy(np.maximum(out["train_labels"], 0).astype(np.float32))
    for _ in range(head_steps):
        adam.zero_grad()
        loss = asymmetric_loss(x @ weight.T + bias, assumed) / len(x)
        loss.backward()
        adam.step()
    out["weight"] = weight.detach().numpy().copy()
    out["bias"] = bias.detach().numpy().copy()
    return out
