"""File fingerprints: the SHA-256 of a whole file, and a cheap one of a (checkpoint) file's ends."""
from __future__ import annotations

import hashlib
from pathlib import Path

from labelwise.errors import DataError

#: Bytes read from each end of the file.
FINGERPRINT_BYTES = 1 << 20


def file_fingerprint(path) -> dict:
    """A cheap content fingerprint of a file (a checkpoint): size and SHA-256 of its ends.

    The digest covers the first and the last MiB (the whole file when it is at most 2 MiB).
    For a checkpoint written by ``torch.save`` (a zip archive) the last MiB holds the archive's
    central directory, which lists a CRC-32 of every stored tensor, so changed weights change
    the fingerprint; reading two MiB keeps it instant for multi-GB files. The path and the
    modification time are left out, so a copied or moved checkpoint still matches.

    Returns:
        ``{"bytes": size, "sha256_ends": hex digest}``.

    Raises:
        DataError: the file cannot be read.
    """
    path = Path(path)
    digest = hashlib.sha256()
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            digest.update(f.read(FINGERPRINT_BYTES))
            if size > 2 * FINGERPRINT_BYTES:
                f.seek(size - FINGERPRINT_BYTES)
            digest.update(f.read())
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return {"bytes": size, "sha256_ends": digest.hexdigest()}


def file_sha256(path) -> str:
    """SHA-256 hex digest of a whole file (source checkpoint hashes of reports, ONNX metadata, shipped models).

    Raises:
        DataError: the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise DataError(f"cannot read {path}: {exc.strerror or exc}") from exc
    return digest.hexdigest()
