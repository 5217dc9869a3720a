"""The digit-scene generator: determinism, geometry, source disjointness, validation."""

import numpy as np
import pytest

from labelwise.data.scenes import SPLITS, SceneConfig, generate_scenes, iter_scenes, source_split
from labelwise.errors import ConfigError

SMALL = SceneConfig(num_train=50, num_val=50, num_test=50)


def test_same_seed_gives_identical_scenes_and_other_seed_differs():
    a = generate_scenes(SMALL, seed=3, split="train")
    b = generate_scenes(SMALL, seed=3, split="train")
    c = generate_scenes(SMALL, seed=4, split="train")
    assert len(a) == len(b) == 50
    for x, y in zip(a, b):
        assert x.image.tobytes() == y.image.tobytes()
        assert np.array_equal(x.boxes, y.boxes) and np.array_equal(x.classes, y.classes)
        assert x.main == y.main
    assert sum(x.image.tobytes() != z.image.tobytes() for x, z in zip(a, c)) == 50


def test_scene_does_not_depend_on_how_many_are_generated():
    first = list(iter_scenes(SMALL, seed=0, split="val", stop=5))
    window = list(iter_scenes(SMALL, seed=0, split="val", start=3, stop=5))
    assert first[3].image.tobytes() == window[0].image.tobytes()
    assert first[4].image.tobytes() == window[1].image.tobytes()


def test_scene_contents_follow_the_config():
    from sklearn.datasets import load_digits

    targets = load_digits().target
    scenes = generate_scenes(SMALL, seed=0, split="test")
    counts = [len(s.classes) for s in scenes]
    assert min(counts) >= SMALL.min_digits and max(counts) <= SMALL.max_digits
    assert len(set(counts)) > 1
    for s in scenes:
        assert s.image.shape == (64, 64, 3) and s.image.dtype == np.uint8
        assert np.array_equal(s.classes, targets[s.sources])
        assert s.boxes.shape == (len(s.classes), 4)
        assert (s.boxes[:, :2] >= 0).all() and (s.boxes[:, 2:] <= 64).all()
        assert (s.boxes[:, 2:] > s.boxes[:, :2]).all()
        heights = s.boxes[:, 3] - s.boxes[:, 1]
        assert heights[s.main] == heights.max()
        assert s.main_class == s.classes[s.main]


def test_boxes_are_tight_around_the_digit_pixels():
    clean = SceneConfig(
        clutter=0,
        noise_std=0.0,
        background_gradient=0.0,
        max_overlap_iou=0.0,
        num_train=50,
        num_val=1,
        num_test=1,
    )
    for s in generate_scenes(clean, seed=1, split="train"):
        flat = s.image.reshape(-1, 3)
        colours, freq = np.unique(flat, axis=0, return_counts=True)
        ink = (s.image != colours[freq.argmax()]).any(
            axis=2
        )  # (H, W) pixels differing from the background
        inside = np.zeros_like(ink)
        for x1, y1, x2, y2 in s.boxes:
            inside[y1:y2, x1:x2] = True
            box_ink = ink[y1:y2, x1:x2]
            # every edge row / column of the box holds digit pixels (the box is tight)
            assert (
                box_ink[0].any()
                and box_ink[-1].any()
                and box_ink[:, 0].any()
                and box_ink[:, -1].any()
            )
        assert not (ink & ~inside).any()  # nothing is drawn outside the boxes


def test_source_digits_are_disjoint_between_splits():
    pools = source_split(0, fractions=SMALL.source_fractions)
    assert sum(len(p) for p in pools.values()) == 1797
    assert len(np.unique(np.concatenate(list(pools.values())))) == 1797
    used = {
        s: set(np.concatenate([x.sources for x in generate_scenes(SMALL, seed=0, split=s)]))
        for s in SPLITS
    }
    for s in SPLITS:
        assert used[s] <= set(pools[s].tolist())
    assert (
        not used["train"] & used["val"]
        and not used["train"] & used["test"]
        and not used["val"] & used["test"]
    )


@pytest.mark.parametrize(
    "kwargs, word",
    [
        (dict(min_digits=3, max_digits=2), "min_digits"),
        (dict(digit_size=(16, 80)), "digit_size"),
        (dict(max_overlap_iou=1.5), "max_overlap_iou"),
        (dict(source_fractions=(0.5, 0.5, 0.5)), "source_fractions"),
        (dict(num_train=-1), "num_train"),
        (dict(max_digits=40), "cannot be placed"),
    ],
)
def test_invalid_config_is_rejected_with_its_name(kwargs, word):
    with pytest.raises(ConfigError, match=word):
        SceneConfig(**kwargs)


def test_unknown_split_names_valid_choices():
    with pytest.raises(ConfigError, match="'dev'.*train, val, test"):
        generate_scenes(SMALL, seed=0, split="dev")


def test_config_round_trips_through_dict():
    cfg = SceneConfig(num_train=7, digit_size=(12, 20))
    assert SceneConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="bogus"):
        SceneConfig.from_dict({"bogus": 1})
