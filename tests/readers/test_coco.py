"""COCO 2014 instances: multi-label targets and the partial-label protocol."""
import json

import numpy as np
import pytest

from labelwise.datasets import partial_keep_mask, read_coco
from labelwise.errors import ConfigError, DataError

from .conftest import PIPELINE, build_mm_dataset, check_loaded_sample, image_colour, write_images

ANN = "annotations/instances_train2014.json"


def test_read_coco_labels_classes_and_paths(miniature):
    ls = read_coco(miniature("coco"))
    # categories listed 3, 1, 18, 90, 44 in the file: classes follow the ids sorted
    assert ls.classes == ("person", "car", "dog", "bottle", "toothbrush")
    assert ls.class_keys == (1, 3, 18, 44, 90)
    assert ls.extra["image_id"].tolist() == [9, 25, 30, 42]  # images sorted by id
    assert ls.paths == tuple(f"train2014/COCO_train2014_{i:012d}.jpg" for i in (9, 25, 30, 42))
    assert ls.labels.dtype == np.int8
    assert ls.labels.tolist() == [
        [1, 0, 1, 0, 0],  # 9: two person annotations (one iscrowd) and a dog
        [0, 1, 0, 0, 0],  # 25: only an iscrowd car: present
        [0, 0, 0, 0, 0],  # 30: no annotation: kept, all negative
        [0, 0, 0, 1, 1],  # 42: toothbrush (id 90) and bottle (id 44)
    ]


def test_partial_protocol_is_the_documented_draw_nested_and_pure(miniature):
    root = miniature("coco")
    full = read_coco(root).labels
    at = {p: read_coco(root, p=p, seed=0).labels for p in (0.0, 0.3, 0.5, 1.0)}
    assert (at[1.0] == full).all() and (at[0.0] == -1).all()
    for p in (0.3, 0.5):
        expected = np.where(np.stack([np.random.default_rng([0, i]).random(5) for i in (9, 25, 30, 42)]) < p,
                            full, -1)
        assert at[p].tolist() == expected.tolist()
        known = at[p] >= 0
        assert (at[p][known] == full[known]).all()  # hiding never changes a kept label
    assert ((at[0.3] >= 0) <= (at[0.5] >= 0)).all()  # nested: known at 0.3 -> known at 0.5
    # a pure function of (image id, class, seed, p): any subset or order of ids draws the same
    ids = np.arange(1, 2001) * 7
    mask = partial_keep_mask(ids, 80, p=0.4, seed=3)
    assert (partial_keep_mask(ids[::-1][:500], 80, p=0.4, seed=3) == mask[::-1][:500]).all()
    assert abs(mask.mean() - 0.4) < 0.01  # 160,000 draws
    assert not (partial_keep_mask(ids, 80, p=0.4, seed=4) == mask).all()


def test_pu_mlc_draw_reproduces_the_reference_masks_in_file_order(miniature):
    root = miniature("coco")
    full = read_coco(root).labels  # rows sorted by id: 9, 25, 30, 42
    got = read_coco(root, p=0.5, seed=0, draw="pu-mlc").labels
    # reference: np.random.seed(0); mask = np.random.random((N, 80)) < p, rows in the file's
    # image order (42, 9, 30, 25)
    uniforms = np.random.RandomState(0).random_sample((4, 5))
    file_row = {42: 0, 9: 1, 30: 2, 25: 3}
    expected = np.where(uniforms[[file_row[i] for i in (9, 25, 30, 42)]] < 0.5, full, -1)
    assert got.tolist() == expected.tolist()


def _rewrite(root, change):
    path = root / ANN
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return root


@pytest.mark.parametrize("change, match", [
    (lambda d: d.pop("categories"), r"missing key 'categories'"),
    (lambda d: d["annotations"][1].update(category_id=91), r"annotations\[1\] \(id 509\): category_id 91 is not in"),
    (lambda d: d["annotations"][0].update(image_id="nine"), r"annotations\[0\].*'image_id' is 'nine'; expected an integer"),
    (lambda d: d["images"][2].update(id=9), r"images\[2\]: image id 9 appears twice"),
    (lambda d: d["images"][0].update(file_name="../../etc/passwd"), r"images\[0\] \(id 42\): image path '../../etc/passwd' is outside the dataset root"),
    (lambda d: d["annotations"][0].update(image_id=77), r"annotations\[0\] \(id 156\): image_id 77 is not in 'images'"),
], ids=["missing-key", "unknown-category", "non-numeric-id", "duplicate-image", "outside-root", "unknown-image"])
def test_coco_errors_name_the_file_the_key_and_the_value(miniature, change, match):
    root = _rewrite(miniature("coco"), change)
    with pytest.raises(DataError, match=match) as info:
        read_coco(root)
    assert str(root / ANN) in str(info.value)


def test_coco_invalid_json_names_the_line(miniature):
    root = miniature("coco")
    (root / ANN).write_text('{"images": [\n  {"id": 1,}\n]}')
    with pytest.raises(DataError, match=r"instances_train2014.json, line 2: not valid JSON"):
        read_coco(root)


def test_coco_options_are_checked(miniature):
    root = miniature("coco")
    with pytest.raises(ConfigError, match="p must be in"):
        read_coco(root, p=1.5)
    with pytest.raises(ConfigError, match="draw must be one of"):
        read_coco(root, p=0.5, draw="numpy")
    with pytest.raises(ConfigError, match="seed must be a non-negative integer"):
        read_coco(root, p=0.5, seed=-1)
    (root / "annotations" / "mine.json").write_text((root / ANN).read_text())
    with pytest.raises(ConfigError, match="pass image_dir="):
        read_coco(root, "annotations/mine.json")
    assert read_coco(root, "annotations/mine.json", image_dir="imgs").paths[0] == "imgs/COCO_train2014_000000000009.jpg"


def test_coco_builds_through_the_registry_and_loads_a_sample(miniature):
    root = miniature("coco")
    ls = read_coco(root, p=0.5)
    write_images(root, ls.paths)
    ds = build_mm_dataset(dict(type="labelwise.COCOMultiLabel", data_root=str(root), ann_file=ANN, p=0.5,
                               pipeline=PIPELINE))
    assert type(ds).__name__ == "COCOMultiLabel" and len(ds) == 4
    assert ds.metainfo["classes"] == ls.classes
    assert (ds.get_partial_labels() == ls.labels).all()
    sample = check_loaded_sample(ds, 0, colour=image_colour(0))
    assert sample.partial_labels.tolist() == ls.labels[0].tolist()
    assert sorted(sample.gt_label.tolist()) == np.flatnonzero(ls.labels[0] == 1).tolist()
    assert ds.get_data_info(3)["image_id"] == 42


def test_label_set_torch_dataset_returns_image_and_partial_target(miniature):
    import torch

    from labelwise.adapters.torch_data import LabelSetDataset

    root = miniature("coco")
    ls = read_coco(root, p=0.5)
    write_images(root, ls.paths)
    ds = LabelSetDataset(ls)
    image, target = ds[3]
    assert image.shape == (3, 12, 16) and target.dtype == torch.float32
    assert target.tolist() == ls.labels[3].astype(float).tolist()
    assert ds.ids == list(ls.paths)
    assert LabelSetDataset(ls, unknown_as="negative")[3][1].tolist() == np.maximum(ls.labels[3], 0).tolist()
    with pytest.raises(ConfigError, match="unknown_as"):
        LabelSetDataset(ls, unknown_as="drop")


def test_reader_datasets_refuse_other_classes_and_a_data_prefix(miniature):
    root = str(miniature("coco"))
    with pytest.raises(ConfigError, match=r"classes \('a', 'b', 'c', 'd', 'e'\)... given in the config differ"):
        build_mm_dataset(dict(type="labelwise.COCOMultiLabel", data_root=root, classes=list("abcde")))
    with pytest.raises(ConfigError, match="data_prefix is not used"):
        build_mm_dataset(dict(type="labelwise.COCOMultiLabel", data_root=root, data_prefix="train2014"))
    same = build_mm_dataset(dict(type="labelwise.COCOMultiLabel", data_root=root,
                                 classes=["person", "car", "dog", "bottle", "toothbrush"]))
    assert len(same) == 4
