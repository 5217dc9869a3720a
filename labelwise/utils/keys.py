"""How an image file is named in labelwise's per-image stores (label maps, refined labels, scores).

A store keys each image by its path relative to the dataset root, ``/``-separated
(``'images/train/000042.png'``): :func:`image_key` makes that key from a file path, and
:func:`find_trailing` finds the key of a path whose root is unknown (the longest trailing part
of the path that is a key). Every writer and reader of a store uses these two, so a store
written by one job is found by the others.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import PurePath

__all__ = ["find_trailing", "image_key"]


def image_key(path, root=None) -> str:
    """The store key of image ``path``: relative to ``root``, ``/``-separated.

    Args:
        path: the image file (absolute, or relative to the working directory).
        root: the dataset root; ``None``: the key is ``path`` itself.

    Returns:
        ``path`` relative to ``root`` (both normalised: ``./`` and ``..`` resolved lexically),
        or the ``/``-separated ``path`` when there is no root or ``path`` is not inside it
        (then :func:`find_trailing` can still find it in a store).
    """
    text = os.path.normpath(os.fspath(path))
    if root is not None:
        relative = os.path.relpath(text, os.path.normpath(os.fspath(root)))
        if relative != ".." and not relative.startswith(".." + os.sep):
            text = relative
    return PurePath(text).as_posix()


def find_trailing(path, keys: Mapping, *, max_parts: int | None = None):
    """``keys[k]`` for the longest trailing part ``k`` of ``path`` that is a key; ``None`` if none is.

    ``'/data/digits/images/train/000042.png'`` finds the key ``'images/train/000042.png'``
    without knowing the root: at most one dictionary lookup per path component (or per
    ``max_parts``, the most components a key has).
    """
    parts = PurePath(os.fspath(path)).as_posix().split("/")
    start = 0 if max_parts is None else max(0, len(parts) - max_parts)
    for i in range(start, len(parts)):
        found = keys.get("/".join(parts[i:]))
        if found is not None:
            return found
    return None
