"""PU-MLC for timm and plain PyTorch: the loss as a criterion, and a ``timm.task`` task.

``PUMLCTask(model, criterion=PUMLCLoss())`` is a ``timm.task.TrainingTask``: ``task(input,
target)`` returns ``{'loss', 'output'}`` (plus ``'loss_pu'`` / ``'loss_mixup'``), so it trains
with :func:`labelwise.adapters.loop.fit` or any loop written for timm's tasks. Targets are
``(B, C)`` partial labels 1 / 0 / -1 (:class:`labelwise.adapters.torch_data.DigitScenesDataset`
with ``unknown_as='keep'``). The LGC conversion works on ``timm.create_model(...)`` models
directly: :func:`labelwise.plugins.pumlc.lgc.convert_to_lgc`.
"""
from __future__ import annotations

import torch
from timm.task import MultiLabelClassificationTask
from torch import nn

from labelwise.plugins.pumlc.loss import TAU_MIN, partial_bce, pu_loss, pu_mixup_regularizer


class PUMLCLoss(nn.Module):
    """``criterion(logits (B, C), targets (B, C) with 1/0/-1)`` -> the PU-MLC loss (scalar).

    Args as :func:`labelwise.plugins.pumlc.loss.pu_loss` (gamma 0.55, alpha 1.0, eps 1e-10,
    tau_min 0.01).
    """

    def __init__(self, *, gamma: float = 0.55, alpha: float = 1.0, eps: float = 1e-10, tau_min: float = TAU_MIN):
        super().__init__()
        self.gamma, self.alpha, self.eps, self.tau_min = gamma, alpha, eps, tau_min

    def forward(self, logits, targets):
        return pu_loss(logits, targets, gamma=self.gamma, alpha=self.alpha, eps=self.eps, tau_min=self.tau_min)


class PartialBCELoss(nn.Module):
    """``criterion(logits, targets 1/0/-1)``: BCE ignoring unknowns (``unknown='ignore'``) or
    treating them as negatives (``'negative'``); see :func:`labelwise.plugins.pumlc.loss.partial_bce`."""

    def __init__(self, *, unknown: str = "ignore"):
        super().__init__()
        self.unknown = unknown

    def forward(self, logits, targets):
        return partial_bce(logits, targets, unknown=self.unknown)


class PUMLCTask(MultiLabelClassificationTask):
    """timm multi-label task with the PU-MLC loss and, optionally, its MixUp regulariser.

    Args:
        model: a timm (or any) model mapping images to ``(B, C)`` logits.
        criterion: default :class:`PUMLCLoss` ``()``; any ``criterion(logits, targets)``.
        mixup_alpha: Beta parameter of the regulariser; ``None`` (default) disables it (it
            costs a second forward/backward on half the batch).
        mixup_weight: weight of the regulariser (default 1.0, as the reference).
        detach_targets: treat the regulariser's soft targets as constants (default False, as
            the reference).
        generator: source of the regulariser's pairing and mixing coefficient.
        **kwargs: ``device``, ``dtype``, ``verbose`` of ``timm.task.TrainingTask``.
    """

    def __init__(self, model: nn.Module, criterion: nn.Module | None = None, *, mixup_alpha: float | None = None,
                 mixup_weight: float = 1.0, detach_targets: bool = False,
                 generator: torch.Generator | None = None, **kwargs):
        kwargs.setdefault("verbose", False)
        super().__init__(model, criterion if criterion is not None else PUMLCLoss(), **kwargs)
        self.mixup_alpha, self.mixup_weight = mixup_alpha, mixup_weight
        self.detach_targets, self.generator = detach_targets, generator

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> dict:
        output = self.trainable_module(input)
        loss_pu = self.criterion(output, target)
        result = {"loss": loss_pu, "loss_pu": loss_pu.detach(), "output": output}
        if self.mixup_alpha is not None:
            reg = pu_mixup_regularizer(self.trainable_module, input, output, target, alpha=self.mixup_alpha,
                                       detach_targets=self.detach_targets, generator=self.generator)
            result["loss"] = loss_pu + self.mixup_weight * reg
            result["loss_mixup"] = reg.detach()
        return result
