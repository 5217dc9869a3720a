"""CleanNet's training objective (reference code: kuanghuei/clean-net ``losses.py``, ``train.py``).

For a batch of ``B`` queries (verified and unverified together), with relevance ``s``,
verification label ``l`` (1 = the noisy label is correct) and flag ``f`` (1 = verified)::

    L = mean_i [ f_i * Lv(s_i, l_i) + gamma * (1 - f_i) * Lv(s_i, 1[s_i >= 0.1])
                 + beta * ||v_i - v_hat_i||^2 ]  +  weight_decay * sum_W ||W||^2 / 2

    Lv(s, l) = l * (1 - s) + neg_weight * (1 - l) * max(0, s - margin)

with ``neg_weight = 5``, ``margin = 0.1``, ``beta = gamma = 0.1`` and ``weight_decay = 1e-4``
on the fully connected weights (not the biases, not the attention context), which is TF's
``l2_regularizer`` (``scale * sum(W^2) / 2``). The pseudo-label ``1[s >= 0.1]`` carries no
gradient.
"""
from __future__ import annotations

import torch

from labelwise.plugins.cleannet.config import BETA, GAMMA, MARGIN, NEG_WEIGHT, PSEUDO_THRESHOLD, WEIGHT_DECAY


def verified_loss(scores: torch.Tensor, verification: torch.Tensor, *, neg_weight: float = NEG_WEIGHT,
                  margin: float = MARGIN) -> torch.Tensor:
    """Per-sample ``l * (1 - s) + neg_weight * (1 - l) * max(0, s - margin)``.

    Args:
        scores: relevance ``s (B,)``.
        verification: ``l (B,)``, 1 = the label is correct, 0 = it is wrong (float or int).
        neg_weight: weight of wrongly labelled samples (default 5.0).
        margin: a wrong sample costs nothing once ``s <= margin`` (default 0.1).

    Returns:
        ``(B,)`` losses.
    """
    l = verification.to(scores.dtype)
    return l * (1.0 - scores) + neg_weight * (1.0 - l) * torch.clamp(scores - margin, min=0.0)


def unverified_loss(scores: torch.Tensor, *, pseudo_threshold: float = PSEUDO_THRESHOLD,
                    neg_weight: float = NEG_WEIGHT, margin: float = MARGIN) -> torch.Tensor:
    """Per-sample :func:`verified_loss` with the pseudo-label ``1[s >= pseudo_threshold]``
    (no gradient through the pseudo-label). With ``margin = pseudo_threshold`` the negative
    part vanishes and this is ``1[s >= 0.1] * (1 - s)``."""
    pseudo = (scores.detach() >= pseudo_threshold).to(scores.dtype)
    return verified_loss(scores, pseudo, neg_weight=neg_weight, margin=margin)


def reconstruction_loss(v: torch.Tensor, v_hat: torch.Tensor) -> torch.Tensor:
    """Per-sample squared error ``||v - v_hat||^2`` summed over the feature dimension ``(B,)``."""
    return (v - v_hat).pow(2).sum(dim=-1)


def l2_penalty(weights, weight_decay: float = WEIGHT_DECAY) -> torch.Tensor:
    """``weight_decay * sum_W sum(W^2) / 2`` over the given weight tensors (TF ``l2_regularizer``)."""
    return weight_decay * 0.5 * sum(w.pow(2).sum() for w in weights)


def cleannet_loss(scores: torch.Tensor, v: torch.Tensor, v_hat: torch.Tensor, is_verified: torch.Tensor,
                  verification: torch.Tensor, *, neg_weight: float = NEG_WEIGHT, margin: float = MARGIN,
                  pseudo_threshold: float = PSEUDO_THRESHOLD, beta: float = BETA,
                  gamma: float = GAMMA) -> dict:
    """The batch objective without the L2 penalty (add :func:`l2_penalty` for the total).

    Args:
        scores: relevance ``(B,)``.
        v, v_hat: normalised inputs and their reconstructions ``(B, D)``.
        is_verified: ``(B,)`` bool, which queries carry a verification label.
        verification: ``(B,)`` 1 / 0 for verified queries (ignored elsewhere).
        neg_weight, margin, pseudo_threshold: see :func:`verified_loss`, :func:`unverified_loss`.
        beta: weight of the reconstruction term (default 0.1).
        gamma: weight of the unverified term (default 0.1).

    Returns:
        dict of scalars, each a mean over the whole batch: ``verified`` (``f * Lv``),
        ``unverified`` (``(1 - f) * Lu``, before ``gamma``), ``reconstruction`` (before
        ``beta``) and ``loss = verified + gamma * unverified + beta * reconstruction``.
    """
    f = is_verified.to(scores.dtype)
    verification = torch.where(is_verified, verification.to(scores.dtype), torch.zeros_like(scores))
    sup = (f * verified_loss(scores, verification, neg_weight=neg_weight, margin=margin)).mean()
    unsup = ((1.0 - f) * unverified_loss(scores, pseudo_threshold=pseudo_threshold, neg_weight=neg_weight,
                                         margin=margin)).mean()
    recon = reconstruction_loss(v, v_hat).mean()
    return {"verified": sup, "unverified": unsup, "reconstruction": recon,
            "loss": sup + gamma * unsup + beta * recon}
