"""``labelwise.SampleScores``: every test sample's class scores and labels, written as ``.npz`` (no pickle).

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
        with atomic_write(self.out_file, "wb") as f:
            np.savez(f, sample_idx=np.array([r[0] for r in results], dtype=np.int64),
                     scores=np.stack([r[1] for r in results]).astype(np.float32),
                     labels=np.stack([r[2] for r in results]))
        return {}
