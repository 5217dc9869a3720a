"""Metrics over known labels only: the numpy functions and labelwise.PartialMultiLabelMetric."""
import math

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from labelwise.metrics import (
    auroc_per_class,
    average_precision_per_class,
    mean_auroc,
    partial_label_metrics,
    undefined_classes,
)

from .conftest import PIPELINE, build_mm_dataset, write_images


def _random_partial(seed, n=300, c=6):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 5, size=(n, c)) / 4.0  # five score levels: many ties
    labels = (rng.random((n, c)) < 0.3).astype(np.int8)
    labels[rng.random((n, c)) < 0.4] = -1
    return scores, labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ap_and_auroc_equal_sklearn_on_the_known_entries_with_ties(seed):
    scores, labels = _random_partial(seed)
    ap, auc = average_precision_per_class(scores, labels), auroc_per_class(scores, labels)
    for c in range(labels.shape[1]):
        known = labels[:, c] >= 0
        assert ap[c] == pytest.approx(average_precision_score(labels[known, c], scores[known, c]), abs=1e-12)
        assert auc[c] == pytest.approx(roc_auc_score(labels[known, c], scores[known, c]), abs=1e-12)
    # -1 is not "negative": counting unknowns as negatives gives another (lower) AP
    assert not np.allclose(ap, average_precision_per_class(scores, np.maximum(labels, 0)))


def test_auroc_by_hand_with_a_tie_and_an_unknown():
    # known: 0.9(+) 0.5(+) 0.5(-) 0.1(-); pairs (+,-): (0.9>0.5) (0.9>0.1) (0.5=0.5: 1/2) (0.5>0.1) -> 3.5/4
    scores = np.array([[0.9], [0.5], [0.5], [0.1], [0.0]])
    labels = np.array([[1], [1], [0], [0], [-1]])
    assert auroc_per_class(scores, labels)[0] == pytest.approx(0.875)
    assert mean_auroc(scores, labels) == pytest.approx(87.5)


def test_classes_without_a_known_positive_or_negative_are_left_out_and_named():
    scores, labels = _random_partial(0, c=5)
    labels[:, 1] = np.where(labels[:, 1] == 1, -1, labels[:, 1])  # no known positive
    labels[:, 3] = np.where(labels[:, 3] == 0, -1, labels[:, 3])  # no known negative
    labels[:, 4] = -1
    assert undefined_classes(labels) == {1: "no known positive", 3: "no known negative", 4: "no known label"}
    out = partial_label_metrics(scores, labels, classes=["a", "b", "c", "d", "e"])
    assert out["left_out"] == {"b": "no known positive", "d": "no known negative", "e": "no known label"}
    assert out["num_classes"] == 2
    assert np.isnan(out["AP"][[1, 3, 4]]).all() and np.isnan(out["AUROC"][[1, 3, 4]]).all()
    assert out["mAP"] == pytest.approx(100 * np.mean([out["AP"][0], out["AP"][2]]))
    assert out["mAUROC"] == pytest.approx(100 * np.mean([out["AUROC"][0], out["AUROC"][2]]))
    none = partial_label_metrics(scores, np.full_like(labels, -1))
    assert math.isnan(none["mAP"]) and none["num_classes"] == 0
    with pytest.raises(ValueError, match="undefined"):
        mean_auroc(scores, np.full_like(labels, -1))


def _samples(scores, labels):
    import torch
    from mmpretrain.structures import DataSample

    out = []
    for s, y in zip(scores, labels):
        sample = DataSample().set_pred_score(torch.as_tensor(s, dtype=torch.float32))
        sample.set_field(np.asarray(y, dtype=np.int8), "partial_labels")
        out.append(sample)
    return out


def test_metric_builds_from_a_config_dict_and_matches_the_numpy_functions():
    import importlib

    from mmengine.evaluator import Evaluator
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import METRICS

    importlib.import_module("labelwise")
    init_default_scope("mmpretrain")
    scores, labels = _random_partial(4, n=120, c=4)
    labels[:, 2] = np.where(labels[:, 2] == 1, -1, labels[:, 2])  # class 'c': no known positive
    metric = METRICS.build(dict(type="labelwise.PartialMultiLabelMetric", per_class=True))
    assert type(metric).__name__ == "PartialMultiLabelMetric"
    # as a Runner does with val_evaluator = dict(type=...): batches of data samples, then evaluate
    evaluator = Evaluator(dict(type="labelwise.PartialMultiLabelMetric", per_class=True))
    evaluator.dataset_meta = {"classes": ("a", "b", "c", "d")}
    samples = _samples(scores, labels)
    for start in range(0, 120, 32):
        evaluator.process(data_samples=samples[start:start + 32])
    result = evaluator.evaluate(120)
    expected = partial_label_metrics(scores.astype(np.float32), labels)
    assert result["partial/mAP"] == pytest.approx(expected["mAP"])
    assert result["partial/mAUROC"] == pytest.approx(expected["mAUROC"])
    assert result["partial/num_classes"] == 3
    assert np.isnan(result["partial/AP_classwise"][2])
    assert result["partial/AP_classwise"][0] == pytest.approx(100 * expected["AP"][0])
    assert evaluator.metrics[0].left_out == {"c": "no known positive"}


def test_metric_refuses_samples_without_partial_labels():
    import torch
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import METRICS
    from mmpretrain.structures import DataSample

    from labelwise.errors import DataError

    init_default_scope("mmpretrain")
    metric = METRICS.build(dict(type="labelwise.PartialMultiLabelMetric"))
    sample = DataSample().set_pred_score(torch.zeros(3)).set_gt_label([1])
    with pytest.raises(DataError, match=r"algorithm_keys=\['partial_labels'\]"):
        metric.process(None, [sample.to_dict()])


def test_metric_on_samples_packed_by_a_reader_dataset(miniature):
    """The evaluation path end to end: a partially labelled split packed by mmpretrain's PackInputs."""
    import torch
    from mmengine.evaluator import Evaluator

    from labelwise.datasets import read_open_images

    root = miniature("open_images")
    labels_csv = "annotations/train-annotations-human-imagelabels-boxable.csv"
    classes_csv = "annotations/class-descriptions-boxable.csv"
    ls = read_open_images(root, labels_csv, classes_csv)
    write_images(root, ls.paths)
    ds = build_mm_dataset(dict(type="labelwise.OpenImagesVerified", data_root=str(root), ann_file=labels_csv,
                               classes_file=classes_csv, pipeline=PIPELINE, test_mode=True))
    scores = np.array([[0.9, 0.1, 0.8, 0.5], [0.3, 0.8, 0.6, 0.4], [0.2, 0.3, 0.7, 0.1]], dtype=np.float32)
    evaluator = Evaluator(dict(type="labelwise.PartialMultiLabelMetric"))
    evaluator.dataset_meta = ds.metainfo
    batch = [ds[i]["data_samples"].set_pred_score(torch.as_tensor(scores[i])) for i in range(3)]
    evaluator.process(data_samples=batch)
    result = evaluator.evaluate(3)
    # labels (1 / 0 / -1): [1, -1, 0, -1], [0, 1, -1, 0], [-1, -1, 1, -1]. By hand, known entries only:
    # Person: + at 0.9, - at 0.3 -> AP 1, AUROC 1; Car: - at 0.8 above + at 0.7 -> AP 1/2, AUROC 0;
    # Bicycle has only a positive, Cat only a negative: left out.
    assert evaluator.metrics[0].left_out == {"Bicycle": "no known negative", "Cat": "no known positive"}
    assert result["partial/num_classes"] == 2
    assert result["partial/mAP"] == pytest.approx(75.0) and result["partial/mAUROC"] == pytest.approx(50.0)
