"""Calibration on known labels only: parity with scikit-learn, hand-checked errors and thresholds."""
import json

import numpy as np
import pytest

from labelwise.errors import ConfigError, DataError
from labelwise.metrics import average_precision_per_class
from labelwise.plugins.cft.calibration import (calibrate_logits, calibration_errors, choose_thresholds,
                                               fit_calibration, reliability_bins)


def _miscalibrated(n, seed, p_known=None):
    """Truth p = sigmoid(t); the head's logits are 3 t + 1 (over-confident and shifted)."""
    rng = np.random.default_rng(seed)
    t = rng.normal(0.0, 1.5, size=(n, 4))
    y = (rng.random((n, 4)) < 1 / (1 + np.exp(-t))).astype(np.int64)
    if p_known is not None:
        y = np.where(rng.random(y.shape) < p_known, y, -1)
    return 3.0 * t + 1.0, y


def test_platt_equals_unpenalised_logistic_regression_on_full_labels():
    from sklearn.linear_model import LogisticRegression

    z, y = _miscalibrated(2000, 0)
    cal = fit_calibration(z, y, method="platt")
    for c in range(4):
        ref = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(z[:, c:c + 1], y[:, c])
        assert cal.scale[c] == pytest.approx(ref.coef_[0, 0], rel=1e-5)
        assert cal.shift[c] == pytest.approx(ref.intercept_[0], abs=1e-5)
    assert cal.scale == pytest.approx(np.full(4, 1 / 3), rel=0.15)  # recovers the truth's scale


def test_isotonic_equals_scikit_learn_on_full_labels():
    from sklearn.isotonic import IsotonicRegression

    z, y = _miscalibrated(1000, 1)
    probabilities = fit_calibration(z, y, method="isotonic").probabilities(z)
    for c in range(4):
        ref = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(z[:, c], y[:, c])
        assert np.allclose(probabilities[:, c], ref.predict(z[:, c]), atol=1e-12)


def test_temperature_is_the_log_loss_minimum():
    z, y = _miscalibrated(1500, 2)
    scale = fit_calibration(z, y, method="temperature").scale
    grid = np.exp(np.linspace(-3, 1, 4001))
    for c in range(4):
        losses = [np.sum(np.logaddexp(0, s * z[:, c]) - y[:, c] * s * z[:, c]) for s in grid]
        assert scale[c] == pytest.approx(grid[int(np.argmin(losses))], rel=2e-3)


def test_unknown_entries_are_never_used():
    z, y = _miscalibrated(800, 3, p_known=0.3)
    cal = fit_calibration(z, y)
    z2 = np.where(y == -1, 1e3 * np.random.default_rng(4).normal(size=z.shape), z)  # garbage where unknown
    assert np.allclose(fit_calibration(z2, y).scale, cal.scale) and np.allclose(fit_calibration(z2, y).shift, cal.shift)
    assert cal.known.tolist() == (y >= 0).sum(0).tolist()


def test_calibration_halves_the_ece_on_partial_labels_and_keeps_ap():
    z_val, y_val = _miscalibrated(3000, 5, p_known=0.3)  # fitted on 30 % known validation labels
    z_test, y_test = _miscalibrated(3000, 6)  # judged on a fully labelled test split
    before = calibration_errors(1 / (1 + np.exp(-z_test)), y_test)["overall"]
    for method in ("platt", "temperature", "isotonic"):
        cal = fit_calibration(z_val, y_val, method=method)
        p = cal.probabilities(z_test)
        after = calibration_errors(p, y_test)["overall"]
        assert after["ece"] <= before["ece"] / 2, method
        assert after["brier"] < before["brier"], method
        if method != "isotonic":  # strictly monotone: the ranking, hence AP, cannot move
            assert np.allclose(average_precision_per_class(p, y_test), average_precision_per_class(z_test, y_test))


def test_errors_by_hand():
    p = np.array([[0.1], [0.1], [0.9], [0.9], [0.5]])
    y = np.array([[0], [1], [1], [1], [-1]])  # the unknown entry is left out
    e = calibration_errors(p, y)["overall"]
    # bin [0.0667, 0.133): mean p 0.1, mean y 0.5; bin [0.867, 0.933): 0.9 and 1.0
    assert e["ece"] == pytest.approx((2 * 0.4 + 2 * 0.1) / 4)
    assert e["mce"] == pytest.approx(0.4)
    assert e["brier"] == pytest.approx((0.01 + 0.81 + 0.01 + 0.01) / 4)
    assert e["known"] == 4


def test_reliability_bins_by_hand():
    p = np.array([[0.1, 0.95], [0.12, 0.5], [0.9, 0.05], [1.0, 0.3]])
    y = np.array([[0, 1], [1, -1], [1, 0], [1, -1]])  # the unknown 0.5 and 0.3 are left out
    r = reliability_bins(p, y, bins=5)
    assert r["edges"].tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    # [0, 0.2): 0.1 (0), 0.12 (1), 0.05 (0); [0.8, 1.0]: 0.95 (1), 0.9 (1), 1.0 (1, the closed last bin)
    assert r["counts"].tolist() == [3, 0, 0, 0, 3]
    assert r["mean_confidence"][0] == pytest.approx(0.09) and r["mean_confidence"][4] == pytest.approx(2.85 / 3)
    assert r["fraction_positive"][0] == pytest.approx(1 / 3) and r["fraction_positive"][4] == 1.0
    assert np.isnan(r["mean_confidence"][1:4]).all() and np.isnan(r["fraction_positive"][1:4]).all()


def test_reliability_bins_give_the_reported_ece():
    z, y = _miscalibrated(500, 7, p_known=0.4)
    p = 1 / (1 + np.exp(-z))
    r = reliability_bins(p, y)  # 15 bins, as calibration_errors
    full = r["counts"] > 0
    ece = np.sum(r["counts"][full] / r["counts"].sum() * np.abs(r["fraction_positive"][full]
                                                                 - r["mean_confidence"][full]))
    overall = calibration_errors(p, y)["overall"]
    assert r["counts"].sum() == overall["known"] == int((y >= 0).sum())
    assert ece == pytest.approx(overall["ece"], rel=1e-12)


def test_calibration_report_holds_the_reliability_bins():
    z, y = _miscalibrated(400, 8, p_known=0.5)
    _, _, report = calibrate_logits(z / 2, z, y, bins=10)
    rel = report["reliability"]
    assert len(rel["edges"]) == 11 and set(rel) == {"edges", "original_sigmoid", "cft_sigmoid", "calibrated"}
    before = reliability_bins(1 / (1 + np.exp(-z / 2)), y, bins=10)
    assert rel["original_sigmoid"]["counts"] == before["counts"].tolist()
    assert rel["original_sigmoid"]["mean_confidence"] == [None if np.isnan(v) else pytest.approx(v)
                                                          for v in before["mean_confidence"]]
    json.dumps(report, allow_nan=False)  # empty bins are null, not NaN: strict JSON


def test_f1_thresholds_by_hand():
    p = np.array([[0.2], [0.4], [0.6], [0.8]])
    y = np.array([[0], [1], [0], [1]])
    # >= 0.3 predicts 0.4, 0.6, 0.8: tp 2, fp 1, fn 0 -> F1 0.8, the best candidate
    assert choose_thresholds(p, y).tolist() == [pytest.approx(0.3)]
    assert choose_thresholds(p, np.array([[0], [0], [-1], [0]])).tolist() == [0.5]  # no known positive


def test_classes_that_cannot_be_fitted_keep_the_sigmoid():
    z = np.random.default_rng(0).normal(size=(50, 2))
    y = np.zeros((50, 2), dtype=int)
    y[::2, 1] = 1
    z[:, 1] += 2 * y[:, 1]  # class 1 ranks its positives first: fitted; class 0 has no known positive
    cal = fit_calibration(z, y)
    assert cal.fitted.tolist() == [False, True]
    backwards = fit_calibration(-z, y)  # a head ranking class 1 backwards is not flipped by calibration
    assert backwards.fitted.tolist() == [False, False] and backwards.scale.tolist() == [1.0, 1.0]
    assert np.allclose(cal.probabilities(z)[:, 0], 1 / (1 + np.exp(-z[:, 0])))


@pytest.mark.parametrize("call, error, message", [
    (lambda: fit_calibration(np.zeros((3, 2)), np.zeros((3, 2)), method="beta"), ConfigError, "unknown calibration"),
    (lambda: fit_calibration(np.zeros((3, 2)), np.zeros((3, 3))), DataError, r"shape \(3, 2\) and labels \(3, 3\)"),
    (lambda: fit_calibration(np.full((3, 2), np.nan), np.zeros((3, 2))), DataError, "NaN"),
    (lambda: fit_calibration(np.zeros((3, 2)), np.full((3, 2), 2)), DataError, "1 .positive., 0"),
    (lambda: calibration_errors(np.full((3, 2), 1.5), np.zeros((3, 2))), DataError, r"in \[0, 1\]"),
    (lambda: choose_thresholds(np.zeros((3, 2)), np.zeros((3, 2)), objective="auc"), ConfigError, "objective"),
    (lambda: reliability_bins(np.zeros((3, 2)), np.zeros((3, 2)), bins=0), ConfigError, "bins must be a positive"),
    (lambda: reliability_bins(np.full((3, 2), -0.1), np.zeros((3, 2))), DataError, r"in \[0, 1\]"),
    (lambda: reliability_bins(np.zeros((3, 2)), np.zeros((2, 2))), DataError, r"shape \(3, 2\) and labels \(2, 2\)"),
])
def test_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


@pytest.mark.parametrize("method", ["platt", "temperature", "isotonic", "none"])
def test_onnx_head_carries_the_calibration_and_thresholds(tmp_path, method):
    pytest.importorskip("onnxruntime")
    import onnxruntime as ort
    import torch

    from labelwise.plugins.cft.calibrate import fit_calibrated_head
    from labelwise.plugins.cft.onnx_export import CalibratedHead, export_onnx, head_metadata, read_metadata, verify_onnx
    from labelwise.plugins.cft.options import CFTOptions
    from labelwise.plugins.cft.outputs import calibration_arrays, load_calibration

    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 6))
    x_train, x_val = rng.normal(size=(300, 6)), rng.normal(size=(300, 6))
    label = (lambda x: np.where(rng.random((len(x), 3)) < 0.5, (x @ w.T + rng.normal(size=(len(x), 3)) > 0), -1))
    result = fit_calibrated_head(x_train, label(x_train).astype(int), x_val, label(x_val).astype(int), 3 * w,
                                 np.zeros(3), options=CFTOptions(epochs=5, calibration=method))
    head = CalibratedHead.from_result(result)
    export_onnx(head, tmp_path / "h.onnx", torch.zeros(2, 6), metadata=head_metadata(result, ["a", "b", "c"]))
    assert verify_onnx(tmp_path / "h.onnx", head, torch.randn(50, 6) * 3) <= 1e-4
    session = ort.InferenceSession(str(tmp_path / "h.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities", "labels"]
    z = rng.normal(size=(40, 6)).astype(np.float32)
    logits, probabilities, labels = session.run(None, {"features": z})
    calibration, thresholds = load_calibration(calibration_arrays(result))  # what cft_head.npz stores
    expected = 1 / (1 + np.exp(-logits.astype(np.float64))) if calibration is None else \
        calibration.probabilities(logits.astype(np.float64))
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    assert np.array_equal(labels, (probabilities >= thresholds).astype(np.int64))
    meta = read_metadata(tmp_path / "h.onnx")
    assert meta["calibration"] == method and len(json.loads(meta["thresholds"])) == 3
    assert set(json.loads(meta["calibration_errors_validation"])) == {"original_sigmoid", "cft_sigmoid", "calibrated"}
    assert "source_sha256" not in meta  # no hash given: left out, not stored empty
