"""Feature files and batched, resumable, shardable feature extraction (framework-free).

A feature file is a NumPy ``.npz`` (read with ``allow_pickle=False``) holding:

* ``format``: ``"labelwise-features/1"``;
* ``ids`` ``(N,)`` str: sample ids (image paths relative to the dataset root);
* ``features`` ``(N, D)`` float32: pooled penultimate activations;
* ``labels`` ``(N,)`` int64: the dataset's (noisy) labels, ``-1`` where none;
* ``meta``: a JSON string (model, checkpoint, dataset, ...; under ``"fingerprint"`` what made
  the features, see below).

:func:`extract_features` works in chunks of ``chunk_size`` samples; each finished chunk is
saved atomically under ``OUT.parts/``, so an interrupted run resumes where it stopped. An
existing file or unfinished extraction is reused only if its ids **and fingerprint** (the
model's checkpoint :func:`file_fingerprint`, a digest of its config, ...) are those asked for;
otherwise it is refused (``overwrite=True`` / ``--overwrite`` recomputes). Under
``torchrun`` (``torch.distributed`` initialised) chunk ``c`` goes to rank ``c % world_size``;
rank 0 merges the chunks into ``OUT`` once every rank is done. Each chunk is cut into the same
batches whatever the number of processes, so 1 and N processes write identical files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from labelwise.errors import ConfigError, DataError
from labelwise.utils.fileio import atomic_write, write_json
from labelwise.utils.fingerprint import file_fingerprint  # noqa: F401 (part of this module's API)

FORMAT = "labelwise-features/1"


@dataclasses.dataclass
class FeatureSet:
    """A feature file in memory (see the module docstring)."""

    ids: list
    features: np.ndarray
    labels: np.ndarray
    meta: dict


def save_features(path, ids, features, labels=None, *, meta: dict | None = None) -> None:
    """Write a feature file atomically."""
    features = np.asarray(features, dtype=np.float32)
    ids = [str(i) for i in ids]
    labels = np.full(len(ids), -1, dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
    if features.ndim != 2 or features.shape[0] != len(ids) or labels.shape != (len(ids),):
        raise DataError(f"{path}: expected features (N, D), N ids and N labels; got {features.shape}, "
                        f"{len(ids)} ids, labels {labels.shape}")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        np.savez(f, format=np.array(FORMAT), ids=np.array(ids, dtype=str), features=features, labels=labels,
                 meta=np.array(json.dumps(meta or {}, sort_keys=True)))


def load_features(path) -> FeatureSet:
    """Read a feature file.

    Raises:
        DataError: missing file, not a feature file, missing arrays, complex features, labels
            that are not integers, or inconsistent arrays.
    """
    from labelwise.utils.fileio import read_npz

    path = Path(path)
    arrays = read_npz(path, what="feature file")
    if str(arrays.get("format", "")) != FORMAT:
        raise DataError(f"{path} is not a labelwise feature file (expected format {FORMAT!r}; "
                        "write one with `labelwise cleannet features`)")
    missing = [k for k in ("features", "ids", "labels", "meta") if k not in arrays]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}; a labelwise feature file holds "
                        "features, ids, labels and meta")
    features, labels = arrays["features"], arrays["labels"]
    if features.dtype.kind not in "fiu":
        raise DataError(f"{path}: features have dtype {features.dtype}; expected real numbers")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{path}: labels have dtype {labels.dtype}; expected integer class ids")
    ids = arrays["ids"].tolist()
    if (features.ndim != 2 or arrays["ids"].ndim != 1 or features.shape[0] != len(ids)
            or labels.shape != (len(ids),)):
        raise DataError(f"{path}: inconsistent arrays: features {features.shape}, {len(ids)} ids, "
                        f"labels {labels.shape}")
    if not all(isinstance(i, str) for i in ids):
        raise DataError(f"{path}: ids must be strings (image paths), got dtype {arrays['ids'].dtype}")
    try:
        meta = json.loads(str(arrays["meta"]))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: meta is not valid JSON ({exc})") from None
    return FeatureSet(ids, features, labels, meta)


def distributed_context() -> tuple[int, int]:
    """``(rank, world_size)`` of the initialised ``torch.distributed`` group, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


@torch.no_grad()
def extract_features(
    embed,
    dataset,
    *,
    out,
    ids,
    labels=None,
    batch_size: int = 64,
    chunk_size: int = 1024,
    num_workers: int = 0,
    collate_fn=None,
    meta: dict | None = None,
    fingerprint: dict | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Run ``embed`` over ``dataset`` in batches and store the features in ``out``.

    Args:
        embed: ``embed(batch) -> Tensor (B, D)``, the pooled penultimate features of a collated
            batch (see :func:`labelwise.adapters.mmpretrain.cleannet.mm_feature_extractor` and
            :func:`labelwise.adapters.timm.cleannet.timm_embed`). Called under ``no_grad``.
        dataset: a map-style dataset of ``len(ids)`` items.
        out: the feature file to write (``.npz``).
        ids: sample ids, one per item, in dataset order.
        labels: ``(N,)`` class ids stored with the features (optional).
        batch_size: items per ``embed`` call.
        chunk_size: items per resumable unit (a multiple of ``batch_size`` keeps batches full).
        num_workers, collate_fn: passed to the :class:`torch.utils.data.DataLoader`.
        meta: stored in the file as JSON (a description; not compared).
        fingerprint: JSON-serialisable identity of what computes the features (e.g. the
            checkpoint's :func:`file_fingerprint` and a digest of the model config), stored as
            ``meta["fingerprint"]`` and in ``OUT.parts/plan.json``. An existing ``out`` or
            unfinished ``OUT.parts`` with another fingerprint (or none, when one is given) is
            refused, never reused or resumed.
        overwrite: recompute even if ``out`` exists, discarding finished chunks.
        progress: show a progress bar (rank 0 only).

    Returns:
        ``out`` as a :class:`~pathlib.Path`. Every rank returns once the file is complete.

    Raises:
        DataError: ``ids`` and ``dataset`` disagree in length; an existing ``out`` or an
            unfinished ``OUT.parts`` belongs to other data or another fingerprint; ``embed``
            returned a wrong shape.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    rank, world = distributed_context()
    n = len(ids)
    if len(dataset) != n:
        raise DataError(f"the dataset has {len(dataset)} items but {n} ids were given")
    if int(batch_size) < 1 or int(chunk_size) < 1:
        raise ConfigError(f"batch_size and chunk_size must be >= 1, got {batch_size!r}, {chunk_size!r}")
    ids = [str(i) for i in ids]
    digest = hashlib.sha256("\n".join(ids).encode()).hexdigest()
    fingerprint = json.loads(json.dumps(fingerprint or {}))  # as it reads back from JSON
    if out.is_file() and not overwrite:
        existing = load_features(out)
        if existing.ids != ids:
            raise DataError(f"{out} exists and holds features of other samples; pass overwrite=True "
                            "(--overwrite) or choose another file")
        found = existing.meta.get("fingerprint") or {}
        if found != fingerprint:
            raise DataError(f"{out} exists and holds features made by another model, checkpoint or config "
                            f"({_differences(found, fingerprint)}); it is not reused: pass overwrite=True "
                            "(--overwrite) to recompute it, or choose another file")
        return out
    if fingerprint:
        meta = {**(meta or {}), "fingerprint": fingerprint}
    parts = out.with_name(out.name + ".parts")
    plan = {"n": n, "chunk_size": int(chunk_size), "ids_sha256": digest, "fingerprint": fingerprint}
    if rank == 0:
        if overwrite and parts.exists():
            shutil.rmtree(parts)
        parts.mkdir(parents=True, exist_ok=True)
        plan_file = parts / "plan.json"
        if plan_file.is_file():
            found = json.loads(plan_file.read_text())
            found.setdefault("fingerprint", {})  # written before fingerprints were kept
            if found != plan:
                what = ("made by another model, checkpoint or config "
                        f"({_differences(found['fingerprint'], fingerprint)})"
                        if found["fingerprint"] != fingerprint else "of other samples or another chunk size")
                raise DataError(f"{parts} holds an unfinished extraction {what}; it is not resumed: delete it "
                                "or pass overwrite=True (--overwrite)")
        write_json(plan_file, plan)
    _barrier(world)

    chunks = [c for c in range(-(-n // int(chunk_size))) if c % world == rank]
    todo = [c for c in chunks if not (parts / f"chunk-{c:06d}.npy").is_file()]
    total = sum(min(chunk_size, n - c * chunk_size) for c in todo)
    with tqdm(total=total, desc=f"features (rank {rank}/{world})" if world > 1 else "features", unit="img",
              disable=not progress or rank != 0, leave=False) as bar:
        for c in todo:
            index = list(range(c * chunk_size, min(n, (c + 1) * chunk_size)))
            loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, index), batch_size=int(batch_size),
                                                 shuffle=False, num_workers=num_workers, collate_fn=collate_fn)
            rows = []
            for batch in loader:
                feats = embed(batch)
                if not isinstance(feats, torch.Tensor) or feats.ndim != 2:
                    raise DataError(f"embed returned {type(feats).__name__} of shape "
                                    f"{getattr(feats, 'shape', '?')}; expected a (B, D) tensor")
                rows.append(feats.detach().float().cpu().numpy())
                bar.update(len(feats))
            chunk = np.concatenate(rows)
            if len(chunk) != len(index):
                raise DataError(f"embed returned {len(chunk)} rows for {len(index)} samples")
            with atomic_write(parts / f"chunk-{c:06d}.npy", "wb") as f:
                np.save(f, chunk)
    _barrier(world)
    if rank == 0:
        features = np.concatenate([np.load(parts / f"chunk-{c:06d}.npy") for c in range(-(-n // int(chunk_size)))])
        save_features(out, ids, features, labels, meta=meta)
        shutil.rmtree(parts)
    _barrier(world)
    return out


def _differences(found: dict, wanted: dict) -> str:
    keys = sorted(set(found) | set(wanted))
    return "; ".join(f"{k}: {found.get(k)!r}, now {wanted.get(k)!r}" for k in keys if found.get(k) != wanted.get(k))


def _barrier(world: int) -> None:
    if world > 1:
        torch.distributed.barrier()
