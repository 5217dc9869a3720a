"""Paired comparisons over seeds: mean ± std, the 95 % confidence interval of the change, a verdict.

Every quality table of labelwise compares a method with its baseline *on the same seeds*
(same initial weights, data order and augmentation draws within a seed), so the quantity of
interest is the per-seed difference ``method - baseline``. Its confidence interval is the
Student-t interval of the mean difference (a paired t-interval), and a method "helps" only
where that interval lies above zero::

    >>> c = compare([11, 12, 13, 14, 15], [10, 10, 10, 10, 10])
    >>> c.verdict
    'helps'
    >>> round(c.low, 2), round(c.high, 2)
    (1.04, 4.96)

The interval assumes the per-seed differences are roughly normal; with five seeds it is the
usual choice, and it is wide on purpose when the seeds disagree.

A single run has no seed spread; :func:`paired_bootstrap` gives the other half of the noise:
how much the change could move if the test images had been drawn again (both models scored on
the same resampled images). It does not cover seed-to-seed variation.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from labelwise.errors import ConfigError

__all__ = ["BootstrapInterval", "Comparison", "compare", "paired_bootstrap", "summarize", "t_quantile",
           "weighted_average_precision"]

#: Verdicts of :attr:`Comparison.verdict`.
HELPS, HURTS, WITHIN_NOISE, ONE_SEED = "helps", "hurts", "within noise", "one seed: no interval"


def _verdict(low: float, high: float) -> str:
    return HELPS if low > 0 else HURTS if high < 0 else WITHIN_NOISE


def _interval(low: float, high: float, digits: int) -> str:
    return f"[{low:+.{digits}f}, {high:+.{digits}f}]"


def t_quantile(q: float, df: int) -> float:
    """The ``q`` quantile of Student's t distribution with ``df`` degrees of freedom (scipy's)."""
    from scipy.stats import t  # scipy comes with scikit-learn, a dependency

    if not 0.0 < q < 1.0:
        raise ConfigError(f"q must be in (0, 1), got {q!r}")
    if int(df) != df or df < 1:
        raise ConfigError(f"df must be a positive integer, got {df!r}")
    return float(t.ppf(q, int(df)))


@dataclass(frozen=True)
class Comparison:
    """A method against its baseline on the same seeds.

    Attributes:
        method, baseline: the per-seed values.
        diff: ``method - baseline`` per seed.
        mean, std: mean and sample standard deviation (``ddof=1``) of ``diff``.
        low, high: the ``level`` confidence interval of the mean difference (NaN for one seed).
        level: the interval's coverage, 0.95 by default.
    """

    method: tuple
    baseline: tuple
    diff: tuple
    mean: float
    std: float
    low: float
    high: float
    level: float = 0.95

    @property
    def seeds(self) -> int:
        return len(self.diff)

    @property
    def verdict(self) -> str:
        """``'helps'`` (interval above 0), ``'hurts'`` (below 0), ``'within noise'``, or one seed."""
        return ONE_SEED if self.seeds < 2 else _verdict(self.low, self.high)

    def interval(self, digits: int = 2) -> str:
        """``[+0.68, +6.19]`` (or ``n/a`` for one seed)."""
        return "n/a" if self.seeds < 2 else _interval(self.low, self.high, digits)

    def row(self, digits: int = 2) -> dict:
        """The cells of a results table: baseline, method, change, interval, verdict."""
        return {"baseline": summarize(self.baseline, digits), "method": summarize(self.method, digits),
                "change": summarize(self.diff, digits, sign=True), "ci95": self.interval(digits),
                "verdict": self.verdict}

    def as_dict(self) -> dict:
        return {"method": list(self.method), "baseline": list(self.baseline), "diff": list(self.diff),
                "mean": self.mean, "std": self.std, "low": _json_float(self.low), "high": _json_float(self.high),
                "level": self.level, "seeds": self.seeds, "verdict": self.verdict}


def compare(method, baseline, *, level: float = 0.95) -> Comparison:
    """Pair ``method`` and ``baseline`` seed by seed and summarise the difference.

    Args:
        method, baseline: one value per seed, in the same seed order.
        level: coverage of the confidence interval.

    Raises:
        ConfigError: different lengths, no value, a non-finite value, or ``level`` outside (0, 1).
    """
    m, b = _values(method, "method"), _values(baseline, "baseline")
    if len(m) != len(b):
        raise ConfigError(f"method has {len(m)} values and baseline {len(b)}: a paired comparison needs one "
                          "value of each per seed")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1), got {level!r}")
    d = m - b
    mean = float(d.mean())
    if len(d) < 2:
        return Comparison(tuple(m), tuple(b), tuple(d), mean, 0.0, math.nan, math.nan, level)
    std = float(d.std(ddof=1))
    half = t_quantile(0.5 + level / 2, len(d) - 1) * std / math.sqrt(len(d))
    return Comparison(tuple(m.tolist()), tuple(b.tolist()), tuple(d.tolist()), mean, std, mean - half, mean + half,
                      level)


def summarize(values, digits: int = 2, *, sign: bool = False) -> str:
    """``mean ± std`` of ``values`` (sample std; ``± 0.00`` for one value)."""
    a = _values(values, "values")
    fmt = f"{'+' if sign else ''}.{digits}f"
    std = a.std(ddof=1) if len(a) > 1 else 0.0
    return f"{a.mean():{fmt}} ± {std:.{digits}f}"


def _values(values, name: str) -> np.ndarray:
    a = np.asarray(list(values), dtype=float).ravel()
    if a.size == 0:
        raise ConfigError(f"{name}: no values")
    if not np.isfinite(a).all():
        raise ConfigError(f"{name}: non-finite value in {a.tolist()}")
    return a


def _json_float(x: float):
    return None if math.isnan(x) else x


@dataclass(frozen=True)
class BootstrapInterval:
    """The change of a metric between two models scored on the same test samples, with its
    percentile bootstrap interval over resampled test sets.

    Attributes:
        delta: the change on the test set itself (method - baseline, metric units).
        low, high: the ``level`` percentile interval of the change over ``resamples`` resampled test sets.
    """

    delta: float
    low: float
    high: float
    level: float
    resamples: int

    @property
    def verdict(self) -> str:
        """``'helps'`` (interval above 0), ``'hurts'`` (below 0) or ``'within noise'``."""
        return _verdict(self.low, self.high)

    def interval(self, digits: int = 2) -> str:
        return _interval(self.low, self.high, digits)

    def as_dict(self) -> dict:
        return {"delta": self.delta, "low": self.low, "high": self.high, "level": self.level,
                "resamples": self.resamples, "verdict": self.verdict}


def weighted_average_precision(scores, labels, weights) -> np.ndarray:
    """Average precision of one class for several weightings of the same samples at once.

    Step-wise AP with tied scores grouped (scikit-learn's definition), each sample counted
    ``weights[b, i]`` times in weighting ``b``: with all weights 1 it equals
    :func:`sklearn.metrics.average_precision_score`.

    Args:
        scores: ``(N,)`` real scores; labels: ``(N,)`` 0 / 1; weights: ``(B, N)`` non-negative counts.

    Returns:
        ``(B,)`` float64; NaN for a weighting without a positive.
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    order = np.argsort(-scores, kind="mergesort")
    s, y, w = scores[order], labels[order], weights[:, order]
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]  # last index of each group of tied scores
    tp = np.cumsum(w * y, axis=1)[:, ends]
    seen = np.cumsum(w, axis=1)[:, ends]
    positives = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(seen > 0, tp / np.where(seen > 0, seen, 1), 0.0)
        recall_step = np.diff(np.concatenate([np.zeros_like(positives), tp], axis=1), axis=1) / positives
        ap = (recall_step * precision).sum(axis=1)
    return np.where(positives[:, 0] > 0, ap, np.nan)


def paired_bootstrap(method_scores, baseline_scores, labels, *, resamples: int = 1000, level: float = 0.95,
                     seed: int = 0) -> BootstrapInterval:
    """The change from ``baseline_scores`` to ``method_scores`` on the same test samples, with a
    paired percentile bootstrap interval over resampled test sets.

    The metric follows the labels: ``labels (N,)`` class ids -> top-1 accuracy (%); ``labels
    (N, C)`` 0 / 1 -> mAP (%) over the classes with a positive (AP as
    :func:`weighted_average_precision`). Each resample draws ``N`` test samples with
    replacement and scores both models on the same draw, so what the two share cancels.

    Raises:
        ConfigError: shapes that do not match, fewer than 2 samples, or ``level`` outside (0, 1).
    """
    m = np.asarray(method_scores, dtype=np.float64)
    b = np.asarray(baseline_scores, dtype=np.float64)
    y = np.asarray(labels)
    if m.shape != b.shape or m.ndim != 2 or y.shape[0] != m.shape[0] or y.ndim not in (1, 2):
        raise ConfigError(f"expected method and baseline scores (N, C) and labels (N,) or (N, C), got "
                          f"{m.shape}, {b.shape} and {y.shape}")
    if y.ndim == 2 and y.shape != m.shape:
        raise ConfigError(f"multi-label labels {y.shape} must have the scores' shape {m.shape}")
    if len(y) < 2:
        raise ConfigError("a bootstrap needs at least 2 test samples")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1), got {level!r}")
    n = len(y)
    rng = np.random.default_rng(seed)
    counts = np.vstack([np.ones(n), rng.multinomial(n, np.full(n, 1.0 / n), size=resamples)])
    if y.ndim == 1:
        gain = (m.argmax(1) == y).astype(float) - (b.argmax(1) == y).astype(float)
        deltas = 100.0 * counts @ gain / n
    else:
        ap = lambda s: np.stack([weighted_average_precision(s[:, c], y[:, c], counts)  # noqa: E731
                                 for c in range(y.shape[1])], axis=1)
        with warnings.catch_warnings():  # a resample may hold no positive of any class: NaN, dropped below
            warnings.simplefilter("ignore", RuntimeWarning)
            deltas = 100.0 * (np.nanmean(ap(m), axis=1) - np.nanmean(ap(b), axis=1))
        deltas = np.concatenate([deltas[:1], deltas[1:][~np.isnan(deltas[1:])]])
    low, high = np.quantile(deltas[1:], [(1 - level) / 2, (1 + level) / 2])
    return BootstrapInterval(float(deltas[0]), float(low), float(high), level, int(resamples))
