"""Checks the losses run on their targets and weights, so a wrong pipeline fails loudly.

Each check costs one reduction and one ``.item()`` (a device sync on GPU) per call: small next
to a training step, and it turns silent wrong targets -- a partial label of 0.5 or 7 (a
target mixed by Mixup or CutMix that the loss would read as "unknown"), a negative sample weight,
a soft target row summing to 20 -- into an error that names the loss and the value.
"""
from __future__ import annotations

import torch

from labelwise.errors import DataError

#: How far a soft-target row may sum from 1 (float16 stores and mixing round).
SOFT_TARGET_ATOL = 1e-2


def check_partial_targets(targets: torch.Tensor, *, name: str) -> None:
    """Targets of a partial-label loss hold only 1 (positive), 0 (negative) and -1 or NaN
    (unknown)."""
    t = targets.detach()
    bad = ~((t == 1) | (t == 0) | (t == -1) | torch.isnan(t))
    if bool(bad.any()):
        value = t[bad][0].item()
        raise DataError(f"{name}: target value {value!r}; expected partial labels 1 / 0 / -1 (mixed or "
                        "smoothed targets cannot be read as known / unknown: turn Mixup, CutMix and label "
                        "smoothing off for this loss, or use its own regulariser)")


def check_weights(weight: torch.Tensor, *, name: str) -> None:
    """Per-sample weights are finite and >= 0."""
    w = weight.detach()
    bad = ~torch.isfinite(w) | (w < 0)
    if bool(bad.any()):
        raise DataError(f"{name}: sample weight {w[bad][0].item()!r}; expected finite weights >= 0")


def check_soft_targets(targets: torch.Tensor, *, name: str) -> None:
    """Soft targets are distributions: finite, >= 0, each row summing to 1."""
    t = targets.detach().float()
    if not bool(torch.isfinite(t).all()):
        raise DataError(f"{name}: soft targets hold NaN or infinite values")
    if bool((t < 0).any()):
        raise DataError(f"{name}: soft target value {t[t < 0][0].item()!r}; expected probabilities >= 0")
    sums = t.sum(dim=-1)
    off = (sums - 1).abs() > SOFT_TARGET_ATOL
    if bool(off.any()):
        row = int(off.nonzero()[0, 0])
        raise DataError(f"{name}: soft target row {row} sums to {sums[row].item():.4g}; expected 1 "
                        "(a probability distribution over the classes)")
