"""The gradient ("BP") variant of CFT: the asymmetric loss on one category's known labels."""
from __future__ import annotations

import torch

__all__ = ["asymmetric_loss"]


def asymmetric_loss(logits: torch.Tensor, targets: torch.Tensor, *, gamma_neg: float = 4.0,
                    gamma_pos: float = 0.0, clip: float = 0.05, eps: float = 1e-8) -> torch.Tensor:
    """Asymmetric loss (Ridnik et al., ICCV 2021), summed, as CFT's BP variant uses it.

    With ``p = sigmoid(logits)`` and the shifted negative probability
    ``p_neg = min(1 - p + clip, 1)``::

        loss = - sum_i [ y_i (1 - p_i)^gamma_pos log(max(p_i, eps))
                         + (1 - y_i) (1 - p_neg_i)^gamma_neg log(max(p_neg_i, eps)) ]

    The focusing weights ``(1 - .)^gamma`` are treated as constants in the gradient (the
    reference implementation computes them with gradients disabled).

    Args:
        logits: ``(N,)`` or ``(N, K)`` logits.
        targets: same shape, 1 / 0 (known labels only).
        gamma_neg, gamma_pos: focusing exponents of negatives / positives (defaults 4, 0).
        clip: probability shift of negatives (default 0.05; 0 disables it).
        eps: lower clamp inside the logarithms.

    Returns:
        A scalar tensor (sum over all elements).
    """
    targets = targets.to(logits.dtype)
    p = torch.sigmoid(logits)
    p_neg = 1 - p
    if clip > 0:
        p_neg = (p_neg + clip).clamp(max=1)
    log_lik = targets * torch.log(p.clamp(min=eps)) + (1 - targets) * torch.log(p_neg.clamp(min=eps))
    if gamma_neg > 0 or gamma_pos > 0:
        with torch.no_grad():
            pt = p * targets + p_neg * (1 - targets)
            weight = torch.pow(1 - pt, gamma_pos * targets + gamma_neg * (1 - targets))
        log_lik = log_lik * weight
    return -log_lik.sum()
