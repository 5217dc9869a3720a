"""Focal binary cross-entropy on partial labels (1 positive, 0 negative, -1 unknown)."""
import torch
from torch import nn


def partial_focal_loss(logits: torch.Tensor, targets: torch.Tensor, *, gamma: float = 2.0) -> torch.Tensor:
    """Mean focal BCE over the known entries, times C (sum over classes, mean over samples).

    ``loss = -(1 - p_t) ** gamma * log(p_t)`` per known entry, ``p_t`` the predicted
    probability of the entry's label; unknown entries (-1) do not count.
    """
    z = logits.float()
    positive = (targets == 1).to(z.dtype)
    known = (targets >= 0).to(z.dtype)
    bce = nn.functional.binary_cross_entropy_with_logits(z, positive, reduction="none")
    p_t = torch.exp(-bce)
    focal = (1 - p_t) ** gamma * bce
    return (focal * known).sum() / known.sum().clamp(min=1) * z.shape[1]


class PartialFocalLoss(nn.Module):
    """mmpretrain-style loss module of :func:`partial_focal_loss`."""

    def __init__(self, gamma: float = 2.0, loss_weight: float = 1.0):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"PartialFocalLoss: gamma must be >= 0, got {gamma}")
        self.gamma, self.loss_weight = gamma, loss_weight

    def forward(self, cls_score, label, weight=None, avg_factor=None, reduction_override=None, **kwargs):
        if weight is not None:
            raise ValueError("PartialFocalLoss: per-sample weights are not supported")
        return self.loss_weight * partial_focal_loss(cls_score, label, gamma=self.gamma)
