"""The Label Refinery loss: cross-entropy of student logits against refinery probabilities.

Bagherinezhad et al., "Label Refinery: Improving ImageNet Classification through Label
Progression", 2018. For refinery probabilities ``p`` and student log-probabilities
``log q``::

    loss_n = -sum_c p_nc * log q_nc  =  KL(p_n || q_n) + H(p_n)

``H(p_n)`` does not depend on the student, so the gradients are those of the KL divergence
the paper minimises; the value is the cross-entropy, which for one-hot ``p`` is the ordinary
cross-entropy of generation 1 (loss curves of all generations are on one scale).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from labelwise.errors import ConfigError
from labelwise.utils.targets import check_soft_targets, check_weights

REDUCTIONS = ("mean", "sum", "none")


def refinery_targets(logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """Soft targets ``softmax(logits / temperature)`` of the refinery, shape ``(N, C)``.

    Args:
        logits: refinery logits ``(N, C)``.
        temperature: the paper and reference use 1 (the default).

    Returns:
        float32 probabilities ``(N, C)`` whose rows sum to 1 (computed in float32 whatever the
        input dtype, so fp16 / bf16 teachers give well-normalised targets).
    """
    if not temperature > 0:
        raise ConfigError(f"temperature must be > 0, got {temperature!r}")
    return F.softmax(logits.float() / temperature, dim=-1)


def soft_target_cross_entropy(
    logits: torch.Tensor,
    target_probs: torch.Tensor,
    *,
    weight: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """``-sum_c p_nc log softmax(z_n)_c``, optionally weighted per sample.

    Args:
        logits: student logits ``z`` ``(N, C)``.
        target_probs: target distributions ``p`` ``(N, C)`` (rows sum to 1; one-hot rows give
            the ordinary cross-entropy).
        weight: optional per-sample weights ``(N,)`` multiplied into each sample's loss.
        reduction: ``'mean'`` (default): ``sum_n w_n loss_n / N`` -- divided by the batch
            size, not by the sum of the weights, as mmpretrain's losses do with
            ``avg_factor=N``, so a down-weighted sample lowers the loss instead of
            re-scaling the others; ``'sum'``; ``'none'``: the ``(N,)`` vector.

    Returns:
        A scalar, or ``(N,)`` for ``reduction='none'``.
    """
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if logits.shape != target_probs.shape or logits.dim() != 2:
        raise ConfigError(
            f"logits {tuple(logits.shape)} and target_probs {tuple(target_probs.shape)} must both "
            "be (N, C)")
    if weight is not None:
        if weight.shape != logits.shape[:1]:
            raise ConfigError(f"weight must be (N,) = {tuple(logits.shape[:1])}, got {tuple(weight.shape)}")
        check_weights(weight, name="soft_target_cross_entropy")
    check_soft_targets(target_probs, name="soft_target_cross_entropy")
    loss = -(target_probs.to(logits.dtype) * F.log_softmax(logits, dim=-1)).sum(dim=-1)
    if weight is not None:
        loss = loss * weight.to(loss.dtype)
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss
