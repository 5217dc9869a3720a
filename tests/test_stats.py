"""Paired comparisons (labelwise.stats): hand-checked t-intervals and verdicts."""
import math

import pytest

from labelwise.errors import ConfigError
from labelwise.stats import compare, summarize, t_quantile


def test_t_quantiles_match_the_tables():
    # two-sided 95 % critical values of Student's t (any statistics table)
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-6)
    assert t_quantile(0.975, 4) == pytest.approx(2.776445, abs=1e-6)
    assert t_quantile(0.975, 30) == pytest.approx(2.042272, abs=1e-6)


def test_five_seed_interval_by_hand():
    # differences 1..5: mean 3, sample std sqrt(2.5), half-width t(0.975, 4) * std / sqrt(5)
    c = compare([11, 12, 13, 14, 15], [10, 10, 10, 10, 10])
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)
    assert c.diff == (1, 2, 3, 4, 5)
    assert c.mean == 3 and c.std == pytest.approx(math.sqrt(2.5))
    assert (c.low, c.high) == (pytest.approx(3 - half, abs=1e-6), pytest.approx(3 + half, abs=1e-6))
    assert c.verdict == "helps"
    assert c.interval() == "[+1.04, +4.96]"
    assert c.row()["change"] == "+3.00 ± 1.58"


def test_verdicts():
    assert compare([3, 5, 7], [1, 1, 1]).verdict == "within noise"  # [-0.97, +8.97]
    assert compare([1, 1, 1], [3, 4, 3.5]).verdict == "hurts"
    assert compare([2.0], [1.0]).verdict.startswith("one seed")
    assert compare([2.0], [1.0]).interval() == "n/a"


def test_pairing_matters():
    # the same values unpaired would be within noise; paired, every seed gains 1
    method, baseline = [61, 71, 81, 91], [60, 70, 80, 90]
    c = compare(method, baseline)
    assert c.std == 0 and c.low == c.high == 1 and c.verdict == "helps"


def test_summarize():
    assert summarize([1, 2, 3]) == "2.00 ± 1.00"
    assert summarize([2.5]) == "2.50 ± 0.00"
    assert summarize([-1, 1], 1, sign=True) == "+0.0 ± 1.4"


@pytest.mark.parametrize("args, message", [
    (([1, 2], [1]), "method has 2 values and baseline 1"),
    (([], []), "method: no values"),
    (([1, float("nan")], [1, 2]), "method: non-finite value"),
])
def test_bad_input(args, message):
    with pytest.raises(ConfigError, match=message):
        compare(*args)
    with pytest.raises(ConfigError, match="level must be in"):
        compare([1, 2], [1, 2], level=1.5)


def test_weighted_average_precision_by_hand_and_against_sklearn():
    import numpy as np
    from sklearn.metrics import average_precision_score

    from labelwise.stats import weighted_average_precision

    # scores 3, 2, 2, 1 with labels 1, 0, 1, 0: ties grouped -> recall 1/2 at precision 1, then 1/2 at 2/3
    ap = weighted_average_precision([3, 2, 2, 1], [1, 0, 1, 0], np.ones((1, 4)))
    assert ap[0] == pytest.approx(0.5 * 1 + 0.5 * 2 / 3)
    # weights are counts: the same as repeating the samples
    rng = np.random.default_rng(0)
    scores, labels = rng.integers(0, 6, 40).astype(float), rng.integers(0, 2, 40)
    counts = rng.integers(0, 3, (3, 40))
    for w in counts:
        idx = np.repeat(np.arange(40), w)
        assert weighted_average_precision(scores, labels, w[None])[0] == \
            pytest.approx(average_precision_score(labels[idx], scores[idx]))
    assert np.isnan(weighted_average_precision([1, 2], [0, 0], np.ones((1, 2)))[0])  # no positive


def test_paired_bootstrap_top1_and_map():
    import numpy as np

    from labelwise.stats import paired_bootstrap

    labels = np.array([0, 1, 2, 0])
    right = np.eye(3)[labels]
    wrong = np.eye(3)[(labels + 1) % 3]
    same = paired_bootstrap(right, right, labels)
    assert (same.delta, same.low, same.high, same.verdict) == (0.0, 0.0, 0.0, "within noise")
    better = paired_bootstrap(right, wrong, labels)  # every resample: 100 % against 0 %
    assert (better.delta, better.low, better.high, better.verdict) == (100.0, 100.0, 100.0, "helps")
    half = paired_bootstrap(np.vstack([right[:2], wrong[2:]]), wrong, labels, resamples=2000, seed=1)
    # 2 of 4 images gained: a resample holding neither (1/16 of them) shows no gain, so 4 images cannot tell
    assert (half.delta, half.low, half.high, half.verdict) == (50.0, 0.0, 100.0, "within noise")
    assert paired_bootstrap(wrong, right, labels).verdict == "hurts"
    multi = np.array([[1, 0], [0, 1], [1, 1], [0, 0]])
    perfect, reversed_ = multi + 0.1 * np.arange(4)[:, None], -multi.astype(float)
    m = paired_bootstrap(perfect, reversed_, multi)
    assert m.delta > 0 and m.as_dict()["verdict"] == m.verdict
    with pytest.raises(ConfigError, match="scores"):
        paired_bootstrap(right, right[:3], labels)
