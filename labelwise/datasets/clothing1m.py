"""Clothing1M: 1M web images with noisy labels, a subset of them also labelled clean.

Files of the release (next to ``images/``)::

    category_names_eng.txt   the 14 class names, one per line (class id = line number - 1)
    noisy_label_kv.txt       "images/0/61/1233476163,2066349761.jpg 4"   (path, noisy class id)
    clean_label_kv.txt       "images/0/12/2849812396,2917004345.jpg 11"  (path, clean class id)
    clean_{train,val,test}_key_list.txt, noisy_train_key_list.txt        (one path per line)
"""
from __future__ import annotations

import numpy as np

from labelwise.datasets.base import LabelSet, check_choice, check_root, read_lines, relative_path, resolve
from labelwise.errors import DataError

LABELS = ("noisy", "clean")


def read_clothing1m(root, *, labels: str = "noisy", key_list=None, annotation_dir: str = "") -> LabelSet:
    """Read Clothing1M as single-label targets, with the clean label and a verification flag where known.

    An image that has both a noisy and a clean label is *verified*: ``extra['verified']`` is 1
    if the two agree (the noisy label is correct) and 0 otherwise, the flag CleanNet derives
    from Clothing1M's clean subset; elsewhere -1.

    Args:
        root: the dataset root (``images/`` and the text files).
        labels: which label is the target: ``'noisy'`` (default) or ``'clean'``.
        key_list: a key-list file (e.g. ``'clean_test_key_list.txt'``) naming the images to keep,
            in its order; default None: every image of the chosen label file, in its order.
        annotation_dir: folder of the text files, relative to ``root`` (default: ``root`` itself).

    Returns:
        A :class:`LabelSet`: ``paths`` as in the files, ``labels`` ``(N,)`` the chosen class ids,
        ``extra['noisy_label']`` / ``extra['clean_label']`` ``(N,)`` (-1 where absent) and
        ``extra['verified']`` ``(N,)`` int8 1 / 0 / -1.

    Raises:
        DataError: a line that is not ``<path> <class id>``, a non-integer or out-of-range class
            id, a duplicate or outside-the-root path, a ``key_list`` image without a ``labels``
            label.
        ConfigError: an unknown ``labels``.
    """
    root = check_root(root)
    check_choice(labels, LABELS, name="labels")
    folder = resolve(root, annotation_dir)
    names_file = folder / "category_names_eng.txt"
    classes = tuple(line.strip() for _, line in read_lines(names_file, what="Clothing1M category names"))
    if not classes:
        raise DataError(f"Clothing1M category names {names_file}: lists no class")
    noisy = _read_kv(folder / "noisy_label_kv.txt", len(classes))
    clean = _read_kv(folder / "clean_label_kv.txt", len(classes))
    chosen = noisy if labels == "noisy" else clean
    if key_list is None:
        keys = list(chosen)
        source = str(folder / f"{labels}_label_kv.txt")
    else:
        path = resolve(folder, key_list)
        keys, seen = [], {}
        for n, line in read_lines(path, what="Clothing1M key list"):
            where = f"Clothing1M key list {path}, line {n}"
            key = relative_path(line, where=where)
            if key in seen:
                raise DataError(f"{where}: image {key} is listed twice (also line {seen[key]})")
            if key not in chosen:
                raise DataError(f"{where}: image {key} has no {labels} label in {labels}_label_kv.txt")
            seen[key] = n
            keys.append(key)
        source = str(path)
    noisy_ids = np.array([noisy[k][0] if k in noisy else -1 for k in keys], dtype=np.int64)
    clean_ids = np.array([clean[k][0] if k in clean else -1 for k in keys], dtype=np.int64)
    verified = np.where((noisy_ids >= 0) & (clean_ids >= 0), (noisy_ids == clean_ids).astype(np.int8), -1)
    return LabelSet(root=root, paths=keys, labels=np.array([chosen[k][0] for k in keys], dtype=np.int64),
                    classes=classes, extra={"noisy_label": noisy_ids, "clean_label": clean_ids,
                                            "verified": verified.astype(np.int8)}, source=source)


def _read_kv(path, num_classes: int) -> dict:
    """``{path: (class id, line)}`` of a ``<path> <class id>`` file, in file order."""
    table: dict = {}
    for n, line in read_lines(path, what="Clothing1M label file"):
        where = f"Clothing1M label file {path}, line {n}"
        parts = line.strip().rsplit(" ", 1)
        if len(parts) != 2:
            raise DataError(f"{where}: expected '<image path> <class id>', got {line.strip()!r}")
        key = relative_path(parts[0], where=where)
        try:
            label = int(parts[1])
        except ValueError:
            raise DataError(f"{where}: class id {parts[1]!r} of {key} is not an integer") from None
        if not 0 <= label < num_classes:
            raise DataError(f"{where}: class id {label} of {key} is outside [0, {num_classes}) "
                            f"(category_names_eng.txt lists {num_classes} classes)")
        if key in table:
            raise DataError(f"{where}: image {key} is listed twice (also line {table[key][1]})")
        table[key] = (label, n)
    return table
