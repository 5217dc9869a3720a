"""Crash-safe file output.

A file labelwise writes never appears under its final name half-written: it is written to a
temporary file in the same directory, flushed and ``fsync``-ed, then renamed over the target
(atomic on POSIX).
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_write(path, mode: str = "wb", **open_kwargs):
    """Open a temporary file next to ``path``; rename it to ``path`` only on success.

    Args:
        path: the final file name. Its directory must exist.
        mode: ``'wb'`` or ``'w'`` (text).
        **open_kwargs: passed to :func:`open` (e.g. ``encoding``, ``newline``).

    Yields:
        The open file object. If the ``with`` block raises, the temporary file is removed and
        ``path`` is left untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write mode must be 'w' or 'wb', got {mode!r}")
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if mode == "w":
            open_kwargs.setdefault("encoding", "utf-8")
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_json(path, obj, *, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (sorted keys, so bytes are reproducible)."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent, sort_keys=True)
        f.write("\n")


def write_figure(path, fig) -> Path:
    """Lay out a matplotlib figure and write it as a PNG to ``path`` atomically."""
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png")
    return Path(path)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
