"""labelwise's mmengine metrics: ``labelwise.SampleScores`` and ``labelwise.PartialMultiLabelMetric``.

``labelwise.PartialMultiLabelMetric`` evaluates a validation or test split that is itself
partially labelled (1 / 0 / -1 per class, ``partial_labels`` of the data samples): mAP,
per-class AP and mean AUROC over the known entries only (:func:`labelwise.metrics.partial_label_metrics`)::

    val_evaluator = dict(type='labelwise.PartialMultiLabelMetric')

mmpretrain's ``AveragePrecision`` reads only ``gt_label`` / ``gt_score`` (every class not
listed counts as a negative) and does not group tied scores.

``labelwise.SampleScores`` writes every test sample's class scores and labels as ``.npz`` (no pickle).
mmpretrain's ``DumpResults`` pickles whole data samples; this metric keeps what a paired
comparison of two models on the same test images needs (e.g. a bootstrap confidence interval
of their difference, :func:`labelwise.stats.paired_bootstrap`), in a file any tool reads
without unpickling::

    test_evaluator = [dict(type='Accuracy', topk=(1,)),
                      dict(type='labelwise.SampleScores', out_file='work_dirs/run/test_scores.npz')]

The file holds ``scores`` ``(N, C)`` float32, ``labels`` (``(N,)`` class ids for single-label
data, ``(N, C)`` 0/1 for multi-label data) and ``sample_idx`` ``(N,)``, in dataset order. It is
written atomically by rank 0; the metric returns no value of its own.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from mmengine.evaluator import BaseMetric

from labelwise.errors import DataError
from labelwise.utils.fileio import atomic_write


class SampleScores(BaseMetric):
    """Collect ``pred_score`` and the ground truth of every sample; write them to ``out_file``.

    Args:
        out_file: the ``.npz`` file to write (parent folders are created).
        multi_label: the labels are sets of classes (written ``(N, C)`` 0 / 1, from ``gt_score``
            or the ``gt_label`` indices); default False: one class id per sample (``gt_label``).
        collect_device, prefix: as mmengine's :class:`~mmengine.evaluator.BaseMetric`.
    """

    default_prefix = "scores"

    def __init__(self, out_file: str, multi_label: bool = False, collect_device: str = "cpu",
                 prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        if not str(out_file).endswith(".npz"):
            raise ValueError(f"SampleScores out_file {out_file!r}: expected a .npz path")
        self.out_file = Path(out_file)
        self.multi_label = bool(multi_label)

    def process(self, data_batch, data_samples) -> None:
        for sample in data_samples:
            scores = torch.as_tensor(sample["pred_score"]).float().cpu().numpy()
            if self.multi_label and "gt_score" in sample:
                label = torch.as_tensor(sample["gt_score"]).cpu().numpy().astype(np.int8)
            elif self.multi_label:
                label = np.zeros(len(scores), dtype=np.int8)
                label[torch.as_tensor(sample["gt_label"]).reshape(-1).long().cpu().numpy()] = 1
            else:
                label = np.int64(torch.as_tensor(sample["gt_label"]).reshape(-1)[0])
            self.results.append((int(sample.get("sample_idx", len(self.results))), scores, label))

    def compute_metrics(self, results: list) -> dict:
        results = sorted(results, key=lambda r: r[0])
        self.out_file.parent.mkdir(parents=True, exist_ok=True)
        with atomic_write(self.out_file, "wb") as f:
            np.savez(f, sample_idx=np.array([r[0] for r in results], dtype=np.int64),
                     scores=np.stack([r[1] for r in results]).astype(np.float32),
                     labels=np.stack([r[2] for r in results]))
        return {}


class PartialMultiLabelMetric(BaseMetric):
    """mAP, per-class AP and mean AUROC of a partially labelled split, over known labels only.

    Reads each data sample's ``pred_score`` ``(C,)`` and ``partial_labels`` ``(C,)`` of
    1 / 0 / -1 (pack them with ``dict(type='PackInputs', algorithm_keys=['partial_labels'])``
    from a ``labelwise.PartialMultiLabelDataset`` or one of the reader datasets). An entry -1
    never counts; AP groups tied scores as scikit-learn does. A class without a known positive
    or a known negative in the whole split is left out of the means, and named with the reason
    in a warning and in :attr:`left_out`.

    Results (with the default prefix ``partial``): ``partial/mAP`` and ``partial/mAUROC`` (%, NaN
    when no class is defined), ``partial/num_classes`` (classes averaged) and, with
    ``per_class=True``, ``partial/AP_classwise`` and ``partial/AUROC_classwise`` (lists in %, NaN
    for left-out classes).

    Args:
        per_class: also return the per-class lists (default False).
        collect_device, prefix: as mmengine's :class:`~mmengine.evaluator.BaseMetric`.
    """

    default_prefix = "partial"

    def __init__(self, per_class: bool = False, collect_device: str = "cpu", prefix: str | None = None):
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.per_class = bool(per_class)
        self.left_out: dict = {}

    def process(self, data_batch, data_samples) -> None:
        for sample in data_samples:
            if "partial_labels" not in sample:
                raise DataError("labelwise.PartialMultiLabelMetric: a data sample has no partial_labels; pack them "
                                "with dict(type='PackInputs', algorithm_keys=['partial_labels']) in the "
                                "evaluation pipeline")
            scores = torch.as_tensor(sample["pred_score"]).float().reshape(-1).cpu().numpy()
            labels = torch.as_tensor(sample["partial_labels"]).reshape(-1).cpu().numpy()  # checked in compute_metrics
            if labels.shape != scores.shape:
                raise DataError(f"labelwise.PartialMultiLabelMetric: sample {sample.get('img_path', '?')} has "
                                f"{labels.size} partial labels for {scores.size} class scores")
            self.results.append((scores, labels))

    def compute_metrics(self, results: list) -> dict:
        from mmengine.logging import MMLogger

        from labelwise.metrics import partial_label_metrics

        scores = np.stack([r[0] for r in results])
        labels = np.stack([r[1] for r in results])
        classes = (self.dataset_meta or {}).get("classes")
        if classes is not None and len(classes) != labels.shape[1]:
            classes = None
        out = partial_label_metrics(scores, labels, classes=classes)
        self.left_out = out["left_out"]
        if self.left_out:
            MMLogger.get_current_instance().warning(
                f"labelwise.PartialMultiLabelMetric: {len(self.left_out)} of {labels.shape[1]} classes left out of "
                "mAP / mAUROC: " + ", ".join(f"{name} ({why})" for name, why in self.left_out.items()))
        metrics = {"mAP": out["mAP"], "mAUROC": out["mAUROC"], "num_classes": out["num_classes"]}
        if self.per_class:
            metrics["AP_classwise"] = (out["AP"] * 100.0).tolist()
            metrics["AUROC_classwise"] = (out["AUROC"] * 100.0).tolist()
        return metrics
