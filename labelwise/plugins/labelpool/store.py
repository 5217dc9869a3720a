"""A compact, memory-mapped store of top-k label maps (one record per image).

The reference code keeps one float32 ``.pt`` file per image (``[2, k, h, w]``: scores and ids
stacked; ~9 KB at 5x15x15, ~11.5 GB for ImageNet) and ``torch.load``-s it per sample. This
store keeps float16 scores and int16 class ids (int32 when ``C > 32767``) in fixed-size
records, ``4 * k * h * w`` bytes per image (4.5 KB at 5x15x15, ~5.8 GB for ImageNet), in a
few flat shard files that every reader memory-maps: a sample is one O(1) slice, no file is
opened per sample, and any number of processes (data-loading workers, ranks) may read at
once. float16 keeps logits to 3 significant digits (relative error <= 2**-11), which moves a
pooled probability by less than 1e-3.

Layout of a store directory::

    labelmaps.json        the index (written first, atomically): format, num_classes, k,
                          height, width, dtypes, record size, shard size, the keys in record
                          order, the shard files and what made the maps (``meta``)
    shard-00000.bin ...   records [start, start + shard_size) of the key list, each
                          ``scores (k, h, w) <f2`` followed by ``ids (k, h, w) <i2``

Writing is resumable and atomic per shard: a shard appears under its final name only when
complete (temporary file + rename), so an interrupted run leaves whole shards and a re-run
writes only the missing ones. Ranks of a distributed run write disjoint shards. A store is
complete when every shard exists with its exact size; :class:`LabelMapStore` refuses
anything else with a message saying what is missing or truncated, unless it is opened with
``allow_incomplete=True``: then the shards written so far can be read while a writer is still
appending (:meth:`LabelMapStore.written_records`), and a record of an unwritten shard is
refused when asked for.

Shard file names come from the index, so the index is checked before any is opened: each must
be the plain name ``shard-NNNNN.bin`` of its position (no directory part, no ``..``), and a
shard file must be a regular file inside the store directory (a symbolic link is followed only
if it stays inside): an index or a shard link cannot make a reader open a file elsewhere.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from labelwise.errors import ConfigError, DataError
from labelwise.utils.fileio import atomic_write, write_json

FORMAT = "labelwise-labelmaps/1"
INDEX_FILE = "labelmaps.json"
#: Images per shard file unless told otherwise.
DEFAULT_SHARD_SIZE = 4096
_INDEX_FIELDS = ("format", "num_classes", "k", "height", "width", "score_dtype", "id_dtype",
                 "record_bytes", "shard_size", "keys", "shards")


def record_dtype(k: int, height: int, width: int, *, num_classes: int) -> np.dtype:
    """The numpy structured dtype of one image's record (``scores`` and ``ids``)."""
    return np.dtype([("scores", "<f2", (k, height, width)),
                     ("ids", _id_dtype(num_classes), (k, height, width))])


class LabelMapStore:
    """Read-only access to a label-map store written by :class:`LabelMapWriter`.

    Cheap to pickle (only the path travels; each process maps the shards on first use), so it
    can be handed to data-loading workers.

    Args:
        path: the store directory (holding ``labelmaps.json``).
        num_classes: if given, must equal the store's ``C`` (the model's number of classes).
        k: if given, must equal the store's top-k.
        allow_incomplete: open a store that is still being written (default False): the
            shards already written are readable (:meth:`written_records`), a record of a shard
            not written yet raises :class:`DataError` when asked for.

    Raises:
        DataError: the directory or index is missing, the index is not valid JSON or lacks a
            field, a shard is missing or its size is not the expected one (truncated or
            corrupt; unless ``allow_incomplete``), or ``num_classes`` / ``k`` disagree with
            the store.
    """

    def __init__(self, path, *, num_classes: int | None = None, k: int | None = None,
                 allow_incomplete: bool = False):
        self.path = Path(path)
        self.allow_incomplete = bool(allow_incomplete)
        self.index = read_index(self.path)
        self.num_classes = int(self.index["num_classes"])
        self.k = int(self.index["k"])
        self.height = int(self.index["height"])
        self.width = int(self.index["width"])
        self.keys: list[str] = list(self.index["keys"])
        self.shard_size = int(self.index["shard_size"])
        self.meta = dict(self.index.get("meta") or {})
        self.dtype = record_dtype(self.k, self.height, self.width, num_classes=self.num_classes)
        if num_classes is not None and int(num_classes) != self.num_classes:
            raise DataError(
                f"label maps {self.path}: made for {self.num_classes} classes, but the model has "
                f"num_classes={num_classes}")
        if k is not None and int(k) != self.k:
            raise DataError(f"label maps {self.path}: store holds top-{self.k} maps, expected top-{k}")
        missing = [] if self.allow_incomplete else missing_shards(self.path, self.index)
        if missing:
            raise DataError(f"label maps {self.path}: incomplete store: {missing[0][1]}"
                            + (f" (and {len(missing) - 1} more shards)" if len(missing) > 1 else "")
                            + "; re-run `labelwise relabel` with the same arguments to finish it")
        self._key_to_index: dict[str, int] | None = None
        self._maps: dict[int, np.memmap] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, key) -> bool:
        return key in self._lookup()

    def __getstate__(self):
        return {"path": self.path, "index": self.index, "allow_incomplete": self.allow_incomplete}

    def __setstate__(self, state):  # trust the index the parent validated; map shards lazily
        self.path, self.index = state["path"], state["index"]
        self.allow_incomplete = state.get("allow_incomplete", False)
        for name in ("num_classes", "k", "height", "width", "shard_size"):
            setattr(self, name, int(self.index[name]))
        self.keys = list(self.index["keys"])
        self.meta = dict(self.index.get("meta") or {})
        self.dtype = record_dtype(self.k, self.height, self.width, num_classes=self.num_classes)
        self._key_to_index, self._maps, self._pid = None, {}, os.getpid()

    @property
    def bytes_per_image(self) -> int:
        return self.dtype.itemsize

    def written_records(self) -> list[int]:
        """Record numbers whose shard is on disk now (all of them for a complete store).

        With ``allow_incomplete=True`` this grows while a writer appends; every record listed
        is complete (a shard appears only whole).
        """
        return [i for s, entry in enumerate(self.index["shards"]) if _shard_ok(self.path, self.index, s)
                for i in range(int(entry["start"]), int(entry["start"]) + int(entry["items"]))]

    def index_of(self, key) -> int:
        """Record number of ``key`` (an image path as stored) or of an int sample index.

        Raises:
            DataError: no map for this image (the message names it and the store).
        """
        if isinstance(key, (int, np.integer)):
            if not 0 <= int(key) < len(self.keys):
                raise DataError(f"label maps {self.path}: sample index {key} is out of range "
                                f"(the store holds {len(self.keys)} images)")
            return int(key)
        try:
            return self._lookup()[str(key)]
        except KeyError:
            example = self.keys[0] if self.keys else "(empty)"
            raise DataError(
                f"label maps {self.path}: no label map for image {str(key)!r} (keys are image "
                f"paths relative to the dataset root, e.g. {example!r})") from None

    def find_path(self, path) -> int:
        """Record number of the image file ``path``: the longest trailing part that is a key.

        ``'/data/digits/images/train/000042.png'`` finds the key ``'images/train/000042.png'``
        (relabel stores paths relative to the dataset root) without knowing the root: at most
        one dictionary lookup per path component.

        Raises:
            DataError: no trailing part of ``path`` is a key.
        """
        from labelwise.utils.keys import find_trailing

        found = find_trailing(str(path).replace("\\", "/"), self._lookup())
        return found if found is not None else self.index_of(str(path))  # raises, naming the path

    def get(self, key) -> tuple[np.ndarray, np.ndarray]:
        """One image's map: ``(scores (k, h, w) float16, ids (k, h, w) int16/int32)``.

        Args:
            key: the image's key (path relative to the dataset root) or its record number.
        """
        i = self.index_of(key)
        record = self._record(i)
        scores, ids = np.array(record["scores"]), np.array(record["ids"])
        self._check_record(i, scores, ids)
        return scores, ids

    def _check_record(self, i: int, scores: np.ndarray, ids: np.ndarray) -> None:
        """What the writer guarantees, checked again on read: a shard edited or written by
        other code must not turn into wrong targets (a class -1 indexing class C-1, NaN in a
        pooled target, a class counted twice at one location)."""
        problem = None
        if not np.isfinite(scores).all():
            problem = "holds NaN or infinite scores"
        elif ids.size and (int(ids.min()) < 0 or int(ids.max()) >= self.num_classes):
            problem = (f"holds class id {int(ids.min()) if int(ids.min()) < 0 else int(ids.max())}; "
                       f"expected ids in [0, {self.num_classes - 1}]")
        elif self.k > 1:
            ordered = np.sort(ids.reshape(self.k, -1), axis=0)
            if (ordered[1:] == ordered[:-1]).any():
                problem = "lists the same class id twice at one location"
        if problem:
            raise DataError(f"label maps {self.path}: the map of {self.keys[i]!r} (record {i}) {problem}; "
                            "the store is corrupt: rebuild it with `labelwise relabel --overwrite`")

    def get_many(self, keys) -> tuple[np.ndarray, np.ndarray]:
        """Several maps stacked: ``(scores (B, k, h, w), ids (B, k, h, w))``."""
        pairs = [self.get(key) for key in keys]
        return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])

    def _lookup(self) -> dict[str, int]:
        if self._key_to_index is None:
            self._key_to_index = {key: i for i, key in enumerate(self.keys)}
        return self._key_to_index

    def _record(self, i: int):
        if self._pid != os.getpid():  # forked: do not share the parent's mappings
            self._maps, self._pid = {}, os.getpid()
        shard = i // self.shard_size
        mm = self._maps.get(shard)
        if mm is None:
            entry = self.index["shards"][shard]
            if self.allow_incomplete and not _shard_ok(self.path, self.index, shard):
                raise DataError(f"label maps {self.path}: record {i} ({self.keys[i]!r}) is not written yet "
                                f"({_shard_problem(self.path, self.index, shard)})")
            mm = np.memmap(self.path / entry["file"], dtype=self.dtype, mode="r",
                           shape=(int(entry["items"]),))
            self._maps[shard] = mm
        return mm[i - shard * self.shard_size]


class LabelMapWriter:
    """Create (or resume) a store and write its shards.

    The index is written when the writer is created. If the directory already holds an index,
    it must describe the same store (same keys, sizes, dtypes and ``meta``): then the shards
    already on disk are kept and :meth:`pending_shards` lists only the missing ones.

    Args:
        path: the store directory (created if missing).
        keys: one key per image, in record order (image paths relative to the dataset root).
        num_classes: ``C`` of the annotator.
        k: how many classes are kept per location.
        height, width: the map size ``h, w``.
        shard_size: images per shard file (default :data:`DEFAULT_SHARD_SIZE`).
        meta: JSON-serialisable description of what made the maps (annotator, input size);
            a resumed run must give the same.
        overwrite: delete an existing store in ``path`` first (only the files a store owns).

    Raises:
        DataError: ``path`` holds a different store and ``overwrite`` is False, or keys repeat.
        ConfigError: a size is not a positive integer.
    """

    def __init__(self, path, *, keys, num_classes: int, k: int, height: int, width: int,
                 shard_size: int = DEFAULT_SHARD_SIZE, meta: dict | None = None,
                 overwrite: bool = False):
        for name, value in (("num_classes", num_classes), ("k", k), ("height", height),
                            ("width", width), ("shard_size", shard_size)):
            if not isinstance(value, (int, np.integer)) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if k > num_classes:
            raise ConfigError(f"k={k} exceeds num_classes={num_classes}")
        keys = [str(key) for key in keys]
        if len(set(keys)) != len(keys):
            seen: set = set()
            dup = next(key for key in keys if key in seen or seen.add(key))
            raise DataError(f"label maps {path}: image key {dup!r} appears more than once")
        self.path = Path(path)
        dtype = record_dtype(k, height, width, num_classes=num_classes)
        shards = [{"file": f"shard-{s:05d}.bin", "start": start,
                   "items": min(shard_size, len(keys) - start)}
                  for s, start in enumerate(range(0, len(keys), shard_size))]
        self.index = {
            "format": FORMAT, "num_classes": int(num_classes), "k": int(k),
            "height": int(height), "width": int(width), "score_dtype": "float16",
            "id_dtype": np.dtype(_id_dtype(num_classes)).name, "record_bytes": dtype.itemsize,
            "shard_size": int(shard_size), "keys": keys, "shards": shards, "meta": meta or {},
        }
        self.dtype = dtype
        if overwrite:
            remove_store(self.path)
        self.path.mkdir(parents=True, exist_ok=True)
        index_path = self.path / INDEX_FILE
        if index_path.exists():
            existing = read_index(self.path)
            if existing != json.loads(json.dumps(self.index)):
                new = json.loads(json.dumps(self.index))
                diff = [f for f in _INDEX_FIELDS if existing.get(f) != new.get(f)]
                old_meta, new_meta = existing.get("meta") or {}, new.get("meta") or {}
                diff += [f"meta.{k}" for k in sorted(set(old_meta) | set(new_meta))
                         if old_meta.get(k) != new_meta.get(k)]
                raise DataError(
                    f"{index_path} describes another store (differs in {', '.join(diff)}); "
                    "choose another output folder or overwrite it")
        else:
            write_json(index_path, self.index, indent=None)

    @property
    def num_shards(self) -> int:
        return len(self.index["shards"])

    def shard_range(self, shard: int) -> tuple[int, int]:
        """``(start, stop)`` record numbers of ``shard``."""
        entry = self.index["shards"][shard]
        return entry["start"], entry["start"] + entry["items"]

    def pending_shards(self, *, rank: int = 0, world_size: int = 1) -> list[int]:
        """Shards not yet on disk that ``rank`` of ``world_size`` must write (round robin)."""
        done = {s for s in range(self.num_shards) if _shard_ok(self.path, self.index, s)}
        return [s for s in range(rank, self.num_shards, world_size) if s not in done]

    def write_shard(self, shard: int, scores, ids) -> None:
        """Write one complete shard atomically.

        Args:
            shard: shard number.
            scores: ``(n, k, h, w)`` logits of records ``shard_range(shard)`` (cast to float16).
            ids: ``(n, k, h, w)`` their class ids.

        Raises:
            DataError: wrong shape, ids out of range or repeated within a location, or
                non-finite scores.
        """
        start, stop = self.shard_range(shard)
        k, h, w, c = (self.index[f] for f in ("k", "height", "width", "num_classes"))
        scores, ids = np.asarray(scores), np.asarray(ids)
        expected = (stop - start, k, h, w)
        if scores.shape != expected or ids.shape != expected:
            raise DataError(f"shard {shard}: expected scores and ids of shape {expected}, got "
                            f"{scores.shape} and {ids.shape}")
        if ids.min() < 0 or ids.max() >= c:
            raise DataError(f"shard {shard}: class ids must lie in [0, {c - 1}], got "
                            f"[{ids.min()}, {ids.max()}]")
        if k > 1 and (np.diff(np.sort(ids, axis=1), axis=1) == 0).any():
            raise DataError(f"shard {shard}: a location lists the same class id twice")
        with np.errstate(over="ignore"):  # reported below as out of range
            half = scores.astype(np.float16)
        if not np.isfinite(half).all():
            raise DataError(f"shard {shard}: scores contain NaN or values outside float16's range")
        records = np.empty(stop - start, dtype=self.dtype)
        records["scores"] = half
        records["ids"] = ids
        entry = self.index["shards"][shard]
        with atomic_write(self.path / entry["file"], "wb") as f:
            f.write(records.tobytes())

    def is_complete(self) -> bool:
        return not missing_shards(self.path, self.index)


def read_index(path) -> dict:
    """Read and validate a store's ``labelmaps.json``; :class:`DataError` names what is wrong."""
    path = Path(path)
    index_path = path / INDEX_FILE
    if not path.is_dir():
        raise DataError(f"label maps {path}: no such directory (make one with `labelwise relabel`)")
    if not index_path.is_file():
        raise DataError(f"label maps {path}: {INDEX_FILE} is missing; not a label-map store "
                        "(for per-image .pt maps of the reference code use ReferenceLabelMaps)")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{index_path} is corrupt: not valid JSON ({exc})") from exc
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        found = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise DataError(f"{index_path}: expected format {FORMAT!r}, found {found!r}")
    absent = [f for f in _INDEX_FIELDS if f not in index]
    if absent:
        raise DataError(f"{index_path} is corrupt: missing field(s) {', '.join(absent)}")
    expected = record_dtype(int(index["k"]), int(index["height"]), int(index["width"]),
                            num_classes=int(index["num_classes"])).itemsize
    if index["record_bytes"] != expected:
        raise DataError(f"{index_path} is corrupt: record_bytes is {index['record_bytes']}, "
                        f"but k, height, width and num_classes give {expected}")
    keys = index["keys"]
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise DataError(f"{index_path} is corrupt: keys must be a list of image paths (strings)")
    if len(set(keys)) != len(keys):
        seen: set = set()
        twice = next(k for k in keys if k in seen or seen.add(k))
        raise DataError(f"{index_path} is corrupt: the key {twice!r} is listed twice (one image, two maps)")
    _check_shard_entries(index_path, index)
    if sum(s["items"] for s in index["shards"]) != len(index["keys"]):
        raise DataError(f"{index_path} is corrupt: its shards hold "
                        f"{sum(s['items'] for s in index['shards'])} records for {len(index['keys'])} keys")
    return index


def _check_shard_entries(index_path: Path, index: dict) -> None:
    """Every shard entry names its own file ``shard-NNNNN.bin`` and its records; nothing else.

    The file names are joined to the store directory, so a name with a directory part, ``..``
    or an absolute path would let an index point a reader at any file: refused.
    """
    shards = index["shards"]
    if not isinstance(shards, list):
        raise DataError(f"{index_path} is corrupt: shards must be a list, got {type(shards).__name__}")
    try:
        shard_size = int(index["shard_size"])
    except (TypeError, ValueError):
        raise DataError(f"{index_path} is corrupt: shard_size is {index['shard_size']!r}") from None
    for s, entry in enumerate(shards):
        expected = f"shard-{s:05d}.bin"
        name = entry.get("file") if isinstance(entry, dict) else None
        if name != expected:
            raise DataError(f"{index_path}: shard {s} names the file {name!r}; expected {expected!r} (a file "
                            "of the store directory; an index may not point elsewhere)")
        start, items = entry.get("start"), entry.get("items")
        if (not isinstance(start, int) or not isinstance(items, int) or start != s * shard_size
                or not 1 <= items <= shard_size):
            raise DataError(f"{index_path} is corrupt: shard {s} has start {start!r} and items {items!r}; "
                            f"expected start {s * shard_size} and 1..{shard_size} items")


def missing_shards(path, index: dict) -> list[tuple[int, str]]:
    """``(shard, reason)`` for every shard that is absent or has the wrong size."""
    return [(s, _shard_problem(Path(path), index, s)) for s in range(len(index["shards"]))
            if not _shard_ok(Path(path), index, s)]


def remove_store(path) -> None:
    """Delete a store's index and shard files (nothing else) from ``path``."""
    path = Path(path)
    if not (path / INDEX_FILE).exists():
        return
    for pattern in (INDEX_FILE, "shard-*.bin", f".{INDEX_FILE}.*.tmp", ".shard-*.bin.*.tmp"):
        for file in path.glob(pattern):
            file.unlink()


def _id_dtype(num_classes: int) -> str:
    return "<i2" if num_classes <= np.iinfo(np.int16).max + 1 else "<i4"


def _shard_ok(path: Path, index: dict, shard: int) -> bool:
    entry = index["shards"][shard]
    file = path / entry["file"]
    try:
        return file.stat().st_size == entry["items"] * index["record_bytes"] and _inside(path, file)
    except FileNotFoundError:
        return False


def _inside(path: Path, file: Path) -> bool:
    """``file`` is a regular file in the directory ``path`` (a link is followed only if it stays there)."""
    return file.is_file() and (not file.is_symlink() or file.resolve().parent == path.resolve())


def _shard_problem(path: Path, index: dict, shard: int) -> str:
    entry = index["shards"][shard]
    file = path / entry["file"]
    expected = entry["items"] * index["record_bytes"]
    if not file.exists():
        return f"shard file {file.name} (records {entry['start']}..{entry['start'] + entry['items'] - 1}) is missing"
    if not _inside(path, file):
        return (f"shard file {file.name} is not a regular file of the store directory (it links to "
                f"{file.resolve()}); a store's shards may not point outside it")
    return (f"shard file {file.name} is truncated or corrupt: {file.stat().st_size} bytes, "
            f"expected {expected} ({entry['items']} records of {index['record_bytes']} bytes)")
