"""The file formats of a digit-scene dataset, one writer (and reader) per format.

Every file is written atomically (:func:`labelwise.utils.fileio.atomic_write`): it appears
under its final name complete or not at all. JSON files have sorted keys and no timestamps,
so the same data always gives the same bytes. A sample's id is its image path relative to the
dataset root, e.g. ``images/train/000042.png``. See ``docs/data.md`` for the layout.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from labelwise.data.regimes import Regime, RegimeLabels
from labelwise.data.scenes import Scene
from labelwise.errors import DataError
from labelwise.labels import POSITIVE, check_class_ids, check_partial_labels
from labelwise.utils.fileio import atomic_write

LABELS_FORMAT = "labelwise-labels/1"


def image_id(split: str, index: int) -> str:
    """Sample id (= image path relative to the root) of scene ``index`` of ``split``."""
    return f"images/{split}/{index:06d}.png"


def write_png(path, image: np.ndarray) -> None:
    """Write ``image (H, W, 3)`` uint8 as an RGB PNG, atomically."""
    from PIL import Image

    with atomic_write(path) as f:
        Image.fromarray(np.asarray(image, dtype=np.uint8), mode="RGB").save(f, format="PNG")


def scene_record(scene: Scene, sample_id: str) -> dict:
    """JSON-ready description of one scene: id, objects (class, box, source digit), main."""
    return {
        "id": sample_id,
        "main": int(scene.main),
        "objects": [
            {"class": int(c), "box": [int(v) for v in box], "source": int(s)}
            for c, box, s in zip(scene.classes, scene.boxes, scene.sources)
        ],
    }


def write_scenes(path, records: list[dict], *, split: str, classes, canvas_size: int) -> None:
    """Write ``scenes/{split}.json``: the objects and main digit of every image of a split."""
    _write_compact_json(
        path,
        {"split": split, "classes": list(classes), "canvas_size": canvas_size, "images": records},
    )


def read_scenes(path) -> dict:
    """Read a file written by :func:`write_scenes`; :class:`DataError` names a missing file."""
    return _read_json(path)


def write_custom_ann(path, ids: list[str], labels: np.ndarray) -> None:
    """mmpretrain ``CustomDataset`` annotation file: one ``<image id> <class id>`` per line.

    Use it as ``CustomDataset(data_root=<root>, ann_file=<this file>, data_prefix='')``.
    """
    labels = np.asarray(labels, dtype=np.int64)
    with atomic_write(path, "w", newline="\n") as f:
        f.writelines(f"{i} {int(c)}\n" for i, c in zip(ids, labels))


def write_multilabel_ann(
    path, ids: list[str], labels: np.ndarray, *, classes, partial: bool
) -> None:
    """mmpretrain ``MultiLabelDataset`` annotation file (OpenMMLab 2.0 JSON).

    Args:
        path: output ``.json`` file.
        ids: ``N`` image paths relative to the dataset root.
        labels: ``(N, C)`` of 1 / 0 / -1.
        classes: ``C`` class names (``metainfo.classes``).
        partial: if True every sample also gets ``"partial_labels"``, its full length-C list
            of 1 / 0 / -1, since ``gt_label`` (the known positives) cannot say which negatives
            are unknown.
    """
    labels = check_partial_labels(labels, name=str(path), num_classes=len(classes))
    data_list = []
    for sample_id, row in zip(ids, labels):
        info = {"img_path": sample_id, "gt_label": np.flatnonzero(row == POSITIVE).tolist()}
        if partial:
            info["partial_labels"] = row.tolist()
        data_list.append(info)
    _write_compact_json(path, {"metainfo": {"classes": list(classes)}, "data_list": data_list})


def write_labels(
    path, ids: list[str], labels: RegimeLabels, *, regime: Regime, split: str, classes
) -> None:
    """Plain label file for non-mm use: ids, labels, truth and verification flags (JSON).

    Read it back with :func:`read_labels`.
    """
    _write_compact_json(
        path,
        {
            "format": LABELS_FORMAT,
            "regime": regime.name,
            "split": split,
            "classes": list(classes),
            "ids": list(ids),
            "labels": labels.labels.tolist(),
            "truth": labels.truth.tolist(),
            "verified": None if labels.verified is None else labels.verified.tolist(),
        },
    )


def read_labels(path) -> tuple[list[str], RegimeLabels]:
    """Read a file written by :func:`write_labels`.

    Returns:
        ``(ids, RegimeLabels)``: ``N`` sample ids; labels and truth ``(N, C)`` int8 (1/0/-1)
        for multi-label regimes or ``(N,)`` int64 class ids for single-label ones; verified
        ``(N,)`` int8 (1/0/-1) or ``None``.

    Raises:
        DataError: the file is missing, not JSON, or its arrays are malformed (the message
            names the file).
    """
    data = _read_json(path)
    if not isinstance(data, dict) or data.get("format") != LABELS_FORMAT:
        raise DataError(f"{path}: not a labelwise label file (expected format {LABELS_FORMAT!r})")
    missing = [k for k in ("regime", "classes", "ids", "labels", "truth") if k not in data]
    if missing:
        raise DataError(f"{path}: missing key(s) {missing}")
    ids, classes = list(data["ids"]), list(data["classes"])
    single = Regime.from_name(data["regime"]).is_single_label

    def convert(key):
        if single:
            arr = check_class_ids(data[key], name=f"{path}:{key}", num_classes=len(classes))
            if arr.shape != (len(ids),):
                raise DataError(f"{path}: {key!r} must be {len(ids)} class ids in [0, {len(classes)})")
            return arr
        arr = np.asarray(data[key]) if ids else np.zeros((0, len(classes)), dtype=np.int8)
        return check_partial_labels(arr, name=f"{path}:{key}", num_classes=len(classes))

    verified = data.get("verified")
    if verified is not None:
        verified = np.asarray(verified, dtype=np.int8)
        if verified.shape != (len(ids),) or not np.isin(verified, (1, 0, -1)).all():
            raise DataError(f"{path}: 'verified' must be {len(ids)} flags of 1 / 0 / -1")
    return ids, RegimeLabels(convert("labels"), convert("truth"), verified)


def write_regime_split(root, regime: Regime, split: str, ids, labels: RegimeLabels, *, classes):
    """Write every file of one regime on one split under the dataset ``root``.

    Single-label regimes: ``<regime>/<split>.txt`` (mmpretrain ``CustomDataset``) and the
    ImageFolder tree ``imagefolder/<regime>/<split>/``; multi-label regimes:
    ``<regime>/<split>.json`` (mmpretrain ``MultiLabelDataset``). Both: the plain label file
    ``<regime>/<split>.labels.json``.
    """
    root = Path(root)
    out = root / regime.name
    out.mkdir(exist_ok=True)
    if regime.is_single_label:
        write_custom_ann(out / f"{split}.txt", ids, labels.labels)
        folder = root / "imagefolder" / regime.name / split
        link_imagefolder(folder, ids, labels.labels, root=root, classes=classes)
    else:
        partial = regime.kind == "partial"
        write_multilabel_ann(
            out / f"{split}.json", ids, labels.labels, classes=classes, partial=partial
        )
    write_labels(
        out / f"{split}.labels.json", ids, labels, regime=regime, split=split, classes=classes
    )


def write_class_list(path, classes) -> None:
    """One class name per line (a timm ``class_map`` file: line i = class index i)."""
    with atomic_write(path, "w", newline="\n") as f:
        f.writelines(f"{c}\n" for c in classes)


def link_imagefolder(folder, ids: list[str], labels: np.ndarray, *, root, classes) -> None:
    """ImageFolder tree ``folder/<class name>/<file>`` of relative symlinks to the images.

    Args:
        folder: the split's folder, e.g. ``<root>/imagefolder/single/train``.
        ids: ``N`` image paths relative to ``root``.
        labels: ``(N,)`` class ids.
        root: the dataset root.
        classes: class names (folder names).

    Falls back to copying the image where the file system has no symlinks.
    """
    folder, root = Path(folder), Path(root)
    labels = np.asarray(labels, dtype=np.int64)
    for c in np.unique(labels):
        (folder / classes[c]).mkdir(parents=True, exist_ok=True)
    up = os.path.relpath(root, folder / classes[0])  # the same depth for every class folder
    for sample_id, c in zip(ids, labels):
        link = folder / classes[c] / Path(sample_id).name
        _atomic_symlink(f"{up}/{sample_id}", link, root / sample_id)


def _atomic_symlink(relative: str, link: Path, target: Path) -> None:
    """Point ``link`` at ``relative`` (= ``target`` seen from the link's folder), atomically."""
    if link.is_symlink() and os.readlink(link) == relative:
        return  # already there (a resumed build)
    tmp = link.parent / f".{link.name}.{os.getpid()}.tmp"
    if tmp.is_symlink():  # left over by an interrupted run with this process id
        tmp.unlink()
    try:
        os.symlink(relative, tmp)
    except OSError:  # no symlinks here (e.g. Windows without privileges): copy instead
        with open(target, "rb") as src, atomic_write(link) as dst:
            shutil.copyfileobj(src, dst)
        return
    os.replace(tmp, link)


def _write_compact_json(path, obj) -> None:
    """Like :func:`write_json` with ``indent=None`` (same bytes), but with the C encoder."""
    with atomic_write(path, "w") as f:
        f.write(json.dumps(obj, sort_keys=True))
        f.write("\n")


def _read_json(path):
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
