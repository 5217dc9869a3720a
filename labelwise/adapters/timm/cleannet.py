"""CleanNet with timm: pooled penultimate features of any timm model, and a weighted task.

Example (plain PyTorch / timm training with CleanNet weights)::

    from timm.task import ClassificationTask
    from labelwise.plugins.cleannet.weighting import WeightedCrossEntropy, WeightedDataset
    from labelwise.adapters.loop import fit

    train = WeightedDataset(DigitScenesDataset(root, "noisy-symmetric-r0.2", "train", transform=...),
                            ids=..., score_file="scores.csv")        # (image, {'target', 'weight'})
    task = ClassificationTask(model, WeightedCrossEntropy(), verbose=False)
    fit(task, DataLoader(train, batch_size=64, shuffle=True), epochs=10)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from labelwise.errors import DataError
from labelwise.utils.fileio import read_text


def timm_embed(model, *, device="cpu"):
    """``embed(batch) -> (B, D)``: ``model.forward_head(model.forward_features(x), pre_logits=True)``
    (timm's pooled features before the classifier) for batches ``(images, targets)`` or images."""
    model = model.to(device).eval()

    def embed(batch):
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        x = model.forward_head(model.forward_features(images.to(device)), pre_logits=True)
        return x.flatten(1)

    return embed


class AnnotationListDataset(torch.utils.data.Dataset):
    """Images listed in an mmpretrain ``CustomDataset`` annotation file (``<path> <class>`` lines,
    paths relative to ``root``), as ``(image tensor, class)`` pairs.

    Args:
        root: the dataset root.
        ann_file: the list, relative to ``root`` or absolute.
        transform: applied to the PIL RGB image (e.g.
            :func:`labelwise.adapters.torch_data.digits_transform` ``(train=False)``).
    """

    def __init__(self, root, ann_file, *, transform):
        self.root = Path(root)
        path = Path(ann_file) if Path(ann_file).is_absolute() else self.root / ann_file
        lines = read_text(path, what="annotation file").splitlines()
        self.ids, labels = [], []
        for n, line in enumerate(lines, 1):
            if not line.strip():
                continue
            parts = line.rsplit(maxsplit=1)
            if len(parts) != 2 or not parts[1].lstrip("-").isdigit():
                raise DataError(f"{path}, line {n}: expected '<image path> <class id>', got {line!r}")
            self.ids.append(parts[0])
            labels.append(int(parts[1]))
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int):
        from PIL import Image

        with Image.open(self.root / self.ids[index]) as img:
            image = self.transform(img.convert("RGB"))
        return image, int(self.labels[index])


def timm_feature_extractor(model_name: str = "resnet18", checkpoint=None, *, data_root, ann_file, device="cpu",
                           num_classes: int = 10, width: int = 32, transform=None) -> dict:
    """Everything :func:`labelwise.plugins.cleannet.features.extract_features` needs for a timm
    model over a ``CustomDataset``-style list (the digit scenes' ``<regime>/<split>.txt``).

    Args:
        model_name: timm model name, created narrow for the digit scenes by
            :func:`labelwise.adapters.timm.create_digits_model` (never pretrained).
        checkpoint: weights to load (a timm / labelwise ``.pth``), read safely; ``None`` keeps
            the initial weights, drawn from a fixed seed (0) so that two runs, or a resumed
            run, extract the same features.
        data_root, ann_file: the list of images.
        device: where to run.
        num_classes, width: the model's head size and base width.
        transform: image transform (default: the digit scenes' eval transform).

    Returns:
        dict with ``embed``, ``dataset``, ``ids``, ``labels``, ``collate_fn`` (None), ``meta``
        and ``fingerprint`` (model name, sizes, transform and the checkpoint's content
        fingerprint: an existing feature file is reused only if they match).

    Raises:
        CheckpointError: the checkpoint cannot be read, or does not fit the model (the message
            names the file and the missing / unexpected keys or the mismatched shape).
    """
    from labelwise.adapters.timm import create_digits_model
    from labelwise.adapters.torch_data import digits_transform
    from labelwise.checkpoint import extract_state_dict, load_checkpoint, load_weights
    from labelwise.plugins.cleannet.features import file_fingerprint

    import torch

    with torch.random.fork_rng():  # timm initialises from the global generator: a fixed, local seed
        torch.manual_seed(0)
        model = create_digits_model(model_name, num_classes=num_classes, width=width)
    if checkpoint is not None:
        load_weights(model, extract_state_dict(load_checkpoint(checkpoint)), checkpoint=checkpoint,
                     target=f"timm model {model_name!r} (num_classes={num_classes}, width={width})")
    transform = transform or digits_transform(train=False)
    dataset = AnnotationListDataset(data_root, ann_file, transform=transform)
    meta = {"framework": "timm", "model": model_name, "checkpoint": str(checkpoint), "ann_file": str(ann_file),
            "data_root": str(data_root)}
    fingerprint = {"framework": "timm", "model": model_name, "num_classes": int(num_classes), "width": int(width),
                   "transform": repr(transform),
                   "checkpoint": None if checkpoint is None else file_fingerprint(checkpoint),
                   "init_seed": 0}
    return {"embed": timm_embed(model, device=device), "dataset": dataset, "ids": dataset.ids,
            "labels": dataset.labels, "collate_fn": None, "meta": meta, "fingerprint": fingerprint}
