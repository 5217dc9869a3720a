"""The label-map store and the reader of the reference's per-image .pt maps."""
import fractions
import json
import os
import pickle

import numpy as np
import pytest
import torch

from labelwise.errors import DataError
from labelwise.plugins.labelpool.reference import ReferenceLabelMaps, convert_reference_maps
from labelwise.plugins.labelpool.reference import open_label_maps
from labelwise.plugins.labelpool.store import LabelMapStore, LabelMapWriter

K, H, W, C = 3, 4, 5, 40


def _maps(n, *, seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 5, size=(n, K, H, W)).astype(np.float32)
    ids = np.stack([rng.permutation(C)[:K] for _ in range(n * H * W)]).reshape(n, H, W, K)
    return scores, ids.transpose(0, 3, 1, 2).copy()


def _write(path, n=7, shard_size=3, **kwargs):
    keys = [f"images/train/{i:06d}.png" for i in range(n)]
    scores, ids = _maps(n)
    writer = LabelMapWriter(path, keys=keys, num_classes=C, k=K, height=H, width=W,
                            shard_size=shard_size, meta={"annotator": "test"}, **kwargs)
    for shard in writer.pending_shards():
        start, stop = writer.shard_range(shard)
        writer.write_shard(shard, scores[start:stop], ids[start:stop])
    return keys, scores, ids


def test_round_trip_by_key_and_by_index(tmp_path):
    keys, scores, ids = _write(tmp_path / "maps")
    store = LabelMapStore(tmp_path / "maps", num_classes=C, k=K)
    assert len(store) == 7 and store.keys == keys
    assert store.bytes_per_image == 2 * K * H * W * 2  # float16 scores + int16 ids
    assert sorted(p.name for p in (tmp_path / "maps").iterdir()) == [
        "labelmaps.json", "shard-00000.bin", "shard-00001.bin", "shard-00002.bin"]
    assert (tmp_path / "maps" / "shard-00002.bin").stat().st_size == 1 * store.bytes_per_image
    for i in (0, 4, 6):
        s, d = store.get(keys[i])
        assert s.dtype == np.float16 and d.dtype == np.int16
        assert np.array_equal(s, scores[i].astype(np.float16))
        assert np.array_equal(d, ids[i])
        s2, d2 = store.get(i)
        assert np.array_equal(s2, s) and np.array_equal(d2, d)
    batch_scores, batch_ids = store.get_many([keys[1], 2])
    assert batch_scores.shape == (2, K, H, W) and np.array_equal(batch_ids[1], ids[2])
    assert store.meta == {"annotator": "test"}
    assert keys[3] in store and "images/val/000000.png" not in store


def test_missing_image_names_it(tmp_path):
    _write(tmp_path / "maps")
    store = LabelMapStore(tmp_path / "maps")
    with pytest.raises(DataError, match=r"no label map for image 'images/val/000001.png' .*e\.g\. 'images/train/000000.png'"):
        store.get("images/val/000001.png")
    with pytest.raises(DataError, match="sample index 7 is out of range"):
        store.get(7)


def test_corrupt_index(tmp_path):
    _write(tmp_path / "maps")
    index = tmp_path / "maps" / "labelmaps.json"
    good = index.read_text()
    index.write_text(good[: len(good) // 2])
    with pytest.raises(DataError, match=r"labelmaps\.json is corrupt: not valid JSON"):
        LabelMapStore(tmp_path / "maps")
    broken = json.loads(good)
    del broken["keys"]
    index.write_text(json.dumps(broken))
    with pytest.raises(DataError, match="is corrupt: missing field.s. keys"):
        LabelMapStore(tmp_path / "maps")
    broken = json.loads(good)
    broken["record_bytes"] = 12
    index.write_text(json.dumps(broken))
    with pytest.raises(DataError, match="record_bytes is 12, but k, height, width and num_classes give 240"):
        LabelMapStore(tmp_path / "maps")
    with pytest.raises(DataError, match="labelmaps.json is missing; not a label-map store"):
        LabelMapStore(tmp_path)
    with pytest.raises(DataError, match="no such directory"):
        LabelMapStore(tmp_path / "nowhere")


def test_truncated_and_missing_shards(tmp_path):
    _write(tmp_path / "maps")
    shard = tmp_path / "maps" / "shard-00001.bin"
    data = shard.read_bytes()
    shard.write_bytes(data[:-10])
    with pytest.raises(DataError, match=r"shard-00001\.bin is truncated or corrupt: 710 bytes, expected 720"):
        LabelMapStore(tmp_path / "maps")
    shard.unlink()
    with pytest.raises(DataError, match=r"incomplete store: shard file shard-00001\.bin \(records 3\.\.5\) is missing.*re-run"):
        LabelMapStore(tmp_path / "maps")


def test_model_disagreeing_with_the_store(tmp_path):
    _write(tmp_path / "maps")
    with pytest.raises(DataError, match="made for 40 classes, but the model has num_classes=10"):
        LabelMapStore(tmp_path / "maps", num_classes=10)
    with pytest.raises(DataError, match="holds top-3 maps, expected top-5"):
        LabelMapStore(tmp_path / "maps", k=5)


def test_resume_writes_only_missing_shards_and_refuses_other_settings(tmp_path):
    keys, scores, ids = _write(tmp_path / "maps")
    (tmp_path / "maps" / "shard-00001.bin").unlink()
    writer = LabelMapWriter(tmp_path / "maps", keys=keys, num_classes=C, k=K, height=H, width=W,
                            shard_size=3, meta={"annotator": "test"})
    assert writer.pending_shards() == [1]
    assert writer.pending_shards(rank=1, world_size=2) == [1]
    assert writer.pending_shards(rank=0, world_size=2) == []
    writer.write_shard(1, scores[3:6], ids[3:6])
    assert writer.is_complete()
    assert np.array_equal(LabelMapStore(tmp_path / "maps").get(4)[1], ids[4])
    with pytest.raises(DataError, match="describes another store .differs in k, record_bytes.; choose another output folder"):
        LabelMapWriter(tmp_path / "maps", keys=keys, num_classes=C, k=2, height=H, width=W, shard_size=3,
                       meta={"annotator": "test"})
    with pytest.raises(DataError, match=r"differs in meta\.annotator\)"):
        LabelMapWriter(tmp_path / "maps", keys=keys, num_classes=C, k=K, height=H, width=W, shard_size=3,
                       meta={"annotator": "other"})
    # overwrite starts again from nothing
    writer = LabelMapWriter(tmp_path / "maps", keys=keys[:2], num_classes=C, k=K, height=H, width=W,
                            shard_size=3, overwrite=True)
    assert writer.pending_shards() == [0]
    assert not (tmp_path / "maps" / "shard-00001.bin").exists()


def test_writer_validates_records(tmp_path):
    keys = ["a.png", "b.png"]
    writer = LabelMapWriter(tmp_path / "m", keys=keys, num_classes=C, k=K, height=H, width=W)
    scores, ids = _maps(2)
    with pytest.raises(DataError, match=r"expected scores and ids of shape \(2, 3, 4, 5\)"):
        writer.write_shard(0, scores[:1], ids[:1])
    bad = ids.copy()
    bad[0, 1] = bad[0, 0]
    with pytest.raises(DataError, match="lists the same class id twice"):
        writer.write_shard(0, scores, bad)
    with pytest.raises(DataError, match=r"class ids must lie in \[0, 39\]"):
        writer.write_shard(0, scores, ids + C)
    huge = scores.copy()
    huge[0, 0, 0, 0] = 1e6
    with pytest.raises(DataError, match="outside float16's range"):
        writer.write_shard(0, huge, ids)
    assert [p.name for p in (tmp_path / "m").iterdir()] == ["labelmaps.json"]  # nothing half-written
    with pytest.raises(DataError, match="'a.png' appears more than once"):
        LabelMapWriter(tmp_path / "m2", keys=["a.png", "a.png"], num_classes=C, k=K, height=H, width=W)


def _read_in_worker(store, keys):
    return [store.get(key)[0].astype(np.float32).sum() for key in keys]


def test_many_reader_processes(tmp_path):
    keys, scores, _ = _write(tmp_path / "maps", n=20, shard_size=6)
    store = LabelMapStore(tmp_path / "maps")
    store.get(0)  # the parent maps a shard before the workers fork
    assert len(pickle.dumps(store)) < 4000  # only the path and the index travel

    class Reads(torch.utils.data.Dataset):
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return torch.from_numpy(store.get(keys[i])[0].astype(np.float32))

    loader = torch.utils.data.DataLoader(Reads(), batch_size=3, num_workers=2, shuffle=False)
    got = torch.cat(list(loader)).numpy()
    assert np.array_equal(got, scores.astype(np.float16).astype(np.float32))
    clone = pickle.loads(pickle.dumps(store))
    assert np.array_equal(clone.get(keys[13])[1], store.get(13)[1])


def _save_reference(root, key, tensor):
    path = root / "/".join(key.split("/")[-2:])
    path = path.with_suffix(".pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(tensor, path)


def test_reference_pt_maps_read_and_convert(tmp_path):
    keys = [f"train/n0{c}/n0{c}_{i}.JPEG" for c in range(2) for i in range(3)]
    scores, ids = _maps(len(keys), seed=5)
    for key, s, d in zip(keys, scores, ids):
        _save_reference(tmp_path / "ref", key, torch.stack([torch.from_numpy(s), torch.from_numpy(d).float()]))
    reader = ReferenceLabelMaps(tmp_path / "ref", num_classes=C)
    assert reader.path_of(keys[4]) == tmp_path / "ref" / "n01" / "n01_1.pt"
    s, d = reader.get(keys[4])
    assert np.array_equal(s, scores[4]) and np.array_equal(d, ids[4])
    store = convert_reference_maps(tmp_path / "ref", tmp_path / "store", keys, num_classes=C,
                                   shard_size=4, progress=False)
    assert np.array_equal(store.get(keys[4])[1], ids[4])
    assert np.allclose(store.get(keys[4])[0], scores[4], rtol=1e-3, atol=1e-3)
    assert isinstance(open_label_maps(tmp_path / "ref", num_classes=C, layout="reference"), ReferenceLabelMaps)


def test_reference_maps_bad_files(tmp_path):
    reader_root = tmp_path / "ref"
    reader_root.mkdir()
    reader = ReferenceLabelMaps(reader_root, num_classes=C)
    with pytest.raises(DataError, match=r"no label map for image 'train/n01/x.JPEG' \(looked for .*n01/x\.pt\)"):
        reader.get("train/n01/x.JPEG")
    (reader_root / "n01").mkdir()
    (reader_root / "n01" / "cut.pt").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match=r"n01/cut\.pt is unreadable, truncated or not a tensor file"):
        reader.get("train/n01/cut.JPEG")
    torch.save(torch.zeros(3, 2, 2), reader_root / "n01" / "flat.pt")
    with pytest.raises(DataError, match=r"expected a tensor \[2, k, h, w\] \(scores, ids\), got \(3, 2, 2\)"):
        reader.get("train/n01/flat.JPEG")
    torch.save(torch.stack([torch.zeros(1, 2, 2), torch.full((1, 2, 2), 55.0)]), reader_root / "n01" / "big.pt")
    with pytest.raises(DataError, match=r"ids must be integers in \[0, 39\], found values in \[55.0, 55.0\]"):
        reader.get("train/n01/big.JPEG")
    torch.save({"x": fractions.Fraction(1, 3)}, reader_root / "n01" / "code.pt")  # not a plain tensor file
    with pytest.raises(DataError, match="unreadable, truncated or not a tensor file"):
        reader.get("train/n01/code.JPEG")


class _MakesADirectory:
    """Unpickling it would call os.mkdir (code stored in the file)."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return os.mkdir, (str(self.path),)


def test_reference_maps_are_read_weights_only(tmp_path):
    """A bare tensor loads (load_checkpoint would refuse it: not a dict); a dict of tensors is
    not a map; a file that would run code on unpickling is refused without running it."""
    from labelwise.checkpoint import load_checkpoint
    from labelwise.errors import CheckpointError

    root = tmp_path / "ref"
    scores, ids = _maps(1, seed=2)
    tensor = torch.stack([torch.from_numpy(scores[0]), torch.from_numpy(ids[0]).float()])
    _save_reference(root, "train/n01/ok.JPEG", tensor)
    reader = ReferenceLabelMaps(root, num_classes=C)
    s, d = reader.get("train/n01/ok.JPEG")
    assert np.array_equal(s, scores[0]) and np.array_equal(d, ids[0])
    with pytest.raises(CheckpointError, match="holds a Tensor, expected a dict"):
        load_checkpoint(root / "n01" / "ok.pt")
    torch.save({"maps": torch.zeros(2, 1, 2, 2)}, root / "n01" / "dict.pt")
    with pytest.raises(DataError, match=r"expected a tensor \[2, k, h, w\] \(scores, ids\), got dict"):
        reader.get("train/n01/dict.JPEG")
    marker = tmp_path / "ran"
    torch.save([torch.zeros(1), _MakesADirectory(marker)], root / "n01" / "evil.pt")
    with pytest.raises(DataError, match=r"n01/evil\.pt is unreadable, truncated or not a tensor file"):
        reader.get("train/n01/evil.JPEG")
    assert not marker.exists()


def test_info_reports_a_store_still_being_written(tmp_path, capsys):
    from labelwise.cli import main

    _write(tmp_path / "maps")  # 7 images in shards of 3, 3, 1
    assert main(["labelmaps", "info", str(tmp_path / "maps")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["images"], info["written"], info["complete"], info["shards"]) == (7, 7, True, 3)
    (tmp_path / "maps" / "shard-00001.bin").unlink()  # as if a writer had not reached shard 1 yet
    assert main(["labelmaps", "info", str(tmp_path / "maps")]) == 2
    assert "incomplete store" in capsys.readouterr().err
    assert main(["labelmaps", "info", "--allow-incomplete", str(tmp_path / "maps")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["images"], info["written"], info["complete"]) == (7, 4, False)
