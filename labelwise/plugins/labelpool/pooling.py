"""LabelPooling: the soft target of a random crop, pooled from a top-k label map.

Yun et al., "Re-labeling ImageNet: from Single to Multi-Labels, from Global to Localized
Labels", CVPR 2021. The target of a crop is ``softmax(RoIAlign_1x1(dense_map, crop_box))``
where ``dense_map (C, h, w)`` holds a location's top-k logits at their class ids and **0**
everywhere else.

A 1x1 RoIAlign is a fixed weighted sum of map cells: its weights factor into a row part and a
column part (every sample point is bilinear, and the sample grid is a Cartesian product), so
the pooled logit of class ``c`` is ``sum_{i,j,k: ids[k,i,j]=c} wy[i] * wx[j] * scores[k,i,j]``.
:func:`pool_label_maps` accumulates exactly that from the top-k entries, in
``O(B * k * h * w)``, instead of building the ``(B, C, h, w)`` map torchvision's ``roi_align``
needs (:func:`pool_label_maps_dense`, kept as the reference the tests and benchmarks compare
against). The weights reproduce torchvision's CPU kernel (``aligned=True``,
``sampling_ratio=-1``, adaptive sample grid of ``ceil(box size)`` points per axis) step by
step, in float32.

Boxes are **normalised** ``(x1, y1, x2, y2)``: fractions of the original image's width and
height (a crop ``(top, left, height, width)`` of an ``H x W`` image is
``(left / W, top / H, (left + width) / W, (top + height) / H)``, see
:func:`crop_to_box`). They are scaled by the map's ``(w, h)`` before pooling.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from labelwise.errors import ConfigError, DataError

#: ``"xy"``: the geometrically correct order (default). ``"reference"``: the order of
#: naver-ai/relabel_imagenet, which passes ``(top/H, left/W, bottom/H, right/W)`` into
#: roi_align's ``(x1, y1, x2, y2)`` slots, i.e. pools the crop mirrored across the map's
#: diagonal; use it only to reproduce results obtained with label maps and code from there.
COORD_ORDERS = ("xy", "reference")


def crop_to_box(top, left, height, width, image_height, image_width) -> torch.Tensor:
    """Normalised ``(x1, y1, x2, y2)`` boxes of crops given in pixels.

    Args:
        top, left, height, width: the crop in pixels of the original image (scalars or
            ``(B,)`` tensors / sequences); as torchvision's ``RandomResizedCrop.get_params``
            returns them (``i, j, h, w``).
        image_height, image_width: the original image size ``H, W`` (scalars or ``(B,)``).

    Returns:
        float32 ``(B, 4)`` (or ``(4,)`` for scalar inputs):
        ``(left / W, top / H, (left + width) / W, (top + height) / H)``.
    """
    t, l, h, w, H, W = (torch.as_tensor(v, dtype=torch.float64)
                        for v in (top, left, height, width, image_height, image_width))
    return torch.stack([l / W, t / H, (l + w) / W, (t + h) / H], dim=-1).float()


def check_label_maps(scores: torch.Tensor, ids: torch.Tensor, *, num_classes: int | None = None) -> None:
    """Validate a batch of top-k label maps; raise :class:`DataError` naming the problem.

    Args:
        scores: ``(B, k, h, w)`` top-k logits (any float dtype).
        ids: ``(B, k, h, w)`` integer class ids of ``scores``.
        num_classes: if given, every id must lie in ``[0, num_classes)``.
    """
    if scores.dim() != 4 or ids.shape != scores.shape:
        raise DataError(
            f"label maps: expected scores and ids of the same shape (B, k, h, w), got "
            f"{tuple(scores.shape)} and {tuple(ids.shape)}")
    if not scores.is_floating_point():
        raise DataError(f"label maps: scores must be floating point, got {scores.dtype}")
    if ids.is_floating_point() or ids.dtype == torch.bool:
        raise DataError(f"label maps: ids must be integers, got {ids.dtype}")
    if num_classes is not None and ids.numel():
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= num_classes:
            raise DataError(
                f"label maps: class ids range over [{low}, {high}], but the model has "
                f"num_classes={num_classes} (ids must lie in [0, {num_classes - 1}]); were the "
                "maps made for another label set?")


def roi_align_weights(boxes: torch.Tensor, height: int, width: int, *, coord_order: str = "xy") -> torch.Tensor:
    """The weight of every map cell in a 1x1 RoIAlign over each box.

    ``(weights * maps[:, c]).sum((1, 2))`` equals
    ``torchvision.ops.roi_align(maps, boxes * (w, h, w, h), (1, 1), spatial_scale=1,
    sampling_ratio=-1, aligned=True)[:, c]``.

    Args:
        boxes: ``(B, 4)`` normalised ``(x1, y1, x2, y2)`` (see the module docstring).
        height, width: the map size ``h, w``.
        coord_order: one of :data:`COORD_ORDERS`.

    Returns:
        float32 ``(B, h, w)``; each row sums to 1 for a box inside the image.
    """
    boxes = _check_boxes(boxes, coord_order)
    wy = _axis_weights(boxes[:, 1], boxes[:, 3], height)
    wx = _axis_weights(boxes[:, 0], boxes[:, 2], width)
    return wy[:, :, None] * wx[:, None, :]


def pool_label_maps(
    scores: torch.Tensor,
    ids: torch.Tensor,
    boxes: torch.Tensor,
    *,
    num_classes: int,
    coord_order: str = "xy",
    return_logits: bool = False,
) -> torch.Tensor:
    """LabelPooling targets of a batch of crops, without densifying the label maps.

    Equal (to float32 rounding) to :func:`pool_label_maps_dense`: dense map with zeros outside
    the top-k, RoIAlign to 1x1 over the crop box, softmax at temperature 1.

    Args:
        scores: ``(B, k, h, w)`` top-k logits per map location (float16 / float32; cast to
            float32).
        ids: ``(B, k, h, w)`` their class ids, distinct within a location.
        boxes: ``(B, 4)`` normalised crop boxes ``(x1, y1, x2, y2)``.
        num_classes: ``C``; every id must be below it.
        coord_order: ``"xy"`` (default, geometrically correct) or ``"reference"`` (the swapped
            order of the reference code, see :data:`COORD_ORDERS`).
        return_logits: return the pooled logits instead of their softmax.

    Returns:
        float32 ``(B, C)`` soft targets (rows sum to 1), or pooled logits.
    """
    if int(num_classes) < 1:
        raise ConfigError(f"num_classes must be a positive integer, got {num_classes!r}")
    check_label_maps(scores, ids, num_classes=num_classes)
    b, k, h, w = scores.shape
    weights = roi_align_weights(boxes.to(scores.device), h, w, coord_order=coord_order)
    if weights.shape[0] != b:
        raise DataError(f"label maps: {b} maps but {weights.shape[0]} boxes")
    contrib = scores.float() * weights[:, None]
    logits = torch.zeros(b, int(num_classes), dtype=torch.float32, device=scores.device)
    logits.scatter_add_(1, ids.reshape(b, -1).long(), contrib.reshape(b, -1))
    return logits if return_logits else torch.softmax(logits, dim=1)


def pool_label_map_numpy(
    scores: np.ndarray,
    ids: np.ndarray,
    box,
    *,
    num_classes: int,
    coord_order: str = "xy",
    return_logits: bool = False,
) -> np.ndarray:
    """:func:`pool_label_maps` for one sample, in numpy: the fast path of data-loading workers.

    A call costs tens of microseconds where the batched torch function spends about a
    millisecond on per-operator overhead for a single sample; same float32 arithmetic.

    Args:
        scores: ``(k, h, w)`` top-k logits (float16 / float32).
        ids: ``(k, h, w)`` integer class ids, distinct within a location.
        box: 4 numbers, the normalised crop box ``(x1, y1, x2, y2)``.
        num_classes, coord_order, return_logits: as in :func:`pool_label_maps`.

    Returns:
        float32 ``(C,)``: the soft target (or the pooled logits).
    """
    if coord_order not in COORD_ORDERS:
        raise ConfigError(f"coord_order must be one of {', '.join(COORD_ORDERS)}, got {coord_order!r}")
    scores, ids = np.asarray(scores), np.asarray(ids)
    if scores.ndim != 3 or ids.shape != scores.shape:
        raise DataError(f"label map: expected scores and ids of the same shape (k, h, w), got "
                        f"{scores.shape} and {ids.shape}")
    if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= num_classes):
        raise DataError(
            f"label map: class ids range over [{int(ids.min())}, {int(ids.max())}], but the model "
            f"has num_classes={num_classes}; were the maps made for another label set?")
    box = np.asarray(box, dtype=np.float32).reshape(4)
    _check_box_values(box[None])
    if coord_order == "reference":
        box = box[[1, 0, 3, 2]]
    _, h, w = scores.shape
    weights = np.outer(_axis_weights_numpy(box[1], box[3], h), _axis_weights_numpy(box[0], box[2], w))
    contrib = scores.astype(np.float32) * weights
    logits = np.bincount(ids.reshape(-1).astype(np.intp), weights=contrib.reshape(-1),
                         minlength=num_classes).astype(np.float32)
    if return_logits:
        return logits
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def densify_label_maps(scores: torch.Tensor, ids: torch.Tensor, *, num_classes: int) -> torch.Tensor:
    """The dense ``(B, C, h, w)`` float32 map: top-k scores at their ids, 0 elsewhere."""
    check_label_maps(scores, ids, num_classes=num_classes)
    b, _, h, w = scores.shape
    dense = torch.zeros(b, int(num_classes), h, w, dtype=torch.float32, device=scores.device)
    return dense.scatter_(1, ids.long(), scores.float())


def pool_label_maps_dense(
    scores: torch.Tensor,
    ids: torch.Tensor,
    boxes: torch.Tensor,
    *,
    num_classes: int,
    coord_order: str = "xy",
    return_logits: bool = False,
) -> torch.Tensor:
    """LabelPooling as the reference computes it: densify, ``torchvision.ops.roi_align``, softmax.

    ``O(B * C * h * w)`` time and memory; the ground truth for :func:`pool_label_maps`
    (same arguments and result).
    """
    from torchvision.ops import roi_align

    dense = densify_label_maps(scores, ids, num_classes=num_classes)
    _, _, h, w = dense.shape
    boxes = _check_boxes(boxes.to(dense.device), coord_order)
    scaled = boxes * torch.tensor([w, h, w, h], dtype=torch.float32, device=dense.device)
    rois = torch.cat([torch.arange(len(scaled), dtype=torch.float32, device=dense.device)[:, None],
                      scaled], dim=1)
    pooled = roi_align(dense, rois, output_size=(1, 1), spatial_scale=1.0, sampling_ratio=-1,
                       aligned=True).flatten(1)
    return pooled if return_logits else torch.softmax(pooled, dim=1)


def _check_boxes(boxes: torch.Tensor, coord_order: str) -> torch.Tensor:
    if coord_order not in COORD_ORDERS:
        raise ConfigError(f"coord_order must be one of {', '.join(COORD_ORDERS)}, got {coord_order!r}")
    boxes = torch.as_tensor(boxes)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise DataError(f"crop boxes: expected shape (B, 4) of normalised (x1, y1, x2, y2), got {tuple(boxes.shape)}")
    boxes = boxes.float()
    _check_box_values(boxes.detach().cpu().numpy(), batched=True)
    if coord_order == "reference":
        boxes = boxes[:, [1, 0, 3, 2]]
    return boxes


#: Slack for boxes computed in float32 from pixel coordinates (a crop flush with the border).
_BOX_TOLERANCE = 1e-4


def _check_box_values(boxes: np.ndarray, *, batched: bool = False) -> None:
    """Raise :class:`DataError` for the first box ``(x1, y1, x2, y2)`` that is not a non-empty
    part of the unit square (a crop outside the image, or of zero size)."""
    eps = _BOX_TOLERANCE
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    bad = ~((x1 >= -eps) & (y1 >= -eps) & (x2 <= 1 + eps) & (y2 <= 1 + eps) & (x1 < x2) & (y1 < y2))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        values = ", ".join(f"{float(v):.4g}" for v in boxes[i])
        raise DataError(f"crop box {f'{i} ' if batched else ''}[{values}] (normalised x1, y1, x2, y2) is not inside "
                        "the image; expected 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1 (a crop of the image, "
                        "as RandomResizedCropWithBox records it)")


def _axis_weights(low: torch.Tensor, high: torch.Tensor, size: int) -> torch.Tensor:
    """Per-cell weights ``(B, size)`` along one axis, mirroring torchvision's CPU kernel."""
    scale = torch.tensor(float(size), dtype=torch.float32, device=low.device)
    start = low * scale - 0.5
    length = high * scale - 0.5 - start
    grid = torch.ceil(length)  # samples per axis (sampling_ratio=-1, output size 1)
    steps = int(grid.max().clamp(min=1)) if grid.numel() else 1
    it = torch.arange(steps, dtype=torch.float32, device=low.device)
    pos = start[:, None] + (it[None, :] + 0.5) * length[:, None] / grid.clamp(min=1)[:, None]
    used = (it[None, :] < grid[:, None]) & (pos >= -1.0) & (pos <= size)
    pos = pos.clamp(min=0)
    lo = pos.long()
    edge = lo >= size - 1
    lo = torch.where(edge, torch.full_like(lo, size - 1), lo)
    hi = torch.where(edge, lo, lo + 1)
    frac = torch.where(edge, torch.zeros_like(pos), pos - lo.float())
    used = used.float()
    weights = torch.zeros(low.shape[0], size, dtype=torch.float32, device=low.device)
    weights.scatter_add_(1, lo, (1.0 - frac) * used)
    weights.scatter_add_(1, hi, frac * used)
    return weights / grid.clamp(min=1)[:, None]


def _axis_weights_numpy(low, high, size: int) -> np.ndarray:
    """One box's per-cell weights ``(size,)`` along one axis, as :func:`_axis_weights`.

    The box edges and the sample count are computed in float32 like torchvision's kernel (so
    ``ceil`` picks the same number of samples); the at most ``size`` sample points are walked
    in plain Python, which beats a dozen numpy calls on such short arrays.
    """
    f32 = np.float32
    start = f32(low) * f32(size) - f32(0.5)
    length = f32(high) * f32(size) - f32(0.5) - start
    grid = math.ceil(length)
    weights = [0.0] * size
    if grid < 1:
        return np.zeros(size, dtype=np.float32)
    start, step = float(start), float(length) / grid
    for i in range(grid):
        pos = start + (i + 0.5) * step
        if pos < -1.0 or pos > size:
            continue
        pos = max(pos, 0.0)
        lo = int(pos)
        if lo >= size - 1:
            weights[size - 1] += 1.0
            continue
        frac = pos - lo
        weights[lo] += 1.0 - frac
        weights[lo + 1] += frac
    return np.asarray(weights, dtype=np.float32) / np.float32(grid)
