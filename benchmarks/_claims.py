"""Several processes of one benchmark script sharing its runs.

A process claims a run by creating ``WORK_DIR/.claim`` (exclusive create) holding its pid, and
releases it when the run ends. Others skip a run claimed by a live process and, once their own
runs are done, wait for its result; a claim left by a dead process is taken over. Start the
same command twice (e.g. two single-threaded processes on a 2-core machine) and each run is
trained once.
"""
import os
import time
from pathlib import Path

CLAIM = ".claim"


def claim(work_dir) -> bool:
    """Claim ``work_dir`` for this process; False if a live process holds it."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / CLAIM
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        if _held(path):
            return False
        path.unlink(missing_ok=True)  # its owner died
        return claim(work_dir)
    with os.fdopen(fd, "w") as f:
        f.write(str(os.getpid()))
    return True


def release(work_dir) -> None:
    (Path(work_dir) / CLAIM).unlink(missing_ok=True)


def wait_for(done: Path, work_dir, *, poll: float = 30.0) -> bool:
    """Wait until ``done`` exists (True) or the claim on ``work_dir`` is gone without it (False)."""
    while not done.exists():
        if not _held(Path(work_dir) / CLAIM):
            return done.exists()
        time.sleep(poll)
    return True


def _held(path: Path) -> bool:
    try:
        text = path.read_text().strip()
    except FileNotFoundError:
        return False
    if not text:  # just created, pid not written yet
        return time.time() - path.stat().st_mtime < 60
    try:
        os.kill(int(text), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError):
        return True
    return True
