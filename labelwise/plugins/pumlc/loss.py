"""PU-MLC loss: positive-unlabeled multi-label loss with adaptive temperature and re-balance.

Yuan et al., "Positive Label Is All You Need for Multi-Label Classification", ICME 2024
(spec: ``shared/methods/pumlc.md``). Framework-free: plain torch on ``(B, C)`` tensors.

Targets use the project's partial-label convention (:mod:`labelwise.labels`): 1 positive,
0 negative, -1 unknown. PU-MLC trains from the known positives only: known negatives and
unknowns are both treated as unlabeled (they enter only the unlabeled term, as every sample
does).
"""
from __future__ import annotations

import numpy as np
import torch

from labelwise.utils.targets import check_partial_targets

#: Lower clamp of the per-class temperature. The reference divides by ``alpha * std`` and gets
#: a NaN gradient when a class's logits are constant over the batch (std 0); with the clamp
#: such a class trains at temperature ``TAU_MIN`` (logits scaled by 100) and stays finite.
TAU_MIN = 1e-2


def pu_temperature(logits: torch.Tensor, *, alpha: float = 1.0, tau_min: float = TAU_MIN) -> torch.Tensor:
    """Per-class temperature ``tau_c = clamp(min(alpha * std_c(z), 1), min=tau_min)``, detached.

    Args:
        logits: ``(B, C)``.
        alpha: scale of the batch standard deviation (population std, divide by B).
        tau_min: lower clamp (see :data:`TAU_MIN`).

    Returns:
        ``(C,)`` temperatures, without gradient.
    """
    with torch.no_grad():
        std = logits.float().std(dim=0, unbiased=False)
        return (alpha * std).clamp(max=1.0).clamp(min=tau_min)


def pu_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    *,
    gamma: float = 0.55,
    alpha: float = 1.0,
    eps: float = 1e-10,
    tau_min: float = TAU_MIN,
) -> torch.Tensor:
    """The PU-MLC loss of one batch, summed over classes (the reference does not average).

    With ``s = sigmoid(z / tau)`` (``tau`` from :func:`pu_temperature`), ``P_c`` the known
    positives of class ``c`` in the batch and ``w_c = (mean_i s_ic) ** gamma`` (no gradient):

    ``L = sum_c [ w_c * log(mean_i s_ic + eps) - (1 / |P_c|) * sum_{i in P_c} log(s_ic + eps) ]``

    A class with no known positive in the batch contributes only its unlabeled term.

    Args:
        logits: ``(B, C)`` raw scores.
        targets: ``(B, C)`` with 1 (positive), 0 (negative) or -1 (unknown); only ``== 1``
            matters. Float or integer.
        gamma: re-balance exponent (reference: COCO 0.55, VOC 0.85).
        alpha: temperature scale (reference: COCO 1.0, VOC 2.0).
        eps: added inside the logarithms (reference 1e-10).
        tau_min: lower clamp of the temperature.

    Returns:
        Scalar loss (float32 or the logits' dtype if wider).
    """
    if logits.ndim != 2 or logits.shape != targets.shape:
        raise ValueError(f"pu_loss: logits and targets must both be (B, C); got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    check_partial_targets(targets, name="pu_loss")
    z = logits.float()
    tau = pu_temperature(z, alpha=alpha, tau_min=tau_min)
    s = torch.sigmoid(z / tau)
    positive = (targets == 1).to(z.dtype)
    num_positive = positive.sum(dim=0)
    log_s = torch.log(s + eps)
    positive_term = (log_s * positive).sum(dim=0) / num_positive.clamp(min=1)  # 0 where no positive
    mean_s = s.mean(dim=0)
    with torch.no_grad():
        weight = mean_s.detach() ** gamma
    unlabeled_term = weight * torch.log(mean_s + eps)
    return (unlabeled_term - positive_term).sum()


def pu_mixup_targets(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Soft targets of the MixUp regulariser: 1 for known positives, ``sigmoid(z)`` elsewhere.

    No temperature (as in the reference). The result keeps the graph of ``logits``; detach it
    to treat the targets as constants.
    """
    positive = (targets == 1).to(logits.dtype)
    return positive + torch.sigmoid(logits) * (1 - positive)


def pu_mixup_pairs(batch_size: int, *, alpha: float = 0.3, generator: torch.Generator | None = None):
    """Draw the MixUp pairing of the regulariser: halves of the batch, the first one permuted.

    The first ``B // 2`` samples are permuted and mixed with the last ``B // 2`` (for odd B the
    middle sample is left out; a batch of one is mixed with itself), with
    ``lam ~ Beta(alpha, alpha)``.

    Returns:
        ``(first, second, lam)``: index tensors of equal length ``max(B // 2, 1)`` and a float.
    """
    if batch_size < 1:
        raise ValueError(f"pu_mixup_pairs: batch_size must be >= 1, got {batch_size}")
    half = batch_size // 2
    if half == 0:
        first = second = torch.zeros(1, dtype=torch.long)
    else:
        first = torch.randperm(half, generator=generator)
        second = torch.arange(batch_size - half, batch_size)
    # torch's Beta distribution takes no generator: seed numpy's from it
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    lam = float(np.random.default_rng(seed).beta(alpha, alpha))
    return first, second, lam


def pu_mixup_loss(mixed_logits: torch.Tensor, mixed_targets: torch.Tensor, *, eps: float = 1e-10) -> torch.Tensor:
    """MixUp regulariser ``sum_c mean_i (log(t_mix + eps) - log(sigmoid(z_mix) + eps)) ** 2``.

    Args:
        mixed_logits: ``(M, C)`` logits of the model on the mixed images.
        mixed_targets: ``(M, C)`` mixed soft targets (see :func:`pu_mixup_targets`).
    """
    if mixed_logits.shape != mixed_targets.shape:
        raise ValueError(f"pu_mixup_loss: shapes differ: {tuple(mixed_logits.shape)} vs {tuple(mixed_targets.shape)}")
    diff = torch.log(mixed_targets.float() + eps) - torch.log(torch.sigmoid(mixed_logits.float()) + eps)
    return diff.pow(2).mean(dim=0).sum()


def pu_mixup_regularizer(model, inputs: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor, *,
                         alpha: float = 0.3, eps: float = 1e-10, detach_targets: bool = False,
                         generator: torch.Generator | None = None) -> torch.Tensor:
    """The full MixUp regulariser: pair the batch, mix images and soft targets, forward, compare.

    Args:
        model: callable mapping ``inputs``-shaped images to ``(M, C)`` logits (second forward).
        inputs: ``(B, ...)`` the batch the model saw.
        logits: ``(B, C)`` the model's logits on ``inputs`` (first forward).
        targets: ``(B, C)`` partial labels 1/0/-1.
        alpha: Beta parameter of the mixing coefficient (reference 0.3).
        detach_targets: treat the soft targets as constants. The reference keeps their graph
            (``False``), so the regulariser also moves the first forward's predictions.
        generator: source of the pairing and of ``lam``.
    """
    first, second, lam = pu_mixup_pairs(inputs.shape[0], alpha=alpha, generator=generator)
    soft = pu_mixup_targets(logits, targets)
    if detach_targets:
        soft = soft.detach()
    first, second = first.to(inputs.device), second.to(inputs.device)
    mixed_inputs = lam * inputs[first] + (1 - lam) * inputs[second]
    mixed_targets = lam * soft[first] + (1 - lam) * soft[second]
    return pu_mixup_loss(model(mixed_inputs), mixed_targets, eps=eps)


def partial_bce(logits: torch.Tensor, targets: torch.Tensor, *, unknown: str = "ignore") -> torch.Tensor:
    """Binary cross-entropy on partial labels (1 / 0 / -1): the two standard baselines.

    ``unknown='ignore'``: only known entries count; the loss is their mean times C (equal to
    the sum over classes, mean over samples, when everything is known). ``'negative'``: -1
    becomes 0 ("assume negative"), sum over classes, mean over samples. A batch without any
    known entry gives 0 (with a gradient of zeros).
    """
    if logits.shape != targets.shape or logits.ndim != 2:
        raise ValueError(f"partial_bce: logits and targets must both be (B, C); got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    if unknown not in ("ignore", "negative"):
        raise ValueError(f"partial_bce: unknown={unknown!r}; valid: 'ignore', 'negative'")
    check_partial_targets(targets, name="partial_bce")
    z = logits.float()
    positive = (targets == 1).to(z.dtype)
    per_entry = torch.nn.functional.binary_cross_entropy_with_logits(z, positive, reduction="none")
    if unknown == "negative":
        return per_entry.sum(dim=1).mean()
    known = (targets >= 0).to(z.dtype)
    return (per_entry * known).sum() / known.sum().clamp(min=1) * z.shape[1]
