"""What every reader returns (:class:`LabelSet`) and the checks they share.

A reader parses one published format into the project's convention: per image a path
relative to the dataset root and either a partial-label vector of 1 / 0 / -1
(:mod:`labelwise.labels`) or a class id. Nothing here imports mmengine, mmpretrain or timm.
"""
from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path, PurePosixPath

import numpy as np

from labelwise.errors import ConfigError, DataError
from labelwise.labels import check_class_ids, check_partial_labels
from labelwise.utils.fileio import atomic_write, read_text


@dataclasses.dataclass(frozen=True, eq=False)
class LabelSet:
    """Images and their labels, as a reader returns them.

    Attributes:
        root: the dataset root; every path is relative to it.
        paths: ``N`` image paths relative to ``root``, ``/``-separated (the keys
            ``labelwise relabel`` and ``labelwise cleannet features`` use for the same images).
        labels: ``(N, C)`` int8 of 1 / 0 / -1 for multi-label data, or ``(N,)`` int64 class ids.
        classes: ``C`` display names, in class-index order.
        class_keys: ``C`` identifiers of the format itself (COCO category ids, Open Images
            MIDs, ImageNet wnids); equal to ``classes`` where the format has no other.
        extra: per-image arrays of length ``N`` a format adds (``'image_id'``, ``'verified'``
            1 / 0 / -1, ``'clean_label'``, ...).
        source: the annotation file(s) read, for messages.
    """

    root: Path
    paths: tuple
    labels: np.ndarray
    classes: tuple
    class_keys: tuple = None
    extra: dict = dataclasses.field(default_factory=dict)
    source: str = ""

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "root", Path(self.root))
        set_(self, "paths", tuple(self.paths))
        set_(self, "classes", tuple(self.classes))
        set_(self, "class_keys", self.classes if self.class_keys is None else tuple(self.class_keys))
        name = self.source or "labels"
        labels = np.asarray(self.labels)
        if labels.ndim == 2:
            labels = check_partial_labels(labels, name=name, num_classes=len(self.classes))
        else:
            labels = check_class_ids(labels, name=name, num_classes=len(self.classes))
        set_(self, "labels", labels)
        if len(labels) != len(self.paths) or len(self.class_keys) != len(self.classes):
            raise ValueError(f"{name}: {len(self.paths)} paths, {len(labels)} label rows, {len(self.classes)} "
                             f"classes and {len(self.class_keys)} class keys do not fit together")
        for key, value in self.extra.items():
            if len(value) != len(self.paths):
                raise ValueError(f"{name}: extra[{key!r}] has {len(value)} entries for {len(self.paths)} images")

    @property
    def multi_label(self) -> bool:
        """Whether :attr:`labels` is an ``(N, C)`` partial-label matrix (else ``N`` class ids)."""
        return self.labels.ndim == 2

    def __len__(self) -> int:
        return len(self.paths)

    def image_path(self, index: int) -> Path:
        """The file of image ``index`` (``root / paths[index]``)."""
        return self.root / self.paths[index]


def write_verification_csv(label_set: LabelSet, path) -> Path:
    """Write the verified images of ``label_set`` as the CSV CleanNet's ``--verification`` reads.

    One ``id,verified`` row per image whose ``extra['verified']`` is 1 (its noisy label is
    correct) or 0 (wrong), with ``id`` the image path relative to the dataset root: the id
    :func:`labelwise.workflows.cleannet.read_verification` matches against a feature file
    written by ``labelwise cleannet features --data-root <root>`` (unlisted images are -1,
    unverified). Written atomically.

    Args:
        label_set: a single-label set with ``extra['verified']`` (Food-101N, Clothing1M).
        path: the CSV to write.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: ``label_set`` carries no verification flags.
    """
    if "verified" not in label_set.extra:
        raise ConfigError(f"{label_set.source or 'this label set'} has no verification flags (extra['verified'])")
    path = Path(path)
    with atomic_write(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["id", "verified"])
        for key, flag in zip(label_set.paths, label_set.extra["verified"]):
            if flag >= 0:
                writer.writerow([key, int(flag)])
    return path


# ---------------------------------------------------------------------------------------------
# shared checks (private to the readers)

def resolve(root: Path, path) -> Path:
    """``path`` as given if absolute, else relative to ``root``."""
    path = Path(path)
    return path if path.is_absolute() else root / path


def check_root(root) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root {root} is not a directory")
    return root


def relative_path(value: str, *, where: str, what: str = "image path") -> str:
    """``value`` normalised to a ``/``-separated path inside the root, or a :class:`DataError`.

    Refuses an empty path, an absolute one (``/x``, ``C:\\x``) and any ``..`` component: a file
    must not make a reader open images outside the dataset root.
    """
    text = value.strip().replace("\\", "/")
    parts = [p for p in text.split("/") if p not in ("", ".")]
    if not text or text.startswith("/") or (len(text) > 1 and text[1] == ":") or ".." in parts or not parts:
        raise DataError(f"{where}: {what} {value!r} is outside the dataset root; expected a path relative to it "
                        "without '..'")
    return str(PurePosixPath(*parts))


def read_lines(path: Path, *, what: str) -> list[tuple[int, str]]:
    """``(line number, text)`` of each non-blank line of a UTF-8 file (a leading BOM dropped)."""
    text = read_text(path, what=what).lstrip("\ufeff")
    return [(n, line.rstrip("\r")) for n, line in enumerate(text.split("\n"), 1) if line.strip()]


def read_csv(path: Path, *, what: str, delimiter: str = ","):
    """Rows of a UTF-8 CSV file as ``(line number, fields)`` (blank lines skipped)."""
    text = read_text(path, what=what).lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for row in reader:
            if row and any(field.strip() for field in row):
                yield reader.line_num, row
    except csv.Error as exc:
        raise DataError(f"{what} {path}, line {reader.line_num}: not valid CSV ({exc})") from None


def header_index(header: list, required, *, path: Path, what: str) -> dict:
    """``{column: position}`` of the ``required`` columns, or a :class:`DataError` naming the missing one."""
    names = [h.strip() for h in header]
    missing = [c for c in required if c not in names]
    if missing:
        raise DataError(f"{what} {path}, line 1: missing column {missing[0]!r}; expected columns "
                        f"{', '.join(required)} (the header has {', '.join(names) or 'nothing'})")
    return {c: names.index(c) for c in required}


def check_choice(value, choices, *, name: str):
    if value not in choices:
        raise ConfigError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value
