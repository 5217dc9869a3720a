"""ImageNet-style class folders (``train/<wnid>/*.JPEG``) as single-label targets.

Optional ``LOC_synset_mapping.txt`` (the Kaggle release) gives the class names, one
``<wnid> <names>`` line per class: ``n01440764 tench, Tinca tinca``.
"""
from __future__ import annotations

from labelwise.datasets.base import LabelSet, check_root, read_lines, relative_path, resolve
from labelwise.errors import DataError

#: Image extensions read (mmpretrain's ``ImageNet.IMG_EXTENSIONS``), compared case-insensitively.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif")


def read_synset_mapping(path) -> dict:
    """``{wnid: name}`` of a ``LOC_synset_mapping.txt``, in file order.

    Raises:
        DataError: a line without a name, a repeated wnid.
    """
    table: dict = {}
    for n, line in read_lines(path, what="synset mapping"):
        parts = line.strip().split(maxsplit=1)
        if len(parts) != 2:
            raise DataError(f"synset mapping {path}, line {n}: expected '<wnid> <class names>', got {line.strip()!r}")
        if parts[0] in table:
            raise DataError(f"synset mapping {path}, line {n}: wnid {parts[0]} is listed twice")
        table[parts[0]] = parts[1]
    return table


def read_imagenet_folder(root, *, split: str = "train", synset_mapping=None) -> LabelSet:
    """Read ``root/split/<wnid>/...`` as single-label targets.

    The classes are the sorted wnids: those of the mapping file when one is given (so that a
    split missing a class keeps every index, the trap of counting only the folders present),
    else the folders of ``split``. Images are every file with an extension of
    :data:`IMG_EXTENSIONS` under a class folder (subfolders included), sorted by path.

    Keys: ``paths`` are relative to ``root`` (``train/n01440764/n01440764_10026.JPEG``), the keys
    ``labelwise relabel --data-root <root>`` writes, so ``labelwise.LabelPooling`` (with
    ``data_root=<root>``, or none: it matches the path's end) finds each image's label map.

    Args:
        root: the dataset root, holding ``split/``.
        split: the split folder (default ``'train'``; a validation set must be sorted into
            ``val/<wnid>/`` folders, as mmpretrain's ``ImageNet`` also expects without an
            annotation file).
        synset_mapping: ``LOC_synset_mapping.txt`` relative to ``root`` or absolute, or None
            (class names are the wnids).

    Returns:
        A :class:`LabelSet`; ``class_keys`` the wnids, ``classes`` their names.

    Raises:
        DataError: no ``split`` folder, no image in it, a folder whose wnid the mapping lacks, a
            symbolic link leading outside ``root``.
    """
    root = check_root(root)
    split = relative_path(split, where="split", what="folder")
    top = root / split
    if not top.is_dir():
        raise DataError(f"ImageNet folder {top} does not exist; expected {root}/{split}/<wnid>/<images>")
    folders = sorted(p.name for p in top.iterdir() if p.is_dir())
    if synset_mapping is not None:
        mapping_path = resolve(root, synset_mapping)
        names = read_synset_mapping(mapping_path)
        unknown = [f for f in folders if f not in names]
        if unknown:
            raise DataError(f"ImageNet folder {top / unknown[0]}: wnid {unknown[0]!r} is not in {mapping_path}")
        wnids = sorted(names)
    else:
        wnids, names = folders, {f: f for f in folders}
    index = {w: c for c, w in enumerate(wnids)}
    resolved_root = root.resolve()
    paths, labels = [], []
    for wnid in folders:
        for file in sorted(p for p in (top / wnid).rglob("*") if p.suffix.lower() in IMG_EXTENSIONS and p.is_file()):
            if not file.resolve().is_relative_to(resolved_root):
                raise DataError(f"ImageNet folder: {file} links to {file.resolve()}, outside the dataset root {root}")
            paths.append(file.relative_to(root).as_posix())
            labels.append(index[wnid])
    if not paths:
        raise DataError(f"ImageNet folder {top}: no image (extensions {', '.join(IMG_EXTENSIONS)}) in its class "
                        "folders")
    return LabelSet(root=root, paths=paths, labels=labels, classes=[names[w] for w in wnids], class_keys=wnids,
                    source=str(top))
