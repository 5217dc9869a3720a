"""LabelPooling for timm and plain PyTorch: a box-recording crop and an ``(image, soft_target)`` dataset.

Example (digit scenes, a store made by ``labelwise relabel``)::

    from timm.loss import SoftTargetCrossEntropy
    from timm.task import ClassificationTask
    from labelwise.adapters.torch_data import DigitScenesDataset, MEAN, STD
    from labelwise.adapters.torch_labelpool import LabelPoolingDataset, RandomResizedCropWithBox

    base = DigitScenesDataset(root, "single", "train", transform=lambda img: img)  # PIL images
    train = LabelPoolingDataset(
        base, "labelmaps/single-train", num_classes=10,
        crop=RandomResizedCropWithBox(64, scale=(0.08, 1.0)),
        transform=T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)]))
    task = ClassificationTask(model, SoftTargetCrossEntropy())   # targets (B, C) soft
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torchvision import transforms as T
from torchvision.transforms import functional as F

from labelwise.errors import ConfigError, DataError


class RandomResizedCropWithBox(T.RandomResizedCrop):
    """torchvision's ``RandomResizedCrop`` that also returns the crop box.

    ``crop(img)`` returns ``(cropped_img, box)`` with ``box`` a float32 tensor ``(x1, y1, x2,
    y2)`` in pixels of the input image (``x2``, ``y2`` exclusive). A flip applied afterwards
    needs no change of the box (LabelPooling's 1x1 average is flip-invariant).

    Args:
        size, scale, ratio, interpolation, antialias: as ``torchvision.transforms.RandomResizedCrop``.
        generator: a ``torch.Generator`` for the crop parameters; ``None`` (default) uses
            torch's default generator, as torchvision does (a ``DataLoader`` seeds it per
            worker from its own ``generator``).
    """

    def __init__(self, size, scale=(0.08, 1.0), ratio=(3.0 / 4.0, 4.0 / 3.0),
                 interpolation=T.InterpolationMode.BILINEAR, antialias=True, *, generator=None):
        super().__init__(size, scale=scale, ratio=ratio, interpolation=interpolation, antialias=antialias)
        self.generator = generator

    def forward(self, img):
        if self.generator is None:
            top, left, height, width = self.get_params(img, self.scale, self.ratio)
        else:
            top, left, height, width = _crop_params(img, self.scale, self.ratio, self.generator)
        out = F.resized_crop(img, top, left, height, width, self.size, self.interpolation,
                             antialias=self.antialias)
        return out, torch.tensor([left, top, left + width, top + height], dtype=torch.float32)


class LabelPoolingDataset(torch.utils.data.Dataset):
    """Wrap a dataset of images into ``(image, soft_target)`` pairs with LabelPooling targets.

    Args:
        dataset: returns ``(PIL image, anything)`` (the original label is not used).
        label_maps: a store directory from ``labelwise relabel`` (or the reference ``.pt`` root
            with ``layout='reference'``).
        num_classes: the model's number of classes; must match the maps.
        crop: a :class:`RandomResizedCropWithBox` (``None``: no crop, the whole image's target).
        transform: applied to the cropped PIL image (flip, ``ToTensor``, normalisation).
        keys: store key of each sample; default ``dataset.ids`` (image paths relative to the
            dataset root, as :class:`~labelwise.adapters.torch_data.DigitScenesDataset` has).
        coord_order: ``'xy'`` (default) or ``'reference'`` (see ``pooling.COORD_ORDERS``).
        layout, key_depth: see :func:`labelwise.plugins.labelpool.reference.open_label_maps`.

    ``dataset[i]`` is ``(image, target)``, ``target`` float32 ``(C,)`` summing to 1.
    """

    def __init__(self, dataset, label_maps, *, num_classes: int, crop=None, transform=None,
                 keys=None, coord_order: str = "xy", layout: str = "store", key_depth: int | None = 2):
        from labelwise.plugins.labelpool.pooling import COORD_ORDERS
        from labelwise.plugins.labelpool.reference import open_label_maps

        if coord_order not in COORD_ORDERS:
            raise ConfigError(f"coord_order must be one of {', '.join(COORD_ORDERS)}, got {coord_order!r}")
        if keys is None:
            keys = getattr(dataset, "ids", None)
            if keys is None:
                raise ConfigError("LabelPoolingDataset: pass keys= (the dataset has no .ids)")
        if len(keys) != len(dataset):
            raise DataError(f"LabelPoolingDataset: {len(keys)} keys for {len(dataset)} samples")
        self.dataset, self.keys = dataset, list(keys)
        self.maps = open_label_maps(label_maps, num_classes=num_classes, layout=layout, key_depth=key_depth)
        self.num_classes = int(num_classes)
        self.crop, self.transform, self.coord_order = crop, transform, coord_order

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        from labelwise.plugins.labelpool.pooling import pool_label_map_numpy

        img, _ = self.dataset[index]
        width, height = img.size
        box = np.array([0.0, 0.0, 1.0, 1.0])
        if self.crop is not None:
            img, pixels = self.crop(img)
            box = pixels.numpy().astype(np.float64) / np.array([width, height, width, height])
        scores, ids = self.maps.get(self.keys[index])
        target = pool_label_map_numpy(scores, ids, box, num_classes=self.num_classes,
                                      coord_order=self.coord_order)
        image = img if self.transform is None else self.transform(img)
        return image, torch.from_numpy(target)


def _crop_params(img, scale, ratio, generator):
    """``T.RandomResizedCrop.get_params`` drawing from ``generator``."""
    width, height = F.get_image_size(img)
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect_ratio = math.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator).item())
        w = int(round(math.sqrt(target_area * aspect_ratio)))
        h = int(round(math.sqrt(target_area / aspect_ratio)))
        if 0 < w <= width and 0 < h <= height:
            i = torch.randint(0, height - h + 1, size=(1,), generator=generator).item()
            j = torch.randint(0, width - w + 1, size=(1,), generator=generator).item()
            return i, j, h, w
    in_ratio = float(width) / float(height)
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w
