"""Label regimes: the imperfect-label settings built from one set of digit scenes.

Every regime is a pure function of the clean truth of a split and a seed:

* ``multilabel`` -- full presence labels ``(N, 10)`` of 1 / 0.
* ``partial`` (``p``) -- each entry of the multilabel matrix is kept with probability ``p`` and
  otherwise set to -1 (unknown); train and val are partial, test is full.
* ``single`` -- the class of each scene's main digit, ``(N,)`` (other digits are present).
* ``noisy`` (``kind``, ``r``) -- single labels corrupted with probability ``r`` on train and val:
  ``symmetric`` replaces a label by a uniformly random *other* class, ``pairflip`` maps
  ``c -> (c + 1) % 10``, and ``scene`` (content-tied noise, the multi-object confusion of web
  data) replaces it by *another digit class present in the same scene*. A random ``verified_fraction`` of train and of val is verified:
  flag 1 = the noisy label is correct, 0 = it is wrong, -1 = not verified. Test is clean.

Regimes of one kind share their random draws (the seed depends on the kind, not on ``p`` or
``r``), so they are nested: the entries known at ``p=0.1`` are also known at ``p=0.3``, the
labels flipped at ``r=0.2`` are also flipped (to the same class) at ``r=0.4``, and every noisy
regime verifies the same samples.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

import numpy as np

from labelwise.errors import ConfigError
from labelwise.labels import NEGATIVE, POSITIVE, UNKNOWN, check_probability

REGIME_KINDS = ("multilabel", "partial", "single", "noisy")
NOISE_KINDS = ("symmetric", "pairflip", "scene")
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2}


def check_noise_kind(kind: str) -> str:
    """Return ``kind`` if it is one of :data:`NOISE_KINDS`, else raise :class:`ConfigError`."""
    if kind not in NOISE_KINDS:
        raise ConfigError(f"unknown noise kind {kind!r}; valid kinds: {', '.join(NOISE_KINDS)}")
    return kind


@dataclass(frozen=True)
class Regime:
    """One label regime.

    Args:
        kind: one of :data:`REGIME_KINDS`.
        p: probability that a label entry is kept (``partial`` only).
        rate: probability that a label is corrupted (``noisy`` only).
        noise: one of :data:`NOISE_KINDS` (``noisy`` only).
    """

    kind: str
    p: float | None = None
    rate: float | None = None
    noise: str | None = None

    def __post_init__(self):
        if self.kind not in REGIME_KINDS:
            raise ConfigError(
                f"unknown regime {self.kind!r}; valid regimes: {', '.join(REGIME_KINDS)}"
            )
        if self.kind == "partial":
            object.__setattr__(self, "p", check_probability(self.p, name="p"))
        elif self.p is not None:
            raise ConfigError(
                f"p is only used by the 'partial' regime, got p={self.p!r} for {self.kind!r}"
            )
        if self.kind == "noisy":
            object.__setattr__(self, "rate", check_probability(self.rate, name="r"))
            check_noise_kind(self.noise)
        elif self.rate is not None or self.noise is not None:
            raise ConfigError(f"r and noise are only used by the 'noisy' regime, not {self.kind!r}")

    @property
    def name(self) -> str:
        """Directory name: ``multilabel``, ``partial-p0.3``, ``single``, ``noisy-pairflip-r0.2``."""
        if self.kind == "partial":
            return f"partial-p{self.p:g}"
        if self.kind == "noisy":
            return f"noisy-{self.noise}-r{self.rate:g}"
        return self.kind

    @property
    def is_single_label(self) -> bool:
        """True for ``single`` and ``noisy`` (one class per image), False for multi-label."""
        return self.kind in ("single", "noisy")

    @classmethod
    def from_name(cls, name: str) -> Regime:
        """Parse a directory name made by :attr:`name`; raise :class:`ConfigError` otherwise."""
        if name in ("multilabel", "single"):
            return cls(name)
        m = re.fullmatch(r"partial-p([0-9.eE+-]+)", name)
        if m:
            return cls("partial", p=float(m.group(1)))
        m = re.fullmatch(r"noisy-([a-z]+)-r([0-9.eE+-]+)", name)
        if m:
            return cls("noisy", noise=m.group(1), rate=float(m.group(2)))
        raise ConfigError(
            f"{name!r} is not a regime directory name; expected one of multilabel, single, "
            "partial-p<P>, noisy-<symmetric|pairflip|scene>-r<R>"
        )


@dataclass(frozen=True, eq=False)
class RegimeLabels:
    """The labels of one regime on one split.

    Attributes:
        labels: the labels a method trains on -- ``(N, C)`` int8 of 1/0/-1 for multi-label
            regimes, ``(N,)`` int64 class ids for single-label regimes.
        truth: the clean labels, same shape and dtype as ``labels``.
        verified: ``(N,)`` int8 verification flags (1 = label correct, 0 = wrong,
            -1 = not verified) for ``noisy`` regimes, else ``None``.
    """

    labels: np.ndarray
    truth: np.ndarray
    verified: np.ndarray | None = None


def expand_regimes(
    kinds=REGIME_KINDS, *, p=(0.1, 0.3, 0.5), r=(0.2, 0.4), noise=NOISE_KINDS
) -> list[Regime]:
    """Turn regime kinds and their parameter grids into :class:`Regime` objects.

    Args:
        kinds: regime kinds, each one of :data:`REGIME_KINDS`.
        p: keep-probabilities, one ``partial`` regime each.
        r: noise rates; one ``noisy`` regime per ``(noise kind, rate)`` pair.
        noise: noise kinds, each one of :data:`NOISE_KINDS`.

    Returns:
        The regimes in the order of ``kinds`` (then ``noise``, then ``p`` / ``r``), without
        duplicates.

    Raises:
        ConfigError: unknown kind or noise kind, or ``p`` / ``r`` outside [0, 1].
    """
    kinds, p, r, noise = (_as_tuple(v) for v in (kinds, p, r, noise))
    for kind in kinds:
        if kind not in REGIME_KINDS:
            raise ConfigError(f"unknown regime {kind!r}; valid regimes: {', '.join(REGIME_KINDS)}")
    p = [check_probability(v, name="p") for v in p]
    r = [check_probability(v, name="r") for v in r]
    noise = [check_noise_kind(k) for k in noise]
    out = []
    for kind in kinds:
        if kind == "partial":
            out += [Regime("partial", p=v) for v in p]
        elif kind == "noisy":
            out += [Regime("noisy", noise=k, rate=v) for k in noise for v in r]
        else:
            out.append(Regime(kind))
    return list(dict.fromkeys(out))


def presence_matrix(classes_per_image, *, num_classes: int = 10) -> np.ndarray:
    """Multi-label truth from the object classes of each image.

    Args:
        classes_per_image: length-N sequence of int arrays, the classes of each image's objects.
        num_classes: ``C``.

    Returns:
        ``(N, C)`` int8, 1 where the class occurs in the image, else 0.
    """
    out = np.full((len(classes_per_image), num_classes), NEGATIVE, dtype=np.int8)
    for i, classes in enumerate(classes_per_image):
        out[i, np.asarray(classes, dtype=np.int64)] = POSITIVE
    return out


def mask_labels(labels: np.ndarray, *, p: float, seed) -> np.ndarray:
    """Keep each entry of ``labels (N, C)`` with probability ``p``, else set it to -1.

    Args:
        labels: ``(N, C)`` full labels of 1 / 0.
        p: probability that an entry stays known.
        seed: seed (int or sequence of ints) of the Bernoulli draws.

    Returns:
        ``(N, C)`` int8 of 1 / 0 / -1.
    """
    p = check_probability(p, name="p")
    labels = np.asarray(labels, dtype=np.int8)
    keep = np.random.default_rng(seed).random(labels.shape) < p
    return np.where(keep, labels, np.int8(UNKNOWN)).astype(np.int8)


def corrupt_labels(
    labels: np.ndarray, *, rate: float, kind: str, seed, num_classes: int = 10, present=None
) -> np.ndarray:
    """Flip each class label with probability ``rate``.

    Args:
        labels: ``(N,)`` clean class ids in ``[0, num_classes)``.
        rate: probability that a label is corrupted (for ``'scene'``: the expected share of
            all labels that end up wrong).
        kind: ``'symmetric'`` (a uniformly random other class), ``'pairflip'``
            (``c -> (c + 1) % num_classes``) or ``'scene'`` (a uniformly random other class
            *present in the same image*, from ``present``). Under ``'scene'`` only images that
            hold another class can be corrupted; each of them is corrupted with probability
            ``rate / e``, where ``e`` is their share, so that a share ``rate`` of all labels is
            wrong in expectation.
        seed: seed (int or sequence of ints) of the draws.
        num_classes: ``C``.
        present: ``(N, C)`` presence matrix of 1 / 0 (see :func:`presence_matrix`); needed by
            ``'scene'`` only.

    Returns:
        ``(N,)`` int64 noisy labels; a corrupted label always differs from the clean one (and,
        under ``'scene'``, is a class present in the image).

    Raises:
        ConfigError: ``'scene'`` without ``present``, a ``present`` of another shape, or a
            ``rate`` larger than the share of images that hold another class.
    """
    rate = check_probability(rate, name="r")
    kind = check_noise_kind(kind)
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    if kind == "scene":
        return _scene_noise(labels, rate=rate, rng=rng, present=present, num_classes=num_classes)
    flip = rng.random(labels.shape) < rate
    offset = rng.integers(1, num_classes, size=labels.shape) if kind == "symmetric" else 1
    return np.where(flip, (labels + offset) % num_classes, labels)


def _scene_noise(labels, *, rate, rng, present, num_classes) -> np.ndarray:
    if present is None:
        raise ConfigError("noise kind 'scene' needs the presence matrix of each image (present=...)")
    present = np.asarray(present)
    if present.shape != (len(labels), num_classes):
        raise ConfigError(f"present has shape {present.shape}; expected {(len(labels), num_classes)} "
                          "(one row of 1 / 0 per label)")
    others = present.astype(bool).copy()
    others[np.arange(len(labels)), labels] = False  # the main digit's own class is not a wrong label
    count = others.sum(axis=1)
    eligible = count > 0
    share = float(eligible.mean()) if len(labels) else 0.0
    u, pick = rng.random(len(labels)), rng.random(len(labels))  # drawn for every image: nested over r
    if rate > share:
        raise ConfigError(f"scene noise at r={rate:g} is impossible: only {share:.1%} of the images hold a digit "
                          "of another class")
    flip = eligible & (u < (rate / share if share else 0.0))
    # the k-th other class present, k uniform in [0, count)
    k = np.minimum((pick * count).astype(np.int64), np.maximum(count - 1, 0))
    cumulative = np.cumsum(others, axis=1)
    chosen = np.argmax(cumulative > k[:, None], axis=1)
    return np.where(flip, chosen, labels).astype(np.int64)


def sample_verified(noisy: np.ndarray, truth: np.ndarray, *, fraction: float, seed) -> np.ndarray:
    """Verify a random subset of the samples: is the noisy label correct?

    Args:
        noisy: ``(N,)`` noisy class ids.
        truth: ``(N,)`` clean class ids.
        fraction: share of the samples verified (``round(fraction * N)`` of them).
        seed: seed (int or sequence of ints) choosing the subset.

    Returns:
        ``(N,)`` int8: 1 = verified and correct, 0 = verified and wrong, -1 = not verified.
    """
    fraction = check_probability(fraction, name="verified_fraction")
    noisy, truth = np.asarray(noisy), np.asarray(truth)
    n = len(noisy)
    chosen = np.random.default_rng(seed).permutation(n)[: int(round(fraction * n))]
    flags = np.full(n, UNKNOWN, dtype=np.int8)
    flags[chosen] = (noisy[chosen] == truth[chosen]).astype(np.int8)
    return flags


def make_regime_labels(
    regime: Regime,
    *,
    multilabel_truth: np.ndarray,
    main_truth: np.ndarray,
    split: str,
    seed: int,
    verified_fraction: float = 0.05,
) -> RegimeLabels:
    """Build the labels of ``regime`` on one split.

    Args:
        regime: the regime.
        multilabel_truth: ``(N, C)`` presence labels of 1 / 0 (see :func:`presence_matrix`).
        main_truth: ``(N,)`` class of each image's main digit.
        split: ``'train'``, ``'val'`` or ``'test'``; test labels are always clean and full.
        seed: dataset seed.
        verified_fraction: share of train and of val that is verified (noisy regimes).

    Returns:
        :class:`RegimeLabels`.
    """
    verified_fraction = check_probability(verified_fraction, name="verified_fraction")
    if split not in _SPLIT_IDS:
        raise ConfigError(f"unknown split {split!r}; valid splits: {', '.join(_SPLIT_IDS)}")
    multi = np.asarray(multilabel_truth, dtype=np.int8)
    main = np.asarray(main_truth, dtype=np.int64)
    test = split == "test"
    if regime.kind == "multilabel":
        return RegimeLabels(multi.copy(), multi)
    if regime.kind == "partial":
        labels = (
            multi.copy()
            if test
            else mask_labels(multi, p=regime.p, seed=_seed(seed, "partial", split))
        )
        return RegimeLabels(labels, multi)
    if regime.kind == "single":
        return RegimeLabels(main.copy(), main)
    num_classes = multi.shape[1]
    if test:
        return RegimeLabels(main.copy(), main, np.full(len(main), UNKNOWN, dtype=np.int8))
    try:
        noisy = corrupt_labels(
            main,
            rate=regime.rate,
            kind=regime.noise,
            seed=_seed(seed, f"noisy-{regime.noise}", split),
            num_classes=num_classes,
            present=multi,
        )
    except ConfigError as exc:
        raise ConfigError(f"regime {regime.name}, split {split} ({len(main)} images): {exc}") from None
    flags = sample_verified(
        noisy, main, fraction=verified_fraction, seed=_seed(seed, "verified", split)
    )
    return RegimeLabels(noisy, main, flags)


def _as_tuple(value) -> tuple:
    return (value,) if isinstance(value, (str, int, float, np.generic)) else tuple(value)


def _seed(seed: int, stream: str, split: str) -> list[int]:
    """A seed sequence for one random stream of one split (stable across Python runs)."""
    return [int(seed), zlib.crc32(stream.encode()), _SPLIT_IDS[split]]
