"""Label regimes: partial masking, label noise, verification flags, validation."""

import numpy as np
import pytest

from labelwise.data.regimes import (
    Regime,
    corrupt_labels,
    expand_regimes,
    make_regime_labels,
    mask_labels,
    presence_matrix,
    sample_verified,
)
from labelwise.errors import ConfigError


@pytest.fixture
def truth():
    rng = np.random.default_rng(0)
    multi = (rng.random((4000, 10)) < 0.25).astype(np.int8)
    main = rng.integers(0, 10, size=4000)
    multi[np.arange(4000), main] = 1
    return multi, main


def test_presence_matrix_marks_each_class_once():
    out = presence_matrix([np.array([3, 3, 7]), np.array([0])], num_classes=10)
    assert out.dtype == np.int8
    assert out.tolist() == [[0, 0, 0, 1, 0, 0, 0, 1, 0, 0], [1, 0, 0, 0, 0, 0, 0, 0, 0, 0]]


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_partial_keeps_a_fraction_p_and_never_changes_known_entries(truth, p):
    multi, _ = truth
    out = mask_labels(multi, p=p, seed=1)
    known = out != -1
    assert abs(known.mean() - p) < 0.015  # 40,000 entries: ~6 standard deviations
    assert np.array_equal(out[known], multi[known])
    assert abs(known[multi == 1].mean() - p) < 0.03  # positives and negatives hidden alike
    assert abs(known[multi == 0].mean() - p) < 0.03


def test_partial_regimes_are_nested_and_test_is_full(truth):
    multi, main = truth
    kw = dict(multilabel_truth=multi, main_truth=main, seed=5)
    low = make_regime_labels(Regime("partial", p=0.1), split="train", **kw)
    high = make_regime_labels(Regime("partial", p=0.3), split="train", **kw)
    assert ((low.labels != -1) <= (high.labels != -1)).all()
    assert np.array_equal(low.truth, multi)
    test = make_regime_labels(Regime("partial", p=0.1), split="test", **kw)
    assert np.array_equal(test.labels, multi) and not (test.labels == -1).any()


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_symmetric_noise_rate_and_targets(truth, rate):
    _, main = truth
    noisy = corrupt_labels(main, rate=rate, kind="symmetric", seed=2)
    flipped = noisy != main
    assert abs(flipped.mean() - rate) < 0.035
    offsets = (noisy[flipped] - main[flipped]) % 10
    assert offsets.min() >= 1  # never "flipped" to the same class
    assert len(np.unique(offsets)) == 9  # every other class is reachable


def test_pairflip_maps_c_to_c_plus_one_exactly(truth):
    _, main = truth
    noisy = corrupt_labels(main, rate=0.4, kind="pairflip", seed=2)
    flipped = noisy != main
    assert abs(flipped.mean() - 0.4) < 0.035
    assert np.array_equal(noisy[flipped], (main[flipped] + 1) % 10)


def test_scene_noise_by_hand():
    # image 0 holds 2 and 7 (main 2): a wrong label can only be 7; image 1 holds only its
    # own class: never corrupted; image 2 holds 1, 4, 9 (main 4): 1 or 9
    present = np.zeros((3, 10), dtype=np.int8)
    present[0, [2, 7]] = present[1, 5] = present[2, [1, 4, 9]] = 1
    main = np.array([2, 5, 4])
    # r = 2/3 with two eligible images of three (e = 2/3): every eligible image is corrupted
    noisy = corrupt_labels(main, rate=2 / 3, kind="scene", seed=0, present=present)
    assert noisy[0] == 7 and noisy[1] == 5 and noisy[2] in (1, 9)
    seen = {int(corrupt_labels(main, rate=2 / 3, kind="scene", seed=s, present=present)[2]) for s in range(40)}
    assert seen == {1, 9}  # both other classes reachable, never the main one or an absent one


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_scene_noise_names_a_present_class_at_rate_r_and_keeps_the_truth(truth, rate):
    multi, main = truth
    noisy = corrupt_labels(main, rate=rate, kind="scene", seed=2, present=multi)
    flipped = noisy != main
    assert abs(flipped.mean() - rate) < 0.035  # the overall share of wrong labels is r
    assert (multi[np.flatnonzero(flipped), noisy[flipped]] == 1).all()  # always a digit in the scene
    regime = Regime("noisy", noise="scene", rate=rate)
    out = make_regime_labels(regime, multilabel_truth=multi, main_truth=main, split="train", seed=0)
    assert np.array_equal(out.truth, main)
    wrong = out.labels != main
    assert (multi[np.flatnonzero(wrong), out.labels[wrong]] == 1).all()
    checked = out.verified != -1
    assert np.array_equal(out.verified[checked] == 1, out.labels[checked] == main[checked])


def test_scene_noise_is_nested_over_r(truth):
    multi, main = truth
    low = corrupt_labels(main, rate=0.2, kind="scene", seed=3, present=multi)
    high = corrupt_labels(main, rate=0.4, kind="scene", seed=3, present=multi)
    flipped = low != main
    assert np.array_equal(high[flipped], low[flipped])


def test_scene_noise_refuses_what_it_cannot_do():
    present = np.zeros((4, 10), dtype=np.int8)
    present[:, 3] = 1
    present[0, 8] = 1  # one image in four holds another class
    main = np.full(4, 3)
    with pytest.raises(ConfigError, match="needs the presence matrix"):
        corrupt_labels(main, rate=0.2, kind="scene", seed=0)
    with pytest.raises(ConfigError, match=r"present has shape \(4, 9\)"):
        corrupt_labels(main, rate=0.2, kind="scene", seed=0, present=present[:, :9])
    with pytest.raises(ConfigError, match="r=0.4 is impossible: only 25.0% of the images"):
        corrupt_labels(main, rate=0.4, kind="scene", seed=0, present=present)


def test_verified_flags_agree_with_truth(truth):
    _, main = truth
    noisy = corrupt_labels(main, rate=0.4, kind="symmetric", seed=3)
    flags = sample_verified(noisy, main, fraction=0.05, seed=4)
    checked = flags != -1
    assert checked.sum() == 200
    assert np.array_equal(flags[checked] == 1, noisy[checked] == main[checked])
    assert 0 < (flags == 0).sum() < 200


def test_noisy_regime_train_val_noisy_test_clean(truth):
    multi, main = truth
    regime = Regime("noisy", noise="pairflip", rate=0.2)
    kw = dict(multilabel_truth=multi, main_truth=main, seed=0, verified_fraction=0.1)
    for split in ("train", "val"):
        out = make_regime_labels(regime, split=split, **kw)
        assert np.array_equal(out.truth, main)
        assert abs((out.labels != main).mean() - 0.2) < 0.035
        assert (out.verified != -1).sum() == 400
        checked = out.verified != -1
        assert np.array_equal(out.verified[checked] == 1, out.labels[checked] == main[checked])
    test = make_regime_labels(regime, split="test", **kw)
    assert np.array_equal(test.labels, main) and (test.verified == -1).all()


def test_noisy_regimes_share_their_draws(truth):
    multi, main = truth
    kw = dict(multilabel_truth=multi, main_truth=main, split="train", seed=0)
    low = make_regime_labels(Regime("noisy", noise="symmetric", rate=0.2), **kw)
    high = make_regime_labels(Regime("noisy", noise="symmetric", rate=0.4), **kw)
    flipped_low = low.labels != main
    assert np.array_equal(low.labels[flipped_low], high.labels[flipped_low])
    assert np.array_equal(low.verified != -1, high.verified != -1)


def test_regime_names_round_trip():
    names = [
        g.name for g in expand_regimes(p=(0.1, 0.3), r=(0.2,), noise=("symmetric", "pairflip"))
    ]
    assert names == [
        "multilabel",
        "partial-p0.1",
        "partial-p0.3",
        "single",
        "noisy-symmetric-r0.2",
        "noisy-pairflip-r0.2",
    ]
    assert [Regime.from_name(n).name for n in names] == names


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: expand_regimes(p=(0.3, 1.5)), r"p must be in \[0, 1\], got 1.5"),
        (lambda: expand_regimes(r=(-0.1,)), r"r must be in \[0, 1\], got -0.1"),
        (lambda: mask_labels(np.zeros((2, 10)), p="half", seed=0), "p must be a number"),
        (
            lambda: sample_verified(np.zeros(3), np.zeros(3), fraction=2, seed=0),
            "verified_fraction.*2",
        ),
        (
            lambda: expand_regimes(("multilabel", "fuzzy")),
            "'fuzzy'.*multilabel, partial, single, noisy",
        ),
        (lambda: expand_regimes(noise=("uniform",)), "'uniform'.*symmetric, pairflip"),
        (
            lambda: corrupt_labels(np.zeros(3), rate=0.1, kind="asym", seed=0),
            "'asym'.*symmetric, pairflip",
        ),
        (lambda: Regime.from_name("partial"), "not a regime directory name"),
    ],
)
def test_bad_options_raise_config_error_naming_the_value(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_scene_noise_error_names_the_regime_and_split():
    multi = np.zeros((4, 10), dtype=np.int8)
    multi[:, 3] = 1
    main = np.full(4, 3)
    with pytest.raises(ConfigError, match=r"regime noisy-scene-r0.2, split val \(4 images\): scene noise at r=0.2 "
                                          r"is impossible: only 0.0% of the images"):
        make_regime_labels(Regime("noisy", noise="scene", rate=0.2), multilabel_truth=multi, main_truth=main,
                           split="val", seed=0)
