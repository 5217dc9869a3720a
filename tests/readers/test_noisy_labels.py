"""Food-101N and Clothing1M: noisy class ids and the verification flags CleanNet needs."""
from pathlib import Path

import pytest

from labelwise.datasets import read_clothing1m, read_food101n, write_verification_csv
from labelwise.errors import ConfigError, DataError

from .conftest import PIPELINE, build_mm_dataset, check_loaded_sample, image_colour, write_images

FOOD = "food101n/Food-101N_release"
KEYS = ["apple_pie/0004a2b3d3a3ffdd6b7a4dd6e8a5a80a.jpg", "apple_pie/00070f9ef8a0e6c4ab9b1b0d1d6d7fd2.jpg",
        "baklava/001c4fe2b2b0cbd04b4b6c0b01f5cb7e.jpg", "baby_back_ribs/0052d3a1fd6ce0a4e3c51e0b7c5c0a5f.jpg",
        "baklava/00a0b26d8f6c3c6c2b5a8f0e7b4e2a11.jpg"]


def _food(miniature) -> Path:
    miniature("food101n")
    return miniature("food101n").parent / FOOD


def test_read_food101n_noisy_labels_and_verification(miniature):
    ls = read_food101n(_food(miniature))
    assert ls.classes == ("apple_pie", "baby_back_ribs", "baklava")  # classes.txt, header skipped
    assert ls.paths == tuple(f"images/{k}" for k in KEYS)
    assert ls.labels.tolist() == [0, 0, 2, 1, 2]  # the folder's class
    assert ls.extra["verified"].tolist() == [1, -1, 0, -1, -1]
    val = read_food101n(_food(miniature), verification="meta/verified_val.tsv", only_verified=True)
    assert val.paths == (f"images/{KEYS[3]}", f"images/{KEYS[4]}")
    assert val.labels.tolist() == [1, 2] and val.extra["verified"].tolist() == [1, 0]
    assert (read_food101n(_food(miniature), verification=None).extra["verified"] == -1).all()


def test_food101n_without_classes_file_uses_sorted_folders(miniature):
    root = _food(miniature)
    (root / "meta" / "classes.txt").unlink()
    assert read_food101n(root).classes == ("apple_pie", "baby_back_ribs", "baklava")


def _append(path, line):
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")


@pytest.mark.parametrize("file, line, match", [
    ("verified_train.tsv", "apple_pie/00070f9ef8a0e6c4ab9b1b0d1d6d7fd2.jpg\tmaybe",
     r"verified_train.tsv, line 4: verification_label 'maybe' for apple_pie/00070f9ef8a0e6c4ab9b1b0d1d6d7fd2.jpg; "
     r"expected 1 .* or 0"),
    ("verified_train.tsv", "apple_pie/00070f9ef8a0e6c4ab9b1b0d1d6d7fd2.jpg",
     r"verified_train.tsv, line 4: expected 2 tab-separated fields"),
    ("verified_train.tsv", "apple_pie/0004a2b3d3a3ffdd6b7a4dd6e8a5a80a.jpg\t0",
     r"verified_train.tsv, line 4: image apple_pie/0004a2b3d3a3ffdd6b7a4dd6e8a5a80a.jpg is listed twice \(also line 2\)"),
    ("verified_train.tsv", "apple_pie/ffff.jpg\t1", r"verified_train.tsv, line 4: image apple_pie/ffff.jpg is not in "
     r"the image list"),
    ("imagelist.tsv", "../../outside.jpg", r"imagelist.tsv, line 7: key '../../outside.jpg' is outside the dataset root"),
    ("imagelist.tsv", "churros/0a1b.jpg", r"image churros/0a1b.jpg .* has class 'churros', which is not in .*classes.txt"),
    ("imagelist.tsv", "baklava/001c4fe2b2b0cbd04b4b6c0b01f5cb7e.jpg", r"imagelist.tsv, line 7: image "
     r"baklava/001c4fe2b2b0cbd04b4b6c0b01f5cb7e.jpg is listed twice \(also line 4\)"),
], ids=["non-numeric", "missing-column", "duplicate-verified", "verified-not-listed", "outside-root", "unknown-class",
        "duplicate-image"])
def test_food101n_errors(miniature, file, line, match):
    root = _food(miniature)
    _append(root / "meta" / file, line)
    with pytest.raises(DataError, match=match):
        read_food101n(root)


def test_food101n_wrong_header(miniature):
    root = _food(miniature)
    path = root / "meta" / "verified_train.tsv"
    path.write_text(path.read_text().replace("verification_label", "label"))
    with pytest.raises(DataError, match=r"verified_train.tsv, line 1: header 'class_name/key\\tlabel'; expected"):
        read_food101n(root)
    with pytest.raises(ConfigError, match="only_verified=True needs a verification file"):
        read_food101n(root, verification=None, only_verified=True)


def test_verification_csv_is_what_cleannet_reads_with_the_feature_ids(miniature, tmp_path):
    from labelwise.workflows.cleannet import read_verification

    root = _food(miniature)
    ls = read_food101n(root)
    csv = write_verification_csv(ls, tmp_path / "verified.csv")
    assert csv.read_text().splitlines() == ["id,verified", f"images/{KEYS[0]},1", f"images/{KEYS[2]},0"]
    write_images(root, ls.paths)
    ds = build_mm_dataset(dict(type="labelwise.Food101N", data_root=str(root), pipeline=PIPELINE))
    # the ids `labelwise cleannet features` gives the samples: img_path relative to data_root
    feature_ids = [Path(ds.get_data_info(i)["img_path"]).relative_to(root).as_posix() for i in range(len(ds))]
    assert read_verification(csv, feature_ids).tolist() == [1, -1, 0, -1, -1]
    sample = check_loaded_sample(ds, 2, colour=image_colour(2))
    assert sample.gt_label.tolist() == [2]
    assert ds.get_data_info(2)["verified"] == 0 and ds.metainfo["classes"] == ls.classes
    with pytest.raises(ConfigError, match="no verification flags"):
        from labelwise.datasets import read_coco

        write_verification_csv(read_coco(miniature("coco")), tmp_path / "x.csv")


def test_read_clothing1m_noisy_clean_and_verified(miniature):
    root = miniature("clothing1m")
    ls = read_clothing1m(root)
    assert ls.classes[0] == "T-Shirt" and ls.classes[13] == "Underwear" and len(ls.classes) == 14
    assert ls.paths[0] == "images/0/61/1233476163,2066349761.jpg"
    assert ls.labels.tolist() == [4, 11, 0, 7]
    assert ls.extra["clean_label"].tolist() == [-1, 11, -1, 8]
    assert ls.extra["verified"].tolist() == [-1, 1, -1, 0]  # 11 == 11 correct, 7 != 8 wrong
    test = read_clothing1m(root, labels="clean", key_list="clean_test_key_list.txt")
    assert test.paths == ("images/9/12/2849812396,2917004345.jpg", "images/2/04/1537380621,1183212402.jpg")
    assert test.labels.tolist() == [13, 8]
    assert test.extra["noisy_label"].tolist() == [-1, 7] and test.extra["verified"].tolist() == [-1, 0]


@pytest.mark.parametrize("file, line, match", [
    ("noisy_label_kv.txt", "images/3/00/1.jpg four", r"noisy_label_kv.txt, line 5: class id 'four' of images/3/00/1.jpg "
     "is not an integer"),
    ("noisy_label_kv.txt", "images/3/00/1.jpg 14", r"line 5: class id 14 of images/3/00/1.jpg is outside \[0, 14\)"),
    ("noisy_label_kv.txt", "images/3/00/1.jpg", r"line 5: expected '<image path> <class id>'"),
    ("noisy_label_kv.txt", "images/0/61/1233476163,2066349761.jpg 3", r"line 5: image "
     r"images/0/61/1233476163,2066349761.jpg is listed twice \(also line 1\)"),
    ("clean_label_kv.txt", "/abs/images/1.jpg 2", r"clean_label_kv.txt, line 4: image path '/abs/images/1.jpg' is "
     "outside the dataset root"),
], ids=["non-numeric", "out-of-range", "missing-column", "duplicate-image", "outside-root"])
def test_clothing1m_errors(miniature, file, line, match):
    root = miniature("clothing1m")
    _append(root / file, line)
    with pytest.raises(DataError, match=match):
        read_clothing1m(root)


def test_clothing1m_key_list_image_without_label(miniature):
    root = miniature("clothing1m")
    _append(root / "clean_test_key_list.txt", "images/1/41/2904391327,3519106468.jpg")
    with pytest.raises(DataError, match=r"clean_test_key_list.txt, line 3: image images/1/41/2904391327,3519106468.jpg "
                                        "has no clean label"):
        read_clothing1m(root, labels="clean", key_list="clean_test_key_list.txt")


def test_clothing1m_builds_through_the_registry_and_loads_a_sample(miniature):
    root = miniature("clothing1m")
    ls = read_clothing1m(root)
    write_images(root, ls.paths)
    ds = build_mm_dataset(dict(type="labelwise.Clothing1M", data_root=str(root), pipeline=PIPELINE))
    assert len(ds) == 4 and ds.metainfo["classes"] == ls.classes
    sample = check_loaded_sample(ds, 3, colour=image_colour(3))
    assert sample.gt_label.tolist() == [7]
    assert ds.get_data_info(3)["verified"] == 0 and ds.get_data_info(3)["clean_label"] == 8


def test_single_label_torch_dataset(miniature):
    import torch

    from labelwise.adapters.torch_data import LabelSetDataset

    root = miniature("clothing1m")
    ls = read_clothing1m(root)
    write_images(root, ls.paths)
    ds = LabelSetDataset(ls)
    image, target = ds[1]
    assert image.shape == (3, 12, 16) and target.dtype == torch.int64 and int(target) == 11
    assert not ds.multi_label and ds.extra["verified"][1] == 1
