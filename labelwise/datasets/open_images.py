"""Open Images human-verified image labels: verified positives and negatives, everything else unknown.

Two files, as Open Images publishes them::

    # *-human-imagelabels*.csv (header, one row per verified (image, class))
    ImageID,Source,LabelName,Confidence
    000002b66c9c498e,verification,/m/014j1m,0
    000002b66c9c498e,verification,/m/014sv8,1

    # class-descriptions-boxable.csv (no header): the classes and their order
    /m/011k07,Tortoise
    /m/011q46kg,Container

``Confidence`` 1 means a human verified the class is in the image, 0 that it is not.
"""
from __future__ import annotations

from array import array

import numpy as np

from labelwise.datasets.base import LabelSet, check_root, header_index, read_csv, relative_path, resolve
from labelwise.errors import DataError
from labelwise.labels import UNKNOWN

COLUMNS = ("ImageID", "Source", "LabelName", "Confidence")


def read_open_images_classes(path) -> tuple[tuple, tuple]:
    """The classes of a class-descriptions CSV: ``(label names (MIDs), display names)`` in file order.

    The official ``class-descriptions-boxable.csv`` has no header; a first row
    ``LabelName,DisplayName`` (the later ``oidv6-class-descriptions.csv``) is skipped.

    Raises:
        DataError: a row without two fields, an empty or repeated label name, no classes.
    """
    mids, names, seen = [], [], {}
    for n, row in read_csv(path, what="Open Images class descriptions"):
        if n == 1 and [f.strip() for f in row] == ["LabelName", "DisplayName"]:
            continue
        where = f"Open Images class descriptions {path}, line {n}"
        if len(row) != 2 or not row[0].strip():
            raise DataError(f"{where}: expected 2 fields LabelName,DisplayName, got {row!r}")
        mid = row[0].strip()
        if mid in seen:
            raise DataError(f"{where}: class {mid!r} is listed twice (also line {seen[mid]})")
        seen[mid] = n
        mids.append(mid)
        names.append(row[1].strip())
    if not mids:
        raise DataError(f"Open Images class descriptions {path}: lists no class")
    return tuple(mids), tuple(names)


def read_open_images(root, labels_csv, classes_csv, *, image_dir: str = "train", image_ext: str = ".jpg",
                     skip_unknown_classes: bool = False) -> LabelSet:
    """Read human-verified image labels as partial multi-label targets.

    An image's class is 1 where a row verifies it present (``Confidence`` 1), 0 where a row
    verifies it absent (``Confidence`` 0), and -1 (unknown) for every class no row mentions:
    Open Images verifies only a few candidate classes per image, so an absent row says nothing.
    The same (image, class) listed twice with the same confidence (e.g. by two ``Source``s) is
    one label; with different confidences it is an error.

    Args:
        root: the dataset root.
        labels_csv: the labels CSV (columns ``ImageID,Source,LabelName,Confidence``), relative
            to ``root`` or absolute.
        classes_csv: the class-descriptions CSV defining the classes and their order.
        image_dir: folder of the images under ``root`` (default ``'train'``).
        image_ext: image file extension (default ``'.jpg'``): image ``X`` is ``image_dir/X.jpg``.
        skip_unknown_classes: ignore rows whose ``LabelName`` is not in ``classes_csv`` (e.g. the
            ~20k-class human labels read with the 600 boxable classes); default False: an error.

    The matrix is dense, one byte per (image, class): the 1.7 M train images over the 600
    boxable classes take about 1 GB; read a subset of classes (a shorter ``classes_csv`` with
    ``skip_unknown_classes=True``) for larger vocabularies.

    Returns:
        A :class:`LabelSet` of the images with at least one row (of a known class), sorted by ``ImageID``;
        ``classes`` the display names, ``class_keys`` the label names (MIDs),
        ``extra['image_id']`` the ImageIDs.

    Raises:
        DataError: a missing column, a label name not in ``classes_csv``, a confidence other than
            0 or 1 (machine-generated labels are not verified), conflicting rows (naming the
            file, both lines, the image and the class), an ImageID that is not a file name.
    """
    root = check_root(root)
    labels_path, classes_path = resolve(root, labels_csv), resolve(root, classes_csv)
    mids, names = read_open_images_classes(classes_path)
    column = {mid: c for c, mid in enumerate(mids)}
    image_dir = relative_path(image_dir, where="image_dir", what="folder")
    rows = read_csv(labels_path, what="Open Images labels")
    header = next(rows, None)
    if header is None:
        raise DataError(f"Open Images labels {labels_path}: empty file; expected the header {','.join(COLUMNS)}")
    at = header_index(header[1], COLUMNS, path=labels_path, what="Open Images labels")
    image_index: dict = {}
    img, cls, val, line = (array("q"), array("l"), array("b"), array("q"))  # one entry per row: compact
    for n, row in rows:
        where = f"Open Images labels {labels_path}, line {n}"
        if len(row) != len(header[1]):
            raise DataError(f"{where}: expected {len(header[1])} fields, got {len(row)}")
        image, mid, raw = row[at["ImageID"]].strip(), row[at["LabelName"]].strip(), row[at["Confidence"]].strip()
        if mid not in column:
            if skip_unknown_classes:
                continue
            raise DataError(f"{where}: LabelName {mid!r} is not in {classes_path} (pass skip_unknown_classes=True "
                            "to ignore classes outside it)")
        if image not in image_index:
            if not image or relative_path(image, where=where, what="ImageID") != image or "/" in image:
                raise DataError(f"{where}: ImageID {image!r} is not a file name")
            image_index[image] = len(image_index)
        if raw not in ("0", "1"):
            try:
                value = float(raw)
            except ValueError:
                raise DataError(f"{where}: Confidence {raw!r} is not a number; expected 1 (verified present) or 0 "
                                "(verified absent)") from None
            if value not in (0.0, 1.0):
                raise DataError(f"{where}: Confidence {raw!r}; expected 1 (verified present) or 0 (verified "
                                "absent) -- machine-generated labels are not human-verified")
            raw = str(int(value))
        img.append(image_index[image])
        cls.append(column[mid])
        val.append(int(raw))
        line.append(n)
    img, cls, val, line = (np.frombuffer(a, dtype=a.typecode).astype(np.int64) if len(a) else np.zeros(0, np.int64)
                           for a in (img, cls, val, line))
    key = img * len(mids) + cls
    order = np.argsort(key, kind="stable")  # rows of one (image, class) together, in file order
    same = key[order][1:] == key[order][:-1]
    clash = np.flatnonzero(same & (val[order][1:] != val[order][:-1]))
    if clash.size:
        first = order[np.searchsorted(key[order], key[order][clash[0]])]  # the first row of that (image, class)
        bad = order[clash[0] + 1]
        image = next(name for name, i in image_index.items() if i == img[bad])
        raise DataError(f"Open Images labels {labels_path}, line {line[bad]}: image {image} class {mids[cls[bad]]} "
                        f"({names[cls[bad]]}) has Confidence {val[bad]}, but line {line[first]} gives {val[first]}; "
                        "expected one verdict per image and class")
    images = sorted(image_index)
    rank = np.empty(len(images), dtype=np.int64)
    rank[[image_index[image] for image in images]] = np.arange(len(images))
    labels = np.full((len(images), len(mids)), UNKNOWN, dtype=np.int8)
    labels[rank[img], cls] = val
    return LabelSet(root=root, paths=[f"{image_dir}/{image}{image_ext}" for image in images], labels=labels,
                    classes=names, class_keys=mids, extra={"image_id": np.asarray(images, dtype=object)},
                    source=str(labels_path))
