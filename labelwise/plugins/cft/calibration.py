"""Probability calibration of a multi-label head on known labels only, its errors and thresholds.

CFT optimises ranking (AP / AUROC), which ignores any monotone change of a class's scores, so
the sigmoid of a re-fitted row is not a calibrated probability. This module fits, per class and
on the *known* entries of a partially labelled validation set (1 / 0; -1 is unknown and never
used), a monotone map from the class's logit to a probability:

* ``'platt'`` (default): ``sigmoid(a * z + b)`` with ``a > 0``, the maximum-likelihood fit
  (the same model as scikit-learn's ``LogisticRegression(penalty=None)`` on the logit);
* ``'temperature'``: ``sigmoid(z / T)``, one positive parameter per class;
* ``'isotonic'``: scikit-learn's ``IsotonicRegression`` on the logit (non-decreasing,
  piecewise linear between its knots, clipped outside them).

A class whose known entries are all of one value (or fewer than ``min_known``) keeps the plain
sigmoid, and the fit says so. Errors are measured on known entries only:
:func:`calibration_errors` gives the expected calibration error (equal-width bins, 15 by
default), the maximum calibration error and the Brier score, per class and over all known
entries; :func:`reliability_bins` gives the per-bin numbers of a reliability diagram over all
known entries pooled; :func:`choose_thresholds` picks per-class decision thresholds (F1 by
default).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from labelwise.errors import ConfigError, DataError
from labelwise.labels import check_partial_labels
from labelwise.plugins.cft.options import THRESHOLD_OBJECTIVES

__all__ = ["CALIBRATION_METHODS", "Calibration", "calibrate_logits", "calibration_errors", "choose_thresholds",
           "fit_calibration", "reliability_bins"]

CALIBRATION_METHODS = ("platt", "temperature", "isotonic")


@dataclasses.dataclass(frozen=True)
class Calibration:
    """A fitted per-class calibration.

    Attributes:
        method: one of :data:`CALIBRATION_METHODS`.
        scale, shift: ``(C,)`` float64: the probability is ``sigmoid(scale * z + shift)``
            (Platt and temperature; for a class left uncalibrated 1 and 0).
        knots_x, knots_y: per class, the isotonic map's knots (increasing logits, probabilities);
            empty for the other methods.
        fitted: ``(C,)`` bool, False where the class kept the plain sigmoid.
        known: ``(C,)`` int, known validation entries per class.
    """

    method: str
    scale: np.ndarray
    shift: np.ndarray
    knots_x: tuple = ()
    knots_y: tuple = ()
    fitted: np.ndarray | None = None
    known: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return len(self.scale)

    def probabilities(self, logits) -> np.ndarray:
        """Calibrated probabilities ``(N, C)`` of ``logits (N, C)``."""
        z = _logits(logits, self.num_classes)
        if self.method != "isotonic":
            return _sigmoid(z * self.scale + self.shift)
        out = np.empty_like(z)
        for c in range(self.num_classes):
            if len(self.knots_x[c]):
                out[:, c] = np.interp(z[:, c], self.knots_x[c], self.knots_y[c])
            else:
                out[:, c] = _sigmoid(z[:, c])
        return out

    def padded_knots(self) -> tuple[np.ndarray, np.ndarray]:
        """Isotonic knots as two ``(C, K)`` arrays (K = most knots of a class).

        A class with fewer knots repeats its last one; a class left uncalibrated has none
        (all NaN), which :class:`~labelwise.plugins.cft.onnx_export.CalibratedHead` reads as
        "plain sigmoid".
        """
        k = max([len(x) for x in self.knots_x] + [1])
        xs, ys = np.full((self.num_classes, k), np.nan), np.full((self.num_classes, k), np.nan)
        for c, (x, y) in enumerate(zip(self.knots_x, self.knots_y)):
            if len(x):
                xs[c], ys[c] = np.pad(x, (0, k - len(x)), mode="edge"), np.pad(y, (0, k - len(y)), mode="edge")
        return xs, ys

    def as_dict(self) -> dict:
        return {"method": self.method, "scale": self.scale.tolist(), "shift": self.shift.tolist(),
                "knots_x": [list(map(float, k)) for k in self.knots_x],
                "knots_y": [list(map(float, k)) for k in self.knots_y],
                "fitted": [bool(v) for v in self.fitted], "known": [int(v) for v in self.known]}


def fit_calibration(logits, labels, *, method: str = "platt", min_known: int = 10) -> Calibration:
    """Fit one monotone map per class on the known entries of ``labels``.

    Args:
        logits: ``(N, C)`` validation logits of the (re-fitted) head.
        labels: ``(N, C)`` of 1 / 0 / -1 (unknown, ignored).
        method: one of :data:`CALIBRATION_METHODS`.
        min_known: fewest known entries, with both values present, for a class to be fitted.

    Raises:
        ConfigError: unknown ``method`` or ``min_known < 2``.
        DataError: shapes that do not agree, non-finite logits, or labels other than 1 / 0 / -1.
    """
    if method not in CALIBRATION_METHODS:
        raise ConfigError(f"unknown calibration method {method!r}; valid: {', '.join(CALIBRATION_METHODS)}")
    if int(min_known) != min_known or min_known < 2:
        raise ConfigError(f"min_known must be an integer >= 2, got {min_known!r}")
    z, y = _logits(logits), _labels(labels)
    if z.shape != y.shape:
        raise DataError(f"logits have shape {z.shape} and labels {y.shape}; expected the same (N, C)")
    num_classes = z.shape[1]
    scale, shift = np.ones(num_classes), np.zeros(num_classes)
    knots_x, knots_y = [], []
    fitted, known = np.zeros(num_classes, dtype=bool), np.zeros(num_classes, dtype=np.int64)
    for c in range(num_classes):
        mask = y[:, c] >= 0
        zc, yc = z[mask, c], y[mask, c].astype(np.float64)
        known[c] = mask.sum()
        ok = known[c] >= min_known and 0 < yc.sum() < len(yc)
        kx = ky = np.empty(0)
        if ok and method == "platt":
            scale[c], shift[c] = _fit_platt(zc, yc)
            ok = scale[c] > 0  # a head that ranks a class backwards is left alone (calibration stays monotone)
            if not ok:
                scale[c], shift[c] = 1.0, 0.0
        elif ok and method == "temperature":
            scale[c] = _fit_temperature(zc, yc)
        elif ok:
            kx, ky = _fit_isotonic(zc, yc)
        fitted[c] = ok
        knots_x.append(kx)
        knots_y.append(ky)
    iso = method == "isotonic"
    return Calibration(method, scale, shift, tuple(knots_x) if iso else (), tuple(knots_y) if iso else (),
                       fitted, known)


def calibration_errors(probabilities, labels, *, bins: int = 15) -> dict:
    """ECE, MCE and Brier score on the known entries, per class and over all of them.

    ECE: equal-width bins of the predicted probability; ``sum_b (n_b / n) |mean(y) - mean(p)|``.
    MCE: the largest ``|mean(y) - mean(p)|`` over non-empty bins. Brier: ``mean((p - y) ** 2)``.

    Returns:
        ``{"overall": {"ece", "mce", "brier", "known"}, "per_class": [{...} or None]}`` (``None``
        for a class without known entries).
    """
    p, y = _probabilities_and_labels(probabilities, labels, bins)
    mask = y >= 0
    per_class = [_errors(p[mask[:, c], c], y[mask[:, c], c], bins) if mask[:, c].any() else None
                 for c in range(p.shape[1])]
    return {"overall": _errors(p[mask], y[mask], bins), "per_class": per_class, "bins": int(bins)}


def reliability_bins(probabilities, labels, *, bins: int = 15) -> dict:
    """The numbers of a reliability diagram over the known entries of all classes pooled.

    The bins are those of :func:`calibration_errors` (``bins`` equal-width bins of the
    predicted probability, the last one closed), so ``sum_b (counts_b / n) |fraction_positive_b
    - mean_confidence_b|`` over the non-empty bins is its overall ECE.

    Args:
        probabilities: ``(N, C)`` predicted probabilities in [0, 1].
        labels: ``(N, C)`` of 1 / 0 / -1 (unknown, ignored).
        bins: number of equal-width bins. Default 15.

    Returns:
        ``{"edges" (bins + 1,), "mean_confidence" (bins,), "fraction_positive" (bins,),
        "counts" (bins,) int}``: float64 arrays, NaN in the bins without a known entry.

    Raises:
        ConfigError: ``bins`` is not a positive integer.
        DataError: shapes that do not agree, probabilities outside [0, 1], or labels other
            than 1 / 0 / -1.
    """
    p, y = _probabilities_and_labels(probabilities, labels, bins)
    known = y >= 0
    p, y = p[known], y[known].astype(np.float64)
    index = _bin_index(p, int(bins))
    counts = np.bincount(index, minlength=int(bins))
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=p, minlength=int(bins)) / counts
        positive = np.bincount(index, weights=y, minlength=int(bins)) / counts
    return {"edges": np.linspace(0.0, 1.0, int(bins) + 1), "mean_confidence": confidence,
            "fraction_positive": positive, "counts": counts}


def choose_thresholds(probabilities, labels, *, objective: str = "f1") -> np.ndarray:
    """Per-class decision thresholds that maximise ``objective`` on the known entries.

    Candidates are the midpoints between consecutive distinct probabilities of the class's
    known entries (and the extremes); ties keep the lowest threshold. A class without a known
    positive gets 0.5.

    Returns:
        ``(C,)`` float64: predict 1 where ``probability >= threshold``.
    """
    if objective not in THRESHOLD_OBJECTIVES:
        raise ConfigError(f"unknown threshold objective {objective!r}; valid: {', '.join(THRESHOLD_OBJECTIVES)}")
    p, y = np.asarray(probabilities, dtype=np.float64), _labels(labels)
    if p.shape != y.shape:
        raise DataError(f"probabilities have shape {p.shape} and labels {y.shape}; expected the same (N, C)")
    out = np.full(p.shape[1], 0.5)
    for c in range(p.shape[1]):
        mask = y[:, c] >= 0
        pc, yc = p[mask, c], y[mask, c]
        if not (yc == 1).any():
            continue
        values = np.unique(pc)
        candidates = np.concatenate([[values[0]], (values[1:] + values[:-1]) / 2, [np.nextafter(values[-1], 2.0)]])
        predicted = pc[None, :] >= candidates[:, None]
        tp = (predicted & (yc == 1)).sum(1)
        fp = (predicted & (yc == 0)).sum(1)
        fn = ((~predicted) & (yc == 1)).sum(1)
        if objective == "f1":
            score = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
        else:
            score = (tp + ((~predicted) & (yc == 0)).sum(1)) / len(yc)
        out[c] = candidates[int(np.argmax(score))]
    return out


def calibrate_logits(val_logits_before, val_logits, val_labels, *, method: str = "platt",
                     objective: str = "f1", bins: int = 15) -> tuple[Calibration | None, np.ndarray, dict]:
    """Calibrate a re-fitted head on its known validation labels; thresholds and the report.

    Args:
        val_logits_before: ``(M, C)`` validation logits of the head before CFT.
        val_logits: ``(M, C)`` validation logits of the re-fitted head.
        val_labels: ``(M, C)`` of 1 / 0 / -1.
        method: one of :data:`CALIBRATION_METHODS` or ``'none'`` (the plain sigmoid).
        objective, bins: as :func:`choose_thresholds` and :func:`calibration_errors`.

    Returns:
        ``(calibration or None, thresholds (C,), report)``. The report holds the errors of the
        sigmoid of the original head, of the re-fitted head and of the calibrated
        probabilities, all on the known validation entries the calibration was fitted on (so
        the "calibrated" figures are in-sample), per class and overall, and the thresholds;
        ``"reliability"`` holds the bin ``edges`` and, for each of the three, the
        :func:`reliability_bins` of all classes pooled (``null`` in an empty bin).
    """
    calibration = None if method == "none" else fit_calibration(val_logits, val_labels, method=method)
    calibrated = _sigmoid(_logits(val_logits)) if calibration is None else calibration.probabilities(val_logits)
    thresholds = choose_thresholds(calibrated, val_labels, objective=objective)
    report = {
        "method": method, "threshold_objective": objective, "thresholds": thresholds.tolist(),
        "measured_on": "the known validation labels the calibration was fitted on (in-sample)",
        "original_sigmoid": calibration_errors(_sigmoid(_logits(val_logits_before)), val_labels, bins=bins),
        "cft_sigmoid": calibration_errors(_sigmoid(_logits(val_logits)), val_labels, bins=bins),
        "calibrated": calibration_errors(calibrated, val_labels, bins=bins),
        "fitted": None if calibration is None else calibration.as_dict(),
    }
    report["reliability"] = {"edges": np.linspace(0.0, 1.0, int(bins) + 1).tolist(), **{
        key: _json_bins(reliability_bins(p, val_labels, bins=bins))
        for key, p in (("original_sigmoid", _sigmoid(_logits(val_logits_before))),
                       ("cft_sigmoid", _sigmoid(_logits(val_logits))), ("calibrated", calibrated))}}
    return calibration, thresholds, report


# ----------------------------------------------------------------------------- fits


def _fit_platt(z, y) -> tuple[float, float]:
    """Maximum-likelihood ``sigmoid(a z + b)`` by Newton's method (a 2x2 system per step)."""
    a, b = 1.0, 0.0
    for _ in range(100):
        p = _sigmoid(a * z + b)
        g = np.array([((p - y) * z).sum(), (p - y).sum()])
        w = p * (1 - p) + 1e-12
        h = np.array([[(w * z * z).sum(), (w * z).sum()], [(w * z).sum(), w.sum()]])
        step = np.linalg.solve(h + 1e-9 * np.eye(2), g)
        # backtracking on the log loss keeps Newton stable on nearly separable classes
        t, loss = 1.0, _log_loss(a * z + b, y)
        while t > 1e-6 and _log_loss((a - t * step[0]) * z + (b - t * step[1]), y) > loss:
            t /= 2
        a, b = a - t * step[0], b - t * step[1]
        if np.abs(t * step).max() < 1e-10:
            break
    return float(a), float(b)


def _fit_temperature(z, y) -> float:
    """The scale ``1 / T > 0`` of ``sigmoid(z / T)`` that minimises the log loss (golden section on log T)."""
    from scipy.optimize import minimize_scalar

    result = minimize_scalar(lambda s: _log_loss(np.exp(s) * z, y), bounds=(-10.0, 10.0), method="bounded",
                             options={"xatol": 1e-10})
    return float(np.exp(result.x))


def _fit_isotonic(z, y) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(z, y)
    return np.asarray(iso.X_thresholds_, dtype=np.float64), np.asarray(iso.y_thresholds_, dtype=np.float64)


def _log_loss(t, y) -> float:
    # -[y log s(t) + (1 - y) log(1 - s(t))] = softplus(t) - y t, computed stably
    return float((np.logaddexp(0.0, t) - y * t).sum())


def _probabilities_and_labels(probabilities, labels, bins) -> tuple[np.ndarray, np.ndarray]:
    if int(bins) != bins or bins < 1:
        raise ConfigError(f"bins must be a positive integer, got {bins!r}")
    p, y = np.asarray(probabilities, dtype=np.float64), _labels(labels)
    if p.shape != y.shape:
        raise DataError(f"probabilities have shape {p.shape} and labels {y.shape}; expected the same (N, C)")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise DataError("probabilities must be finite and in [0, 1]")
    return p, y


def _bin_index(p, bins: int) -> np.ndarray:
    """Equal-width bin of each probability in [0, 1] (1.0 goes to the last bin)."""
    return np.minimum((p * bins).astype(np.int64), bins - 1)


def _json_bins(numbers: dict) -> dict:
    """:func:`reliability_bins` without its edges, as JSON lists (``None`` for an empty bin's NaN)."""
    return {"counts": numbers["counts"].tolist(),
            **{key: [None if np.isnan(v) else float(v) for v in numbers[key]]
               for key in ("mean_confidence", "fraction_positive")}}


def _errors(p, y, bins: int) -> dict:
    y = y.astype(np.float64)
    index = _bin_index(p, bins)
    count = np.bincount(index, minlength=bins)
    gap = np.abs(np.bincount(index, weights=y, minlength=bins) - np.bincount(index, weights=p, minlength=bins))
    nonempty = count > 0
    per_bin = gap[nonempty] / count[nonempty]
    return {"ece": float(gap.sum() / len(p)), "mce": float(per_bin.max()), "brier": float(((p - y) ** 2).mean()),
            "known": int(len(p))}


def _sigmoid(x):
    from scipy.special import expit

    return expit(x)


def _logits(logits, num_classes: int | None = None) -> np.ndarray:
    z = np.asarray(logits)
    if np.iscomplexobj(z) or z.dtype.kind not in "fiu":
        raise DataError(f"logits must be real numbers, got dtype {z.dtype}")
    z = z.astype(np.float64)
    if z.ndim != 2 or (num_classes is not None and z.shape[1] != num_classes):
        raise DataError(f"logits have shape {z.shape}; expected (N, {num_classes or 'C'})")
    if not np.isfinite(z).all():
        raise DataError("logits hold NaN or infinite values")
    return z


def _labels(labels) -> np.ndarray:
    return check_partial_labels(labels).astype(np.int64)
