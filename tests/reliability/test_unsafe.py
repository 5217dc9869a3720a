"""Nothing unsafe from data: a source audit of code-running loaders, and ids / paths read from
score files and stores that cannot reach files outside the dataset root or the store."""
from __future__ import annotations

import ast
import json
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import run_python
from labelwise.cli import main
from labelwise.errors import DataError

pytestmark = pytest.mark.reliability

PACKAGE = Path(__file__).resolve().parents[2] / "labelwise"

#: Calls that can run code stored in a file they read (or evaluate a string as code).
_ALWAYS = {
    "eval": "evaluates a string as Python", "exec": "executes a string as Python",
    "compile": "compiles a string as Python", "pickle.load": "unpickling runs code from the file",
    "pickle.loads": "unpickling runs code from the data", "pickle.Unpickler": "unpickling runs code",
    "marshal.load": "unmarshals code objects", "marshal.loads": "unmarshals code objects",
    "shelve.open": "a pickle database", "dill.load": "unpickling", "dill.loads": "unpickling",
    "joblib.load": "unpickling", "pandas.read_pickle": "unpickling", "yaml.unsafe_load": "runs YAML tags",
    "yaml.full_load": "constructs Python objects", "os.system": "runs a shell command",
    "torch.load": "unpickles (only labelwise/checkpoint.py may call it: its allow-list)",
}
#: Justified exceptions: (file relative to the package, call) -> why it is safe. The test fails if
#: an entry no longer matches a call (so the list cannot go stale).
ALLOWED = {
    ("checkpoint.py", "torch.load"):
        "the one checkpoint loader: torch.load(weights_only=True) with the allow-list of safe_globals()",
    ("plugins/labelpool/reference.py", "torch.load"):
        "reads one bare [2, k, h, w] tensor per file of the reference ReLabel layout with "
        "torch.load(weights_only=True) and no extra allowed globals: tensors and plain containers "
        "only (load_checkpoint accepts only dicts); anything else is refused with a DataError",
}


def audit_source(source: str, filename: str = "<string>") -> list[tuple[int, str, str]]:
    """``(line, call, why)`` for every call in ``source`` that could run code from data."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module:
            for a in node.names:
                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
    aliases.setdefault("np", "numpy")
    aliases.setdefault("pd", "pandas")
    hits = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        name = _dotted(node.func)
        if name is None:
            continue
        head, _, rest = name.partition(".")
        if rest and head not in aliases:  # a method of an object (model.eval(), re.compile is imported)
            continue
        qualified = aliases.get(head, head) + (f".{rest}" if rest else "")
        keywords = {k.arg: k.value for k in node.keywords}
        if qualified in _ALWAYS:
            hits.append((node.lineno, qualified, _ALWAYS[qualified]))
        elif qualified == "yaml.load" and not _safe_loader(keywords.get("Loader"), node.args[1:2]):
            hits.append((node.lineno, qualified, "yaml.load without SafeLoader constructs Python objects"))
        elif qualified == "numpy.load" and _true_or_unknown(keywords.get("allow_pickle")):
            hits.append((node.lineno, qualified, "allow_pickle=True unpickles object arrays"))
        if "weights_only" in keywords and not _is_true(keywords["weights_only"]):
            hits.append((node.lineno, f"{qualified}(weights_only=...)", "weights_only must be the literal True"))
    return hits


def _dotted(node) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    return ".".join([node.id, *reversed(parts)])


def _is_true(node) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _true_or_unknown(node) -> bool:
    return node is not None and not (isinstance(node, ast.Constant) and node.value is False)


def _safe_loader(keyword, positional) -> bool:
    node = keyword if keyword is not None else (positional[0] if positional else None)
    name = _dotted(node) if node is not None else None
    return name is not None and name.split(".")[-1] in ("SafeLoader", "CSafeLoader")


def test_audit_finds_every_pattern():
    """The audit itself can fail: each unsafe pattern (also through an alias) is reported."""
    bad = textwrap.dedent("""
        import pickle, yaml, torch, marshal
        import numpy as np
        import pickle as pk
        from torch import load as tload
        eval("1"); exec("x = 1"); compile("1", "f", "eval")
        pickle.load(f); pk.loads(b); marshal.loads(b)
        torch.load(p, weights_only=True); tload(p)
        torch.load(p, weights_only=not True)
        yaml.load(s); yaml.load(s, Loader=yaml.Loader); yaml.unsafe_load(s)
        np.load(p, allow_pickle=True); np.load(p, allow_pickle=flag)
    """)
    found = [call for _, call, _ in audit_source(bad)]
    assert found.count("eval") == found.count("exec") == found.count("compile") == 1
    assert found.count("pickle.load") == 1 and found.count("pickle.loads") == 1 and "marshal.loads" in found
    assert found.count("torch.load") == 3 and "torch.load(weights_only=...)" in found
    assert found.count("yaml.load") == 2 and "yaml.unsafe_load" in found
    assert found.count("numpy.load") == 2
    good = textwrap.dedent("""
        import yaml
        import numpy as np
        model.eval(); self.exec_module(m); np.load(p); np.load(p, allow_pickle=False)
        yaml.load(s, Loader=yaml.SafeLoader); yaml.safe_load(s); re.compile("x")
    """)
    assert audit_source(good) == []


def test_package_source_has_no_unsafe_loader():
    hits, used = [], set()
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for line, call, why in audit_source(path.read_text(encoding="utf-8"), str(path)):
            if (rel, call) in ALLOWED:
                used.add((rel, call))
                continue
            hits.append(f"labelwise/{rel}:{line}: {call}: {why}")
    assert not hits, "calls that can run code from data:\n" + "\n".join(hits)
    assert used == set(ALLOWED), f"allow-list entries that match nothing: {set(ALLOWED) - used}"


def test_allowed_torch_loads_are_weights_only():
    for rel, call in ALLOWED:
        tree = ast.parse((PACKAGE / rel).read_text(encoding="utf-8"))
        calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and _dotted(n.func) == call]
        assert calls, (rel, call)
        for node in calls:
            assert any(k.arg == "weights_only" and _is_true(k.value) for k in node.keywords), (rel, node.lineno)


# --- label-map store index: shard file names -------------------------------------------------------

def _store(path, *, keys=("images/a.png", "images/b.png")):
    from labelwise.plugins.labelpool.store import LabelMapWriter

    writer = LabelMapWriter(path, keys=list(keys), num_classes=4, k=2, height=1, width=1, shard_size=2)
    for shard in writer.pending_shards():
        writer.write_shard(shard, np.ones((2, 2, 1, 1)), np.array([[0, 1], [2, 3]]).reshape(2, 2, 1, 1))
    return writer


@pytest.fixture()
def outside(tmp_path):
    """A file outside the store, of exactly one shard's size (a naive reader would accept it)."""
    secret = tmp_path / "outside" / "secret.bin"
    secret.parent.mkdir()
    secret.write_bytes(b"S" * 2 * 8)  # 2 records of 8 bytes (k=2, 1x1, float16 + int16)
    return secret


@pytest.mark.parametrize("name", ["../outside/secret.bin", "ABS", "sub/shard-00000.bin", "shard-00001.bin"])
def test_store_index_cannot_name_files_elsewhere(tmp_path, outside, name, capsys):
    from labelwise.plugins.labelpool.store import LabelMapStore

    store = tmp_path / "maps"
    _store(store)
    index = json.loads((store / "labelmaps.json").read_text())
    index["shards"][0]["file"] = str(outside) if name == "ABS" else name
    (store / "labelmaps.json").write_text(json.dumps(index))
    with pytest.raises(DataError, match=r"shard 0 names the file .*; expected 'shard-00000.bin' \(a file of "
                                        r"the store directory; an index may not point elsewhere\)"):
        LabelMapStore(store)
    with pytest.raises(DataError, match="an index may not point elsewhere"):
        LabelMapStore(store, allow_incomplete=True)
    assert main(["labelmaps", "info", str(store)]) == 2
    err = capsys.readouterr().err
    assert "an index may not point elsewhere" in err and "Traceback" not in err


def test_store_shard_symlink_out_of_the_store_is_refused(tmp_path, outside):
    from labelwise.plugins.labelpool.store import LabelMapStore

    store = tmp_path / "maps"
    _store(store)
    (store / "shard-00000.bin").unlink()
    (store / "shard-00000.bin").symlink_to(outside)
    with pytest.raises(DataError, match=r"shard file shard-00000.bin is not a regular file of the store directory "
                                        r"\(it links to .*secret.bin\); a store's shards may not point outside it"):
        LabelMapStore(store)
    partial = LabelMapStore(store, allow_incomplete=True)
    assert partial.written_records() == []
    with pytest.raises(DataError, match="not written yet"):
        partial.get(0)
    # a link to a file inside the store directory is followed
    real = store / "shard-00000.bin.real"
    _store(tmp_path / "copy")
    real.write_bytes((tmp_path / "copy" / "shard-00000.bin").read_bytes())
    (store / "shard-00000.bin").unlink()
    (store / "shard-00000.bin").symlink_to(real.name)
    assert LabelMapStore(store).get("images/b.png")[1].ravel().tolist() == [2, 3]


# --- no reader opens a file named by an id: checked with an audit hook ---------------------------

OPENS = textwrap.dedent("""
    import json, sys
    opened = []
    def hook(event, args):
        if event == "open" and isinstance(args[0], (str, bytes)):
            opened.append(args[0] if isinstance(args[0], str) else args[0].decode())
    sys.addaudithook(hook)
    import numpy as np, torch
    from labelwise.plugins.cleannet.scorefile import read_scores
    from labelwise.plugins.cleannet.weighting import WeightedDataset
    from labelwise.plugins.labelpool.store import LabelMapStore
    from labelwise.plugins.refinery.store import RefinedLabelStore
    from labelwise.errors import DataError
    cfg = json.loads(sys.argv[1])
    results = {}
    table = read_scores(cfg["scores"])
    results["score_ids"] = table.ids
    data = WeightedDataset([(0, 3), (1, 7)], ids=cfg["dataset_ids"], score_file=cfg["scores"])
    results["weights"] = [float(data[i][1]["weight"]) for i in range(2)]
    store = LabelMapStore(cfg["maps"])
    results["maps"] = [store.get(k)[1].ravel().tolist() for k in store.keys]
    for key in cfg["evil"]:
        try:
            store.get(key)
        except DataError as exc:
            results.setdefault("map_errors", []).append(str(exc).split(":")[0])
    refined = RefinedLabelStore(cfg["refined"])
    results["refined_rows"] = [refined.row_of(i) for i in refined.ids]
    for key in cfg["evil"]:
        try:
            refined.row_of(key)
        except DataError:
            results.setdefault("refined_errors", 0)
            results["refined_errors"] += 1
    results["opened"] = opened
    print(json.dumps(results))
""")


def test_ids_from_score_files_and_stores_open_nothing_outside(tmp_path, outside):
    """Score files, label-map stores and refined-label stores whose ids are ``../`` paths,
    absolute paths or a symlink out of the root: the readers treat ids as names to look up,
    never as paths to open. An audit hook in a fresh process records every file opened."""
    from labelwise.plugins.cleannet.scorefile import write_scores
    from labelwise.plugins.refinery.store import write_refined_labels

    root = tmp_path / "root"
    (root / "images").mkdir(parents=True)
    (root / "images" / "escape").symlink_to(outside.parent, target_is_directory=True)
    evil = ["../outside/secret.bin", str(outside), "images/escape/secret.bin", "images/../../outside/secret.bin"]
    good = ["images/a.png", "images/b.png"]
    write_scores(tmp_path / "s.csv", [*good, *evil], [0] * 6, [0.5, -0.5, 0.1, 0.2, 0.3, 0.4], [1, 0, 1, 1, 1, 1])
    _store(tmp_path / "maps", keys=[*good, *evil[:2]])
    import torch

    write_refined_labels(tmp_path / "refined", [*good, *evil[:3]], lambda rows: torch.full((len(rows), 4), 0.25),
                         num_classes=4, k=2, progress=False)
    cfg = {"scores": str(tmp_path / "s.csv"), "dataset_ids": good, "maps": str(tmp_path / "maps"),
           "refined": str(tmp_path / "refined"), "evil": evil}
    script = tmp_path / "opens.py"
    script.write_text(OPENS)
    proc = run_python(str(script), json.dumps(cfg), env={"OMP_NUM_THREADS": "1"})
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["score_ids"] == [*good, *evil] and result["weights"] == [1.0, 0.0]
    assert len(result["maps"]) == 4 and result["refined_rows"] == list(range(5))
    assert result["map_errors"] == [f"label maps {tmp_path / 'maps'}"] * 2  # evil[2:] are not keys
    touched = [p for p in result["opened"] if "outside" in p or "secret" in p or "escape" in p]
    assert not touched, f"a reader opened a file named by an id: {touched}"
    assert any(p.endswith("shard-00000.bin") for p in result["opened"])  # the hook does see opens
    assert os.path.exists(outside)
