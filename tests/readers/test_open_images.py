"""Open Images human-verified labels: verified 1 / 0, everything unlisted -1."""
import pytest

from labelwise.datasets import read_open_images, read_open_images_classes
from labelwise.errors import DataError

from .conftest import PIPELINE, build_mm_dataset, check_loaded_sample, image_colour, write_images

LABELS = "annotations/train-annotations-human-imagelabels-boxable.csv"
CLASSES = "annotations/class-descriptions-boxable.csv"


def test_read_open_images_verified_positives_negatives_and_unknowns(miniature):
    ls = read_open_images(miniature("open_images"), LABELS, CLASSES)
    assert ls.classes == ("Person", "Bicycle", "Car", "Cat")  # the class file's order
    assert ls.class_keys == ("/m/01g317", "/m/0199g", "/m/0k4j", "/m/01yrx")
    assert ls.extra["image_id"].tolist() == ["000002b66c9c498e", "000002b97e5471a0", "00000c4a1cd5a0d6"]
    assert ls.paths == ("train/000002b66c9c498e.jpg", "train/000002b97e5471a0.jpg", "train/00000c4a1cd5a0d6.jpg")
    assert ls.labels.tolist() == [
        [1, -1, 0, -1],   # Person verified twice (two sources, same verdict), Car verified absent
        [0, 1, -1, 0],
        [-1, -1, 1, -1],
    ]


def test_class_descriptions_header_row_is_skipped(tmp_path):
    path = tmp_path / "oidv6-class-descriptions.csv"
    path.write_text('LabelName,DisplayName\n/m/011k07,Tortoise\n/m/0120dh,"Sea turtle, green"\n', encoding="utf-8")
    assert read_open_images_classes(path) == (("/m/011k07", "/m/0120dh"), ("Tortoise", "Sea turtle, green"))


def _append(root, line):
    with open(root / LABELS, "a", encoding="utf-8") as f:
        f.write(line + "\n")
    return root


def test_conflicting_rows_name_file_lines_image_and_class(miniature):
    root = _append(miniature("open_images"), "000002b97e5471a0,verification,/m/0199g,0")
    with pytest.raises(DataError) as info:
        read_open_images(root, LABELS, CLASSES)
    message = str(info.value)
    assert str(root / LABELS) in message
    assert "line 9: image 000002b97e5471a0 class /m/0199g (Bicycle) has Confidence 0, but line 6 gives 1" in message


@pytest.mark.parametrize("line, match", [
    ("000002b97e5471a0,verification,/m/0bt9lr,1", r"line 9: LabelName '/m/0bt9lr' is not in .*class-descriptions"),
    ("000002b97e5471a0,verification,/m/0k4j,yes", r"line 9: Confidence 'yes' is not a number"),
    ("000002b97e5471a0,machine,/m/0k4j,0.7", r"line 9: Confidence '0.7'; expected 1 .* or 0"),
    ("../secret,verification,/m/0k4j,1", r"line 9: ImageID '../secret' is outside the dataset root"),
    ("000002b97e5471a0,verification,/m/0k4j", r"line 9: expected 4 fields, got 3"),
], ids=["unknown-class", "non-numeric", "machine-confidence", "outside-root", "missing-field"])
def test_open_images_row_errors(miniature, line, match):
    root = _append(miniature("open_images"), line)
    with pytest.raises(DataError, match=match):
        read_open_images(root, LABELS, CLASSES)


def test_unknown_classes_can_be_skipped(miniature):
    root = _append(miniature("open_images"), "0000ffff00000000,verification,/m/0bt9lr,1")
    ls = read_open_images(root, LABELS, CLASSES, skip_unknown_classes=True)
    assert len(ls) == 3  # the image whose only row is an unknown class is not added


def test_missing_column(miniature):
    root = miniature("open_images")
    text = (root / LABELS).read_text().replace("ImageID,Source,LabelName,Confidence", "ImageID,Source,LabelName,Score")
    (root / LABELS).write_text(text)
    with pytest.raises(DataError, match=r"line 1: missing column 'Confidence'"):
        read_open_images(root, LABELS, CLASSES)


def test_duplicate_class_in_descriptions(miniature):
    root = miniature("open_images")
    with open(root / CLASSES, "a") as f:
        f.write("/m/0k4j,Automobile\n")
    with pytest.raises(DataError, match=r"class-descriptions-boxable.csv, line 5: class '/m/0k4j' is listed twice"):
        read_open_images(root, LABELS, CLASSES)


def test_open_images_builds_through_the_registry_and_loads_a_sample(miniature):
    root = miniature("open_images")
    ls = read_open_images(root, LABELS, CLASSES)
    write_images(root, ls.paths)
    ds = build_mm_dataset(dict(type="labelwise.OpenImagesVerified", data_root=str(root), ann_file=LABELS,
                               classes_file=CLASSES, pipeline=PIPELINE))
    assert len(ds) == 3 and ds.metainfo["classes"] == ls.classes
    sample = check_loaded_sample(ds, 1, colour=image_colour(1))
    assert sample.partial_labels.tolist() == [0, 1, -1, 0]
    assert sample.gt_label.tolist() == [1]  # gt_label: the known positives only
