"""PU-MLC for mmpretrain: the loss, partial-label heads, and a classifier with LGC and MixUp.

* ``labelwise.PUMLCLoss`` -- drop-in ``loss=`` of ``MultiLabelLinearClsHead`` / ``CSRAClsHead``
  (with the stock heads the targets are the known positives, which is all PU-MLC uses).
* ``labelwise.PartialBCELoss`` -- BCE that ignores unknown labels (the "ignore unknowns"
  baseline) or treats them as negatives.
* ``labelwise.PartialMultiLabelLinearClsHead`` / ``labelwise.PartialCSRAClsHead`` -- the stock
  heads, but the loss target is the data sample's ``partial_labels`` (1 / 0 / -1), so a loss
  can tell a known negative from an unknown.
* ``labelwise.PUMLCClassifier`` -- ``ImageClassifier`` plus the Local-Global Convolution
  conversion (``lgc=dict(...)``) and the MixUp regulariser (``mixup=dict(...)``), which needs
  a second forward pass through the whole model.
"""
from __future__ import annotations

from typing import List, Optional

import torch
from mmpretrain.models.classifiers import ImageClassifier
from mmpretrain.models.heads import CSRAClsHead, MultiLabelLinearClsHead
from mmpretrain.structures import DataSample, label_to_onehot
from torch import nn

from labelwise.errors import ConfigError
from labelwise.plugins.pumlc.lgc import (convert_to_lgc, freeze_for_lgc, init_global_branches, keep_bn_eval)
from labelwise.plugins.pumlc.loss import TAU_MIN, partial_bce, pu_loss, pu_mixup_regularizer


def _check_partial_targets(name, target):
    """Refuse targets other than 1 / 0 / -1: soft single-label targets (LabelPooling, Label
    Refinery) or batch Mixup / CutMix reaching a partial-label loss."""
    bad = (target != 1) & (target != 0) & (target != -1)
    if target.is_floating_point():
        bad &= ~torch.isnan(target)  # NaN: unknown, the project's input convention
    if bool(bad.any()):
        value = float(target[bad][0])
        raise ConfigError(f"{name} needs partial multi-label targets 1 / 0 / -1, got {value:.4g}: a soft target, "
                          "e.g. the single-label class distribution of labelwise.LabelPooling or the Label Refinery "
                          "(labelwise.RefineryDataPreprocessor / LoadRefinedLabels), or batch Mixup / CutMix, which "
                          "do not compose with PU-MLC (its own MixUp is PUMLCClassifier(mixup=...))")


def _check_no_weight(name, weight):
    if weight is not None:
        raise ConfigError(f"{name}: per-sample or per-class `weight` is not supported (the loss is a "
                          "batch-level statistic); got a tensor of shape " + str(tuple(weight.shape)))


class PUMLCLoss(nn.Module):
    """The PU-MLC loss (:func:`labelwise.plugins.pumlc.loss.pu_loss`) in mmpretrain's loss API.

    Targets ``(B, C)``: 1 known positive; 0 or -1 anything else (one-hot ``gt_label`` from the
    stock multi-label heads, or ``partial_labels`` from the ``Partial*`` heads). The loss is
    batch-level (temperature and re-balance come from batch statistics) and summed over
    classes like the reference, so ``avg_factor`` is ignored and ``reduction`` can only be
    ``'mean'``; ``weight`` is refused.

    Args:
        gamma: re-balance exponent (default 0.55, the reference's COCO value; VOC 0.85).
        alpha: temperature scale (default 1.0; VOC 2.0).
        eps: inside the logarithms (default 1e-10).
        tau_min: temperature lower clamp (default ``TAU_MIN`` = 0.01).
        loss_weight: multiplies the loss (default 1.0).
    """

    def __init__(self, gamma: float = 0.55, alpha: float = 1.0, eps: float = 1e-10, tau_min: float = TAU_MIN,
                 loss_weight: float = 1.0):
        super().__init__()
        if gamma < 0 or alpha <= 0 or eps < 0 or tau_min <= 0:
            raise ConfigError(f"PUMLCLoss: need gamma >= 0, alpha > 0, eps >= 0, tau_min > 0; got gamma={gamma}, "
                              f"alpha={alpha}, eps={eps}, tau_min={tau_min}")
        self.gamma, self.alpha, self.eps, self.tau_min = gamma, alpha, eps, tau_min
        self.loss_weight = loss_weight

    def forward(self, cls_score, label, weight=None, avg_factor=None, reduction_override=None, **kwargs):
        _check_no_weight("PUMLCLoss", weight)
        if reduction_override not in (None, "mean"):
            raise ConfigError(f"PUMLCLoss: reduction {reduction_override!r} is not supported; only 'mean'")
        _check_partial_targets("labelwise.PUMLCLoss", label)
        return self.loss_weight * pu_loss(cls_score, label, gamma=self.gamma, alpha=self.alpha, eps=self.eps,
                                          tau_min=self.tau_min)

    def extra_repr(self):
        return f"gamma={self.gamma}, alpha={self.alpha}, eps={self.eps}, tau_min={self.tau_min}"


class PartialBCELoss(nn.Module):
    """Binary cross-entropy on partial labels (:func:`labelwise.plugins.pumlc.loss.partial_bce`).

    Args:
        unknown: ``'ignore'`` (default): unknown entries (-1) do not contribute; the loss is
            the mean over known entries times C, which equals mmpretrain's sigmoid
            ``CrossEntropyLoss`` (sum over classes, mean over samples) when every label is
            known. ``'negative'``: unknowns are negatives ("assume negative").
        loss_weight: multiplies the loss (default 1.0).
    """

    def __init__(self, unknown: str = "ignore", loss_weight: float = 1.0):
        super().__init__()
        if unknown not in ("ignore", "negative"):
            raise ConfigError(f"PartialBCELoss: unknown={unknown!r}; valid: 'ignore', 'negative'")
        self.unknown = unknown
        self.loss_weight = loss_weight

    def forward(self, cls_score, label, weight=None, avg_factor=None, reduction_override=None, **kwargs):
        _check_no_weight("PartialBCELoss", weight)
        if reduction_override not in (None, "mean"):
            raise ConfigError(f"PartialBCELoss: reduction {reduction_override!r} is not supported; only 'mean'")
        return self.loss_weight * partial_bce(cls_score, label, unknown=self.unknown)

    def extra_repr(self):
        return f"unknown={self.unknown!r}"


def partial_targets(data_samples: List[DataSample], num_classes: int, device) -> torch.Tensor:
    """``(B, C)`` float targets 1 / 0 / -1 from the samples' ``partial_labels``.

    A sample without ``partial_labels`` is fully labelled: its ``gt_label`` positive, the rest
    negative. Carry the field with ``PackInputs(algorithm_keys=['partial_labels'])`` and
    :class:`labelwise.PartialMultiLabelDataset`.
    """
    rows = []
    for i, sample in enumerate(data_samples):
        if "partial_labels" in sample:
            row = torch.as_tensor(sample.partial_labels, dtype=torch.float32).reshape(-1)
            if row.numel() != num_classes:
                raise ConfigError(f"data sample {i}: partial_labels has {row.numel()} entries; the head has "
                                  f"{num_classes} classes")
        else:
            row = label_to_onehot(sample.gt_label, num_classes).float().reshape(-1)
        rows.append(row)
    return torch.stack(rows).to(device)


class _PartialLabelsMixin:
    def _get_loss(self, cls_score: torch.Tensor, data_samples: List[DataSample], **kwargs):
        name = f"labelwise.{type(self).__name__}"
        if "sample_weight" in data_samples[0]:
            raise ConfigError(f"{name} has no per-sample weighting (its losses are batch-level statistics), but the "
                              "samples carry CleanNet weights (sample_weight from labelwise.CleanNetWeights); CleanNet "
                              "weights do not compose with the partial-label regime")
        if "gt_score" in data_samples[0]:
            _check_partial_targets(f"{name} (which trains on partial_labels and would ignore gt_score)",
                                   torch.stack([s.gt_score for s in data_samples]))
        target = partial_targets(data_samples, cls_score.size(-1), cls_score.device)
        return {"loss": self.loss_module(cls_score, target, avg_factor=cls_score.size(0), **kwargs)}


class PartialMultiLabelLinearClsHead(_PartialLabelsMixin, MultiLabelLinearClsHead):
    """``MultiLabelLinearClsHead`` whose loss target is ``partial_labels`` (1 / 0 / -1).

    Use with a loss that understands -1 (``labelwise.PUMLCLoss``, ``labelwise.PartialBCELoss``);
    mmpretrain's own losses would read -1 as a number. Arguments as the parent class.
    """


class PartialCSRAClsHead(_PartialLabelsMixin, CSRAClsHead):
    """``CSRAClsHead`` whose loss target is ``partial_labels`` (1 / 0 / -1); see
    :class:`PartialMultiLabelLinearClsHead`."""


class PUMLCClassifier(ImageClassifier):
    """``ImageClassifier`` with PU-MLC's Local-Global Convolution and MixUp regulariser.

    Args:
        lgc: ``None`` (default: no conversion) or a dict with ``num_heads`` (8), ``reduction``
            (4), ``exclude`` (name prefixes inside the backbone to leave alone, ()), ``freeze``
            (False: train everything; True: the reference's regime -- only the global branches
            and ``trainable`` train, every BatchNorm stays in eval mode), ``trainable``
            (qualified name prefixes in the classifier kept trainable when frozen; default
            ``('backbone.layer4', 'neck', 'head')``), ``seed`` (0, the branches' BN init).
        mixup: ``None`` (default: off) or a dict with ``alpha`` (0.3, Beta parameter),
            ``loss_weight`` (1.0), ``detach_targets`` (False, as the reference) and ``seed``
            (None: draws from torch's global generator, which mmengine seeds). Needs a
            ``Partial*`` head or a stock multi-label head (targets: known positives).
        **kwargs: as ``ImageClassifier`` (backbone, neck, head, ...).
    """

    def __init__(self, *args, lgc: Optional[dict] = None, mixup: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.lgc_cfg = self._check_options("lgc", lgc, dict(num_heads=8, reduction=4, exclude=(), freeze=False,
                                                            trainable=("backbone.layer4", "neck", "head"), seed=0))
        self.mixup_cfg = self._check_options("mixup", mixup, dict(alpha=0.3, loss_weight=1.0, detach_targets=False,
                                                                  seed=None))
        self._mixup_generator = None
        if self.mixup_cfg is not None and self.mixup_cfg["seed"] is not None:
            self._mixup_generator = torch.Generator().manual_seed(int(self.mixup_cfg["seed"]))
        if self.lgc_cfg is not None:
            c = self.lgc_cfg
            convert_to_lgc(self.backbone, num_heads=c["num_heads"], reduction=c["reduction"],
                           exclude=tuple(c["exclude"]), seed=c["seed"])
            if c["freeze"]:
                freeze_for_lgc(self, trainable=tuple(c["trainable"]))

    @staticmethod
    def _check_options(name, given, defaults):
        if given is None:
            return None
        if not isinstance(given, dict):
            raise ConfigError(f"PUMLCClassifier: {name} must be None or a dict, got {given!r}")
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ConfigError(f"PUMLCClassifier: unknown {name} option(s) {unknown}; valid: {sorted(defaults)}")
        return {**defaults, **given}

    def init_weights(self):
        super().init_weights()
        if self.lgc_cfg is not None:  # the backbone's init_cfg sets every BN weight to 1
            init_global_branches(self.backbone, seed=self.lgc_cfg["seed"])

    def train(self, mode: bool = True):
        super().train(mode)
        if mode and self.lgc_cfg is not None and self.lgc_cfg["freeze"]:
            keep_bn_eval(self)
        return self

    def loss(self, inputs: torch.Tensor, data_samples: List[DataSample]) -> dict:
        feats = self.extract_feat(inputs)
        cls_score = self.head(feats)
        losses = self.head._get_loss(cls_score, data_samples)
        if self.mixup_cfg is not None:
            c = self.mixup_cfg
            targets = partial_targets(data_samples, cls_score.size(-1), cls_score.device)
            reg = pu_mixup_regularizer(lambda x: self.head(self.extract_feat(x)), inputs, cls_score, targets,
                                       alpha=c["alpha"], detach_targets=c["detach_targets"],
                                       generator=self._mixup_generator)
            losses["loss_mixup"] = c["loss_weight"] * reg
        return losses
