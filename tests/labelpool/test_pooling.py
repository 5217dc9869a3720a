"""LabelPooling against the spec: hand-checked boxes, the dense torchvision computation, flips."""
import math

import numpy as np
import pytest
import torch

from labelwise.errors import ConfigError, DataError
from labelwise.plugins.labelpool.pooling import (
    crop_to_box, densify_label_maps, pool_label_map_numpy, pool_label_maps, pool_label_maps_dense,
    roi_align_weights,
)


def _random_maps(batch, classes, height, width, k, *, seed=0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, k, height, width, generator=g) * 4
    ids = torch.stack([torch.randperm(classes, generator=g)[:k] for _ in range(batch * height * width)])
    ids = ids.view(batch, height, width, k).permute(0, 3, 1, 2).contiguous()
    return scores, ids


def _random_boxes(batch, *, seed=0):
    g = torch.Generator().manual_seed(seed + 1)
    x1, y1 = torch.rand(batch, generator=g) * 0.8, torch.rand(batch, generator=g) * 0.8
    x2 = x1 + 0.05 + torch.rand(batch, generator=g) * (0.95 - x1)
    y2 = y1 + 0.05 + torch.rand(batch, generator=g) * (0.95 - y1)
    boxes = torch.stack([x1, y1, x2, y2], 1)
    boxes[0] = torch.tensor([0.0, 0.0, 1.0, 1.0])  # the whole image
    boxes[-1] = torch.tensor([0.9, 0.0, 1.0, 0.07])  # a sliver at the right edge
    return boxes


def _quadrant_map():
    """2x2 map, k=1, C=4: cell (row i, col j) holds class 2*i + j with logit 1, 2, 3, 4."""
    ids = torch.tensor([[[[0, 1], [2, 3]]]])
    scores = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    return scores, ids


def _softmax(logits):
    e = np.exp(np.asarray(logits, dtype=np.float64) - max(logits))
    return e / e.sum()


def test_crop_to_box_normalises_top_left_height_width():
    box = crop_to_box(10, 20, 30, 40, 100, 200)  # top, left, height, width of a 100x200 image
    assert torch.allclose(box, torch.tensor([0.1, 0.1, 0.3, 0.4]))
    batch = crop_to_box(torch.tensor([0, 50]), torch.tensor([0, 0]), 50, 100, 100, 100)
    assert torch.allclose(batch, torch.tensor([[0.0, 0.0, 1.0, 0.5], [0.0, 0.5, 1.0, 1.0]]))


@pytest.mark.parametrize("pool", ["torch", "numpy", "dense"])
def test_quadrant_boxes_by_hand(pool):
    scores, ids = _quadrant_map()
    top_right = torch.tensor([[0.5, 0.0, 1.0, 0.5]])  # x in [0.5, 1], y in [0, 0.5]: cell (0, 1)
    bottom_left = torch.tensor([[0.0, 0.5, 0.5, 1.0]])  # cell (1, 0)
    for box, logits in ((top_right, [0, 2, 0, 0]), (bottom_left, [0, 0, 3, 0])):
        got = _pool(pool, scores, ids, box, 4)
        np.testing.assert_allclose(got, [_softmax(logits)], atol=1e-6)
    # the reference's order reads the top-right crop as the bottom-left one and vice versa
    got = _pool(pool, scores, ids, top_right, 4, coord_order="reference")
    np.testing.assert_allclose(got, [_softmax([0, 0, 3, 0])], atol=1e-6)


@pytest.mark.parametrize("pool", ["torch", "numpy", "dense"])
def test_half_cell_box_by_hand(pool):
    # a 1x4 map; box x in [0.125, 0.625] is [0.5, 2.5] in map units: two samples at
    # x = 1.0 and 2.0 on the aligned grid (cell centres at 0.5, 1.5, ...) -> cells 0..2 get
    # 0.25, 0.5, 0.25
    ids = torch.tensor([[[[0, 1, 2, 3]]]])
    scores = torch.tensor([[[[4.0, 8.0, 12.0, 100.0]]]])
    box = torch.tensor([[0.125, 0.0, 0.625, 1.0]])
    logits = _pool(pool, scores, ids, box, 5, return_logits=True)
    np.testing.assert_allclose(logits, [[1.0, 4.0, 3.0, 0.0, 0.0]], atol=1e-6)
    weights = roi_align_weights(box, 1, 4)
    np.testing.assert_allclose(weights.numpy(), [[[0.25, 0.5, 0.25, 0.0]]], atol=1e-7)


@pytest.mark.parametrize("size", [(2, 2), (7, 5), (15, 15)])
def test_full_image_crop_is_softmax_of_mean_map(size):
    scores, ids = _random_maps(3, 20, *size, 5)
    full = torch.tensor([[0.0, 0.0, 1.0, 1.0]]).repeat(3, 1)
    expected = torch.softmax(densify_label_maps(scores, ids, num_classes=20).mean((2, 3)), 1)
    for order in ("xy", "reference"):
        assert torch.allclose(pool_label_maps(scores, ids, full, num_classes=20, coord_order=order),
                              expected, atol=1e-6)
    got = pool_label_map_numpy(scores[1].numpy(), ids[1].numpy(), [0, 0, 1, 1], num_classes=20)
    np.testing.assert_allclose(got, expected[1].numpy(), atol=1e-6)


def test_classes_outside_topk_count_as_logit_zero():
    scores = torch.full((1, 1, 1, 1), math.log(3.0))
    ids = torch.zeros(1, 1, 1, 1, dtype=torch.long)
    target = pool_label_maps(scores, ids, torch.tensor([[0.0, 0.0, 1.0, 1.0]]), num_classes=3)
    # logits (log 3, 0, 0): probabilities 3/5, 1/5, 1/5 -- not (1, 0, 0)
    assert torch.allclose(target, torch.tensor([[0.6, 0.2, 0.2]]), atol=1e-6)


@pytest.mark.parametrize("order", ["xy", "reference"])
@pytest.mark.parametrize("classes,size,k", [(1000, (15, 15), 5), (10, (2, 2), 3), (10, (4, 7), 5)])
def test_sparse_matches_dense_roi_align(order, classes, size, k):
    scores, ids = _random_maps(12, classes, *size, k, seed=classes)
    boxes = _random_boxes(12, seed=classes)
    dense = pool_label_maps_dense(scores, ids, boxes, num_classes=classes, coord_order=order)
    sparse = pool_label_maps(scores, ids, boxes, num_classes=classes, coord_order=order)
    assert (sparse - dense).abs().max().item() < 1e-5
    numpy = np.stack([pool_label_map_numpy(scores[i].numpy(), ids[i].numpy(), boxes[i].numpy(),
                                           num_classes=classes, coord_order=order) for i in range(12)])
    assert np.abs(numpy - dense.numpy()).max() < 1e-5
    # the logits agree too, not only the (flatter) probabilities
    dense_logits = pool_label_maps_dense(scores, ids, boxes, num_classes=classes, coord_order=order,
                                         return_logits=True)
    sparse_logits = pool_label_maps(scores, ids, boxes, num_classes=classes, coord_order=order,
                                    return_logits=True)
    assert (sparse_logits - dense_logits).abs().max().item() < 1e-4


def test_float16_store_scores_pool_like_float32_of_the_same_values():
    scores, ids = _random_maps(4, 50, 5, 5, 5)
    half = scores.half()
    boxes = _random_boxes(4)
    got = pool_label_maps(half, ids.short(), boxes, num_classes=50)
    expected = pool_label_maps_dense(half.float(), ids, boxes, num_classes=50)
    assert (got - expected).abs().max().item() < 1e-5


def test_batch_size_one():
    scores, ids = _random_maps(1, 30, 3, 3, 4)
    box = torch.tensor([[0.2, 0.1, 0.7, 0.9]])
    target = pool_label_maps(scores, ids, box, num_classes=30)
    assert target.shape == (1, 30)
    assert abs(target.sum().item() - 1.0) < 1e-6
    assert (target - pool_label_maps_dense(scores, ids, box, num_classes=30)).abs().max() < 1e-5


def test_coordinate_orders_differ_on_random_maps():
    scores, ids = _random_maps(32, 10, 6, 6, 3, seed=3)
    boxes = _random_boxes(32, seed=3)
    xy = pool_label_maps(scores, ids, boxes, num_classes=10)
    ref = pool_label_maps(scores, ids, boxes, num_classes=10, coord_order="reference")
    assert (xy - ref).abs().max().item() > 0.1
    # ... and the reference order is the xy order of the transposed map
    transposed = pool_label_maps(scores.transpose(2, 3), ids.transpose(2, 3), boxes, num_classes=10)
    assert torch.allclose(ref, transposed, atol=1e-6)


def test_horizontal_flip_of_map_and_box_keeps_the_target():
    scores, ids = _random_maps(6, 10, 5, 7, 3, seed=4)
    boxes = _random_boxes(6, seed=4)
    mirrored = torch.stack([1 - boxes[:, 2], boxes[:, 1], 1 - boxes[:, 0], boxes[:, 3]], 1)
    a = pool_label_maps(scores, ids, boxes, num_classes=10)
    b = pool_label_maps(scores.flip(3), ids.flip(3), mirrored, num_classes=10)
    assert (a - b).abs().max().item() < 1e-6
    # a flipped map with the unflipped box is a different crop (so the test can fail)
    c = pool_label_maps(scores.flip(3), ids.flip(3), boxes, num_classes=10)
    assert (a - c).abs().max().item() > 1e-2


def test_bad_input_is_refused_with_a_clear_message():
    scores, ids = _random_maps(2, 10, 3, 3, 2)
    boxes = _random_boxes(2)
    with pytest.raises(DataError, match=r"class ids range over \[0, 9\], but the model has num_classes=5"):
        pool_label_maps(scores, ids, boxes, num_classes=5)
    with pytest.raises(DataError, match=r"class ids range over \[0, 9\].*num_classes=5"):
        pool_label_map_numpy(scores[0].numpy(), ids[0].numpy(), boxes[0], num_classes=5)
    with pytest.raises(ConfigError, match="coord_order must be one of xy, reference, got 'yx'"):
        pool_label_maps(scores, ids, boxes, num_classes=10, coord_order="yx")
    with pytest.raises(DataError, match=r"expected shape \(B, 4\)"):
        pool_label_maps(scores, ids, boxes[:, :3], num_classes=10)
    with pytest.raises(DataError, match="2 maps but 1 boxes"):
        pool_label_maps(scores, ids, boxes[:1], num_classes=10)
    with pytest.raises(DataError, match="same shape"):
        pool_label_maps(scores, ids[:, :1], boxes, num_classes=10)


def _pool(kind, scores, ids, boxes, classes, **kwargs):
    if kind == "torch":
        return pool_label_maps(scores, ids, boxes, num_classes=classes, **kwargs).numpy()
    if kind == "dense":
        return pool_label_maps_dense(scores, ids, boxes, num_classes=classes, **kwargs).numpy()
    return np.stack([pool_label_map_numpy(scores[i].numpy(), ids[i].numpy(), boxes[i].numpy(),
                                          num_classes=classes, **kwargs) for i in range(len(scores))])
