import numpy as np
import pytest

from labelwise.errors import ConfigError, DataError
from labelwise.labels import check_partial_labels, check_probability, known_mask
from labelwise.metrics import average_precision_per_class, mean_average_precision, top1_accuracy


def test_partial_labels_nan_is_unknown_and_dtype_is_int8():
    out = check_partial_labels([[1, 0, np.nan], [-1, 1.0, 0]])
    assert out.dtype == np.int8
    assert out.tolist() == [[1, 0, -1], [-1, 1, 0]]
    assert known_mask(out).tolist() == [[True, True, False], [False, True, True]]


def test_partial_labels_bool_input():
    assert check_partial_labels(np.array([[True, False]])).tolist() == [[1, 0]]


@pytest.mark.parametrize("bad, where", [([[1, 2]], "row 0, class 1 is 2"), ([[0.5, 0]], "row 0, class 0 is 0.5"),
                                        ([[1, 0], [0, -2]], "row 1, class 1 is -2")])
def test_partial_labels_rejects_other_values(bad, where):
    with pytest.raises(DataError, match=where):
        check_partial_labels(bad, name="labels.json")


def test_partial_labels_shape_errors_name_the_array():
    with pytest.raises(DataError, match=r"y\.npy: expected a 2-D"):
        check_partial_labels([1, 0], name="y.npy")
    with pytest.raises(DataError, match="expected 3 classes"):
        check_partial_labels([[1, 0]], num_classes=3)
    with pytest.raises(DataError, match="dtype"):
        check_partial_labels([["a", "b"]])


@pytest.mark.parametrize("value", [-0.1, 1.5, "x", None])
def test_probability_out_of_range_names_value(value):
    with pytest.raises(ConfigError, match=r"p must be"):
        check_probability(value, name="p")


def test_probability_edges_accepted():
    assert check_probability(0, name="p") == 0.0 and check_probability("1", name="p") == 1.0


def test_average_precision_by_hand_with_ties_and_unknowns():
    # class 0: scores 0.9(+) 0.8(-) 0.8(+) 0.1(-), one unknown row ignored.
    # sklearn groups the tie at 0.8: thresholds 0.9 -> P=1, R=.5 ; 0.8 -> P=2/3, R=1
    # AP = .5*1 + .5*(2/3) = 0.8333...
    scores = np.array([[0.9], [0.8], [0.8], [0.1], [0.95]])
    labels = np.array([[1], [0], [1], [0], [-1]])
    assert average_precision_per_class(scores, labels)[0] == pytest.approx(5 / 6)
    assert mean_average_precision(scores, labels) == pytest.approx(500 / 6)


def test_average_precision_class_without_negative_is_nan():
    ap = average_precision_per_class(np.array([[0.2, 0.1], [0.3, 0.9]]), np.array([[1, 0], [1, 1]]))
    assert np.isnan(ap[0]) and ap[1] == pytest.approx(1.0)


def test_top1_accuracy():
    assert top1_accuracy(np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7]]), np.array([1, 1, 1])) == pytest.approx(200 / 3)
