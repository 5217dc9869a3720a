"""Plain PyTorch datasets (for timm and hand-written loops): the digit scenes, and any reader's
:class:`~labelwise.datasets.LabelSet` (COCO, VOC, Open Images, CheXpert, Food-101N, Clothing1M,
ImageNet folders)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from labelwise.errors import ConfigError

#: Per-channel mean and std of the digit scenes' preprocessing, in 0..1 units (the same
#: normalisation as the mmpretrain configs: mean 127.5, std 64 in 0..255 units).
MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)
UNKNOWN_MODES = ("keep", "negative")


class DigitScenesDataset(Dataset):
    """One regime and split of the digit scenes as ``(image, target)`` pairs.

    Args:
        root: dataset root written by ``labelwise data make``.
        regime: regime directory, e.g. ``'single'``, ``'partial-p0.3'``, ``'noisy-symmetric-r0.2'``.
        split: ``'train'``, ``'val'`` or ``'test'``.
        transform: applied to the PIL RGB image (default: ``to_tensor``, no normalisation).
        unknown_as: for multi-label regimes, ``'keep'`` returns targets with -1 for unknown
            (for partial-label losses); ``'negative'`` turns unknowns into 0 (the "assume
            negative" baseline).
        truth: return the clean labels instead of the regime's (for evaluation).

    Targets: an ``int64`` class id for single-label regimes; a float32 ``(C,)`` vector of
    1 / 0 (/ -1) for multi-label ones. ``ids[i]`` is sample ``i``'s id (its image path).
    """

    def __init__(self, root, regime: str, split: str, *, transform=None, unknown_as: str = "keep", truth: bool = False):
        from labelwise.data import load_regime

        if unknown_as not in UNKNOWN_MODES:
            raise ConfigError(f"unknown_as must be one of {', '.join(UNKNOWN_MODES)}, got {unknown_as!r}")
        self.root = Path(root)
        self.data = load_regime(root, regime, split)
        self.ids = list(self.data.ids)
        labels = self.data.truth if truth else self.data.labels
        if not self.data.regime.is_single_label:
            labels = labels.astype(np.float32)
            if unknown_as == "negative":
                labels = np.maximum(labels, 0.0)
        self.targets = torch.as_tensor(labels)
        self.transform = transform

    @property
    def multi_label(self) -> bool:
        return not self.data.regime.is_single_label

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        return _load_image(self.root / self.ids[index], self.transform), self.targets[index]


class LabelSetDataset(Dataset):
    """The images of a reader's :class:`~labelwise.datasets.LabelSet` as ``(image, target)`` pairs.

    ::

        from labelwise.datasets import read_coco
        train = LabelSetDataset(read_coco("data/coco", p=0.3), transform=timm_transform)

    Args:
        label_set: what a reader of :mod:`labelwise.datasets` returned.
        transform: applied to the PIL RGB image (default: ``to_tensor``, no normalisation).
        unknown_as: for multi-label sets, ``'keep'`` (default) returns -1 for unknown labels
            (for partial-label losses), ``'negative'`` turns them into 0 (the "assume negative"
            baseline).

    Targets: a float32 ``(C,)`` vector of 1 / 0 (/ -1) for multi-label sets, an ``int64`` class id
    for single-label ones. ``ids[i]`` is image ``i``'s path relative to the dataset root (the key
    of ``labelwise relabel`` stores and of CleanNet feature files), ``extra`` the set's per-image
    arrays (e.g. ``extra['verified']``).
    """

    def __init__(self, label_set, *, transform=None, unknown_as: str = "keep"):
        if unknown_as not in UNKNOWN_MODES:
            raise ConfigError(f"unknown_as must be one of {', '.join(UNKNOWN_MODES)}, got {unknown_as!r}")
        self.label_set = label_set
        self.root = Path(label_set.root)
        self.ids = list(label_set.paths)
        self.classes = tuple(label_set.classes)
        self.extra = label_set.extra
        labels = label_set.labels
        if label_set.multi_label:
            labels = labels.astype(np.float32)
            if unknown_as == "negative":
                labels = np.maximum(labels, 0.0)
        self.targets = torch.as_tensor(labels)
        self.transform = transform

    @property
    def multi_label(self) -> bool:
        return self.label_set.multi_label

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        return _load_image(self.root / self.ids[index], self.transform), self.targets[index]


def _load_image(path, transform):
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
    if transform is None:
        from torchvision.transforms.functional import to_tensor

        return to_tensor(img)
    return transform(img)


#: Crop scales of the digit-scenes configs: single-label runs crop 8-100 % of the area as the
#: official ReLabel / Label Refinery recipes do; multi-label ones at least half, so that the
#: crop keeps the digits its labels name.
SINGLE_LABEL_SCALE, MULTI_LABEL_SCALE = (0.08, 1.0), (0.5, 1.0)


def digits_transform(*, train: bool, size: int = 64, scale=SINGLE_LABEL_SCALE):
    """torchvision transform matching the mmpretrain configs.

    Train: ``RandomResizedCrop(size, scale)`` (no flip: mirrored digits are other shapes);
    eval: the whole image. Both end with ``ToTensor`` and normalisation by :data:`MEAN`/:data:`STD`.
    """
    from torchvision import transforms as T

    steps = [T.RandomResizedCrop(size, scale=scale)] if train else []
    return T.Compose(steps + [T.ToTensor(), T.Normalize(MEAN, STD)])
