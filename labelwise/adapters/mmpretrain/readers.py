"""mmpretrain datasets over the published formats of :mod:`labelwise.datasets`.

Each class reads its files with the matching reader and hands mmpretrain the same samples
:class:`~labelwise.adapters.mmpretrain.datasets.PartialMultiLabelDataset` builds from its JSON:
multi-label datasets carry ``partial_labels`` (1 / 0 / -1, int8 ``(C,)``) and ``gt_label`` = the
known positives; single-label ones a class id ``gt_label`` (plus ``verified`` where the format
has it). The class names come from the files: ``metainfo['classes']`` is set when the data are
loaded (a ``classes=`` / ``metainfo`` given in the config must agree with them). Image paths are
``data_root`` joined with the reader's paths; ``data_prefix`` is not used (the files name the
images).

::

    train_dataloader = dict(dataset=dict(
        type='labelwise.COCOMultiLabel', data_root='data/coco',
        ann_file='annotations/instances_train2014.json', p=0.3, seed=0,
        pipeline=[dict(type='LoadImageFromFile'), dict(type='RandomResizedCrop', scale=448),
                  dict(type='PackInputs', algorithm_keys=['partial_labels'])]))
"""
from __future__ import annotations

from mmengine.fileio import join_path
from mmpretrain.datasets import BaseDataset

from labelwise.adapters.mmpretrain.datasets import PartialMultiLabelDataset
from labelwise.errors import ConfigError


class _ReaderMixin:
    """Reads a :class:`~labelwise.datasets.LabelSet` in ``load_data_list``: a subclass defines
    ``read_label_set()`` (its reader called with its options) and, optionally, ``_sample_extra``."""

    def _init_reader(self, data_root, ann_file, kwargs: dict) -> None:
        if not data_root:
            raise ConfigError(f"labelwise.{type(self).__name__}: data_root is required (the dataset root)")
        if kwargs.get("data_prefix"):
            raise ConfigError(f"labelwise.{type(self).__name__}: data_prefix is not used (the annotation files name "
                              f"the images, relative to data_root); got {kwargs['data_prefix']!r}")
        kwargs.pop("data_prefix", None)
        self._source_file = ann_file  # as given: relative to data_root or absolute (mmengine joins ann_file)

    def _sample_extra(self, label_set, index: int) -> dict:
        """Format-specific keys of sample ``index`` (added to its data info)."""
        return {}

    def _set_classes(self, label_set) -> None:
        given = self._metainfo.get("classes")
        if given is not None and tuple(given) != label_set.classes:
            raise ConfigError(f"labelwise.{type(self).__name__}: classes {tuple(given)[:5]}... given in the config "
                              f"differ from those of {label_set.source} ({label_set.classes[:5]}...); leave "
                              "classes out, they are read from the files")
        self._metainfo["classes"] = label_set.classes


class _PartialReaderDataset(_ReaderMixin, PartialMultiLabelDataset):
    def __init__(self, data_root, ann_file="", **kwargs):
        self._init_reader(data_root, ann_file, kwargs)
        super().__init__(ann_file=ann_file, data_root=data_root, **kwargs)

    def load_data_list(self) -> list:
        label_set = self.read_label_set()
        self._set_classes(label_set)
        return [self.parse_data_info({"img_path": join_path(self.data_root, path),
                                      "partial_labels": label_set.labels[i].tolist(),
                                      **self._sample_extra(label_set, i)})
                for i, path in enumerate(label_set.paths)]


class _ClassReaderDataset(_ReaderMixin, BaseDataset):
    def __init__(self, data_root, ann_file="", **kwargs):
        self._init_reader(data_root, ann_file, kwargs)
        super().__init__(ann_file=ann_file, data_root=data_root, **kwargs)

    def load_data_list(self) -> list:
        label_set = self.read_label_set()
        self._set_classes(label_set)
        return [{"img_path": join_path(self.data_root, path), "gt_label": int(label_set.labels[i]),
                 **self._sample_extra(label_set, i)} for i, path in enumerate(label_set.paths)]

    def _sample_extra(self, label_set, index: int) -> dict:
        return {key: int(label_set.extra[key][index]) for key in ("verified", "noisy_label", "clean_label")
                if key in label_set.extra}


class COCOMultiLabel(_PartialReaderDataset):
    """COCO instances (2014) as multi-label data, optionally under the partial-label protocol.

    See :func:`labelwise.datasets.read_coco`: 80 classes in category-id order, images without
    annotations all-negative, each label kept with probability ``p`` (nested over ``p``, the
    same draw for every method).

    Args:
        data_root: the COCO root (``annotations/``, ``train2014/``, ``val2014/``).
        ann_file: the instances file relative to ``data_root`` (default
            ``'annotations/instances_train2014.json'``).
        image_dir: the image folder (default: from the file name, ``train2014``).
        p: probability that a label stays known (default None: all known).
        seed: seed of the draws (default 0).
        draw: ``'labelwise'`` (default) or ``'pu-mlc'`` (the reference code's masks).
        **kwargs: those of mmpretrain's ``BaseDataset`` (``pipeline``, ``test_mode``, ...).

    Added Keys: partial_labels (int8, (80,)), image_id (int).
    """

    def __init__(self, data_root, ann_file="annotations/instances_train2014.json", image_dir=None, p=None, seed=0,
                 draw="labelwise", **kwargs):
        self.image_dir, self.p, self.seed, self.draw = image_dir, p, seed, draw
        super().__init__(data_root, ann_file, **kwargs)

    def read_label_set(self):
        from labelwise.datasets import read_coco

        return read_coco(self.data_root, self._source_file, image_dir=self.image_dir, p=self.p, seed=self.seed,
                         draw=self.draw)

    def _sample_extra(self, label_set, index):
        return {"image_id": int(label_set.extra["image_id"][index])}


class VOCPartial(_PartialReaderDataset):
    """PASCAL VOC 2007 (mmpretrain's ``VOC`` layout) with difficult-only classes as unknown.

    See :func:`labelwise.datasets.read_voc`. Samples also carry mmpretrain's
    ``gt_label_difficult`` (classes with a difficult object), so mmpretrain's
    ``VOCMultiLabelMetric`` / ``VOCAveragePrecision`` work on this dataset unchanged.

    Args:
        data_root: the ``VOC2007`` folder.
        split: ``'train'``, ``'val'``, ``'trainval'`` (default) or ``'test'``.
        difficult: ``'unknown'`` (default, -1), ``'positive'`` or ``'negative'``.
        **kwargs: those of mmpretrain's ``BaseDataset``.

    Added Keys: partial_labels (int8, (20,)), gt_label_difficult (list of class ids).
    """

    def __init__(self, data_root, split="trainval", difficult="unknown", **kwargs):
        self.split, self.difficult = split, difficult
        super().__init__(data_root, f"ImageSets/Main/{split}.txt", **kwargs)

    def read_label_set(self):
        from labelwise.datasets import read_voc

        return read_voc(self.data_root, split=self.split, difficult=self.difficult)

    def _sample_extra(self, label_set, index):
        return {"gt_label_difficult": label_set.extra["difficult"][index].nonzero()[0].tolist()}


class OpenImagesVerified(_PartialReaderDataset):
    """Open Images human-verified labels: verified present 1, verified absent 0, the rest -1.

    See :func:`labelwise.datasets.read_open_images`.

    Args:
        data_root: the dataset root.
        ann_file: the human-verified labels CSV (``ImageID,Source,LabelName,Confidence``).
        classes_file: the class-descriptions CSV (``LabelName,DisplayName``, no header).
        image_dir: the image folder under ``data_root`` (default ``'train'``).
        image_ext: the image extension (default ``'.jpg'``).
        skip_unknown_classes: ignore rows of classes not in ``classes_file`` (default False).
        **kwargs: those of mmpretrain's ``BaseDataset``.

    Added Keys: partial_labels (int8, (C,)).
    """

    def __init__(self, data_root, ann_file, classes_file, image_dir="train", image_ext=".jpg",
                 skip_unknown_classes=False, **kwargs):
        self.classes_file, self.image_dir, self.image_ext = classes_file, image_dir, image_ext
        self.skip_unknown_classes = skip_unknown_classes
        super().__init__(data_root, ann_file, **kwargs)

    def read_label_set(self):
        from labelwise.datasets import read_open_images

        return read_open_images(self.data_root, self._source_file, self.classes_file, image_dir=self.image_dir,
                                image_ext=self.image_ext, skip_unknown_classes=self.skip_unknown_classes)


class CheXpert(_PartialReaderDataset):
    """CheXpert ``train.csv`` / ``valid.csv`` with an uncertainty and a blank policy.

    See :func:`labelwise.datasets.read_chexpert`.

    Args:
        data_root: the folder holding ``CheXpert-v1.0-small/`` (the CSV paths are relative to it).
        ann_file: the CSV relative to ``data_root`` (default ``'CheXpert-v1.0-small/train.csv'``).
        uncertain: ``'ignore'`` (U-Ignore, -1; default), ``'zeros'`` (0) or ``'ones'`` (1).
        blank: ``'unknown'`` (-1; default) or ``'negative'`` (0).
        classes: ``'all'`` (default, the 14 observations), ``'competition'`` (the 5) or a list of
            observation names. (Here ``classes`` selects columns; it is not mmpretrain's list of names.)
        **kwargs: those of mmpretrain's ``BaseDataset``.

    Added Keys: partial_labels (int8, (C,)).
    """

    def __init__(self, data_root, ann_file="CheXpert-v1.0-small/train.csv", uncertain="ignore", blank="unknown",
                 classes="all", **kwargs):
        self.uncertain, self.blank, self.observations = uncertain, blank, classes
        super().__init__(data_root, ann_file, **kwargs)

    def read_label_set(self):
        from labelwise.datasets import read_chexpert

        return read_chexpert(self.data_root, self._source_file, uncertain=self.uncertain, blank=self.blank,
                             classes=self.observations)


class Food101N(_ClassReaderDataset):
    """Food-101N: the noisy (folder) class and, where verified, the verification flag.

    See :func:`labelwise.datasets.read_food101n`.

    Args:
        data_root: the ``Food-101N_release`` folder.
        ann_file: the image list (default ``'meta/imagelist.tsv'``).
        verification: a verified TSV (default ``'meta/verified_train.tsv'``) or None.
        only_verified: keep only the verified images (default False; True with
            ``verification='meta/verified_val.tsv'`` for the validation set).
        classes_file: the class list (default ``'meta/classes.txt'``).
        **kwargs: those of mmpretrain's ``BaseDataset``.

    Added Keys: gt_label (int), verified (int: 1 correct, 0 wrong, -1 unverified).
    """

    def __init__(self, data_root, ann_file="meta/imagelist.tsv", verification="meta/verified_train.tsv",
                 only_verified=False, classes_file="meta/classes.txt", **kwargs):
        self.verification, self.only_verified, self.classes_file = verification, only_verified, classes_file
        super().__init__(data_root, ann_file, **kwargs)

    def read_label_set(self):
        from labelwise.datasets import read_food101n

        return read_food101n(self.data_root, image_list=self._source_file, verification=self.verification,
                             only_verified=self.only_verified, classes_file=self.classes_file)


class Clothing1M(_ClassReaderDataset):
    """Clothing1M with its noisy or clean labels and a verification flag where both exist.

    See :func:`labelwise.datasets.read_clothing1m`.

    Args:
        data_root: the dataset root.
        labels: ``'noisy'`` (default) or ``'clean'``: which label is ``gt_label``.
        key_list: a key-list file to keep (e.g. ``'clean_test_key_list.txt'``), default all.
        annotation_dir: folder of the text files under ``data_root`` (default: ``data_root``).
        **kwargs: those of mmpretrain's ``BaseDataset``.

    Added Keys: gt_label (int), noisy_label / clean_label (int, -1 where absent), verified (int).
    """

    def __init__(self, data_root, labels="noisy", key_list=None, annotation_dir="", **kwargs):
        self.label_kind, self.key_list, self.annotation_dir = labels, key_list, annotation_dir
        super().__init__(data_root, key_list or f"{labels}_label_kv.txt", **kwargs)

    def read_label_set(self):
        from labelwise.datasets import read_clothing1m

        return read_clothing1m(self.data_root, labels=self.label_kind, key_list=self.key_list,
                               annotation_dir=self.annotation_dir)


class ImageNetFolder(_ClassReaderDataset):
    """ImageNet-style ``<split>/<wnid>/`` folders, classes the sorted wnids.

    See :func:`labelwise.datasets.read_imagenet_folder`. Its ``img_path`` relative to
    ``data_root`` is the key ``labelwise relabel --data-root <data_root>`` stores, so
    ``dict(type='labelwise.LabelPooling', label_maps=..., data_root=<data_root>)`` finds it.
    Unlike mmpretrain's ``ImageNet`` it does not assume the 1000 ImageNet-1k classes.

    Args:
        data_root: the dataset root, holding ``split/``.
        split: the split folder (default ``'train'``).
        synset_mapping: ``LOC_synset_mapping.txt`` (names and the full class list) or None.
        **kwargs: those of mmpretrain's ``BaseDataset``.

    Added Keys: gt_label (int).
    """

    def __init__(self, data_root, split="train", synset_mapping=None, **kwargs):
        self.split, self.synset_mapping = split, synset_mapping
        super().__init__(data_root, "", **kwargs)

    def read_label_set(self):
        from labelwise.datasets import read_imagenet_folder

        return read_imagenet_folder(self.data_root, split=self.split, synset_mapping=self.synset_mapping)

