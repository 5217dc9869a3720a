"""Label maps in the per-image ``.pt`` layout of naver-ai/relabel_imagenet.

There, each training image ``<class_dir>/<name>.JPEG`` has a file ``<class_dir>/<name>.pt``
under the label root holding one float tensor ``[2, k, h, w]``: ``[0]`` the top-k logits per
location, ``[1]`` their class ids (stored as floats). :class:`ReferenceLabelMaps` reads such
files with a weights-only ``torch.load`` (a tensor, nothing else, is accepted) and offers
the same ``get(key)`` as :class:`~labelwise.plugins.labelpool.store.LabelMapStore`;
:func:`convert_reference_maps` copies them into a compact store (about half the bytes, and
one memory map instead of a file open per sample).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from labelwise.errors import ConfigError, DataError
from labelwise.plugins.labelpool.store import DEFAULT_SHARD_SIZE, LabelMapStore, LabelMapWriter


class ReferenceLabelMaps:
    """Read per-image ``.pt`` label maps.

    Args:
        root: the label-map root directory.
        num_classes: ``C`` of the maps (the files do not record it); ids must be below it.
        key_depth: how many trailing path components of an image key name its map file. The
            reference uses 2 (``<class_dir>/<name>``); ``None`` keeps the whole relative path.
        suffix: the map files' extension.

    A key ``'train/n01440764/n01440764_10026.JPEG'`` maps, with ``key_depth=2``, to
    ``root/n01440764/n01440764_10026.pt``.
    """

    def __init__(self, root, *, num_classes: int, key_depth: int | None = 2, suffix: str = ".pt"):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"label maps {self.root}: no such directory")
        self.num_classes = int(num_classes)
        self.key_depth = key_depth
        self.suffix = suffix

    def path_of(self, key) -> Path:
        parts = Path(str(key)).parts
        if self.key_depth is not None:
            parts = parts[-self.key_depth:]
        return self.root.joinpath(*parts).with_suffix(self.suffix)

    def get(self, key) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (k, h, w) float32, ids (k, h, w) int64)`` of one image.

        The file is read with ``torch.load(weights_only=True)`` directly, not with
        :func:`labelwise.checkpoint.load_checkpoint`: a reference map file is one bare tensor,
        and ``load_checkpoint`` accepts only dicts (it refuses anything else with a
        ``CheckpointError``). This is as safe, and stricter: ``weights_only=True`` without
        ``load_checkpoint``'s allow-list unpickles only tensors, storages and plain containers,
        never code; a file referencing any other global (a class, a function) is refused here
        with a ``DataError``, and anything but a ``[2, k, h, w]`` tensor is refused after
        loading.

        Raises:
            DataError: the file is missing, unreadable, not a ``[2, k, h, w]`` tensor, or holds
                ids that are not integers in ``[0, num_classes)``.
        """
        import torch

        path = self.path_of(key)
        if not path.is_file():
            raise DataError(f"label maps {self.root}: no label map for image {str(key)!r} "
                            f"(looked for {path})")
        try:
            value = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:
            raise DataError(f"label map {path} is unreadable, truncated or not a tensor file "
                            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from exc
        if not isinstance(value, torch.Tensor) or value.dim() != 4 or value.shape[0] != 2:
            shape = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise DataError(f"label map {path}: expected a tensor [2, k, h, w] (scores, ids), got {shape}")
        scores = value[0].float().numpy()
        raw_ids = value[1].double().numpy()
        ids = raw_ids.astype(np.int64)
        if (ids != raw_ids).any() or ids.min() < 0 or ids.max() >= self.num_classes:
            raise DataError(f"label map {path}: ids must be integers in [0, {self.num_classes - 1}], "
                            f"found values in [{raw_ids.min()}, {raw_ids.max()}]")
        return scores, ids


def convert_reference_maps(src, dst, keys, *, num_classes: int, key_depth: int | None = 2,
                           shard_size: int | None = None, overwrite: bool = False,
                           progress: bool = True):
    """Copy per-image ``.pt`` maps into a :class:`LabelMapStore` (resumable, like relabel).

    Args:
        src: the reference label-map root.
        dst: the store directory to write.
        keys: the image keys, in the order the store should hold them.
        num_classes, key_depth: as in :class:`ReferenceLabelMaps`.
        shard_size: images per shard (default ``store.DEFAULT_SHARD_SIZE``).
        overwrite: replace an existing store in ``dst``.
        progress: show a progress bar.

    Returns:
        The finished :class:`LabelMapStore`.
    """
    from tqdm.auto import tqdm

    reader = ReferenceLabelMaps(src, num_classes=num_classes, key_depth=key_depth)
    keys = [str(key) for key in keys]
    if not keys:
        raise DataError(f"convert {src}: no image keys given")
    first_scores, _ = reader.get(keys[0])
    k, h, w = first_scores.shape
    writer = LabelMapWriter(dst, keys=keys, num_classes=num_classes, k=k, height=h, width=w,
                            shard_size=shard_size or DEFAULT_SHARD_SIZE, overwrite=overwrite,
                            meta={"source": "reference-pt", "key_depth": key_depth})
    pending = writer.pending_shards()
    total = sum(writer.shard_range(s)[1] - writer.shard_range(s)[0] for s in pending)
    with tqdm(total=total, desc="convert", disable=not progress) as bar:
        for shard in pending:
            start, stop = writer.shard_range(shard)
            maps = [reader.get(key) for key in keys[start:stop]]
            shapes = {m[0].shape for m in maps}
            if len(shapes) != 1 or shapes != {(k, h, w)}:
                raise DataError(f"convert {src}: maps of images {start}..{stop - 1} have shapes "
                                f"{sorted(shapes)}, expected {(k, h, w)} for every image")
            writer.write_shard(shard, np.stack([m[0] for m in maps]), np.stack([m[1] for m in maps]))
            bar.update(stop - start)
    return LabelMapStore(dst, num_classes=num_classes)


def open_label_maps(path, *, num_classes: int, layout: str = "store", key_depth: int | None = 2):
    """Open label maps for reading: a :class:`LabelMapStore` or per-image reference ``.pt`` files.

    Args:
        path: the store directory, or the reference label-map root.
        num_classes: the model's ``C``, checked against the store.
        layout: ``"store"`` (default) or ``"reference"`` (see :class:`ReferenceLabelMaps`).
        key_depth: reference layout only: trailing key components naming a map file.

    Returns:
        An object with ``get(key) -> (scores (k, h, w), ids (k, h, w))`` and ``num_classes``.
    """
    if layout == "store":
        return LabelMapStore(path, num_classes=num_classes)
    if layout == "reference":
        return ReferenceLabelMaps(path, num_classes=num_classes, key_depth=key_depth)
    raise ConfigError(f"layout must be one of store, reference, got {layout!r}")
