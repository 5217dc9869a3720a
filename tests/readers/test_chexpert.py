"""CheXpert CSVs: the uncertainty policies, the blank policy, the competition classes."""
import pytest

from labelwise.datasets import COMPETITION, OBSERVATIONS, read_chexpert
from labelwise.errors import ConfigError, DataError

from .conftest import PIPELINE, build_mm_dataset, check_loaded_sample, image_colour, write_images

TRAIN = "CheXpert-v1.0-small/train.csv"


def _row(blank, **values):
    """A 14-vector: ``values`` by observation name (spaces as underscores), ``blank`` elsewhere."""
    named = {k.replace("_", " "): v for k, v in values.items()}
    assert set(named) <= set(OBSERVATIONS)
    return [named.get(name, blank) for name in OBSERVATIONS]


def test_read_chexpert_default_u_ignore_blank_unknown(miniature):
    ls = read_chexpert(miniature("chexpert"))
    assert ls.classes == OBSERVATIONS
    assert ls.paths[0] == "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg"
    assert ls.labels.tolist() == [
        _row(-1, No_Finding=1, Pneumothorax=0, Support_Devices=1),
        _row(-1, Lung_Opacity=1, Fracture=1),  # its five uncertain entries are -1 too
        _row(-1, Lung_Opacity=1, Fracture=1),
        _row(-1, Lung_Opacity=1, Fracture=1),
        _row(-1, Edema=1, Pneumothorax=0),
    ]


@pytest.mark.parametrize("uncertain, u", [("zeros", 0), ("ones", 1)])
def test_uncertainty_policies_map_only_uncertain_entries(miniature, uncertain, u):
    ls = read_chexpert(miniature("chexpert"), uncertain=uncertain)
    assert ls.labels[1].tolist() == _row(-1, Cardiomegaly=u, Lung_Opacity=1, Edema=u, Consolidation=u,
                                         Atelectasis=u, Pleural_Effusion=u, Fracture=1)
    assert ls.labels[2].tolist() == _row(-1, Lung_Opacity=1, Consolidation=u, Fracture=1)  # blanks stay -1


def test_blank_negative_and_competition_classes(miniature):
    ls = read_chexpert(miniature("chexpert"), uncertain="ones", blank="negative", classes="competition")
    assert ls.classes == COMPETITION == ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
    assert ls.labels.tolist() == [
        [0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1],
        [0, 0, 1, 0, 0],
        [0, 0, 1, 0, 0],
        [0, 0, 0, 1, 0],
    ]
    picked = read_chexpert(miniature("chexpert"), classes=["Fracture", "No Finding"])
    assert picked.labels[:, 0].tolist() == [-1, 1, 1, 1, -1] and picked.labels[:, 1].tolist() == [1, -1, -1, -1, -1]


def test_valid_csv(miniature):
    ls = read_chexpert(miniature("chexpert"), "CheXpert-v1.0-small/valid.csv", classes="competition")
    assert ls.labels.tolist() == [[0, 1, 0, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]


def _edit(root, old, new):
    path = root / TRAIN
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))
    return root


@pytest.mark.parametrize("old, new, match", [
    ("Female,68,Frontal,AP,1.0,", "Female,68,Frontal,AP,yes,", r"train.csv, line 2: No Finding is 'yes'; expected 1.0"),
    ("Female,68,Frontal,AP,1.0,", "Female,68,Frontal,AP,2.0,", r"train.csv, line 2: No Finding is '2.0'"),
    ("CheXpert-v1.0-small/train/patient00003/study1/view1_frontal.jpg",
     "CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg",
     r"train.csv, line 6: image CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg is listed twice "
     r"\(also line 2\)"),
    ("CheXpert-v1.0-small/train/patient00003", "/data/patient00003", r"line 6: image path '/data/patient00003.*outside"),
    (",Female,87,Frontal,AP,", ",Female,87,Frontal,", r"train.csv, line 3: expected 19 fields, got 18"),
], ids=["non-numeric", "bad-value", "duplicate-image", "outside-root", "missing-field"])
def test_chexpert_row_errors(miniature, old, new, match):
    root = _edit(miniature("chexpert"), old, new)
    with pytest.raises(DataError, match=match):
        read_chexpert(root)


def test_missing_competition_column(miniature):
    root = _edit(miniature("chexpert"), ",Edema,", ",Oedema,")
    read_chexpert(root)  # 'all' takes the columns there are
    with pytest.raises(DataError, match=r"train.csv, line 1: missing column 'Edema'"):
        read_chexpert(root, classes="competition")


def test_chexpert_options_are_checked(miniature):
    root = miniature("chexpert")
    with pytest.raises(ConfigError, match="uncertain must be one of 'ignore', 'zeros', 'ones'"):
        read_chexpert(root, uncertain="U-Ones")
    with pytest.raises(ConfigError, match="blank must be one of"):
        read_chexpert(root, blank="zeros")
    with pytest.raises(ConfigError, match="classes must be"):
        read_chexpert(root, classes="five")


def test_chexpert_builds_through_the_registry_and_loads_a_sample(miniature):
    root = miniature("chexpert")
    ls = read_chexpert(root, classes="competition", uncertain="ones")
    write_images(root, ls.paths, mode="L")  # radiographs are greyscale; LoadImageFromFile makes 3 channels
    ds = build_mm_dataset(dict(type="labelwise.CheXpert", data_root=str(root), ann_file=TRAIN,
                               classes="competition", uncertain="ones", pipeline=PIPELINE))
    assert len(ds) == 5 and ds.metainfo["classes"] == COMPETITION
    sample = check_loaded_sample(ds, 1, colour=(image_colour(1)[0],) * 3)
    assert sample.partial_labels.tolist() == [1, 1, 1, 1, 1]
