"""kill -9 recovery: SIGKILL real `labelwise` processes mid-work, restart them, compare with a clean run.

For each command and kill point: the command runs as a real process while its output folder is
polled (every final-named file seen must be complete, see :mod:`reliability.harness`); it is
killed with SIGKILL when the kill point is reached (a progress file count, an output file
appearing, or a seeded random delay); the test checks the kill landed mid-work (the final
outputs are not all there), restarts the same command, and compares every output with an
uninterrupted run of the same command (bytes; arrays for ``.npz`` files, whose zip entries carry
the time of writing; the CFT report minus ``summary.seconds``).

``make test`` runs one kill point per command (restarted in-process through ``labelwise.cli.main``);
``make test-reliability`` runs them all, restarted as real processes, plus a double kill and the
reader-during-write test of the label-map store.
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from reliability.conftest import CFT_OPTIONS, features_argv, relabel_argv, score_argv
from reliability.harness import ENV, ROOT, Watch, output_differences, run_inprocess, run_watched

pytestmark = pytest.mark.reliability


@dataclasses.dataclass
class Command:
    """How to run one command into ``work/out`` and what its finished outputs are."""

    name: str
    argv: Callable  # (inputs, out) -> argv
    finished: Callable  # snapshot -> bool: every final output is there
    points: dict  # kill point -> predicate(snapshot, rng) -> bool
    inputs: tuple = ()  # fixture names

    def run_argv(self, request, out: Path) -> list:
        return self.argv({name: request.getfixturevalue(name) for name in self.inputs}, out)


def _after_first_file(rng, high):
    """A seeded random delay in [0, high) s after the first output file appears."""
    delay = rng.uniform(0.0, high)
    return lambda s: s.first_seen is not None and s.elapsed >= s.first_seen + delay


def _after_random_count(rng, pattern, low, high):
    """Once a seeded random number in [low, high] of files matching ``pattern`` exist: random,
    but never past the end of the work however fast the machine is (a delay after the first
    file is, for commands that finish within a second of it on an idle machine)."""
    n = rng.randint(low, high)
    return lambda s: s.count(pattern) >= n


def _after_start(rng, low, high):
    delay = rng.uniform(low, high)
    return lambda s: s.elapsed >= delay


CFT = Command(
    "cft",
    lambda i, out: ["cft", "--npz", i["cft_npz"], "--out", out, *CFT_OPTIONS],
    lambda s: s.has("out/cft_report.json"),
    {
        "3-of-12-categories": lambda rng: lambda s: s.count("out/cft_state/category*") >= 3,
        "8-of-12-categories": lambda rng: lambda s: s.count("out/cft_state/category*") >= 8,
        "head-written-report-not": lambda rng: lambda s: s.has("out/cft_head.npz"),
        "random-seed0": lambda rng: _after_first_file(rng, 2.5),
        "random-seed1": lambda rng: _after_first_file(rng, 2.5),
    },
    ("cft_npz",),
)
RELABEL = Command(
    "relabel",
    lambda i, out: relabel_argv(i["tiny_digits"], i["annotator_ckpt"], out),
    lambda s: s.count("out/shard-*.bin") == 20,
    {
        "index-only": lambda rng: lambda s: s.has("out/labelmaps.json"),
        "3-of-20-shards": lambda rng: lambda s: s.count("out/shard-*.bin") >= 3,
        "10-of-20-shards": lambda rng: lambda s: s.count("out/shard-*.bin") >= 10,
        "random-seed0": lambda rng: _after_random_count(rng, "out/shard-*.bin", 1, 19),
        "random-seed1": lambda rng: _after_random_count(rng, "out/shard-*.bin", 1, 19),
    },
    ("tiny_digits", "annotator_ckpt"),
)
FEATURES = Command(
    "cleannet-features",
    lambda i, out: features_argv(i["tiny_digits"], i["features_ckpt"], out / "f.npz"),
    lambda s: s.has("out/f.npz"),
    {
        "plan-only": lambda rng: lambda s: s.has("out/f.npz.parts/plan.json"),
        "2-of-10-chunks": lambda rng: lambda s: s.count("out/f.npz.parts/chunk-*.npy") >= 2,
        "7-of-10-chunks": lambda rng: lambda s: s.count("out/f.npz.parts/chunk-*.npy") >= 7,
        "random-seed0": lambda rng: _after_random_count(rng, "out/f.npz.parts/chunk-*.npy", 1, 9),
        "random-seed1": lambda rng: _after_random_count(rng, "out/f.npz.parts/chunk-*.npy", 1, 9),
    },
    ("tiny_digits", "features_ckpt"),
)
SCORE = Command(
    "cleannet-score",
    lambda i, out: score_argv(i["cleannet_inputs"][1], i["cleannet_inputs"][0], out / "s.csv",
                              "--histogram", out / "hist.png"),
    lambda s: s.has("out/hist.png"),
    {
        "scores-written-histogram-not": lambda rng: lambda s: s.has("out/s.csv"),
        # the whole command takes 5.5 s on an idle 2-core machine (most of it importing torch and
        # matplotlib): kills in [1, 4.5) s land before it ends there and on slower machines
        "random-seed0": lambda rng: _after_start(rng, 1.0, 4.5),
        "random-seed1": lambda rng: _after_start(rng, 1.0, 4.5),
    },
    ("cleannet_inputs",),
)
COMMANDS = {c.name: c for c in (CFT, RELABEL, FEATURES, SCORE)}
#: One kill point per command for `make test`.
SUBSET = [("cft", "3-of-12-categories"), ("relabel", "3-of-20-shards"), ("cleannet-features", "2-of-10-chunks"),
          ("cleannet-score", "scores-written-histogram-not")]
FULL = [(c.name, p) for c in COMMANDS.values() for p in c.points if (c.name, p) not in SUBSET]


@pytest.fixture(scope="module")
def reference(request, tmp_path_factory):
    """Outputs of an uninterrupted run of each command (run in-process once, on demand)."""
    done = {}

    def get(name):
        if name not in done:
            out = tmp_path_factory.mktemp(f"ref-{name}") / "out"
            if name != "relabel":
                out.mkdir()
            assert run_inprocess(COMMANDS[name].run_argv(request, out)) == 0
            done[name] = out
        return done[name]

    return get


def _kill_and_resume(request, reference, tmp_path, name, point, *, restart_in_process):
    command = COMMANDS[name]
    out = tmp_path / "out"
    if name != "relabel":
        out.mkdir()
    argv = command.run_argv(request, out)
    ref = reference(name)
    rng = random.Random(f"{name}/{point}")
    watch = Watch(out)
    rc, at_kill, log = run_watched(argv, watch=watch, kill_when=command.points[point](rng), log=tmp_path / "log.txt")
    assert rc == -9, f"the command ended (status {rc}) before the kill point {point}:\n{log[-2000:]}"
    assert not command.finished(at_kill), f"kill point {point} landed after the work was done: {at_kill.files}"
    print(f"KILLED {name} at {point}: {at_kill.elapsed:.1f} s after start, {len(at_kill.files)} final files "
          f"({', '.join(at_kill.files[-3:])}), {len(at_kill.temporaries)} temporaries")
    if restart_in_process:
        assert run_inprocess(argv) == 0
    else:
        rc, _, log = run_watched(argv, watch=watch, log=tmp_path / "log2.txt")
        assert rc == 0, log[-3000:]
    return watch.problems, output_differences(ref, out)


@pytest.mark.parametrize("name,point", SUBSET, ids=[f"{n}-{p}" for n, p in SUBSET])
def test_kill_and_resume(request, reference, tmp_path, name, point):
    partial, differences = _kill_and_resume(request, reference, tmp_path, name, point, restart_in_process=True)
    assert not partial, f"partial files under a final name: {partial}"
    assert not differences, f"the resumed run differs from an uninterrupted one: {differences}"


@pytest.mark.slow
@pytest.mark.parametrize("name,point", FULL, ids=[f"{n}-{p}" for n, p in FULL])
def test_kill_and_resume_full(request, reference, tmp_path, name, point):
    partial, differences = _kill_and_resume(request, reference, tmp_path, name, point, restart_in_process=False)
    assert not partial, f"partial files under a final name: {partial}"
    assert not differences, f"the resumed run differs from an uninterrupted one: {differences}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["cft", "relabel", "cleannet-features"])
def test_killed_twice_then_resumed(request, reference, tmp_path, name):
    """Two kills in a row (the second during the resumed run), then a clean finish."""
    command = COMMANDS[name]
    out = tmp_path / "out"
    if name != "relabel":
        out.mkdir()
    argv = command.run_argv(request, out)
    watch = Watch(out)
    progress = {"cft": "out/cft_state/category*", "relabel": "out/shard-*.bin",
                "cleannet-features": "out/f.npz.parts/chunk-*.npy"}[name]
    rc, first, _ = run_watched(argv, watch=watch, kill_when=lambda s: s.count(progress) >= 2)
    assert rc == -9 and not command.finished(first)
    done = first.count(progress)
    rc, second, _ = run_watched(argv, watch=watch, kill_when=lambda s: s.count(progress) >= done + 2)
    assert rc == -9 and not command.finished(second)
    rc, _, log = run_watched(argv, watch=watch, log=tmp_path / "log.txt")
    assert rc == 0, log[-3000:]
    assert not watch.problems, watch.problems
    differences = output_differences(reference(name), out)
    assert not differences, f"the resumed run differs from an uninterrupted one: {differences}"


READER = textwrap.dedent("""
    import json, sys, time, hashlib
    import numpy as np
    from labelwise.errors import DataError
    from labelwise.plugins.labelpool.store import LabelMapStore, missing_shards, read_index
    path, seen_file = sys.argv[1], sys.argv[2]
    while True:  # the writer creates the index first
        try:
            store = LabelMapStore(path, allow_incomplete=True)
            break
        except DataError:
            time.sleep(0.005)
    seen, rounds = {}, 0
    while True:
        complete = not missing_shards(path, store.index)
        for i in store.written_records():
            scores, ids = store.get(i)
            assert np.isfinite(scores.astype(np.float32)).all(), (i, "scores")
            assert ids.min() >= 0 and ids.max() < store.num_classes, (i, "ids")
            assert (np.diff(np.sort(ids, axis=0), axis=0) != 0).all(), (i, "repeated ids")
            digest = hashlib.sha256(scores.tobytes() + ids.tobytes()).hexdigest()
            assert seen.setdefault(i, digest) == digest, (i, "changed after it was committed")
        rounds += 1
        if complete:
            break
    json.dump({"seen": seen, "rounds": rounds}, open(seen_file, "w"))
""")


@pytest.mark.slow
def test_store_readable_while_relabel_appends(tiny_digits, annotator_ckpt, tmp_path):
    """A reader process loops over the committed records of a store while `labelwise relabel`
    writes it; every record it reads is valid and equals the finished store's."""
    from labelwise.plugins.labelpool.store import LabelMapStore

    store = tmp_path / "maps"
    script = tmp_path / "reader.py"
    script.write_text(READER)
    reader = subprocess.Popen([sys.executable, str(script), str(store), str(tmp_path / "seen.json")],
                              cwd=ROOT, env={**os.environ, **ENV}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        rc, _, log = run_watched(relabel_argv(tiny_digits, annotator_ckpt, store), watch=Watch(store),
                                 log=tmp_path / "log.txt")
        assert rc == 0, log[-3000:]
        output, _ = reader.communicate(timeout=120)
    finally:
        if reader.poll() is None:
            reader.kill()
    assert reader.returncode == 0, output[-3000:]
    result = json.loads((tmp_path / "seen.json").read_text())
    final = LabelMapStore(store)
    import hashlib

    assert len(result["seen"]) == len(final) == 160
    for i, digest in result["seen"].items():
        scores, ids = final.get(int(i))
        assert hashlib.sha256(scores.tobytes() + ids.tobytes()).hexdigest() == digest
    assert result["rounds"] >= 2  # it did read while the writer was appending


def test_partial_store_refuses_unwritten_records(tmp_path):
    from labelwise.errors import DataError
    from labelwise.plugins.labelpool.store import LabelMapStore, LabelMapWriter

    keys = [f"images/{i}.png" for i in range(6)]
    writer = LabelMapWriter(tmp_path / "m", keys=keys, num_classes=4, k=2, height=1, width=1, shard_size=2)
    writer.write_shard(1, np.ones((2, 2, 1, 1)), np.array([[0, 1], [2, 3]]).reshape(2, 2, 1, 1))
    with pytest.raises(DataError, match="incomplete store"):
        LabelMapStore(tmp_path / "m")
    store = LabelMapStore(tmp_path / "m", allow_incomplete=True)
    assert store.written_records() == [2, 3]
    assert store.get("images/3.png")[1].ravel().tolist() == [2, 3]
    with pytest.raises(DataError, match=r"record 0 \('images/0.png'\) is not written yet .*shard-00000.bin"):
        store.get(0)
