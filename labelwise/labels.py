"""The project's one partial-label convention.

Every method and file format in labelwise stores a multi-label target matrix ``(N, C)`` as:

* ``1``  -- positive (the class is present),
* ``0``  -- negative (the class is absent),
* ``-1`` -- unknown (not annotated).

On input, ``NaN`` is also accepted as unknown (the convention of mlcpl and of the CFT
reference code). :func:`check_partial_labels` is the single place that validates and converts.
"""
from __future__ import annotations

import numpy as np

from labelwise.errors import ConfigError, DataError

POSITIVE = 1
NEGATIVE = 0
UNKNOWN = -1


def check_partial_labels(labels, *, name: str = "labels", num_classes: int | None = None) -> np.ndarray:
    """Validate a partial-label matrix and return it as ``int8`` with 1 / 0 / -1.

    Args:
        labels: array-like ``(N, C)`` of 1 (positive), 0 (negative), -1 or NaN (unknown).
            Booleans are read as 1 / 0.
        name: what to call the array in error messages (a file name or key).
        num_classes: if given, the required number of columns ``C``.

    Returns:
        ``np.ndarray`` of dtype ``int8``, shape ``(N, C)``, values in {1, 0, -1}.

    Raises:
        DataError: the array is not 2-D, has the wrong number of classes, or holds a value
            other than 1, 0, -1 or NaN (the message shows the first offending value and where).
    """
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise DataError(f"{name}: expected a 2-D (N, C) label matrix, got shape {arr.shape}")
    if num_classes is not None and arr.shape[1] != num_classes:
        raise DataError(f"{name}: expected {num_classes} classes (columns), got {arr.shape[1]}")
    if arr.dtype == bool:
        return arr.astype(np.int8)
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{name}: expected numbers 1 / 0 / -1 / NaN, got dtype {arr.dtype}")
    if np.issubdtype(arr.dtype, np.complexfloating):
        raise DataError(f"{name}: expected real numbers 1 / 0 / -1 / NaN, got complex dtype {arr.dtype}")
    values = arr.astype(np.float64)
    unknown = np.isnan(values)
    values[unknown] = UNKNOWN
    bad = ~np.isin(values, (POSITIVE, NEGATIVE, UNKNOWN))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise DataError(
            f"{name}: label at row {row}, class {col} is {arr[row, col].item()!r}; "
            "expected 1 (positive), 0 (negative), -1 or NaN (unknown)"
        )
    return values.astype(np.int8)


def check_class_ids(values, *, name: str, num_classes: int) -> np.ndarray:
    """Validate single-label targets and return them as ``int64``.

    Args:
        values: array-like ``(N,)`` of class ids; floats are accepted only when integral
            (``3.0``), never truncated (``5.7`` is refused).
        name: what to call the array in error messages.
        num_classes: ids must lie in ``[0, num_classes)``.

    Raises:
        DataError: not 1-D, not real numbers, a non-integral value, or an id out of range.
    """
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name}: expected a 1-D array of class ids, got shape {arr.shape}")
    if arr.size == 0:
        return arr.astype(np.int64)
    if arr.dtype == bool or arr.dtype.kind not in "iuf":
        raise DataError(f"{name}: expected integer class ids, got dtype {arr.dtype}")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr) | (arr != np.round(arr))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(f"{name}: value {arr[i].item()!r} at row {i} is not a class id (an integer)")
    out = arr.astype(np.int64)
    wrong = (out < 0) | (out >= num_classes)
    if wrong.any():
        i = int(np.argmax(wrong))
        raise DataError(f"{name}: class id {out[i]} at row {i} is outside [0, {num_classes})")
    return out


def known_mask(labels: np.ndarray) -> np.ndarray:
    """Boolean mask ``(N, C)`` of the entries that are known (1 or 0)."""
    return np.asarray(labels) != UNKNOWN


def check_probability(value: float, *, name: str) -> float:
    """Return ``value`` as a float if it lies in [0, 1], else raise :class:`ConfigError`."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= v <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value!r}")
    return v
