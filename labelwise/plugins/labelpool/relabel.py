"""ReLabel: run a dense annotator over a dataset and write its top-k label maps to a store.

Each image is resized whole to ``input_size x input_size`` (no crop, aspect not kept, as in
the reference), normalised, and passed through a
:class:`~labelwise.plugins.labelpool.annotator.DenseClassifier`; the top-k logits and class
ids of every map location go to a :class:`~labelwise.plugins.labelpool.store.LabelMapWriter`.
Batched, with a progress bar, resumable (finished shards are kept), and shardable over the
ranks of a distributed run (rank ``r`` of ``n`` writes shards ``r, r + n, ...``; batches never
straddle shards, so any number of ranks produces the same bytes).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from labelwise.errors import ConfigError, DataError
from labelwise.utils.fileio import read_text


class WholeImageLoader:
    """Load an image file whole, resized to a square, as a normalised float tensor.

    Args:
        root: directory the keys are relative to.
        size: output side ``S`` (the annotator's input size).
        mean, std: per-channel normalisation in 0..255 units, in the channel order the
            annotator receives: RGB, or BGR with ``bgr=True``.
        bgr: give the annotator BGR channel order (mmpretrain configs with ``to_rgb=False``).

    ``loader(key)`` returns float32 ``(3, S, S)``. The channels are put in the annotator's order
    first and normalised after, as mmpretrain's ``ClsDataPreprocessor`` does: it flips the BGR
    image it is given to RGB (``to_rgb=True``) before subtracting ``mean``, and with
    ``to_rgb=False`` applies ``mean`` / ``std`` to the BGR channels. So an mmpretrain config's
    ``mean`` / ``std`` / ``to_rgb`` can be passed unchanged (``bgr = not to_rgb``).
    """

    def __init__(self, root, *, size: int, mean: Sequence[float], std: Sequence[float], bgr: bool = False):
        if int(size) < 1:
            raise ConfigError(f"input size must be a positive integer, got {size!r}")
        self.root = Path(root)
        self.size = int(size)
        self.mean = torch.tensor([float(m) for m in mean]).view(3, 1, 1)
        self.std = torch.tensor([float(s) for s in std]).view(3, 1, 1)
        self.bgr = bool(bgr)

    def __call__(self, key: str) -> torch.Tensor:
        from PIL import Image

        path = self.root / key
        try:
            with Image.open(path) as img:
                img = img.convert("RGB").resize((self.size, self.size), Image.BILINEAR)
        except (FileNotFoundError, OSError) as exc:
            raise DataError(f"cannot read image {path} ({type(exc).__name__}: {exc})") from exc
        x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy()).permute(2, 0, 1)
        if self.bgr:
            x = x.flip(0)
        return (x - self.mean) / self.std


class _KeyDataset(torch.utils.data.Dataset):
    def __init__(self, keys, load):
        self.keys, self.load = keys, load

    def __len__(self):
        return len(self.keys)

    def __getitem__(self, i):
        return self.load(self.keys[i])


def annotator_meta(source: dict, checkpoint, *, mean, std, bgr: bool) -> dict:
    """What identifies the maps' annotator in a store's ``meta``: ``source`` (framework, config
    or model name), the checkpoint's name and content fingerprint
    (:func:`labelwise.utils.fingerprint.file_fingerprint`: size and a SHA-256 of its ends, which
    for a ``torch.save`` archive cover every tensor's CRC-32) and the input normalisation. A
    resumed run must match it, so two annotators whose files share a name and a size still
    differ."""
    from labelwise.utils.fingerprint import file_fingerprint

    checkpoint = Path(checkpoint)
    return {**source, "checkpoint": checkpoint.name, "checkpoint_fingerprint": file_fingerprint(checkpoint),
            "mean": [float(m) for m in mean], "std": [float(s) for s in std], "bgr": bool(bgr)}


def relabel(
    annotator: torch.nn.Module,
    keys: Sequence[str],
    load_image: Callable[[str], torch.Tensor],
    out,
    *,
    input_size: int,
    k: int = 5,
    batch_size: int = 64,
    shard_size: int | None = None,
    meta: dict | None = None,
    overwrite: bool = False,
    num_workers: int = 0,
    device="cpu",
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    progress: bool = True,
) -> dict:
    """Annotate ``keys`` and write their top-k label maps to the store ``out``.

    Args:
        annotator: images ``(B, 3, S, S)`` -> dense logits ``(B, C, h, w)`` (e.g. a
            :class:`~labelwise.plugins.labelpool.annotator.DenseClassifier`); put in eval mode.
        keys: image keys (paths relative to the dataset root), in store order.
        load_image: ``key -> (3, S, S)`` normalised tensor (e.g. :class:`WholeImageLoader`).
        out: the store directory.
        input_size: ``S``, recorded in the store's ``meta``.
        k: classes kept per location (default 5, as the paper).
        batch_size: images per forward pass.
        shard_size: images per shard file (default ``store.DEFAULT_SHARD_SIZE``); the unit
            of resuming and of splitting work over ranks.
        meta: what made the maps (annotator, checkpoint); a resumed run must match it.
        overwrite: start over, deleting the store in ``out``.
        num_workers: image-loading worker processes.
        device: where the annotator runs.
        rank, world_size: this process's share of the shards under ``torchrun``.
        barrier: called so that rank 0 creates the store before the others open it and the
            final check waits for every rank (``torch.distributed.barrier`` when
            ``world_size > 1``).
        progress: show a progress bar (rank 0 only).

    Returns:
        ``{"store": path, "images": N, "written": images this rank annotated, "map_size": [h,
        w], "num_classes": C, "k": k, "complete": bool}``.
    """
    from tqdm.auto import tqdm

    from labelwise.plugins.labelpool.annotator import topk_maps
    from labelwise.plugins.labelpool.store import DEFAULT_SHARD_SIZE, LabelMapWriter

    keys = [str(key) for key in keys]
    if not keys:
        raise DataError("relabel: the image list is empty")
    if world_size > 1 and barrier is None:
        raise ConfigError("relabel: world_size > 1 needs a barrier (torch.distributed.barrier)")
    barrier = barrier or (lambda: None)
    annotator = annotator.to(device).eval()
    with torch.no_grad():
        probe = annotator(load_image(keys[0])[None].to(device))
    _, num_classes, height, width = probe.shape
    meta = {**(meta or {}), "input_size": int(input_size)}
    settings = dict(keys=keys, num_classes=int(num_classes), k=int(k), height=int(height),
                    width=int(width), shard_size=int(shard_size or DEFAULT_SHARD_SIZE), meta=meta)
    if k > num_classes:
        raise ConfigError(f"k={k} exceeds the annotator's {num_classes} classes")
    if rank == 0:
        writer = LabelMapWriter(out, overwrite=overwrite, **settings)
    barrier()
    if rank != 0:
        writer = LabelMapWriter(out, **settings)
    pending = writer.pending_shards(rank=rank, world_size=world_size)
    total = sum(stop - start for start, stop in map(writer.shard_range, pending))
    written = 0
    with tqdm(total=total, desc=f"relabel (rank {rank})" if world_size > 1 else "relabel",
              unit="img", disable=not progress or rank != 0) as bar:
        for shard in pending:
            start, stop = writer.shard_range(shard)
            loader = torch.utils.data.DataLoader(
                _KeyDataset(keys[start:stop], load_image), batch_size=batch_size,
                num_workers=num_workers, shuffle=False)
            scores, ids = [], []
            with torch.no_grad():
                for images in loader:
                    s, i = topk_maps(annotator(images.to(device)), k)
                    scores.append(s.cpu().numpy())
                    ids.append(i.cpu().numpy())
                    bar.update(len(images))
            writer.write_shard(shard, np.concatenate(scores), np.concatenate(ids))
            written += stop - start
    barrier()
    return {"store": str(out), "images": len(keys), "written": written,
            "map_size": [int(height), int(width)], "num_classes": int(num_classes), "k": int(k),
            "complete": writer.is_complete()}


def read_image_list(data_root, ann_file=None) -> list[str]:
    """Image keys (paths relative to ``data_root``) of a dataset split.

    Args:
        data_root: the dataset root.
        ann_file: an mmpretrain annotation file, relative to ``data_root`` or absolute: a text
            file of ``<path> [label...]`` lines (``CustomDataset``) or an OpenMMLab JSON with
            ``data_list[*].img_path`` (``MultiLabelDataset``). ``None``: every ``.png``,
            ``.jpg``, ``.jpeg`` file under ``data_root``, sorted.

    Raises:
        DataError: the file is missing, malformed, or lists nothing.
    """
    import json

    root = Path(data_root)
    if not root.is_dir():
        raise DataError(f"data root {root} does not exist")
    if ann_file is None:
        from labelwise.utils.keys import image_key

        keys = sorted(image_key(p, root) for p in root.rglob("*")
                      if p.suffix.lower() in (".png", ".jpg", ".jpeg") and p.is_file())
    else:
        path = Path(ann_file) if Path(ann_file).is_absolute() else root / ann_file
        if not path.is_file():
            raise DataError(f"annotation file {path} does not exist")
        text = read_text(path, what="annotation file")
        if path.suffix == ".json":
            try:
                keys = [item["img_path"] for item in json.loads(text)["data_list"]]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(f"{path}: expected OpenMMLab JSON with data_list[*].img_path "
                                f"({type(exc).__name__}: {exc})") from exc
        else:
            keys = [_annotation_path(line) for line in text.splitlines() if line.strip()]
    if not keys:
        raise DataError(f"no images found in {ann_file or root}")
    return keys


def _annotation_path(line: str) -> str:
    """The image path of a ``CustomDataset`` annotation line, split as mmpretrain splits it: at
    the last space, when what follows is the class id (so a path may hold spaces)."""
    line = line.strip()
    parts = line.rsplit(" ", 1)
    return parts[0] if len(parts) == 2 and parts[1].lstrip("-").isdigit() else line
