"""Offline refined labels: per-image top-k refinery probabilities in a memory-mapped store.

The offline mode is an *approximation* of Label Refinery: the refinery runs once per image
(on the evaluation view, e.g. the centre crop or whole image), its probabilities are cut to
the top ``k`` and stored; training then serves the same soft label for every random crop of
the image. The online mode's point -- a target computed on exactly the crop (and mix) the
student sees -- is lost; what is kept is the soft, image-specific label, at no teacher cost
per step.

Layout of a store directory (every file written atomically; ``meta.json`` last, so its
presence means the store is complete)::

    meta.json     {"format", "ids_sha1", "count", "k", "num_classes", "provenance", "rest", "info"}
    ids.txt       one sample id per line (the image path relative to the dataset root)
    values.npy    (N, k) float16 probabilities, largest first
    indices.npy   (N, k) int16 class indices (int32 when num_classes > 32767)

A build in progress keeps ``*.npy.partial`` files and ``progress.json`` (rows done) and is
resumed by the next :func:`write_refined_labels` call with the same ids, settings and
provenance (what made the labels: the refinery checkpoint's :func:`file_fingerprint`, its
config, ...). A store or unfinished build with another provenance is refused, never reused or
resumed; ``overwrite=True`` (``labelwise refine-store --overwrite``) rebuilds it.
"""
from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from labelwise.errors import ConfigError, DataError
from labelwise.utils.fileio import atomic_write, write_json
from labelwise.utils.fingerprint import file_fingerprint  # noqa: F401 (part of this module's API)

FORMAT = "labelwise-refined-labels/1"
#: How the probability mass outside the top ``k`` is given back when a label is expanded:
#: ``'uniform'`` spreads it evenly over the other classes (FKD's choice); ``'renormalize'``
#: rescales the top ``k`` to sum to 1.
REST_MODES = ("uniform", "renormalize")
_FILES = ("meta.json", "ids.txt", "values.npy", "indices.npy")
_PARTIAL = ("progress.json", "values.npy.partial", "indices.npy.partial")
#: What a store is keyed on: it is reused (or its build resumed) only if all of these match.
_KEY_FIELDS = ("ids_sha1", "count", "k", "num_classes", "provenance")


def topk_soft_labels(probs: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Keep each row's ``k`` largest probabilities.

    Args:
        probs: ``(N, C)`` probabilities (tensor or array).
        k: how many to keep, ``1 <= k <= C``.

    Returns:
        ``(values, indices)``: float16 ``(N, k)`` sorted largest first, and the class indices
        ``(N, k)`` (int16, or int32 when ``C > 32767``).
    """
    probs = torch.as_tensor(probs, dtype=torch.float32)
    if probs.dim() != 2:
        raise ConfigError(f"probs must be (N, C), got shape {tuple(probs.shape)}")
    num_classes = probs.shape[1]
    if not 1 <= k <= num_classes:
        raise ConfigError(f"k must be in [1, {num_classes}] (the number of classes), got {k!r}")
    values, indices = probs.topk(k, dim=1)
    return values.numpy().astype(np.float16), indices.numpy().astype(_index_dtype(num_classes))


def expand_topk(values, indices, num_classes: int, *, rest: str = "uniform") -> np.ndarray:
    """Turn stored top-k labels back into full distributions ``(N, C)`` float32.

    Args:
        values: ``(N, k)`` or ``(k,)`` probabilities.
        indices: class indices, same shape.
        num_classes: ``C``.
        rest: one of :data:`REST_MODES` (default ``'uniform'``): the missing mass
            ``max(0, 1 - sum(values))`` is spread evenly over the ``C - k`` classes not stored,
            or the stored values are rescaled. Either way each row sums to 1 (up to float
            rounding).

    Returns:
        float32 ``(N, C)`` (or ``(C,)`` for 1-D input).
    """
    if rest not in REST_MODES:
        raise ConfigError(f"rest must be one of {', '.join(REST_MODES)}, got {rest!r}")
    values = np.asarray(values, dtype=np.float32)
    indices = np.asarray(indices, dtype=np.int64)
    squeeze = values.ndim == 1
    values, indices = np.atleast_2d(values), np.atleast_2d(indices)
    n, k = values.shape
    dense = np.zeros((n, num_classes), dtype=np.float32)
    if rest == "uniform" and k < num_classes:
        leftover = np.clip(1.0 - values.sum(axis=1, keepdims=True), 0.0, None)
        dense += leftover / (num_classes - k)
    np.put_along_axis(dense, indices, values, axis=1)
    dense /= dense.sum(axis=1, keepdims=True)
    return dense[0] if squeeze else dense


def write_refined_labels(
    directory,
    ids: Sequence[str],
    predict: Callable[[list[int]], torch.Tensor],
    *,
    num_classes: int,
    k: int = 5,
    batch_size: int = 64,
    rest: str = "uniform",
    info: dict | None = None,
    provenance: dict | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Compute and store top-``k`` refined labels for ``ids``; resume an interrupted build.

    Args:
        directory: the store directory (created).
        ids: sample ids, one per row, unique (image paths relative to the dataset root).
        predict: ``predict(rows) -> probs (len(rows), num_classes)`` for a list of row indices
            into ``ids``; called in order, ``batch_size`` rows at a time.
        num_classes: ``C``.
        k: probabilities kept per image (default 5).
        batch_size: rows per ``predict`` call (default 64).
        rest: how :class:`RefinedLabelStore` expands labels (see :func:`expand_topk`).
        info: JSON-serialisable description saved in ``meta.json`` (refinery checkpoint,
            config, view, ...); not compared.
        provenance: JSON-serialisable identity of what makes the labels (e.g. the refinery
            checkpoint's :func:`file_fingerprint`, a digest of its config, the BatchNorm
            mode); saved in ``meta.json`` and compared.
        overwrite: delete a store or unfinished build in ``directory`` first and build anew.
        progress: show a tqdm bar.

    Returns:
        ``directory`` as a :class:`~pathlib.Path`. A complete store there with the same ids,
        ``k``, ``num_classes`` and ``provenance`` is reused as is; an unfinished build with
        the same ones is resumed.

    Raises:
        DataError: ``directory`` holds a store or an unfinished build with other ids,
            settings or provenance (the message names what differs); pass ``overwrite=True``
            or use another directory.
    """
    from tqdm.auto import tqdm

    directory = Path(directory)
    ids = [str(i) for i in ids]
    if not ids:
        raise DataError(f"no samples to store in {directory}")
    if len(set(ids)) != len(ids):
        raise DataError(f"sample ids for {directory} are not unique")
    if rest not in REST_MODES:
        raise ConfigError(f"rest must be one of {', '.join(REST_MODES)}, got {rest!r}")
    if not 1 <= k <= num_classes:
        raise ConfigError(f"k must be in [1, {num_classes}] (the number of classes), got {k!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size!r}")
    directory.mkdir(parents=True, exist_ok=True)
    key = {"ids_sha1": _digest(ids), "count": len(ids), "k": k, "num_classes": num_classes,
           "provenance": json.loads(json.dumps(provenance or {}))}  # as it reads back from JSON
    if overwrite:
        for name in (*_FILES, *_PARTIAL):
            (directory / name).unlink(missing_ok=True)
    if (directory / "meta.json").exists():
        found = _key_of(json.loads((directory / "meta.json").read_text()))
        if found != key:
            raise DataError(_mismatch(directory, "a different refined-label store", found, key))
        return directory

    state_path = directory / "progress.json"
    values_tmp, indices_tmp = directory / "values.npy.partial", directory / "indices.npy.partial"
    done = 0
    if state_path.exists():
        state = json.loads(state_path.read_text())
        found = _key_of(state)
        if found != key:
            raise DataError(_mismatch(directory, "an unfinished build of different refined labels", found, key))
        if values_tmp.exists() and indices_tmp.exists():
            done = int(state["rows_done"])
    n, mode = len(ids), ("r+" if done else "w+")
    values = np.lib.format.open_memmap(values_tmp, mode=mode, dtype=np.float16, shape=(n, k))
    indices = np.lib.format.open_memmap(indices_tmp, mode=mode, dtype=_index_dtype(num_classes), shape=(n, k))
    with tqdm(total=n, initial=done, desc="refined labels", disable=not progress) as bar:
        for start in range(done, n, batch_size):
            rows = list(range(start, min(start + batch_size, n)))
            probs = torch.as_tensor(predict(rows))
            if probs.shape != (len(rows), num_classes):
                raise DataError(f"the refinery returned {tuple(probs.shape)} for {len(rows)} samples; "
                                f"expected ({len(rows)}, {num_classes})")
            values[rows[0]:rows[-1] + 1], indices[rows[0]:rows[-1] + 1] = topk_soft_labels(probs, k)
            values.flush()
            indices.flush()
            write_json(state_path, {**key, "rows_done": rows[-1] + 1})
            bar.update(len(rows))
    del values, indices
    with atomic_write(directory / "ids.txt", "w") as f:
        f.write("\n".join(ids) + "\n")
    os.replace(values_tmp, directory / "values.npy")
    os.replace(indices_tmp, directory / "indices.npy")
    write_json(directory / "meta.json", {"format": FORMAT, **key, "rest": rest, "info": info or {}})
    state_path.unlink()
    return directory


class RefinedLabelStore:
    """Read a store written by :func:`write_refined_labels` (memory-mapped, read-only).

    Samples are looked up by image path: a path matches the stored id it ends with, compared
    by whole path components (``/data/digits/images/train/000042.png`` matches the id
    ``images/train/000042.png``), so the store works wherever the dataset root is. Ids where
    one is a component-suffix of another would be ambiguous and are refused on opening.

    Args:
        directory: the store directory.
        rest: override the ``rest`` mode recorded in ``meta.json`` (see :func:`expand_topk`).
    """

    def __init__(self, directory, *, rest: str | None = None):
        self.directory = Path(directory)
        meta_path = self.directory / "meta.json"
        if not meta_path.is_file():
            partial = (self.directory / "progress.json").exists()
            raise DataError(
                f"{self.directory} is not a complete refined-label store (no meta.json"
                + ("; a build is in progress there: run it again to finish" if partial else "")
                + "); build one with `labelwise refine-store`")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise DataError(f"{meta_path}: format {self.meta.get('format')!r}, expected {FORMAT!r}")
        self.rest = rest or self.meta.get("rest", "uniform")
        if self.rest not in REST_MODES:
            raise ConfigError(f"rest must be one of {', '.join(REST_MODES)}, got {self.rest!r}")
        self.num_classes = int(self.meta["num_classes"])
        self.k = int(self.meta["k"])
        self.ids = (self.directory / "ids.txt").read_text().splitlines()
        self.values = np.load(self.directory / "values.npy", mmap_mode="r")
        self.indices = np.load(self.directory / "indices.npy", mmap_mode="r")
        if not (len(self.ids) == len(self.values) == len(self.indices) == self.meta["count"]):
            raise DataError(f"{self.directory}: ids.txt, values.npy and indices.npy disagree in length")
        self._rows = {i: row for row, i in enumerate(self.ids)}
        if len(self._rows) != len(self.ids):
            twice = next(i for n, i in enumerate(self.ids) if self._rows[i] != n)
            raise DataError(f"{self.directory}/ids.txt: id {twice!r} is listed twice (one image, two labels)")
        self._depth = max(i.count("/") for i in self.ids) + 1
        for i in self.ids:
            parts = i.split("/")
            for d in range(1, len(parts)):
                if "/".join(parts[-d:]) in self._rows:
                    raise DataError(f"{self.directory}: id {'/'.join(parts[-d:])!r} is a suffix of id "
                                    f"{i!r}; image paths would match ambiguously")

    def __len__(self) -> int:
        return len(self.ids)

    def row_of(self, path: str) -> int:
        """The row of the sample whose id ``path`` ends with (the longest such id); :class:`DataError` if none."""
        from labelwise.utils.keys import find_trailing

        row = find_trailing(str(path).replace(os.sep, "/"), self._rows, max_parts=self._depth)
        if row is not None:
            return row
        raise DataError(f"image {path} is not in the refined-label store {self.directory} "
                        f"({len(self)} images, e.g. {self.ids[0]!r})")

    def soft_label(self, path: str) -> np.ndarray:
        """The stored label of image ``path`` as a float32 distribution ``(C,)``."""
        row = self.row_of(path)
        values, indices = np.asarray(self.values[row]), np.asarray(self.indices[row])
        problem = ("holds NaN or infinite values" if not np.isfinite(values).all()
                   else "holds a negative value" if (values < 0).any()
                   else f"values sum to {float(values.astype(np.float64).sum()):.4g}, more than 1"
                   if float(values.astype(np.float64).sum()) > 1 + 1e-2
                   else f"holds class index {int(indices.min()) if int(indices.min()) < 0 else int(indices.max())}; "
                        f"expected [0, {self.num_classes - 1}]"
                   if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= self.num_classes)
                   else "lists the same class twice" if len(np.unique(indices)) != len(indices)
                   else None)
        if problem:
            raise DataError(f"refined-label store {self.directory}: the label of {self.ids[row]!r} (row {row}) "
                            f"{problem}; the store is corrupt: rebuild it (labelwise refine-store --overwrite)")
        return expand_topk(values, indices, self.num_classes, rest=self.rest)


def _key_of(meta: dict) -> dict:
    found = {name: meta.get(name) for name in _KEY_FIELDS}
    found["provenance"] = found["provenance"] or {}  # stores written before provenance was kept
    return found


def _mismatch(directory: Path, what: str, found: dict, key: dict) -> str:
    differ = []
    for name in _KEY_FIELDS:
        if name == "provenance":
            for field in sorted(set(found[name]) | set(key[name])):
                if found[name].get(field) != key[name].get(field):
                    differ.append(f"provenance {field!r}: {found[name].get(field)!r}, now {key[name].get(field)!r}")
        elif found[name] != key[name]:
            differ.append(f"{name}: {found[name]!r}, now {key[name]!r}")
    return (f"{directory} holds {what} ({'; '.join(differ)}); it is neither reused nor resumed: use another "
            "output directory, or pass overwrite=True (labelwise refine-store --overwrite) to rebuild it")


def _index_dtype(num_classes: int):
    return np.int16 if num_classes <= np.iinfo(np.int16).max else np.int32


def _digest(ids: Sequence[str]) -> str:
    return hashlib.sha1("\n".join(ids).encode()).hexdigest()
