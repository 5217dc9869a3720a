"""Batched AP / AUROC against scikit-learn, ties included."""
import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score, roc_auc_score

from labelwise.plugins.cft.ranking import batched_average_precision, batched_roc_auc, batched_score


def _cases():
    rng = np.random.default_rng(0)
    for trial in range(30):
        n = int(rng.integers(2, 80))
        if trial % 3 == 0:  # heavy ties: a few distinct values
            scores = rng.integers(-2, 3, size=(5, n)).astype(np.float64) * 0.5
        else:
            scores = rng.standard_normal((5, n))
        if trial % 5 == 0:
            scores[0] = 0.0  # one tie group
            scores[1, ::2] = -0.0  # signed zeros are equal
        positive = rng.random(n) < rng.uniform(0.05, 0.7)
        positive[0], positive[-1] = True, False
        yield scores, positive


@pytest.mark.parametrize("backend", ["numpy-f32", "numpy-f64", "torch-f32", "torch-f64"])
def test_equal_to_sklearn_with_ties(backend):
    for scores, positive in _cases():
        kind, dtype = backend.split("-")
        s = scores.astype(np.float32 if dtype == "f32" else np.float64)
        ref_ap = np.array([average_precision_score(positive, row) for row in s])
        ref_auc = np.array([roc_auc_score(positive, row) for row in s])
        if kind == "torch":
            ap = batched_average_precision(torch.from_numpy(s), torch.from_numpy(positive)).numpy()
            auc = batched_roc_auc(torch.from_numpy(s), torch.from_numpy(positive)).numpy()
        else:
            ap, auc = batched_average_precision(s, positive), batched_roc_auc(s, positive)
        assert ap.dtype == np.float64 and ap.shape == (5,)
        np.testing.assert_allclose(ap, ref_ap, rtol=0, atol=1e-12)
        np.testing.assert_allclose(auc, ref_auc, rtol=0, atol=1e-12)


def test_hand_computed_values():
    # scores 0.9(+) 0.8(-) 0.8(+) 0.1(-): thresholds 0.9 -> P 1/1, 0.8 -> P 2/3; AP = (1 + 2/3) / 2
    scores = np.array([[0.9, 0.8, 0.8, 0.1]], dtype=np.float32)
    positive = np.array([True, False, True, False])
    assert batched_average_precision(scores, positive)[0] == pytest.approx(5 / 6, abs=1e-15)
    # pairs (pos, neg): (0.9, 0.8) 1, (0.9, 0.1) 1, (0.8, 0.8) 0.5, (0.8, 0.1) 1 -> 3.5 / 4
    assert batched_roc_auc(scores, positive)[0] == pytest.approx(3.5 / 4, abs=1e-15)


def test_bad_input():
    with pytest.raises(ValueError, match="at least one True and one False"):
        batched_average_precision(np.zeros((1, 3), np.float32), np.array([True, True, True]))
    with pytest.raises(ValueError, match=r"scores must be \(R, N\)"):
        batched_roc_auc(np.zeros((1, 4), np.float32), np.array([True, False]))
    with pytest.raises(ValueError, match="metric must be one of ap, auroc"):
        batched_score(np.zeros((1, 2), np.float32), np.array([True, False]), metric="f1")
