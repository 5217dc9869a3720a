"""COCO (2014) instance annotations as multi-label targets, and the papers' partial-label protocol.

``annotations/instances_{train,val}2014.json`` lists ``images`` (``id``, ``file_name``),
``annotations`` (``image_id``, ``category_id``, ...) and ``categories`` (``id``, ``name``). The 80
category ids run from 1 to 90 with gaps; class ``c`` is the ``c``-th category by increasing id
(the official order; PU-MLC's ``data/coco/category.json`` encodes the same).
"""
from __future__ import annotations

import json
import re

import numpy as np

from labelwise.datasets.base import LabelSet, check_choice, check_root, relative_path, resolve
from labelwise.errors import ConfigError, DataError
from labelwise.labels import UNKNOWN, check_probability
from labelwise.utils.fileio import read_text

#: How the partial-label draws are made: ``'labelwise'`` (per image, a pure function of the image
#: id) or ``'pu-mlc'`` (the reference code's one matrix over the file's image order).
DRAWS = ("labelwise", "pu-mlc")


def read_coco(root, ann_file="annotations/instances_train2014.json", *, image_dir: str | None = None,
              p: float | None = None, seed: int = 0, draw: str = "labelwise") -> LabelSet:
    """Read a COCO instances file as multi-label targets over its categories.

    An image is positive for every category it has an annotation of (``iscrowd`` annotations
    count: the object is there) and negative for the others. Images without any annotation
    (about 1 % of train2014) are kept, all-negative, as PU-MLC's data loader keeps them.

    With ``p``, each label (positive or negative alike) stays known with probability ``p`` and
    becomes -1 otherwise: the partial-label protocol of the PU-MLC / CFT papers. See
    :func:`partial_keep_mask`; the draws are nested over ``p`` (what is known at ``p = 0.3``
    is known at ``p = 0.5``) and the same for every method.

    Args:
        root: the dataset root (holding ``annotations/`` and the image folders).
        ann_file: the instances JSON, relative to ``root`` or absolute.
        image_dir: folder of the images, relative to ``root``. Default: the split in the file
            name (``instances_train2014.json`` -> ``train2014``).
        p: probability that a label stays known; ``None`` (default) keeps every label.
        seed: seed of the partial-label draws (default 0, the papers').
        draw: ``'labelwise'`` (default) or ``'pu-mlc'``; see :func:`partial_keep_mask`.

    Returns:
        A :class:`LabelSet`: images sorted by image id, ``paths`` ``image_dir/file_name``,
        ``labels`` ``(N, C)`` of 1 / 0 (/ -1 with ``p``), ``classes`` the category names,
        ``class_keys`` the category ids, ``extra['image_id']`` ``(N,)`` int64.

    Raises:
        DataError: unreadable or invalid JSON, a missing key, a non-integer id, a duplicate
            category / image id or file name, an annotation naming an unknown image or
            category, a ``file_name`` outside the root.
        ConfigError: ``image_dir`` cannot be inferred, bad ``p``, ``seed`` or ``draw``.
    """
    root = check_root(root)
    path = resolve(root, ann_file)
    check_choice(draw, DRAWS, name="draw")
    if image_dir is None:
        match = re.fullmatch(r"instances_(\w+)\.json", path.name)
        if match is None:
            raise ConfigError(f"cannot tell the image folder of {path.name}; pass image_dir= (e.g. 'train2014')")
        image_dir = match.group(1)
    image_dir = relative_path(image_dir, where=f"image_dir of {path}", what="folder")
    text = read_text(path, what="COCO annotation file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"COCO annotation file {path}, line {exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise DataError(f"{path}: missing key {key!r} (a list); expected a COCO instances file")

    categories = {}
    for i, cat in enumerate(data["categories"]):
        where = f"{path}: categories[{i}]"
        cid = _int(cat, "id", where)
        name = cat.get("name") if isinstance(cat, dict) else None
        if not isinstance(name, str):
            raise DataError(f"{where}: 'name' is {name!r}; expected the category name (a string)")
        if cid in categories:
            raise DataError(f"{where}: category id {cid} appears twice")
        categories[cid] = name
    cat_ids = sorted(categories)
    column = {cid: c for c, cid in enumerate(cat_ids)}

    images, names = {}, {}
    for i, image in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        iid = _int(image, "id", where)
        file_name = image.get("file_name")
        if not isinstance(file_name, str):
            raise DataError(f"{where} (id {iid}): 'file_name' is {file_name!r}; expected a string")
        file_name = relative_path(file_name, where=f"{where} (id {iid})")
        if iid in images:
            raise DataError(f"{where}: image id {iid} appears twice")
        if file_name in names:
            raise DataError(f"{where} (id {iid}): file_name {file_name!r} is also image {names[file_name]}")
        images[iid], names[file_name] = file_name, iid
    file_order = list(images)
    row = {iid: r for r, iid in enumerate(file_order)}

    labels = np.zeros((len(file_order), len(cat_ids)), dtype=np.int8)
    for i, ann in enumerate(data["annotations"]):
        where = f"{path}: annotations[{i}]" + (f" (id {ann['id']})" if isinstance(ann, dict) and "id" in ann else "")
        iid, cid = _int(ann, "image_id", where), _int(ann, "category_id", where)
        if iid not in row:
            raise DataError(f"{where}: image_id {iid} is not in 'images'")
        if cid not in column:
            raise DataError(f"{where}: category_id {cid} is not in 'categories' (ids {cat_ids[:3]}...)")
        labels[row[iid], column[cid]] = 1

    ids = np.asarray(file_order, dtype=np.int64)
    if p is not None:
        keep = partial_keep_mask(ids, len(cat_ids), p=p, seed=seed, draw=draw)
        labels = np.where(keep, labels, np.int8(UNKNOWN)).astype(np.int8)
    order = np.argsort(ids, kind="stable")
    return LabelSet(root=root, paths=[f"{image_dir}/{images[i]}" for i in ids[order]], labels=labels[order],
                    classes=[categories[c] for c in cat_ids], class_keys=cat_ids,
                    extra={"image_id": ids[order]}, source=str(path))


def partial_keep_mask(image_ids, num_classes: int, *, p: float, seed: int = 0, draw: str = "labelwise") -> np.ndarray:
    """Which labels stay known under the partial-label protocol: ``(N, C)`` bool, True = known.

    One uniform ``u`` is drawn per (image, class); the label is known when ``u < p``. As the
    uniforms do not depend on ``p``, the masks are nested: every label known at ``p`` is known
    at any larger ``p``.

    * ``draw='labelwise'``: the uniforms of an image are ``default_rng([seed, image_id]).random(C)``,
      a pure function of (image id, class, seed): the same on any subset or order of the images,
      for every method and run (for a given numpy: NumPy's ``SeedSequence`` and ``PCG64``
      streams are stable).
    * ``draw='pu-mlc'``: the reference code of PU-MLC (``changeLabelProportion`` in
      ``datasets/coco2014.py``): ``np.random.seed(seed); np.random.random((N, C))`` with rows in
      the order the annotation file lists its images. ``image_ids`` must be in that order; the
      draws then depend on the whole image list.

    Args:
        image_ids: ``(N,)`` non-negative integer image ids.
        num_classes: ``C``.
        p: probability that a label stays known, in [0, 1].
        seed: non-negative integer seed.
        draw: ``'labelwise'`` or ``'pu-mlc'``.

    Raises:
        ConfigError: ``p`` outside [0, 1], a negative or non-integer seed, an unknown ``draw``.
        DataError: a negative image id (``'labelwise'`` needs non-negative ids).
    """
    p = check_probability(p, name="p")
    check_choice(draw, DRAWS, name="draw")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    ids = np.asarray(image_ids, dtype=np.int64).reshape(-1)
    if draw == "pu-mlc":
        uniforms = np.random.RandomState(int(seed)).random_sample((len(ids), int(num_classes)))
    else:
        if (ids < 0).any():
            raise DataError(f"image id {int(ids[ids < 0][0])} is negative; the labelwise draw needs ids >= 0")
        uniforms = np.empty((len(ids), int(num_classes)))
        for r, iid in enumerate(ids.tolist()):
            uniforms[r] = np.random.default_rng([int(seed), iid]).random(int(num_classes))
    return uniforms < p


def _int(obj, key: str, where: str) -> int:
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, int):
        raise DataError(f"{where}: {key!r} is {value!r}; expected an integer id")
    return value


__all__ = ["DRAWS", "partial_keep_mask", "read_coco"]
