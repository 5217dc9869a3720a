"""The per-sample score file: one CSV row per sample with its id, label, score and weight.

::

    id,label,score,weight
    images/train/000000.png,3,0.8734,1
    images/train/000001.png,7,-0.2210,0

``id`` is the sample's id (for the digit scenes, the image path relative to the dataset root;
for mmpretrain datasets, ``img_path`` relative to ``data_root``), ``label`` the class id that
was scored, ``score`` the CleanNet relevance in [-1, 1], ``weight`` the training weight
(``1[score >= threshold]`` or ``max(0, score)``). Scores are written with 9 significant
digits, which round-trips float32 exactly.

An id that a spreadsheet would read as a formula (starting with ``=``, ``+``, ``-``, ``@``, a
tab or a carriage return) is written with a leading ``'``, as spreadsheets themselves mark
text; so is an id that starts with ``'``. :func:`read_scores` removes that one quote again, so
ids round-trip exactly.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import math
from pathlib import Path

import numpy as np

from labelwise.errors import DataError
from labelwise.utils.fileio import atomic_write, read_text

COLUMNS = ("id", "label", "score", "weight")

#: First characters that make a spreadsheet read a cell as a formula (OWASP's CSV injection list).
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def escape_cell(text: str) -> str:
    """``text`` as a CSV cell a spreadsheet shows as text: a leading ``'`` before a formula
    character (``= + - @``, tab, carriage return) or before a ``'`` already there."""
    return "'" + text if text.startswith(_FORMULA_START + ("'",)) else text


def unescape_cell(text: str) -> str:
    """Undo :func:`escape_cell`: drop one leading ``'``."""
    return text[1:] if text.startswith("'") else text


@dataclasses.dataclass
class ScoreTable:
    """A score file in memory: ``ids`` (list of str), ``labels`` (int64), ``scores`` and
    ``weights`` (float64), all of length N."""

    ids: list
    labels: np.ndarray
    scores: np.ndarray
    weights: np.ndarray

    def index(self) -> dict:
        """``{id: row}``."""
        return {sample_id: i for i, sample_id in enumerate(self.ids)}


def write_scores(path, ids, labels, scores, weights) -> None:
    """Write a score file atomically (see the module docstring for the format)."""
    text = format_scores(ids, labels, scores, weights, name=path)
    with atomic_write(path, "w", newline="") as f:
        f.write(text)


def format_scores(ids, labels, scores, weights, *, name="") -> str:
    """The text :func:`write_scores` writes (``name`` only labels an error message)."""
    n = len(ids)
    if not (len(labels) == len(scores) == len(weights) == n):
        raise DataError(f"score file {name}: ids, labels, scores and weights differ in length")
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS)
    for row in zip(ids, labels, scores, weights):
        writer.writerow((escape_cell(str(row[0])), int(row[1]), f"{float(row[2]):.9g}", f"{float(row[3]):.9g}"))
    return buffer.getvalue()


def read_scores(path) -> ScoreTable:
    """Read and validate a score file.

    Raises:
        DataError: the file is missing or empty; the header is not ``id,label,score,weight``
            (the message lists the missing and unexpected columns); a row has the wrong number
            of fields, an empty or duplicate id, a label that is not an integer >= 0, a score
            or weight that is not a finite number, a score outside [-1, 1] or a negative
            weight. Messages name the file, the line and the value.
    """
    path = Path(path)
    text = read_text(path, what="score file")
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise DataError(f"score file {path} is empty; expected a header {','.join(COLUMNS)}")
    header = [h.strip() for h in rows[0]]
    if header != list(COLUMNS):
        missing = [c for c in COLUMNS if c not in header]
        extra = [c for c in header if c not in COLUMNS]
        raise DataError(f"score file {path}: header is {','.join(header)!r}; expected {','.join(COLUMNS)!r}"
                        + (f" (missing: {', '.join(missing)})" if missing else "")
                        + (f" (unexpected: {', '.join(extra)})" if extra else ""))
    ids, labels, scores, weights, seen = [], [], [], [], {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        where = f"score file {path}, line {line}"
        if len(row) != len(COLUMNS):
            raise DataError(f"{where}: expected {len(COLUMNS)} fields ({','.join(COLUMNS)}), got {len(row)}")
        sample_id = unescape_cell(row[0].strip())
        if not sample_id:
            raise DataError(f"{where}: empty id")
        if sample_id in seen:
            raise DataError(f"{where}: id {sample_id!r} already appears on line {seen[sample_id]}")
        seen[sample_id] = line
        try:
            label = int(row[1])
        except ValueError:
            label = -1
        if label < 0:
            raise DataError(f"{where}: label {row[1]!r} is not a class id (an integer >= 0)")
        score = _number(row[2], "score", where)
        if not -1.0 - 1e-6 <= score <= 1.0 + 1e-6:
            raise DataError(f"{where}: score {row[2]!r} is outside [-1, 1]")
        weight = _number(row[3], "weight", where)
        if weight < 0:
            raise DataError(f"{where}: weight {row[3]!r} is negative")
        ids.append(sample_id)
        labels.append(label)
        scores.append(score)
        weights.append(weight)
    if not ids:
        raise DataError(f"score file {path} has a header but no rows")
    return ScoreTable(ids, np.asarray(labels, dtype=np.int64), np.asarray(scores), np.asarray(weights))


def _number(text: str, column: str, where: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise DataError(f"{where}: {column} {text!r} is not a number") from None
    if not math.isfinite(value):
        raise DataError(f"{where}: {column} is {text!r}; expected a finite number")
    return value
