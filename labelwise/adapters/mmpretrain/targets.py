"""The target rules every mmpretrain pipeline step of labelwise shares (one home for them).

LabelPooling, offline Label Refinery and CleanNet's weights all need to know whether a sample
is single-label and whether an earlier step already set its training target; they ask here,
so a config combining them fails on its first sample with the same wording.
"""
from __future__ import annotations

import numpy as np
import torch

from labelwise.errors import ConfigError

__all__ = ["check_single_soft_target", "multi_label_evidence"]


def multi_label_evidence(item) -> str | None:
    """Why a sample is a multi-label / partial-label one, or ``None`` for a single-label sample.

    Single-label soft targets (LabelPooling, Label Refinery) and CleanNet weights (which score
    one label per sample) refuse such samples; this is the one test they share.

    Args:
        item: a pipeline results dict or a packed ``DataSample``.

    Returns:
        ``None``, or a phrase naming the evidence: a ``partial_labels`` field (a
        :class:`labelwise.PartialMultiLabelDataset` sample), a ``gt_label`` given as a list
        (mmpretrain's ``MultiLabelDataset``), or a packed ``gt_label`` with other than one entry.
    """
    if "partial_labels" in item:
        return "it has partial_labels (a partial-label dataset)"
    label = item.get("gt_label", None) if hasattr(item, "get") else None
    if label is None:
        return None
    if isinstance(label, (list, tuple)):
        return f"its gt_label is a list {list(label)} (a multi-label dataset)"
    size = label.numel() if isinstance(label, torch.Tensor) else np.asarray(label).size
    if size != 1:
        return f"its gt_label holds {size} labels (a multi-label dataset)"
    return None


def check_single_soft_target(results: dict, component: str, verb: str = "gives") -> None:
    """Refuse a pipeline sample whose training target is already set, or that is multi-label.

    The pipeline steps that write a single-label soft target ``gt_score`` (LabelPooling, offline
    Label Refinery) share this check, so a config combining them, or using one on a
    multi-label / partial-label dataset, fails on its first sample with the same wording.

    Args:
        results: the pipeline results dict.
        component: the step's name as the user wrote it, e.g. ``'labelwise.LabelPooling'``.
        verb: how the step's target is described (``'gives'`` / ``'serves'``).
    """
    if "gt_score" in results:
        raise ConfigError(f"{component} and an earlier pipeline step (labelwise.LabelPooling, or "
                          "labelwise.LoadRefinedLabels: offline Label Refinery) both set the training target "
                          "gt_score; which one wins is undefined: keep one of them")
    evidence = multi_label_evidence(results)
    if evidence is not None:
        raise ConfigError(f"{component} {verb} single-label soft targets (a softmax over classes), but sample "
                          f"{results.get('img_path', '?')!r} is multi-label: {evidence}; it does not compose "
                          "with a multi-label / partial-label head or the PU-MLC loss")
