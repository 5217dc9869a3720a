"""Offline refined-label store (write, resume, read) and the generation-chaining driver."""
import json

import numpy as np
import pytest
import torch

from labelwise.errors import ConfigError, DataError
from labelwise.plugins.refinery.chain import run_generations
from labelwise.plugins.refinery.store import RefinedLabelStore, write_refined_labels

IDS = [f"images/train/{i:06d}.png" for i in range(7)]


def _probs(rows):
    g = torch.Generator().manual_seed(1)
    table = torch.softmax(torch.randn(len(IDS), 10, generator=g) * 3, -1)
    return table[rows]


def test_store_round_trip(tmp_path):
    out = write_refined_labels(tmp_path / "s", IDS, _probs, num_classes=10, k=3, batch_size=3,
                               info={"checkpoint": "x.pth"}, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["ids.txt", "indices.npy", "meta.json", "values.npy"]
    store = RefinedLabelStore(out)
    assert len(store) == 7 and store.k == 3 and store.meta["info"] == {"checkpoint": "x.pth"}
    expected = _probs(list(range(7)))
    for row in (0, 4, 6):
        label = store.soft_label(f"/anywhere/data/{IDS[row]}")  # absolute path, other root
        top = expected[row].topk(3)
        assert np.allclose(label[top.indices.numpy()], top.values.numpy(), atol=2e-3)
        assert label.sum() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(DataError, match=r"image /x/images/val/000000.png is not in the refined-label store"):
        store.soft_label("/x/images/val/000000.png")


def test_store_resumes_interrupted_build(tmp_path):
    calls = []

    def failing(rows):
        calls.append(rows)
        if rows[0] >= 4:
            raise KeyboardInterrupt
        return _probs(rows)

    with pytest.raises(KeyboardInterrupt):
        write_refined_labels(tmp_path / "s", IDS, failing, num_classes=10, k=2, batch_size=2, progress=False)
    assert json.loads((tmp_path / "s" / "progress.json").read_text())["rows_done"] == 4
    with pytest.raises(DataError, match="a build is in progress there"):
        RefinedLabelStore(tmp_path / "s")
    calls.clear()
    write_refined_labels(tmp_path / "s", IDS, lambda r: calls.append(r) or _probs(r), num_classes=10, k=2,
                         batch_size=2, progress=False)
    assert calls == [[4, 5], [6]]  # only the missing rows
    fresh = write_refined_labels(tmp_path / "t", IDS, _probs, num_classes=10, k=2, progress=False)
    a, b = RefinedLabelStore(tmp_path / "s"), RefinedLabelStore(fresh)
    assert np.array_equal(a.values, b.values) and np.array_equal(a.indices, b.indices)
    # complete: reused without calling predict; a different store there is refused
    write_refined_labels(tmp_path / "s", IDS, None, num_classes=10, k=2, progress=False)
    with pytest.raises(DataError, match="holds a different refined-label store"):
        write_refined_labels(tmp_path / "s", IDS, _probs, num_classes=10, k=3, progress=False)


def test_store_refuses_labels_of_another_refinery(tmp_path):
    """A store (or an unfinished build) made from checkpoint A is neither reused nor resumed
    when building from checkpoint B with the same ids and settings; overwrite rebuilds it."""
    a, b = {"checkpoint": {"bytes": 10, "sha256_ends": "aa"}}, {"checkpoint": {"bytes": 10, "sha256_ends": "bb"}}
    out = write_refined_labels(tmp_path / "s", IDS, _probs, num_classes=10, k=2, provenance=a, progress=False)
    assert RefinedLabelStore(out).meta["provenance"] == a
    write_refined_labels(out, IDS, None, num_classes=10, k=2, provenance=a, progress=False)  # same: reused
    with pytest.raises(DataError, match=r"s holds a different refined-label store \(provenance 'checkpoint': "
                                        r".*'aa'.*now .*'bb'.*\); it is neither reused nor resumed: .*--overwrite"):
        write_refined_labels(out, IDS, _probs, num_classes=10, k=2, provenance=b, progress=False)
    with pytest.raises(DataError, match="holds a different refined-label store"):  # nor without provenance
        write_refined_labels(out, IDS, _probs, num_classes=10, k=2, progress=False)

    def failing(rows):
        if rows[0] >= 4:
            raise KeyboardInterrupt
        return _probs(rows)

    with pytest.raises(KeyboardInterrupt):
        write_refined_labels(tmp_path / "p", IDS, failing, num_classes=10, k=2, batch_size=2, provenance=a,
                             progress=False)
    with pytest.raises(DataError, match=r"p holds an unfinished build of different refined labels .*'bb'"):
        write_refined_labels(tmp_path / "p", IDS, _probs, num_classes=10, k=2, batch_size=2, provenance=b,
                             progress=False)
    calls = []
    probs_b = lambda rows: calls.append(rows) or _probs(rows).flip(-1)  # noqa: E731 - another refinery
    for directory in (tmp_path / "p", out):
        calls.clear()
        write_refined_labels(directory, IDS, probs_b, num_classes=10, k=2, batch_size=2, provenance=b,
                             overwrite=True, progress=False)
        assert calls == [[0, 1], [2, 3], [4, 5], [6]]  # everything recomputed
        store = RefinedLabelStore(directory)
        assert store.meta["provenance"] == b
        assert np.array_equal(store.indices[:, 0], 9 - _probs(list(range(7))).argmax(-1).numpy())


def test_file_fingerprint_follows_content_not_path(tmp_path):
    from labelwise.plugins.refinery.store import file_fingerprint

    big = np.random.default_rng(0).integers(0, 256, size=3 << 20, dtype=np.uint8).tobytes()
    for name, data in (("small.pth", big[:1000]), ("big.pth", big)):
        (tmp_path / name).write_bytes(data)
        (tmp_path / ("copy-" + name)).write_bytes(data)
        changed = bytearray(data)
        changed[-1] ^= 1  # the end: a zip checkpoint's directory of tensor checksums
        (tmp_path / ("changed-" + name)).write_bytes(bytes(changed))
        fp = file_fingerprint(tmp_path / name)
        assert fp == file_fingerprint(tmp_path / ("copy-" + name)) and fp["bytes"] == len(data)
        assert fp != file_fingerprint(tmp_path / ("changed-" + name))
    with pytest.raises(DataError, match="cannot read .*missing.pth"):
        file_fingerprint(tmp_path / "missing.pth")


def test_store_bad_input(tmp_path):
    with pytest.raises(DataError, match="not unique"):
        write_refined_labels(tmp_path / "a", ["a", "a"], _probs, num_classes=10, progress=False)
    with pytest.raises(ConfigError, match=r"k must be in \[1, 10\]"):
        write_refined_labels(tmp_path / "a", IDS, _probs, num_classes=10, k=11, progress=False)
    with pytest.raises(DataError, match=r"returned \(2, 10\) for 3 samples"):
        write_refined_labels(tmp_path / "b", IDS, lambda r: _probs(r[:2]), num_classes=10, batch_size=3,
                             progress=False)
    write_refined_labels(tmp_path / "c", ["x/a.png", "a.png"], lambda r: _probs(r), num_classes=10, progress=False)
    with pytest.raises(DataError, match="id 'a.png' is a suffix of id 'x/a.png'"):
        RefinedLabelStore(tmp_path / "c")
    with pytest.raises(DataError, match="not a complete refined-label store"):
        RefinedLabelStore(tmp_path / "nothing")


def test_run_generations_chains_and_resumes(tmp_path):
    seen = []

    def train(t, previous, gen_dir):
        seen.append((t, previous["checkpoint"] if previous else None))
        ckpt = gen_dir / "model.pth"
        ckpt.write_text(f"weights {t}")
        return {"checkpoint": str(ckpt), "metrics": {"top1": 50.0 + t}}

    records = run_generations(tmp_path, 2, train, log=lambda s: None)
    assert seen == [(1, None), (2, str(tmp_path / "gen1" / "model.pth"))]
    assert [r["refinery_checkpoint"] for r in records] == [None, str(tmp_path / "gen1" / "model.pth")]
    seen.clear()
    records = run_generations(tmp_path, 3, train, log=lambda s: None)  # extend the chain
    assert seen == [(3, str(tmp_path / "gen2" / "model.pth"))]
    assert [r["metrics"]["top1"] for r in records] == [51.0, 52.0, 53.0]
    assert json.loads((tmp_path / "generations.json").read_text()) == records
    (tmp_path / "gen2" / "model.pth").unlink()
    with pytest.raises(DataError, match="gen2/model.pth.*missing; remove .*gen2 to train generation 2 again"):
        run_generations(tmp_path, 3, train, log=lambda s: None)
    with pytest.raises(ConfigError, match="generations must be an integer >= 1, got 0"):
        run_generations(tmp_path, 0, train)
