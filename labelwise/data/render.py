"""Drawing one digit scene: background, clutter, placed and tinted digits, noise.

The generator's settings and determinism are documented in :mod:`labelwise.data.scenes`;
this module holds the pixel work.
"""
from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # annotations only: scenes imports this module
    from labelwise.data.scenes import SceneConfig

#: Upscaled digit intensities (0..1) at or below this are not drawn (``labelwise.data.scenes.ALPHA_MIN``).
ALPHA_MIN = 0.05
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601 luma weights
_MAX_TRIES = 60  # random positions tried per digit size
_SHRINK = 0.85  # a digit that does not fit is shrunk by this factor (down to digit_size[0])


@functools.lru_cache(maxsize=512)
def _bilinear_matrix(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out, n_in)`` float32 weights of 1-D bilinear resampling (half-pixel centres,
    edge clamped, the ``align_corners=False`` convention of PIL and torch)."""
    src = np.clip((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0, n_in - 1)
    lo = np.floor(src).astype(int)
    hi, frac = np.minimum(lo + 1, n_in - 1), src - lo
    m, rows = np.zeros((n_out, n_in), dtype=np.float32), np.arange(n_out)
    m[rows, lo] += 1 - frac
    m[rows, hi] += frac  # (rows, hi) pairs are unique, so += is safe
    m.setflags(write=False)
    return m


def _resize(patch: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D float32 array ``(h, w)`` to ``(height, width)``."""
    rows = _bilinear_matrix(height, patch.shape[0])
    cols = _bilinear_matrix(width, patch.shape[1])
    return rows @ patch @ cols.T


def _digit_alpha(digit: np.ndarray, height: int, c: SceneConfig, rng) -> np.ndarray:
    """Upscaled opacity map ``(h, w)`` of one 8x8 digit, thresholded and tight-cropped."""
    jitter = rng.uniform(1 - c.aspect_jitter, 1 + c.aspect_jitter)
    width = min(c.canvas_size, max(3, int(round(height * jitter))))
    alpha = _resize(digit, height, width)
    alpha[alpha <= ALPHA_MIN] = 0.0
    np.clip(alpha, 0.0, 1.0, out=alpha)
    rows, cols = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    return alpha[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _iou(boxes_a: np.ndarray, boxes_b: np.ndarray) -> np.ndarray:
    """IoU matrix ``(A, B)`` of ``[x1, y1, x2, y2]`` boxes ``(A, 4)`` and ``(B, 4)``."""
    a, b = boxes_a[:, None, :], boxes_b[None, :, :]
    ix = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    iy = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return ix * iy / (area_a + area_b - ix * iy)


def _place(digit, height: float, low: float, placed: np.ndarray, c: SceneConfig, rng):
    """Position a digit among the ``placed (M, 4)`` boxes, shrinking it when it does not fit.

    Returns ``(box (4,), alpha (h, w))``, or ``None`` when even height ``low`` fails.
    """
    size = c.canvas_size
    while True:
        alpha = _digit_alpha(digit, int(round(height)), c, rng)
        h, w = alpha.shape
        xy = rng.integers(0, [size - w + 1, size - h + 1], size=(_MAX_TRIES, 2))
        boxes = np.concatenate([xy, xy + [w, h]], axis=1)
        if len(placed) == 0:
            return boxes[0], alpha
        ok = _iou(boxes, placed).max(axis=1) <= c.max_overlap_iou
        if ok.any():
            return boxes[int(np.argmax(ok))], alpha
        if height <= low:
            return None
        height = max(low, height * _SHRINK)


def _luminance(colour: np.ndarray) -> float:
    return float(np.dot(_LUMA, colour))


def _tinted_grey(level: float, jitter: float, rng) -> np.ndarray:
    return np.clip(level + rng.uniform(-jitter, jitter, size=3), 0, 255)


def _colour_far_from(background: np.ndarray, min_dist: float, min_gap: float, jitter: float, rng) -> np.ndarray:
    """A tinted grey at least ``min_dist`` from ``background`` and ``min_gap`` lighter."""
    floor = _luminance(background) + min_gap
    for _ in range(100):
        colour = _tinted_grey(rng.uniform(floor, 255), jitter, rng)
        if np.linalg.norm(colour - background) >= min_dist and _luminance(colour) >= floor:
            return colour
    return np.full(3, 255.0)  # white: the lightest colour there is


def _blend(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray, x: int, y: int) -> None:
    """Paint ``colour (3,)`` with opacity ``alpha (h, w)`` at ``(x, y)`` of ``canvas (3, H, W)``."""
    h, w = alpha.shape
    for ch in range(3):  # channel-first: contiguous inner loops are much faster than (..., 3)
        region = canvas[ch, y : y + h, x : x + w]
        region += alpha * (np.float32(colour[ch]) - region)


def _draw_stroke(canvas: np.ndarray, rng, colour: np.ndarray, opacity: float) -> None:
    """A straight line 1 or 2 pixels wide between two random points (possibly off-canvas)."""
    size = canvas.shape[1]
    (x0, y0), (x1, y1) = rng.uniform(-size / 4, size * 1.25, size=(2, 2))
    width = int(rng.integers(1, 3))
    t = np.linspace(0.0, 1.0, int(np.hypot(x1 - x0, y1 - y0)) + 2)
    xs, ys = np.rint(x0 + t * (x1 - x0)).astype(int), np.rint(y0 + t * (y1 - y0)).astype(int)
    if width == 2:  # thicken across the main direction
        dx, dy = (0, 1) if abs(x1 - x0) >= abs(y1 - y0) else (1, 0)
        xs, ys = np.concatenate([xs, xs + dx]), np.concatenate([ys, ys + dy])
    keep = (xs >= 0) & (xs < size) & (ys >= 0) & (ys < size)
    if not keep.any():
        return
    xs, ys = xs[keep], ys[keep]
    x, y = xs.min(), ys.min()
    alpha = np.zeros((ys.max() - y + 1, xs.max() - x + 1), dtype=np.float32)
    alpha[ys - y, xs - x] = opacity
    _blend(canvas, alpha, colour, int(x), int(y))


def _add_clutter(canvas: np.ndarray, c: SceneConfig, rng, images, pool) -> None:
    """Low-contrast strokes and digit fragments, ``U{0..clutter}`` of them."""
    size = c.canvas_size
    for _ in range(int(rng.integers(0, c.clutter + 1))):
        colour = rng.uniform(0, 255, size=3)
        opacity = rng.uniform(0.3, 1.0) * c.clutter_contrast
        if rng.random() < 0.5:  # a random stroke
            _draw_stroke(canvas, rng, colour, opacity)
        else:  # a fragment (a quarter at most) of a digit from the same split
            digit = images[pool[int(rng.integers(len(pool)))]]
            fh, fw = (int(v) for v in rng.integers(3, 5, 2))
            fy, fx = (int(v) for v in rng.integers(0, 8 - np.array([fh, fw]) + 1))
            frag = digit[fy : fy + fh, fx : fx + fw]
            scale = rng.uniform(c.digit_size[0], c.digit_size[1]) / 8.0
            h, w = (max(2, min(size, int(round(v * scale)))) for v in (fh, fw))
            alpha = np.clip(_resize(frag, h, w), 0, 1) * opacity
            x, y = int(rng.integers(0, size - w + 1)), int(rng.integers(0, size - h + 1))
            _blend(canvas, alpha, colour, x, y)


def render_scene(c, rng, images: np.ndarray, targets: np.ndarray, pool: np.ndarray) -> dict:
    """Draw one scene: background, clutter, digits (main last, on top), noise.

    Args:
        c: the :class:`~labelwise.data.scenes.SceneConfig`.
        rng: the scene's own ``numpy.random.Generator``.
        images: ``(S, 8, 8)`` source digits in [0, 1]; ``targets``: their ``(S,)`` classes.
        pool: indices of the source digits this split may use.

    Returns:
        The fields of a :class:`~labelwise.data.scenes.Scene`.
    """
    size = c.canvas_size
    lo, hi = c.digit_size
    background = _tinted_grey(rng.uniform(0, c.background_max), c.colour_jitter, rng).astype(np.float32)
    ramp = np.linspace(-1.0, 1.0, size, dtype=np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    gradient = cos * ramp[None, :] + sin * ramp[:, None]
    tilt = rng.uniform(-1, 1, size=3).astype(np.float32) * np.float32(c.background_gradient)
    canvas = background[:, None, None] + tilt[:, None, None] * gradient[None]  # (3, H, W)
    np.clip(canvas, 0, 255, out=canvas)
    _add_clutter(canvas, c, rng, images, pool)

    k = int(rng.integers(c.min_digits, c.max_digits + 1))
    sources = pool[rng.integers(0, len(pool), size=k)]
    main_h = rng.uniform(min(hi, lo * c.main_size_ratio), hi)
    placed = []  # (box, alpha, source), main digit first
    for j, src in enumerate(sources):
        height = main_h if j == 0 else rng.uniform(lo, max(lo, main_h / c.main_size_ratio))
        boxes = np.array([b for b, _, _ in placed], dtype=np.int64).reshape(-1, 4)
        result = _place(images[src], height, main_h if j == 0 else lo, boxes, c, rng)
        if result is not None:  # a digit that fits nowhere, even shrunk, is left out (rare)
            placed.append((*result, src))

    colours = [_colour_far_from(background, c.min_contrast, c.min_luminance_gap, c.colour_jitter, rng)
               for _ in placed]
    for (box, alpha, _), colour in list(zip(placed, colours))[::-1]:  # main digit drawn last
        _blend(canvas, alpha, colour, int(box[0]), int(box[1]))
    if c.noise_std > 0:
        canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(c.noise_std)
    image = np.clip(np.rint(canvas), 0, 255).astype(np.uint8).transpose(1, 2, 0)

    order = rng.permutation(len(placed))  # objects are stored in random order
    srcs = np.array([placed[o][2] for o in order], dtype=np.int64)
    return dict(
        image=np.ascontiguousarray(image),
        classes=targets[srcs].copy(),
        boxes=np.array([placed[o][0] for o in order], dtype=np.int64).reshape(-1, 4),
        main=int(np.flatnonzero(order == 0)[0]),
        sources=srcs,
    )
