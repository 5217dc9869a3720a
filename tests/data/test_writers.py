"""The dataset on disk: determinism, resume / overwrite, readers, mmpretrain and timm loading."""

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from labelwise.data import (
    CLASS_NAMES,
    MANIFEST,
    SceneConfig,
    load_manifest,
    load_regime,
    load_scenes,
    make_dataset,
)
from labelwise.errors import ConfigError, DataError

CONFIG = SceneConfig(num_train=50, num_val=30, num_test=30)
OPTIONS = dict(
    config=CONFIG,
    p=(0.3,),
    r=(0.4,),
    noise=("symmetric", "pairflip"),
    verified_fraction=0.1,
    progress=False,
)
REGIMES = ["multilabel", "partial-p0.3", "single", "noisy-symmetric-r0.4", "noisy-pairflip-r0.4"]


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("digits") / "ds", seed=0, **OPTIONS)


def _files(root: Path) -> dict:
    """Relative path -> bytes of each regular file, or the target of each symlink."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            out[rel] = ("link", os.readlink(path))
        elif path.is_file():
            out[rel] = path.read_bytes()
    return out


def test_layout_and_manifest(root):
    manifest = load_manifest(root)
    assert manifest["regime_dirs"] == REGIMES
    assert manifest["counts"] == {"train": 50, "val": 30, "test": 30}
    assert manifest["classes"] == list(CLASS_NAMES)
    assert manifest["parameters"]["seed"] == 0
    assert manifest["parameters"]["config"]["num_train"] == 50
    assert len(list((root / "images" / "train").glob("*.png"))) == 50
    with Image.open(root / "images" / "test" / "000029.png") as image:
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (64, 64)
    for entry in manifest["regimes"]:
        for split in ("train", "val", "test"):
            assert (root / entry["ann_files"][split]).is_file()
            assert (root / entry["label_files"][split]).is_file()
    assert (root / "classes.txt").read_text().split() == list(CLASS_NAMES)
    assert not any(p.name.endswith(".tmp") for p in root.rglob("*"))


def test_same_seed_same_bytes_other_seed_differs(root, tmp_path):
    again = make_dataset(tmp_path / "again", seed=0, **OPTIONS)
    other = make_dataset(tmp_path / "other", seed=1, **OPTIONS)
    files, files_again, files_other = _files(root), _files(again), _files(other)
    assert len(files) > 150
    assert files == files_again
    changed = [k for k in files if k != MANIFEST and files[k] != files_other.get(k)]
    assert "images/test/000000.png" in changed and "partial-p0.3/train.labels.json" in changed


def test_scenes_file_matches_multilabel_truth(root):
    records = load_scenes(root, "val")
    full = load_regime(root, "multilabel", "val")
    assert [r["id"] for r in records] == full.ids
    for record, row in zip(records, full.labels):
        present = sorted({o["class"] for o in record["objects"]})
        assert np.flatnonzero(row == 1).tolist() == present
        for o in record["objects"]:
            x1, y1, x2, y2 = o["box"]
            assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
    single = load_regime(root, "single", "val")
    assert single.labels.tolist() == [r["objects"][r["main"]]["class"] for r in records]


def test_regime_files_hold_the_label_semantics(root):
    partial = load_regime(root, "partial-p0.3", "train")
    assert partial.labels.shape == (50, 10) and partial.labels.dtype == np.int8
    known = partial.labels != -1
    assert 0.2 < known.mean() < 0.4
    assert np.array_equal(partial.labels[known], partial.truth[known])
    assert not (load_regime(root, "partial-p0.3", "test").labels == -1).any()
    for name in ("noisy-symmetric-r0.4", "noisy-pairflip-r0.4"):
        train = load_regime(root, name, "train")
        assert train.ids[0] == "images/train/000000.png"
        assert 0.2 < (train.labels != train.truth).mean() < 0.6
        checked = train.verified != -1
        assert checked.sum() == 5
        assert np.array_equal(
            train.verified[checked] == 1, train.labels[checked] == train.truth[checked]
        )
        test = load_regime(root, name, "test")
        assert np.array_equal(test.labels, test.truth)
    pair = load_regime(root, "noisy-pairflip-r0.4", "val")
    flipped = pair.labels != pair.truth
    assert flipped.any() and np.array_equal(pair.labels[flipped], (pair.truth[flipped] + 1) % 10)


def test_complete_root_is_not_rebuilt(root):
    before = (root / MANIFEST).stat().st_mtime_ns
    assert make_dataset(root, seed=0, **OPTIONS) == root
    assert (root / MANIFEST).stat().st_mtime_ns == before


def test_non_empty_or_different_root_is_refused_unless_overwrite(tmp_path):
    small = dict(OPTIONS, config=SceneConfig(num_train=4, num_val=2, num_test=2))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not empty"):
        make_dataset(tmp_path, seed=0, **small)
    ds = make_dataset(tmp_path / "ds", seed=0, **dict(small, regimes=("single",)))
    (ds / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="different parameters.*seed"):
        make_dataset(ds, seed=1, **dict(small, regimes=("single",)))
    make_dataset(ds, seed=1, overwrite=True, **dict(small, regimes=("multilabel",)))
    assert load_manifest(ds)["parameters"]["seed"] == 1
    assert (ds / "multilabel" / "train.json").is_file()
    assert not (ds / "single").exists() and not (ds / "imagefolder").exists()  # old regime gone
    assert (ds / "notes.txt").read_text() == "mine"  # files that are not ours are kept


def test_interrupted_build_resumes(tmp_path, monkeypatch):
    import labelwise.data.make as make

    small = dict(
        OPTIONS, config=SceneConfig(num_train=6, num_val=2, num_test=2), regimes=("single",)
    )
    reference = _files(make_dataset(tmp_path / "ref", seed=0, **small))
    real_write_png, calls = make.write_png, []

    def crash_after_three(path, image):
        calls.append(path)
        if len(calls) > 3:
            raise KeyboardInterrupt
        real_write_png(path, image)

    monkeypatch.setattr(make, "write_png", crash_after_three)
    with pytest.raises(KeyboardInterrupt):
        make_dataset(tmp_path / "ds", seed=0, **small)
    with pytest.raises(DataError, match="unfinished build"):
        load_manifest(tmp_path / "ds")
    kept = {p: p.stat().st_mtime_ns for p in (tmp_path / "ds" / "images").rglob("*.png")}
    assert 3 <= len(kept) < 10
    monkeypatch.setattr(make, "write_png", real_write_png)
    make_dataset(tmp_path / "ds", seed=0, **small)
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())  # not written again
    assert _files(tmp_path / "ds") == reference


def test_missing_root_or_manifest_raises_data_error(tmp_path):
    with pytest.raises(DataError, match="nowhere"):
        load_manifest(tmp_path / "nowhere")
    with pytest.raises(DataError, match=MANIFEST):
        load_manifest(tmp_path)


def test_load_regime_rejects_unknown_regime_and_split(root):
    with pytest.raises(ConfigError, match="'partial-p0.9'.*partial-p0.3"):
        load_regime(root, "partial-p0.9", "train")
    with pytest.raises(ConfigError, match="'dev'"):
        load_regime(root, "single", "dev")


def test_mmpretrain_datasets_load_the_annotation_files(root):
    pytest.importorskip("mmpretrain")
    from mmpretrain.datasets import CustomDataset, MultiLabelDataset
    from mmpretrain.utils import register_all_modules

    register_all_modules()
    pipeline = [
        dict(type="LoadImageFromFile"),
        dict(type="PackInputs", algorithm_keys=["partial_labels"]),
    ]
    noisy = load_regime(root, "noisy-symmetric-r0.4", "train")
    ds = CustomDataset(
        data_root=str(root),
        ann_file="noisy-symmetric-r0.4/train.txt",
        data_prefix="",
        classes=str(root / "classes.txt"),
        pipeline=pipeline,
    )
    assert len(ds) == 50 and list(ds.metainfo["classes"]) == list(CLASS_NAMES)
    assert [ds.get_data_info(i)["gt_label"] for i in range(50)] == noisy.labels.tolist()
    assert ds.get_data_info(7)["img_path"] == str(root / noisy.ids[7])
    assert tuple(ds[7]["inputs"].shape) == (3, 64, 64)

    partial = load_regime(root, "partial-p0.3", "train")
    ml = MultiLabelDataset(
        data_root=str(root), ann_file="partial-p0.3/train.json", data_prefix="", pipeline=pipeline
    )
    assert len(ml) == 50 and list(ml.metainfo["classes"]) == list(CLASS_NAMES)
    for i in range(50):
        info = ml.get_data_info(i)
        assert info["img_path"] == str(root / partial.ids[i])
        assert info["partial_labels"] == partial.labels[i].tolist()
        assert sorted(info["gt_label"]) == np.flatnonzero(partial.labels[i] == 1).tolist()
    sample = ml[0]
    assert tuple(sample["inputs"].shape) == (3, 64, 64)
    assert list(sample["data_samples"].partial_labels) == partial.labels[0].tolist()


def test_timm_image_dataset_reads_the_imagefolder_tree(root):
    pytest.importorskip("timm")
    from timm.data import ImageDataset

    labels = load_regime(root, "noisy-pairflip-r0.4", "train")
    ds = ImageDataset(
        str(root / "imagefolder" / "noisy-pairflip-r0.4" / "train"),
        class_map=str(root / "classes.txt"),
    )
    assert len(ds) == 50
    by_name = dict(zip((Path(i).name for i in labels.ids), labels.labels.tolist()))
    for i in range(len(ds)):
        assert ds.reader.samples[i][1] == by_name[Path(ds.reader.samples[i][0]).name]
    image, target = ds[0]
    assert image.size == (64, 64) and image.mode == "RGB" and 0 <= target < 10
