"""Crash-safe file output.

A file labelwise writes never appears under its final name half-written: it is written to a
temporary file in the same directory, flushed and ``fsync``-ed, then renamed over the target
(atomic on POSIX). The file gets the permissions any other tool's new file gets (``0o666``
less the process umask), or keeps those of the file it replaces.
"""
from __future__ import annotations

import contextlib
import glob
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, _new_file_mode(path))  # mkstemp creates 0o600 whatever the umask
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
    _remove_stale_temporaries(path)
    _fsync_dir(path.parent)


def _remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries of ``path`` left by writers that were killed (their process is
    gone), so a finished re-run leaves the folder as an uninterrupted run does. A temporary of a
    process still alive (a concurrent writer) is left alone."""
    prefix = f".{path.name}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        pid = tmp.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def write_json(path, obj, *, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (sorted keys, so bytes are reproducible)."""
    with atomic_write(path, "w") as f:
        json.dump(obj, f, indent=indent, sort_keys=True)
        f.write("\n")


#: The PNG text entry :func:`write_figure` stamps its files with (and recognises them by).
FIGURE_SOFTWARE = "labelwise"


def write_figure(path, fig, *, overwrite: bool = False) -> Path:
    """Lay out a matplotlib figure and write it as a PNG to ``path`` atomically.

    The PNG carries ``Software: labelwise``; an existing file at ``path`` is replaced only if it
    is such a figure (a re-run drawing its plot again) or ``overwrite`` is set.

    Raises:
        DataError: ``path`` exists and is not a figure labelwise wrote.
    """
    from labelwise.errors import DataError

    path = Path(path)
    if path.exists() and not overwrite and not is_labelwise_figure(path):
        raise DataError(f"{path} exists and is not a plot labelwise wrote; choose another file name "
                        "(nothing was overwritten)")
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", metadata={"Software": FIGURE_SOFTWARE})
    return path


def is_labelwise_figure(path) -> bool:
    """Whether ``path`` is a PNG written by :func:`write_figure` (its ``Software`` text entry)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except OSError:
        return False
    return head.startswith(b"\x89PNG\r\n\x1a\n") and b"tEXtSoftware\x00" + FIGURE_SOFTWARE.encode() in head


def check_distinct(paths: dict) -> None:
    """Refuse two roles that name the same file (e.g. ``--histogram`` equal to ``--out`` or to
    an input), which would make one output overwrite another file of the same command.

    Args:
        paths: role (e.g. ``'--out'``) -> path or None; None entries are skipped.

    Raises:
        ConfigError: naming both roles and the file.
    """
    from labelwise.errors import ConfigError

    seen: dict = {}
    for role, path in paths.items():
        if path is None:
            continue
        key = os.path.realpath(os.path.expanduser(str(path)))
        if key in seen:
            raise ConfigError(f"{role} {path} is the same file as {seen[key]}; give each its own file")
        seen[key] = f"{role} {path}"


def _new_file_mode(path: Path) -> int:
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux: read it without changing it (os.umask has no read-only form)
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_head(path, size: int, *, error, what: str) -> bytes:
    """The first ``size`` bytes of ``path``, or ``error`` (an exception class) naming the file
    as ``what``, when it cannot be read."""
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from exc


def read_npz(path, *, what: str = "a .npz file") -> dict:
    """Read every array of a ``.npz`` archive without unpickling and without trusting its headers.

    Each member's ``.npy`` header is read first: an object array is refused (reading it would
    unpickle), and so is a header whose shape and dtype need more bytes than the member holds
    (a crafted header can declare terabytes, which ``numpy.load`` would try to allocate).

    Args:
        path: the archive.
        what: what the file should be, for messages (e.g. ``"a labelwise feature file"``).

    Returns:
        ``{name: ndarray}``.

    Raises:
        DataError: missing, not a zip archive, truncated or corrupt, an object array, or a header
            that does not fit its data; the message names the file (and the member).
    """
    import zipfile

    import numpy as np

    from labelwise.errors import DataError

    path = Path(path)
    head = file_head(path, 8, error=DataError, what=what)
    if not head.startswith(b"PK"):
        raise DataError(f"{path}: not a .npz archive (numpy.savez writes a zip file; this one starts with {head!r}); "
                        f"expected {what}")
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as member:
                    version = np.lib.format.read_magic(member)
                    read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                                   (2, 0): np.lib.format.read_array_header_2_0}.get(version)
                    if read_header is None:
                        raise ValueError(f"member {info.filename}: .npy format version {version} is not supported")
                    shape, _, dtype = read_header(member)
                    header = member.tell()
                name = info.filename[:-4]
                if dtype.hasobject:
                    raise DataError(f"{path}: holds an object array ({name}), which is not read (it would be "
                                    "unpickled); expected numeric and string arrays")
                need = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if need > info.file_size - header:
                    raise DataError(f"{path}: {name}: its header declares shape {tuple(shape)} of {dtype} "
                                    f"({need} bytes) but the archive holds {info.file_size - header}; the file is "
                                    "corrupt or crafted")
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except DataError:
        raise
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, MemoryError) as exc:
        raise DataError(f"{path}: not a readable .npz file, truncated or corrupt ({type(exc).__name__}: {exc}); "
                        f"expected {what}") from exc


def read_text(path, *, what: str) -> str:
    """A UTF-8 text file's contents, or a :class:`~labelwise.errors.DataError` naming the file
    (``what`` says which kind, e.g. ``"annotation file"``) and, for bytes that are not UTF-8,
    where the first one is."""
    from labelwise.errors import DataError

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"{what} {path}, line {line}: byte {data[exc.start]:#04x} is not UTF-8 text; save the "
                        "file as UTF-8") from None
