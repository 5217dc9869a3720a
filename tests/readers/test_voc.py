"""PASCAL VOC 2007 in mmpretrain's layout: difficult-only classes are unknown."""
import numpy as np
import pytest

from labelwise.datasets import VOC_CLASSES, read_voc
from labelwise.errors import ConfigError, DataError

from .conftest import PIPELINE, build_mm_dataset, check_loaded_sample, image_colour, write_images


def _vector(**values):
    v = [0] * 20
    for name, value in values.items():
        v[VOC_CLASSES.index(name)] = value
    return v


def test_voc_classes_are_mmpretrains():
    from mmpretrain.datasets.categories import VOC2007_CATEGORIES

    assert VOC_CLASSES == tuple(VOC2007_CATEGORIES)


def test_read_voc_difficult_only_classes_are_unknown(miniature):
    root = miniature("voc") / "VOC2007"
    ls = read_voc(root)
    assert ls.paths == ("JPEGImages/000005.jpg", "JPEGImages/000007.jpg", "JPEGImages/000009.jpg")
    assert ls.labels.tolist() == [
        _vector(chair=1, diningtable=-1),  # a plain and a difficult chair; the table only difficult
        _vector(car=1),
        _vector(horse=1, person=1),        # a plain and a difficult person: positive
    ]
    assert np.flatnonzero(ls.extra["difficult"][0]).tolist() == [VOC_CLASSES.index("chair"),
                                                               VOC_CLASSES.index("diningtable")]
    assert read_voc(root, difficult="negative").labels[0].tolist() == _vector(chair=1)
    assert read_voc(root, difficult="positive").labels[0].tolist() == _vector(chair=1, diningtable=1)
    assert read_voc(root, split="test").paths == ("JPEGImages/000007.jpg",)


def _edit(root, image_id, old, new):
    path = root / "Annotations" / f"{image_id}.xml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_voc_unknown_class_name(miniature):
    root = miniature("voc") / "VOC2007"
    _edit(root, "000007", "<name>car</name>", "<name>automobile</name>")
    with pytest.raises(DataError, match=r"000007.xml, object 1: class name 'automobile' is not a VOC class"):
        read_voc(root)


def test_voc_non_numeric_difficult(miniature):
    root = miniature("voc") / "VOC2007"
    _edit(root, "000009", "<difficult>1</difficult>", "<difficult>yes</difficult>")
    with pytest.raises(DataError, match=r"000009.xml, object 3 \(person\): difficult is 'yes'; expected 0 or 1"):
        read_voc(root)


def test_voc_invalid_xml_names_the_line(miniature):
    root = miniature("voc") / "VOC2007"
    _edit(root, "000005", "</folder>", "</fold>")
    with pytest.raises(DataError, match=r"000005.xml, line 2: not valid XML"):
        read_voc(root)


def test_voc_missing_annotation_file(miniature):
    root = miniature("voc") / "VOC2007"
    (root / "Annotations" / "000009.xml").unlink()
    with pytest.raises(DataError, match=r"cannot read VOC annotation .*000009.xml"):
        read_voc(root)


@pytest.mark.parametrize("line, match", [
    ("000005", r"trainval.txt, line 4: image '000005' is listed twice \(also line 1\)"),
    ("../000005", r"trainval.txt, line 4: image id '../000005' is outside the dataset root"),
], ids=["duplicate-image", "outside-root"])
def test_voc_image_set_errors(miniature, line, match):
    root = miniature("voc") / "VOC2007"
    with open(root / "ImageSets" / "Main" / "trainval.txt", "a") as f:
        f.write(line + "\n")
    with pytest.raises(DataError, match=match):
        read_voc(root)


def test_voc_options_are_checked(miniature):
    root = miniature("voc") / "VOC2007"
    with pytest.raises(ConfigError, match="difficult must be one of"):
        read_voc(root, difficult="ignore")
    with pytest.raises(ConfigError, match="split must be one of"):
        read_voc(root, split="minival")


def test_voc_builds_through_the_registry_and_agrees_with_mmpretrains_voc(miniature):
    root = miniature("voc") / "VOC2007"
    ls = read_voc(root)
    write_images(root, ls.paths)
    ds = build_mm_dataset(dict(type="labelwise.VOCPartial", data_root=str(root), split="trainval",
                               pipeline=PIPELINE))
    assert len(ds) == 3 and ds.metainfo["classes"] == VOC_CLASSES
    sample = check_loaded_sample(ds, 2, colour=image_colour(2))
    assert sample.partial_labels.tolist() == ls.labels[2].tolist()
    # the same files read by mmpretrain's own VOC: same positives and the same difficult field,
    # so VOCMultiLabelMetric works on labelwise.VOCPartial unchanged
    stock = build_mm_dataset(dict(type="VOC", data_root=str(root), split="trainval"))
    for i in range(3):
        mine, theirs = ds.get_data_info(i), stock.get_data_info(i)
        assert mine["img_path"] == theirs["img_path"]
        assert sorted(mine["gt_label"]) == sorted(theirs["gt_label"])
        assert sorted(mine["gt_label_difficult"]) == sorted(theirs["gt_label_difficult"])
