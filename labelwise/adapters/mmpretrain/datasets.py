"""Datasets that mmpretrain lacks for imperfect labels."""
from __future__ import annotations

import numpy as np
from mmpretrain.datasets import MultiLabelDataset

from labelwise.errors import DataError
from labelwise.labels import check_partial_labels


class PartialMultiLabelDataset(MultiLabelDataset):
    """A :class:`mmpretrain.datasets.MultiLabelDataset` that keeps unknown labels.

    mmpretrain's multi-label samples only list positives (``gt_label``), so every other class
    silently becomes a negative. This dataset reads, per sample, the full partial-label vector
    in the project's convention (1 positive, 0 negative, -1 or ``null`` unknown) from the key
    ``partial_labels`` of the annotation file, and passes it through the pipeline. With a
    stock head the training target is still ``gt_label`` (the known positives), which is the
    "assume negative" baseline; labelwise's partial-label losses read ``partial_labels``.

    Annotation file (OpenMMLab 2.0 JSON, as :class:`MultiLabelDataset`)::

        {"metainfo": {"classes": ["0", ..., "9"]},
         "data_list": [{"img_path": "images/train/000000.png", "gt_label": [3],
                        "partial_labels": [-1, 0, -1, 1, ...]}, ...]}

    A sample without ``partial_labels`` is fully labelled (its ``gt_label`` positive, every
    other class negative).

    Added Keys (per sample, for the pipeline):

    - partial_labels (np.ndarray int8, (C,)): 1 / 0 / -1.

    To carry it into the data samples, pack with
    ``dict(type='PackInputs', algorithm_keys=['partial_labels'])``.
    """

    def parse_data_info(self, raw_data_info: dict) -> dict:
        info = super().parse_data_info(raw_data_info)
        num_classes = len(self.metainfo.get("classes") or ())
        where = f"{self.ann_file}: sample {info.get('img_path', '?')}"
        raw = info.get("partial_labels")
        if raw is None:
            if not num_classes:
                raise DataError(f"{self.ann_file}: metainfo.classes is needed to build full labels")
            labels = np.zeros(num_classes, dtype=np.int8)
            labels[np.asarray(info.get("gt_label", []), dtype=np.int64)] = 1
        else:
            values = np.asarray([np.nan if v is None else v for v in raw], dtype=np.float64)
            labels = check_partial_labels(
                values[None], name=f"{where}: partial_labels", num_classes=num_classes or None
            )[0]
            positives = sorted(np.flatnonzero(labels == 1).tolist())
            if "gt_label" in info and sorted(np.atleast_1d(info["gt_label"]).tolist()) != positives:
                raise DataError(
                    f"{where}: gt_label {info['gt_label']} disagrees with the positives of "
                    f"partial_labels {positives}"
                )
            info["gt_label"] = positives
        info["partial_labels"] = labels
        return info

    def get_partial_labels(self) -> np.ndarray:
        """All samples' partial labels as an ``(N, C)`` int8 matrix of 1 / 0 / -1."""
        return np.stack([self.get_data_info(i)["partial_labels"] for i in range(len(self))])
