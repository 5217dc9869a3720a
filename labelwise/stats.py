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
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from labelwise.errors import ConfigError

__all__ = ["Comparison", "compare", "summarize", "t_quantile"]

#: Verdicts of :attr:`Comparison.verdict`.
HELPS, HURTS, WITHIN_NOISE, ONE_SEED = "helps", "hurts", "within noise", "one seed: no interval"


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
        if self.seeds < 2:
            return ONE_SEED
        if self.low > 0:
            return HELPS
        if self.high < 0:
            return HURTS
        return WITHIN_NOISE

    def interval(self, digits: int = 2) -> str:
        """``[+0.68, +6.19]`` (or ``n/a`` for one seed)."""
        if self.seeds < 2:
            return "n/a"
        return f"[{self.low:+.{digits}f}, {self.high:+.{digits}f}]"

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
