"""PASCAL VOC 2007 in mmpretrain's ``VOC`` layout, with difficult-only classes as unknown.

Layout (the one :class:`mmpretrain.datasets.VOC` reads)::

    VOC2007/
      ImageSets/Main/{train,val,trainval,test}.txt   one image id per line
      Annotations/<id>.xml                           <object><name>cat</name><difficult>0</difficult>...
      JPEGImages/<id>.jpg
"""
from __future__ import annotations

import xml.etree.ElementTree as ET

import numpy as np

from labelwise.datasets.base import LabelSet, check_choice, check_root, read_lines, relative_path
from labelwise.errors import DataError
from labelwise.utils.fileio import read_text

#: The 20 VOC classes in the official order (mmpretrain's ``VOC2007_CATEGORIES``).
VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
SPLITS = ("train", "val", "trainval", "test")
DIFFICULT = ("unknown", "positive", "negative")


def read_voc(root, *, split: str = "trainval", difficult: str = "unknown") -> LabelSet:
    """Read a VOC split as partial multi-label targets.

    Class ``c`` of an image is 1 if some object of class ``c`` is not marked difficult, 0 if the
    image has no object of class ``c``, and for a class present **only** as difficult objects:
    ``difficult='unknown'`` (default) -1, the VOC evaluation convention (the devkit ignores
    difficult objects; mmpretrain's ``VOCMultiLabelMetric`` turns exactly these classes into -1
    by default), ``'positive'`` 1, ``'negative'`` 0 (mmpretrain's training default: its
    ``gt_label`` holds only the non-difficult classes).

    Args:
        root: the ``VOC2007`` folder.
        split: ``'train'``, ``'val'``, ``'trainval'`` (default) or ``'test'``.
        difficult: ``'unknown'`` (default), ``'positive'`` or ``'negative'``.

    Returns:
        A :class:`LabelSet` in the split file's order: ``paths`` ``JPEGImages/<id>.jpg``,
        ``labels`` ``(N, 20)``, ``extra['image_id']`` the ids, ``extra['difficult']`` ``(N, 20)``
        bool: the classes with at least one difficult object (mmpretrain's ``gt_label_difficult``).

    Raises:
        DataError: a missing or unreadable file, a duplicate or path-like image id, invalid XML,
            an object without a name, an unknown class name, a ``difficult`` that is not 0 / 1.
        ConfigError: an unknown ``split`` or ``difficult``.
    """
    root = check_root(root)
    check_choice(split, SPLITS, name="split")
    check_choice(difficult, DIFFICULT, name="difficult")
    list_file = root / "ImageSets" / "Main" / f"{split}.txt"
    ids, seen = [], {}
    for n, line in read_lines(list_file, what="VOC image set"):
        image_id = line.strip()
        where = f"VOC image set {list_file}, line {n}"
        if relative_path(image_id, where=where, what="image id") != image_id or "/" in image_id:
            raise DataError(f"{where}: image id {image_id!r} is not a file name; expected e.g. '000005'")
        if image_id in seen:
            raise DataError(f"{where}: image {image_id!r} is listed twice (also line {seen[image_id]})")
        seen[image_id] = n
        ids.append(image_id)
    column = {name: c for c, name in enumerate(VOC_CLASSES)}
    labels = np.zeros((len(ids), len(VOC_CLASSES)), dtype=np.int8)
    hard = np.zeros(labels.shape, dtype=bool)
    for r, image_id in enumerate(ids):
        xml_path = root / "Annotations" / f"{image_id}.xml"
        text = read_text(xml_path, what="VOC annotation")
        try:
            tree = ET.fromstring(text)
        except ET.ParseError as exc:
            raise DataError(f"VOC annotation {xml_path}, line {exc.position[0]}: not valid XML ({exc})") from None
        for k, obj in enumerate(tree.findall("object")):
            where = f"VOC annotation {xml_path}, object {k + 1}"
            name = (obj.findtext("name") or "").strip()
            if name not in column:
                raise DataError(f"{where}: class name {name!r} is not a VOC class; expected one of "
                                f"{', '.join(VOC_CLASSES)}")
            flag = (obj.findtext("difficult") or "0").strip()  # absent: not difficult (as the devkit reads it)
            if flag not in ("0", "1"):
                raise DataError(f"{where} ({name}): difficult is {flag!r}; expected 0 or 1")
            if flag == "1":
                hard[r, column[name]] = True
            else:
                labels[r, column[name]] = 1
    only_hard = hard & (labels == 0)
    labels[only_hard] = {"unknown": -1, "positive": 1, "negative": 0}[difficult]
    return LabelSet(root=root, paths=[f"JPEGImages/{i}.jpg" for i in ids], labels=labels, classes=VOC_CLASSES,
                    extra={"image_id": np.asarray(ids, dtype=object), "difficult": hard}, source=str(list_file))
