"""Digit scenes: several real handwritten digits on a cluttered RGB canvas.

The digits are the 1,797 8x8 scans bundled with scikit-learn (``load_digits``, no download).
A scene is: a random background colour with a linear gradient; low-contrast clutter (line
strokes, fragments of other digits); ``K ~ U{min_digits..max_digits}`` digits, each upscaled
(bilinear) to a random height with aspect jitter, tinted with a colour that contrasts with the
background, placed so that no two boxes overlap by more than ``max_overlap_iou``; and Gaussian
pixel noise. The *main* digit (the single-label target) is the largest -- its height is at
least ``main_size_ratio`` times every other digit's -- and is drawn last, never occluded.

Boxes are ``[x1, y1, x2, y2]`` canvas pixels with exclusive ``x2, y2`` (a digit covering
columns 3..9 has ``x1=3, x2=10``), tight around the pixels the digit paints (upscaled
intensity above :data:`ALPHA_MIN`; weaker ones are not drawn).

Determinism: the source digits are split between train / val / test by a class-stratified
shuffle seeded by ``seed`` alone, so the splits use disjoint digit instances. Scene ``i`` of a
split has its own generator seeded by ``(seed, split, i)``, so it does not depend on how many
scenes are made; no global random state is used.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass

import numpy as np

from labelwise.data.render import ALPHA_MIN, render_scene  # noqa: F401  (ALPHA_MIN: part of this module's API)
from labelwise.errors import ConfigError

SPLITS = ("train", "val", "test")
NUM_CLASSES = 10
CLASS_NAMES = tuple(str(c) for c in range(NUM_CLASSES))



@dataclass(frozen=True)
class SceneConfig:
    """Difficulty knobs of the digit-scene generator (defaults: the field values below).

    Args:
        canvas_size: side of the square RGB canvas, in pixels.
        min_digits: fewest digits per scene (at least 1).
        max_digits: most digits per scene. A digit that fits nowhere within
            ``max_overlap_iou``, even shrunk to ``digit_size[0]``, is left out; with the
            defaults this never happened in 7,461 placements.
        digit_size: ``(low, high)`` range of digit heights in pixels (before the tight crop).
        aspect_jitter: digit width is its height times ``U(1 - j, 1 + j)``.
        main_size_ratio: the main digit's height is at least this times every other digit's.
        max_overlap_iou: largest IoU allowed between any two digit boxes (0 = no overlap).
        background_gradient: largest change of each background channel from the centre to
            an edge (0..255 units); 0 gives a flat background.
        clutter: most clutter items (strokes and digit fragments) per scene; the count is
            uniform in ``[0, clutter]``.
        clutter_contrast: largest opacity of a clutter item, in (0, 1].
        noise_std: standard deviation of the Gaussian pixel noise, in 0..255 units.
        background_max: largest value (0..255) of each channel of the background's base
            colour, so backgrounds are darker than the digits drawn on them.
        colour_jitter: largest deviation (0..255) of a channel from the grey level of the
            background and of each digit: colours are tinted greys, so shape, not colour, is
            the thing to learn.
        min_luminance_gap: smallest amount (0..255) by which a digit's luminance exceeds the
            background's: digits are always lighter than their background (a fixed polarity
            keeps shape, not colour, the thing to learn).
        min_contrast: smallest RGB distance (0..441) between a digit's colour and the
            background colour.
        source_fractions: fractions of the source digits of each class given to
            ``(train, val, test)``; they must sum to 1.
        num_train: number of training scenes.
        num_val: number of validation scenes.
        num_test: number of test scenes.
    """

    canvas_size: int = 64
    min_digits: int = 1
    max_digits: int = 3
    digit_size: tuple[int, int] = (20, 36)
    aspect_jitter: float = 0.1
    main_size_ratio: float = 1.2
    max_overlap_iou: float = 0.15
    background_max: float = 110.0
    colour_jitter: float = 40.0
    background_gradient: float = 20.0
    clutter: int = 3
    clutter_contrast: float = 0.35
    noise_std: float = 6.0
    min_contrast: float = 120.0
    min_luminance_gap: float = 60.0
    source_fractions: tuple[float, float, float] = (0.6, 0.15, 0.25)
    num_train: int = 5000
    num_val: int = 600
    num_test: int = 1000

    def __post_init__(self):
        _check_config(self)

    def num_images(self, split: str) -> int:
        """Number of scenes of ``split`` (``'train'``, ``'val'`` or ``'test'``)."""
        return getattr(self, f"num_{check_split(split)}")

    def to_dict(self) -> dict:
        """The config as a JSON-ready dict (tuples become lists)."""
        def plain(v):  # numpy scalars and tuples are not JSON
            return [plain(x) for x in v] if isinstance(v, (tuple, list)) else np.asarray(v).item()

        return {k: plain(v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> SceneConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ConfigError(f"unknown SceneConfig field(s) {unknown}; valid: {sorted(names)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


@dataclass(frozen=True, eq=False)
class Scene:
    """One generated scene.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB canvas.
        classes: ``(K,)`` int64 digit class of each object.
        boxes: ``(K, 4)`` int64 ``[x1, y1, x2, y2]`` per object, exclusive ``x2, y2``.
        main: index into ``classes`` / ``boxes`` of the main (largest, unoccluded) digit.
        sources: ``(K,)`` int64 index of each object's digit in ``load_digits()``.
    """

    image: np.ndarray
    classes: np.ndarray
    boxes: np.ndarray
    main: int
    sources: np.ndarray

    @property
    def main_class(self) -> int:
        """Class of the main digit (the single-label target)."""
        return int(self.classes[self.main])


def check_split(split: str) -> str:
    """Return ``split`` if it is one of :data:`SPLITS`, else raise :class:`ConfigError`."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    return split


def check_seed(seed) -> int:
    """Return ``seed`` if it is a non-negative int, else raise :class:`ConfigError`."""
    if not _is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


def source_split(seed: int, *, fractions=(0.6, 0.15, 0.25)) -> dict[str, np.ndarray]:
    """Split the ``load_digits()`` instances into disjoint train / val / test pools.

    Args:
        seed: seed of the class-stratified shuffle.
        fractions: share of each class's instances for ``(train, val, test)``.

    Returns:
        ``{split: (M_split,) int64 sorted indices into load_digits()}``; the three are disjoint
        and together cover every instance.
    """
    _, targets = _load_digits()
    rng = np.random.default_rng([check_seed(seed), 0x5C1])
    bounds = np.cumsum(fractions)[:2]
    pools = {s: [] for s in SPLITS}
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(targets == c))
        cuts = np.round(bounds * len(idx)).astype(int)
        for s, part in zip(SPLITS, np.split(idx, cuts)):
            pools[s].append(part)
    return {s: np.sort(np.concatenate(p)) for s, p in pools.items()}


def iter_scenes(config: SceneConfig, *, seed: int, split: str, start: int = 0, stop=None):
    """Yield the scenes ``start .. stop - 1`` of ``split`` (default: all of them).

    Args:
        config: the generator settings.
        seed: dataset seed; the same seed gives the same scenes, byte for byte.
        split: ``'train'``, ``'val'`` or ``'test'``.
        start: first scene index.
        stop: one past the last scene index; defaults to ``config.num_images(split)``.

    Yields:
        :class:`Scene` objects, in index order.
    """
    if not isinstance(config, SceneConfig):
        raise ConfigError(f"config must be a SceneConfig, got {type(config).__name__}")
    check_seed(seed)
    stop = config.num_images(split) if stop is None else stop
    if not (_is_int(start) and _is_int(stop) and 0 <= start <= stop):
        raise ConfigError(f"need ints 0 <= start <= stop, got start={start!r}, stop={stop!r}")
    images, targets = _load_digits()
    pool = source_split(seed, fractions=config.source_fractions)[split]
    split_id = SPLITS.index(split)
    for i in range(start, stop):
        rng = np.random.default_rng([int(seed), 0x5CE, split_id, i])
        yield Scene(**render_scene(config, rng, images, targets, pool))


def generate_scenes(config: SceneConfig, *, seed: int, split: str) -> list[Scene]:
    """Generate every scene of ``split``; see :func:`iter_scenes` and :class:`SceneConfig`."""
    return list(iter_scenes(config, seed=seed, split=split))


# ----------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=1)
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    """``(1797, 8, 8)`` float32 intensities in [0, 1] and ``(1797,)`` int64 classes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    images.setflags(write=False)
    targets = digits.target.astype(np.int64)
    targets.setflags(write=False)
    return images, targets


def _check_config(c: SceneConfig) -> None:
    """Raise :class:`ConfigError` naming the first invalid field, its value and the rule."""
    try:
        lo, hi = (float(v) for v in c.digit_size)
    except (TypeError, ValueError):
        lo, hi = -1.0, -1.0
    fr = c.source_fractions
    ints = ("canvas_size", "min_digits", "max_digits", "clutter", "num_train", "num_val",
            "num_test")
    rules = [(name, lambda n=name: _is_int(getattr(c, n)), "an int") for name in ints] + [
        ("canvas_size", lambda: c.canvas_size >= 8, ">= 8"),
        ("min_digits", lambda: 1 <= c.min_digits <= c.max_digits, "in [1, max_digits]"),
        ("digit_size", lambda: 4 <= lo <= hi <= c.canvas_size, "(low, high) in [4, canvas_size]"),
        ("aspect_jitter", lambda: 0 <= c.aspect_jitter < 0.5, "in [0, 0.5)"),
        ("main_size_ratio", lambda: 1 <= c.main_size_ratio <= hi / lo, "in [1, high / low]"),
        ("max_overlap_iou", lambda: 0 <= c.max_overlap_iou <= 1, "in [0, 1]"),
        ("background_max", lambda: 0 <= c.background_max <= 255, "in [0, 255]"),
        ("colour_jitter", lambda: 0 <= c.colour_jitter <= 255, "in [0, 255]"),
        ("min_luminance_gap", lambda: 0 <= c.min_luminance_gap <= 255, "in [0, 255]"),
        ("background_gradient", lambda: 0 <= c.background_gradient <= 255, "in [0, 255]"),
        ("clutter", lambda: c.clutter >= 0, ">= 0"),
        ("clutter_contrast", lambda: 0 < c.clutter_contrast <= 1, "in (0, 1]"),
        ("noise_std", lambda: c.noise_std >= 0, ">= 0"),
        ("min_contrast", lambda: 0 <= c.min_contrast <= 400, "in [0, 400]"),
        ("source_fractions", lambda: len(fr) == 3 and min(fr) > 0 and abs(sum(fr) - 1) < 1e-6,
         "3 positive numbers summing to 1"),
    ] + [(name, lambda n=name: getattr(c, n) >= 0, ">= 0") for name in ints[-3:]]
    for name, check, rule in rules:
        try:
            ok = bool(check())
        except TypeError:
            ok = False
        if not ok:
            raise ConfigError(f"SceneConfig.{name} must be {rule}, got {getattr(c, name)!r}")
    if c.max_digits * lo * lo * (1 - c.aspect_jitter) > 0.6 * c.canvas_size**2:
        raise ConfigError(
            f"SceneConfig: {c.max_digits} digits of height {lo:g} cannot be placed on a "
            f"{c.canvas_size}x{c.canvas_size} canvas; lower max_digits or digit_size"
        )


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)

