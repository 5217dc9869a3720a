"""ReLabel + LabelPooling for mmpretrain: a box-recording crop, the pooling transform, annotators.

Pipeline (see ``configs/labelpool/digits_single.py``)::

    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='labelwise.RandomResizedCropWithBox', scale=224),   # records crop_box
        dict(type='RandomFlip', prob=0.5, direction='horizontal'),
        dict(type='labelwise.LabelPooling', label_maps='data/labelmaps', num_classes=1000,
             data_root=data_root),                                      # sets gt_score
        dict(type='PackInputs'),
    ]
    model = dict(head=dict(loss=dict(type='CrossEntropyLoss', use_soft=True)))

Pooling runs in the dataset pipeline, i.e. in the data-loading workers, one sample at a time
with the numpy kernel (~0.1 ms per sample at C=1000, 15x15, k=5): it is off the training
process's critical path, and the target reaches the model as a plain ``gt_score``, so the
stock ``ClsDataPreprocessor`` (and its Mixup / CutMix, which then mix the pooled targets),
stock heads and any head that reads ``gt_score`` work unchanged. See
``docs/methods/labelpool.md`` for the measured alternatives.
"""
from __future__ import annotations

import sys
from collections.abc import Mapping

import mmcv
import numpy as np
from mmcv.transforms import BaseTransform
from mmpretrain.datasets.transforms import RandomResizedCrop

from labelwise.adapters.mmpretrain.targets import check_single_soft_target
from labelwise.errors import ConfigError, DataError


class RandomResizedCropWithBox(RandomResizedCrop):
    """mmpretrain's ``RandomResizedCrop`` that also records the crop box.

    A drop-in replacement (same arguments, same random draws, same output image). The box is
    given in pixels of the **original** image as loaded (``ori_shape``): a resize before the
    crop is undone by the ratio of ``ori_shape`` to the current image size, and a flip before
    the crop (``flip`` / ``flip_direction`` set by ``RandomFlip``) is undone by mirroring the
    box. A flip *after* the crop needs no change: LabelPooling's 1x1 average over a box does
    not depend on the order of the pixels inside it. It must be the pipeline's only crop.

    **Required Keys:**

    - img
    - ori_shape (optional; default: the current image size)
    - flip, flip_direction (optional; set by an earlier ``RandomFlip``)

    **Modified Keys:**

    - img
    - img_shape

    **Added Keys:**

    - crop_box (np.ndarray float32, (4,)): ``(x1, y1, x2, y2)`` in original-image pixels,
      ``x2``, ``y2`` exclusive (``x2 - x1`` is the crop width).

    Args:
        Those of ``mmpretrain.datasets.transforms.RandomResizedCrop``.
    """

    def transform(self, results: dict) -> dict:
        if "crop_box" in results:
            raise DataError("RandomResizedCropWithBox: the sample already has a crop_box; the "
                            "pipeline may hold only one box-recording crop")
        img = results["img"]
        h, w = img.shape[:2]
        top, left, height, width = self.rand_crop_params(img)
        # the parent's transform, with the crop parameters drawn once (to record them)
        img = mmcv.imcrop(img, bboxes=np.array([left, top, left + width - 1, top + height - 1]))
        img = mmcv.imresize(img, tuple(self.scale[::-1]), interpolation=self.interpolation,
                            backend=self.backend)
        results["img"] = img
        results["img_shape"] = img.shape
        box = np.array([left, top, left + width, top + height], dtype=np.float64)
        if results.get("flip", False):
            direction = results.get("flip_direction", "horizontal")
            if direction in ("horizontal", "diagonal"):
                box[[0, 2]] = w - box[[2, 0]]
            if direction in ("vertical", "diagonal"):
                box[[1, 3]] = h - box[[3, 1]]
        ori_h, ori_w = results.get("ori_shape", (h, w))[:2]
        box *= np.array([ori_w / w, ori_h / h, ori_w / w, ori_h / h])
        results["crop_box"] = box.astype(np.float32)
        return results


BOX_CROP = "RandomResizedCropWithBox"


def _type_name(transform) -> str:
    """The class name of a transform or of a transform config (``'labelwise.X'`` -> ``'X'``)."""
    if isinstance(transform, Mapping):
        kind = transform.get("type")
        return kind.__name__ if isinstance(kind, type) else str(kind).rsplit(".", 1)[-1]
    return type(transform).__name__


def iter_transforms(transforms):
    """Every transform of a pipeline in order, nested ones included (``RandomChoice``'s lists of
    lists, ``RandomApply``'s list or ``Compose``; configs or built objects alike)."""
    for transform in transforms:
        if isinstance(transform, (list, tuple)):
            yield from iter_transforms(transform)
            continue
        yield transform
        inner = transform.get("transforms") if isinstance(transform, Mapping) else getattr(transform, "transforms", None)
        if inner is not None and not isinstance(inner, (list, tuple)):
            inner = getattr(inner, "transforms", None)  # a Compose
        if isinstance(inner, (list, tuple)):
            yield from iter_transforms(inner)


def check_pooling_pipeline(transforms, *, where: str = "the pipeline") -> None:
    """Refuse a pipeline where LabelPooling's target would not match the pixels the model sees.

    With ``labelwise.LabelPooling`` in it, the pipeline's only crop must be
    ``labelwise.RandomResizedCropWithBox``, before the pooling: any other crop (mmpretrain's
    ``RandomResizedCrop``, ``RandomCrop``, ``CenterCrop``, ...) records no box, so the pooled
    target would cover the whole image (or the wrong box). A pipeline without LabelPooling is
    not checked.

    Raises:
        ConfigError: naming ``where``, the crop and what to use instead.
    """
    names = [_type_name(t) for t in iter_transforms(transforms)]
    if "LabelPooling" not in names:
        return
    pooling = names.index("LabelPooling")
    for i, name in enumerate(names):
        if "Crop" in name and name != BOX_CROP:
            raise ConfigError(
                f"{where}: {name} {'before' if i < pooling else 'after'} labelwise.LabelPooling records no crop "
                "box, so the pooled target would not match the pixels the model sees "
                f"({'the whole image would be pooled' if i < pooling else 'the image is cropped again after pooling'}); "
                f"use labelwise.{BOX_CROP} (the same arguments as RandomResizedCrop) as the pipeline's only crop")
    if BOX_CROP in names and names.index(BOX_CROP) > pooling:
        raise ConfigError(f"{where}: labelwise.{BOX_CROP} comes after labelwise.LabelPooling, which then pools "
                          "the whole image; put the crop before the pooling")


def check_pooling_config(cfg) -> None:
    """:func:`check_pooling_pipeline` on every dataset pipeline of a loaded mmengine config."""
    name = getattr(cfg, "filename", None) or "config"
    for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
        loader = cfg.get(key)
        if loader and loader.get("dataset") is not None:
            _check_dataset_cfg(loader["dataset"], f"{name}: {key}.dataset")


def _check_dataset_cfg(dataset, where) -> None:
    if isinstance(dataset, (list, tuple)):
        for i, inner in enumerate(dataset):
            _check_dataset_cfg(inner, f"{where}[{i}]")
        return
    if not isinstance(dataset, Mapping):
        return
    if dataset.get("pipeline"):
        check_pooling_pipeline(dataset["pipeline"], where=f"{where}.pipeline")
    for key in ("dataset", "datasets"):
        if dataset.get(key) is not None:
            _check_dataset_cfg(dataset[key], f"{where}.{key}")


class LabelPooling(BaseTransform):
    """Set a sample's ``gt_score`` to its LabelPooling target.

    Reads the image's top-k label map (from a store made by ``labelwise relabel``, or per-image
    ``.pt`` files of the reference code) and pools it over the crop box recorded by
    :class:`RandomResizedCropWithBox`: ``softmax(RoIAlign_1x1(dense map, box))`` computed
    without densifying (:func:`labelwise.plugins.labelpool.pooling.pool_label_map_numpy`).
    Without a ``crop_box`` (no crop in the pipeline) the whole image is pooled.

    **Required Keys:**

    - img_path (or sample_idx, see ``key``)
    - crop_box (optional; without it the whole image is pooled)
    - ori_shape (with crop_box)

    **Added Keys:**

    - gt_score (np.ndarray float32, (C,)): the soft target; ``PackInputs`` turns it into the
      data sample's ``gt_score``. Train with ``CrossEntropyLoss(use_soft=True)``, or with
      ``labelwise.WeightedLinearClsHead`` to weight it per sample (CleanNet,
      ``configs/compose/digits_noisy_cleannet_labelpool.py``).

    A sample that already has a ``gt_score`` (another target-producing step) or is multi-label
    / partial-label (``partial_labels``, or ``gt_label`` a list) is refused with a
    ``ConfigError``: the pooled target is a single-label class distribution. An online
    ``labelwise.RefineryDataPreprocessor`` with a refinery refuses these samples in turn.

    A pipeline with another crop than :class:`RandomResizedCropWithBox` (mmpretrain's
    ``RandomResizedCrop``, ``CenterCrop``, ...), or with the box crop after the pooling, is
    refused with a ``ConfigError`` on the first sample (:func:`check_pooling_pipeline`; the
    pipeline is found from the ``Compose`` that calls the transform, so stock ``tools/train.py``
    gets the check too); ``labelwise train`` and the workflows check the config before training.

    Args:
        label_maps (str): the store directory (or the reference ``.pt`` root).
        num_classes (int): the model's number of classes; must match the maps.
        data_root (str, optional): stripped from ``img_path`` to form the store key (the
            relabel command stores paths relative to the dataset root). Defaults to None: the
            key is the longest trailing part of ``img_path`` that the store holds
            (``LabelMapStore.find_path``), so moving the dataset needs no config change.
        key (str): ``'img_path'`` (default) or ``'sample_idx'`` (the dataset index; the store
            must hold the same images in the same order).
        coord_order (str): ``'xy'`` (default, geometrically correct) or ``'reference'``
            (reproduces the swapped box order of naver-ai/relabel_imagenet).
        layout (str): ``'store'`` (default) or ``'reference'`` (per-image ``.pt`` files).
        key_depth (int, optional): reference layout only; see ``ReferenceLabelMaps``.
            Defaults to 2.
    """

    def __init__(self, label_maps: str, num_classes: int, data_root: str | None = None,
                 key: str = "img_path", coord_order: str = "xy", layout: str = "store",
                 key_depth: int | None = 2):
        from labelwise.plugins.labelpool.pooling import COORD_ORDERS

        if key not in ("img_path", "sample_idx"):
            raise ConfigError(f"LabelPooling: key must be 'img_path' or 'sample_idx', got {key!r}")
        if coord_order not in COORD_ORDERS:
            raise ConfigError(f"LabelPooling: coord_order must be one of {', '.join(COORD_ORDERS)}, "
                              f"got {coord_order!r}")
        self.label_maps = str(label_maps)
        self.num_classes = int(num_classes)
        self.data_root = None if data_root is None else str(data_root)
        self.key = key
        self.coord_order = coord_order
        self.layout = layout
        self.key_depth = key_depth
        self._maps = self._open()  # fail at build time, not in a worker
        self._pipeline_checked = False

    def _open(self):
        from labelwise.plugins.labelpool.reference import open_label_maps

        return open_label_maps(self.label_maps, num_classes=self.num_classes, layout=self.layout,
                               key_depth=self.key_depth)

    def _store_key(self, results: dict):
        if self.key == "sample_idx":
            if "sample_idx" not in results:
                raise DataError("LabelPooling: key='sample_idx' but the sample has no sample_idx")
            return int(results["sample_idx"])
        path = results.get("img_path")
        if path is None:
            raise DataError("LabelPooling: the sample has no img_path (load it with LoadImageFromFile)")
        from labelwise.utils.keys import image_key

        return image_key(path, self.data_root)

    def transform(self, results: dict) -> dict:
        from labelwise.plugins.labelpool.pooling import pool_label_map_numpy

        if not self._pipeline_checked:
            pipeline = self._enclosing_pipeline()
            if pipeline is not None:
                check_pooling_pipeline(pipeline, where="the dataset pipeline")
            self._pipeline_checked = True
        check_single_soft_target(results, "labelwise.LabelPooling")
        key = self._store_key(results)
        if isinstance(key, str) and self.data_root is None and hasattr(self._maps, "find_path"):
            key = self._maps.find_path(key)
        scores, ids = self._maps.get(key)
        box = results.get("crop_box")
        if box is None:
            box = np.array([0.0, 0.0, 1.0, 1.0])
        else:
            if "ori_shape" not in results:
                raise DataError("LabelPooling: the sample has a crop_box but no ori_shape")
            h, w = results["ori_shape"][:2]
            box = np.asarray(box, dtype=np.float64) / np.array([w, h, w, h])
        results["gt_score"] = pool_label_map_numpy(scores, ids, box, num_classes=self.num_classes,
                                                   coord_order=self.coord_order)
        return results

    def _enclosing_pipeline(self):
        """The transforms of the outermost ``Compose`` (or wrapper) up the call stack that holds
        this transform, or ``None`` when it is called on its own. A transform cannot see its
        neighbours otherwise: mmengine's ``Compose`` builds them in order and calls each in turn."""
        found = None
        frame = sys._getframe(2)
        for _ in range(64):
            if frame is None:
                break
            owner = frame.f_locals.get("self")
            try:
                transforms = getattr(owner, "transforms", None) if owner is not self else None
            except Exception:  # noqa: BLE001 -- a property of some unrelated caller
                transforms = None
            if isinstance(transforms, (list, tuple)) and any(t is self for t in iter_transforms(transforms)):
                found = transforms
            frame = frame.f_back
        return found

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(label_maps={self.label_maps!r}, num_classes="
                f"{self.num_classes}, data_root={self.data_root!r}, key={self.key!r}, "
                f"coord_order={self.coord_order!r}, layout={self.layout!r}, "
                f"key_depth={self.key_depth!r})")


def build_annotator(config, checkpoint, *, device="cpu"):
    """An mmpretrain ``ImageClassifier`` (config + checkpoint) as a dense annotator.

    The model must be backbone -> ``GlobalAveragePooling`` neck (or none) -> a head whose
    classifier is ``head.fc`` applied right after the pool (``LinearClsHead``); anything
    else is refused by :func:`~labelwise.plugins.labelpool.annotator.check_linear_head`.

    Args:
        config: config file or built-in name.
        checkpoint: weights, read with :func:`labelwise.checkpoint.load_checkpoint`.
        device: where to put the model.

    Returns:
        ``(DenseClassifier, info)``; ``info`` has ``mean``, ``std`` (0..255 units, in the order
        of the channels the model receives: RGB, or BGR when ``bgr``), ``bgr`` (the config's
        data preprocessor does not convert mmpretrain's BGR images to RGB) and
        ``num_classes``. Passed to :class:`~labelwise.plugins.labelpool.relabel.WholeImageLoader`
        they reproduce the preprocessor's input to the model.
    """
    import torch
    from mmengine.config import Config

    from labelwise.adapters.mmpretrain.runner import build_model, load_trained_weights, resolve_config
    from labelwise.plugins.labelpool.annotator import DenseClassifier, check_linear_head

    path = resolve_config(config)
    cfg = Config.fromfile(str(path))
    model = build_model(cfg, data_preprocessor=None)  # the annotator gets normalised tensors
    load_trained_weights(model, checkpoint, target=f"config {path}", allow_unexpected=False,
                         drop_prefixes=("data_preprocessor.",))
    model.to(device).eval()
    fc = getattr(model.head, "fc", None)
    if fc is None:
        raise ConfigError(f"{path}: head {type(model.head).__name__} has no final linear layer "
                          "'fc'; ReLabel needs a LinearClsHead-style head")

    def pooled_head(fmap):
        feats = model.neck((fmap,)) if model.with_neck else (fmap,)
        return model.head(feats)

    check_linear_head(pooled_head, fc, channels=fc.in_features, name=str(path))
    preprocessor = dict(cfg.get("data_preprocessor") or cfg.model.get("data_preprocessor") or {})
    # LoadImageFromFile gives BGR; ClsDataPreprocessor flips it to RGB when to_rgb is set
    # (mmengine's ImgDataPreprocessor: bgr_to_rgb) and normalises after the flip, so mean/std
    # are in the order of the channels the model receives.
    to_rgb = bool(preprocessor.get("to_rgb", False) or preprocessor.get("bgr_to_rgb", False))
    info = {"mean": [float(m) for m in preprocessor.get("mean", (0.0, 0.0, 0.0))],
            "std": [float(s) for s in preprocessor.get("std", (1.0, 1.0, 1.0))],
            "bgr": not to_rgb,
            "num_classes": fc.out_features}

    class _LastFeatureMap(torch.nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone

        def forward(self, x):
            return self.backbone(x)[-1]

    return DenseClassifier(_LastFeatureMap(model.backbone), fc).eval(), info
