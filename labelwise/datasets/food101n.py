"""Food-101N: web images with noisy class labels (the folder) and a human-verified subset.

Layout of the release (``Food-101N_release/``)::

    images/<class_name>/<hash>.jpg
    meta/classes.txt            "class_name" then one class per line (the 101 Food-101 classes)
    meta/imagelist.tsv          "class_name/key" then one "<class_name>/<hash>.jpg" per line
    meta/verified_train.tsv     "class_name/key<TAB>verification_label" then "<class_name>/<hash>.jpg<TAB>1"
    meta/verified_val.tsv       same; 1 = the folder's (noisy) label is correct, 0 = it is wrong
"""
from __future__ import annotations

import numpy as np

from labelwise.datasets.base import LabelSet, check_root, read_lines, relative_path, resolve
from labelwise.errors import ConfigError, DataError

IMAGE_LIST_HEADER = "class_name/key"
VERIFIED_HEADER = ("class_name/key", "verification_label")


def read_food101n(root, *, image_list="meta/imagelist.tsv", verification="meta/verified_train.tsv",
                  only_verified: bool = False, classes_file="meta/classes.txt") -> LabelSet:
    """Read Food-101N as noisy single-label targets with verification flags.

    Each image's label is its folder's class (the noisy web label). Where ``verification``
    lists the image, ``extra['verified']`` is its ``verification_label`` (1: the noisy label is
    correct, 0: wrong), elsewhere -1: the flags CleanNet's verified subset needs
    (:func:`~labelwise.datasets.base.write_verification_csv` writes them for
    ``labelwise cleannet fit --verification``).

    Args:
        root: the ``Food-101N_release`` folder.
        image_list: the image list, relative to ``root`` or absolute (default ``meta/imagelist.tsv``).
        verification: a verified TSV (default ``meta/verified_train.tsv``), or None (every flag -1).
        only_verified: keep only the images ``verification`` lists, in its order (e.g.
            ``verification='meta/verified_val.tsv', only_verified=True`` for the validation
            set); ``image_list`` is then not read.
        classes_file: the class list (its ``class_name`` header line skipped); when the file
            does not exist, the classes are the sorted folder names of the images read.

    Returns:
        A :class:`LabelSet`: ``paths`` ``images/<class_name>/<hash>.jpg``, ``labels`` ``(N,)``
        noisy class ids, ``extra['verified']`` ``(N,)`` int8 1 / 0 / -1.

    Raises:
        DataError: a wrong header, a line without the expected fields, a key that is not
            ``<class_name>/<file>`` inside ``images/``, a class not in ``classes_file``, a
            verification label that is not 0 / 1, a duplicate image, a verified image missing
            from ``image_list``.
        ConfigError: ``only_verified`` without ``verification``.
    """
    root = check_root(root)
    if only_verified and verification is None:
        raise ConfigError("only_verified=True needs a verification file")
    flags: dict = {}
    if verification is not None:
        path = resolve(root, verification)
        lines = read_lines(path, what="Food-101N verification file")
        _check_header(path, lines, VERIFIED_HEADER)
        for n, line in lines[1:]:
            where = f"Food-101N verification file {path}, line {n}"
            fields = line.split("\t")
            if len(fields) != 2:
                raise DataError(f"{where}: expected 2 tab-separated fields class_name/key and verification_label, "
                                f"got {len(fields)}: {line!r}")
            key = _key(fields[0], where)
            if fields[1].strip() not in ("0", "1"):
                raise DataError(f"{where}: verification_label {fields[1].strip()!r} for {key}; expected 1 (label "
                                "correct) or 0 (label wrong)")
            if key in flags:
                raise DataError(f"{where}: image {key} is listed twice (also line {flags[key][1]})")
            flags[key] = (int(fields[1]), n)
    if only_verified:
        keys = list(flags)
        source = str(resolve(root, verification))
    else:
        path = resolve(root, image_list)
        lines = read_lines(path, what="Food-101N image list")
        _check_header(path, lines, (IMAGE_LIST_HEADER,))
        keys, seen = [], {}
        for n, line in lines[1:]:
            where = f"Food-101N image list {path}, line {n}"
            if "\t" in line.strip():
                raise DataError(f"{where}: expected one field class_name/key, got {line!r}")
            key = _key(line, where)
            if key in seen:
                raise DataError(f"{where}: image {key} is listed twice (also line {seen[key]})")
            seen[key] = n
            keys.append(key)
        missing = [k for k in flags if k not in seen]
        if missing:
            raise DataError(f"Food-101N verification file {resolve(root, verification)}, line {flags[missing[0]][1]}: "
                            f"image {missing[0]} is not in the image list {path}")
        source = str(path)
    classes = _classes(resolve(root, classes_file), keys)
    index = {name: c for c, name in enumerate(classes)}
    labels = []
    for key in keys:
        folder = key.split("/", 1)[0]
        if folder not in index:
            where = (f"line {flags[key][1]} of the verification file" if only_verified
                     else f"the image list {source}")
            raise DataError(f"Food-101N: image {key} ({where}) has class {folder!r}, which is not in "
                            f"{resolve(root, classes_file)}")
        labels.append(index[folder])
    verified = np.array([flags[k][0] if k in flags else -1 for k in keys], dtype=np.int8)
    return LabelSet(root=root, paths=[f"images/{k}" for k in keys], labels=np.asarray(labels, dtype=np.int64),
                    classes=classes, extra={"verified": verified}, source=source)


def _check_header(path, lines, expected) -> None:
    got = tuple(f.strip() for f in lines[0][1].split("\t")) if lines else ()
    if got != tuple(expected):
        raise DataError(f"Food-101N file {path}, line 1: header {chr(9).join(got) or 'missing'!r}; expected "
                        f"{chr(9).join(expected)!r}")


def _key(text: str, where: str) -> str:
    key = relative_path(text, where=where, what="key")
    if key.count("/") != 1:
        raise DataError(f"{where}: key {text.strip()!r} is not <class_name>/<file>")
    return key


def _classes(path, keys) -> tuple:
    if not path.exists():
        return tuple(sorted({k.split("/", 1)[0] for k in keys}))
    lines = read_lines(path, what="Food-101N class list")
    names = [line.strip() for n, line in lines if not (n == lines[0][0] and line.strip() == "class_name")]
    if len(set(names)) != len(names):
        dup = next(name for i, name in enumerate(names) if name in names[:i])
        raise DataError(f"Food-101N class list {path}: class {dup!r} is listed twice")
    return tuple(names)
