"""Readers of published datasets' label files, into the project's convention.

Each reader returns a :class:`LabelSet`: per image a path relative to the dataset root and a
partial-label vector of 1 / 0 / -1 (:mod:`labelwise.labels`) or a class id. They read UTF-8
text with the standard library and numpy only (no mmengine, mmpretrain or timm), and raise
:class:`~labelwise.errors.DataError` naming the file, line (or key) and the bad value.

* :func:`read_coco` -- ``annotations/instances_*2014.json``: 80 classes of 1 / 0 (-1 with ``p``);
* :func:`read_voc` -- VOC 2007 ``ImageSets/Main`` + ``Annotations/*.xml``: difficult-only -1;
* :func:`read_open_images` -- human-verified labels + class descriptions: verified 1 / 0, rest -1;
* :func:`read_chexpert` -- ``train.csv`` / ``valid.csv``: 14 (or the 5 competition) observations;
* :func:`read_food101n` -- ``meta/imagelist.tsv`` + ``verified_*.tsv``: noisy class, verified flag;
* :func:`read_clothing1m` -- ``noisy_label_kv.txt`` / ``clean_label_kv.txt``: class, verified flag;
* :func:`read_imagenet_folder` -- ``train/<wnid>/*.JPEG``: class id over the sorted wnids.

mmpretrain datasets over them: :mod:`labelwise.adapters.mmpretrain.readers`
(``type='labelwise.COCOMultiLabel'`` etc.); for timm / plain PyTorch:
:class:`labelwise.adapters.torch_data.LabelSetDataset`. See ``docs/data.md``.
"""
from labelwise.datasets.base import LabelSet, write_verification_csv
from labelwise.datasets.chexpert import COMPETITION, OBSERVATIONS, read_chexpert
from labelwise.datasets.clothing1m import read_clothing1m
from labelwise.datasets.coco import partial_keep_mask, read_coco
from labelwise.datasets.food101n import read_food101n
from labelwise.datasets.imagenet import read_imagenet_folder, read_synset_mapping
from labelwise.datasets.open_images import read_open_images, read_open_images_classes
from labelwise.datasets.voc import VOC_CLASSES, read_voc

__all__ = [
    "COMPETITION",
    "LabelSet",
    "OBSERVATIONS",
    "VOC_CLASSES",
    "partial_keep_mask",
    "read_chexpert",
    "read_clothing1m",
    "read_coco",
    "read_food101n",
    "read_imagenet_folder",
    "read_open_images",
    "read_open_images_classes",
    "read_synset_mapping",
    "read_voc",
    "write_verification_csv",
]
