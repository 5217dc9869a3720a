"""CheXpert ``train.csv`` / ``valid.csv``: report-mined labels with an uncertain state.

The CSV (``CheXpert-v1.0-small/train.csv``)::

    Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,...,Support Devices
    CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg,Female,68,Frontal,AP,1.0,,,...,1.0

Each of the 14 observations is ``1.0`` (positive), ``0.0`` (negative), ``-1.0`` (uncertain:
the report hedges) or blank (the report does not mention it). ``Path`` is relative to the
folder that holds ``CheXpert-v1.0-small/``. ``valid.csv`` (radiologist labels) has only 1.0 / 0.0.
"""
from __future__ import annotations

import numpy as np

from labelwise.datasets.base import LabelSet, check_choice, check_root, header_index, read_csv, relative_path, resolve
from labelwise.errors import ConfigError, DataError

#: The columns before the observations.
META_COLUMNS = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
#: The 14 observations, in the order of the released CSVs.
OBSERVATIONS = ("No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                "Fracture", "Support Devices")
#: The five observations of the CheXpert competition, in its order.
COMPETITION = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
UNCERTAIN = ("ignore", "zeros", "ones")
BLANK = ("unknown", "negative")


def read_chexpert(root, csv_file="CheXpert-v1.0-small/train.csv", *, uncertain: str = "ignore",
                  blank: str = "unknown", classes="all") -> LabelSet:
    """Read a CheXpert CSV as partial multi-label targets.

    ``1.0`` -> 1 and ``0.0`` -> 0. Uncertain (``-1.0``) follows the paper's policies:
    ``uncertain='ignore'`` (U-Ignore, default) -> -1 unknown, ``'zeros'`` (U-Zeros) -> 0,
    ``'ones'`` (U-Ones) -> 1. Blank (not mentioned) -> -1 unknown with ``blank='unknown'``
    (default: the report is silent, which is what the project's unknown state means, and it
    lets a partial-label loss decide) or 0 with ``blank='negative'``, the common practice of
    CheXpert training code (blank filled with 0; an unmentioned finding is usually absent).
    The uncertainty policy never applies to blanks.

    Args:
        root: the folder the ``Path`` column is relative to (the one holding
            ``CheXpert-v1.0-small/``).
        csv_file: ``train.csv`` or ``valid.csv``, relative to ``root`` or absolute.
        uncertain: ``'ignore'`` (default), ``'zeros'`` or ``'ones'``.
        blank: ``'unknown'`` (default) or ``'negative'``.
        classes: ``'all'`` (default: every observation column, in file order),
            ``'competition'`` (:data:`COMPETITION`) or a list of column names.

    Returns:
        A :class:`LabelSet` in file order; ``paths`` the ``Path`` column.

    Raises:
        DataError: a missing column (``Path`` or a requested observation), a row with the wrong
            number of fields, a value that is not 1.0 / 0.0 / -1.0 / blank, a duplicate or
            outside-the-root path.
        ConfigError: an unknown ``uncertain``, ``blank`` or ``classes`` value.
    """
    root = check_root(root)
    path = resolve(root, csv_file)
    check_choice(uncertain, UNCERTAIN, name="uncertain")
    check_choice(blank, BLANK, name="blank")
    rows = read_csv(path, what="CheXpert CSV")
    first = next(rows, None)
    if first is None:
        raise DataError(f"CheXpert CSV {path}: empty file; expected the header Path,Sex,Age,... and one row per image")
    header = [h.strip() for h in first[1]]
    header_index(header, ("Path",), path=path, what="CheXpert CSV")
    observations = [h for h in header if h not in META_COLUMNS]
    if classes == "all":
        chosen = observations
    elif classes == "competition":
        chosen = list(COMPETITION)
    elif isinstance(classes, (list, tuple)) and classes and all(isinstance(c, str) for c in classes):
        chosen = list(classes)
    else:
        raise ConfigError(f"classes must be 'all', 'competition' or a list of observation names, got {classes!r}")
    at = header_index(header, ["Path", *chosen], path=path, what="CheXpert CSV")
    value_of = {1.0: 1, 0.0: 0, -1.0: {"ignore": -1, "zeros": 0, "ones": 1}[uncertain]}
    blank_value = -1 if blank == "unknown" else 0
    paths, seen, labels = [], {}, []
    for n, row in rows:
        where = f"CheXpert CSV {path}, line {n}"
        if len(row) != len(header):
            raise DataError(f"{where}: expected {len(header)} fields, got {len(row)}")
        image = relative_path(row[at["Path"]], where=where)
        if image in seen:
            raise DataError(f"{where}: image {image} is listed twice (also line {seen[image]})")
        seen[image] = n
        vector = []
        for name in chosen:
            raw = row[at[name]].strip()
            if not raw:
                vector.append(blank_value)
                continue
            try:
                value = value_of[float(raw)]
            except (ValueError, KeyError):
                raise DataError(f"{where}: {name} is {raw!r}; expected 1.0 (positive), 0.0 (negative), -1.0 "
                                "(uncertain) or blank (not mentioned)") from None
            vector.append(value)
        paths.append(image)
        labels.append(vector)
    labels = np.asarray(labels, dtype=np.int8).reshape(len(paths), len(chosen))
    return LabelSet(root=root, paths=paths, labels=labels, classes=chosen, source=str(path))
