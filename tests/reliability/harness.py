"""Run `labelwise` commands as real processes, watch their output folders, SIGKILL them on cue.

A :class:`Watch` polls output folders while a command runs. Every file it sees under a final
name (not an ``atomic_write`` temporary ``.NAME.XXXX.tmp`` nor a ``*.partial`` file) is read at
once and checked to be complete for its format (JSON parses, .npz/.npy load, a PNG ends with
its IEND chunk, a label-map shard has its exact size, ...). A file half-written under its final
name fails the check.
"""
from __future__ import annotations

import csv
import fnmatch
import io
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
#: Every child runs on one thread (results do not depend on it; the machine is shared).
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def is_final_name(path: Path) -> bool:
    """False for the temporary names labelwise writes before renaming (and ``*.partial``)."""
    return not (path.name.startswith(".") or path.name.endswith((".tmp", ".partial")))


def check_complete(path: Path, data: bytes) -> None:
    """Assert that ``data`` (the bytes read from ``path``) is a complete file of its format."""
    suffix = path.suffix
    if suffix == ".json":
        json.loads(data.decode("utf-8"))
    elif suffix == ".npz":
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            for key in npz.files:
                npz[key]
    elif suffix == ".npy":
        np.load(io.BytesIO(data), allow_pickle=False)
    elif suffix == ".png":
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and data.endswith(b"IEND\xaeB`\x82"), f"{path}: cut PNG"
    elif suffix == ".bin":  # a label-map shard: its exact size is in the store's index
        index = json.loads((path.parent / "labelmaps.json").read_text())
        entry = next(e for e in index["shards"] if e["file"] == path.name)
        assert len(data) == entry["items"] * index["record_bytes"], f"{path}: {len(data)} bytes, cut short"
    elif suffix == ".csv":
        text = data.decode("utf-8")
        rows = list(csv.reader(text.splitlines()))
        assert text.endswith("\n") and rows[0] == ["id", "label", "score", "weight"], f"{path}: cut CSV"
        assert all(len(r) == 4 for r in rows[1:]), f"{path}: a cut row"
    elif suffix == ".txt":  # line lists (annotation files, class names, ids): cut files lack the last newline
        assert data.endswith(b"\n"), f"{path}: does not end with a newline (cut short?)"
    elif suffix == ".onnx":
        import onnx

        onnx.load_model_from_string(data)
    elif suffix == ".pth":
        assert zipfile.ZipFile(io.BytesIO(data)).testzip() is None, f"{path}: corrupt checkpoint"
    else:
        raise AssertionError(f"{path}: a file the harness does not know how to check")


class Snapshot:
    """What a watch saw at one poll: ``files`` (relative posix paths, final names only),
    ``temporaries`` (the others) and ``elapsed`` seconds since the command started."""

    def __init__(self, files, temporaries, elapsed, first_seen):
        self.files, self.temporaries, self.elapsed, self.first_seen = files, temporaries, elapsed, first_seen

    def count(self, pattern: str) -> int:
        return sum(fnmatch.fnmatch(f, pattern) for f in self.files)

    def has(self, pattern: str) -> bool:
        return self.count(pattern) > 0


class Watch:
    """Poll folders; check every final-named file version seen (see the module docstring)."""

    def __init__(self, *roots):
        self.roots = [Path(r) for r in roots]
        self.checked: dict[str, tuple] = {}
        self.problems: list[str] = []
        self.start = time.monotonic()
        self.first_seen = None

    def scan(self) -> Snapshot:
        files, temporaries = [], []
        for root in self.roots:
            try:
                paths = [p for p in root.rglob("*")]
            except FileNotFoundError:
                continue
            for path in paths:
                try:
                    if not path.is_file():
                        continue
                    stat = path.stat()
                except FileNotFoundError:
                    continue
                rel = f"{root.name}/{path.relative_to(root).as_posix()}"
                if not is_final_name(path):
                    temporaries.append(rel)
                    continue
                files.append(rel)
                key = (stat.st_ino, stat.st_size, stat.st_mtime_ns)
                if self.checked.get(rel) == key:
                    continue
                try:
                    data = path.read_bytes()
                except FileNotFoundError:
                    continue
                self.checked[rel] = key
                try:
                    check_complete(path, data)
                except Exception as exc:  # noqa: BLE001 (any failure to parse is the finding)
                    self.problems.append(f"{rel} ({len(data)} bytes): {type(exc).__name__}: {exc}")
        elapsed = time.monotonic() - self.start
        if files and self.first_seen is None:
            self.first_seen = elapsed
        return Snapshot(sorted(files), sorted(temporaries), elapsed, self.first_seen)


def labelwise_argv(argv) -> list:
    return [sys.executable, "-m", "labelwise", *map(str, argv)]


def run_watched(argv, *, watch, kill_when=None, timeout=300, log=None, launcher=None):
    """Start ``labelwise argv`` (or ``launcher + argv``), poll ``watch`` until it ends or
    ``kill_when(snapshot)`` holds, then SIGKILL it (and its children).

    Returns:
        ``(returncode, snapshot at the kill or at the end, output text)``. ``returncode`` is
        ``-9`` for a killed process.
    """
    log = Path(log) if log else None
    cmd = [*(launcher or [sys.executable, "-m"]), "labelwise", *map(str, argv)]
    out = open(log, "w+") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **ENV}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while True:
            snap = watch.scan()
            if proc.poll() is not None:
                snap = watch.scan()
                break
            if kill_when is not None and kill_when(snap):
                os.killpg(proc.pid, signal.SIGKILL)  # the command and any worker / rank it started
                proc.wait()
                break
            if time.monotonic() > deadline:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise AssertionError(f"{' '.join(cmd)} did not finish in {timeout} s")
            time.sleep(0.003)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    text = ""
    if log:
        out.seek(0)
        text = out.read()
        out.close()
    return proc.returncode, snap, text


def run_inprocess(argv) -> int:
    """``labelwise.cli.main(argv)`` on one torch thread, like the child processes."""
    import torch

    from labelwise.cli import main

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return main([str(a) for a in argv])
    finally:
        torch.set_num_threads(threads)


#: JSON fields that hold a run's wall time (the only fields allowed to differ between runs).
TIME_FIELDS = {"cft_report.json": [("summary", "seconds")], "metrics.json": [("seconds",)]}


def output_differences(ref: Path, got: Path, *, time_fields=None) -> list:
    """How the files of ``got`` differ from ``ref``'s: an empty list when they are equal.

    Equal means the same file names (temporaries included) and equal contents: ``.npz`` files
    array by array (their zip entries carry the time of writing); the JSON files of
    ``time_fields`` (default :data:`TIME_FIELDS`) minus those fields; every other file byte for
    byte.
    """
    time_fields = TIME_FIELDS if time_fields is None else time_fields
    ref_files = sorted(p.relative_to(ref).as_posix() for p in ref.rglob("*") if p.is_file())
    got_files = sorted(p.relative_to(got).as_posix() for p in got.rglob("*") if p.is_file())
    if got_files != ref_files:
        return [f"other files than the reference run: {sorted(set(got_files) ^ set(ref_files))}"]
    differences = []
    for name in ref_files:
        a, b = ref / name, got / name
        if name.endswith(".npz"):
            with np.load(a, allow_pickle=False) as x, np.load(b, allow_pickle=False) as y:
                if x.files != y.files:
                    differences.append(f"{name}: arrays {x.files} vs {y.files}")
                    continue
                differences += [f"{name}:{key}" for key in x.files
                                if not (x[key].dtype == y[key].dtype and np.array_equal(x[key], y[key]))]
        elif Path(name).name in time_fields:
            x, y = json.loads(a.read_text()), json.loads(b.read_text())
            for path in time_fields[Path(name).name]:
                for doc in (x, y):
                    for key in path[:-1]:
                        doc = doc[key]
                    doc.pop(path[-1])
            if x != y:
                differences.append(name)
        elif a.read_bytes() != b.read_bytes():
            differences.append(name)
    return differences
