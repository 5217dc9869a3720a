"""LabelPooling's diagnostic on the digit scenes: is a pooled target's top class really in the crop?"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["pooled_target_diagnostic", "random_resized_crop"]

#: The students' RandomResizedCrop (the single-label configs): area scale and aspect ratio.
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


def random_resized_crop(rng, height: int, width: int, *, scale=CROP_SCALE, ratio=CROP_RATIO):
    """torchvision's ``RandomResizedCrop.get_params`` rule with numpy draws: ``(top, left, h, w)``.

    Area fraction uniform in ``scale``, aspect ratio log-uniform in ``ratio``, 10 tries; then
    the whole image (the central fallback of a square image whose ratio is within ``ratio``).
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    return 0, 0, height, width


def pooled_target_diagnostic(store, data_root, *, split: str = "train", crops_per_image: int = 8,
                             images: int = 1000, seed: int = 0, scale=CROP_SCALE, ratio=CROP_RATIO) -> dict:
    """How often the pooled target's top class (and the one-hot label) is a digit inside a random crop.

    Crops are drawn as the students' ``RandomResizedCrop`` draws them
    (:func:`random_resized_crop`); a digit is "in the crop" when its box centre is (the
    scenes keep every digit's box). Seeded; the first ``images`` images of ``split``,
    ``crops_per_image`` crops each.

    Returns:
        Counts: ``crops``, ``pooled_top_in_crop``, ``label_in_crop``, ``pooled_top_is_label``,
        ``crops_without_label``, ``pooled_top_in_crop_when_label_is_not``,
        ``crops_without_any_digit``, plus ``images`` and the rule.
    """
    from labelwise.data import load_manifest, load_scenes
    from labelwise.plugins.labelpool.pooling import pool_label_map_numpy
    from labelwise.plugins.labelpool.store import LabelMapStore

    scenes = load_scenes(data_root, split)[:images]
    maps = LabelMapStore(store)
    rng = np.random.default_rng(seed)
    size = int(load_manifest(data_root)["parameters"]["config"]["canvas_size"])  # square canvases
    counts = {"crops": 0, "pooled_top_in_crop": 0, "label_in_crop": 0, "pooled_top_is_label": 0,
              "crops_without_label": 0, "pooled_top_in_crop_when_label_is_not": 0, "crops_without_any_digit": 0}
    for scene in scenes:
        scores, ids = maps.get(scene["id"])
        label = scene["objects"][scene["main"]]["class"]  # "main" indexes the objects
        for _ in range(crops_per_image):
            top, left, h, w = random_resized_crop(rng, size, size, scale=scale, ratio=ratio)
            inside = {o["class"] for o in scene["objects"]
                      if top <= (o["box"][1] + o["box"][3]) / 2 < top + h
                      and left <= (o["box"][0] + o["box"][2]) / 2 < left + w}
            box = (left / size, top / size, (left + w) / size, (top + h) / size)
            pooled_top = int(np.argmax(pool_label_map_numpy(scores, ids, box, num_classes=maps.num_classes)))
            counts["crops"] += 1
            counts["crops_without_any_digit"] += not inside
            counts["pooled_top_in_crop"] += pooled_top in inside
            counts["label_in_crop"] += label in inside
            counts["pooled_top_is_label"] += pooled_top == label
            if label not in inside:
                counts["crops_without_label"] += 1
                counts["pooled_top_in_crop_when_label_is_not"] += pooled_top in inside
    return {**counts, "images": len(scenes), "rule": "a digit is in the crop when its box centre is",
            "box_format": "scene boxes (x1, y1, x2, y2) in pixels of the image"}
