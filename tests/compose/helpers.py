"""Constants and helpers of the composition tests (the fixtures are in conftest.py)."""
import numpy as np
import torch

NOISY = "noisy-symmetric-r0.2"
NUM_CLASSES = 10
#: 1x1 label maps: image i keeps classes (i, i+1, i+2) mod 10 with these logits (exact in
#: float16, the store's dtype), so its pooled target is known whatever the crop.
MAP_LOGITS = np.array([2.0, 1.0, 0.5], dtype=np.float32)

#: A ResNet-18 with base_channels 8 (64-d features), 32 training images in batches of 16
#: (2 iterations of 1 epoch), 16 test images, no worker processes.
TINY = {
    "train_dataloader.dataset.indices": 32,
    "test_dataloader.dataset.indices": 16,
    "model.backbone.base_channels": 8,
    "model.backbone.stem_channels": 16,
    "model.head.in_channels": 64,
    "train_dataloader.batch_size": 16,
    "train_dataloader.num_workers": 0,
    "train_dataloader.persistent_workers": False,
    "test_dataloader.batch_size": 16,
    "test_dataloader.num_workers": 0,
    "test_dataloader.persistent_workers": False,
    "default_hooks.logger.interval": 1,
}


def map_target(i: int) -> np.ndarray:
    """The LabelPooling target of image ``i`` of the maps below: softmax of the 3 kept
    logits with 0 for the 7 other classes (the dense map), written out by hand."""
    dense = np.zeros(NUM_CLASSES)
    dense[[(i + j) % NUM_CLASSES for j in range(3)]] = MAP_LOGITS
    return np.exp(dense) / np.exp(dense).sum()


def img_key(sample) -> str:
    """The dataset id (``images/train/000000.png``) of a packed sample: its path's last 3 parts."""
    return "/".join(str(sample.img_path).split("/")[-3:])


def train_batch(cfg, indices):
    """``(model, data)``: the config's model and the training batch of ``indices`` as its data
    preprocessor returns it in training (the config's real pipeline and preprocessor)."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS, MODELS

    init_default_scope("mmpretrain")
    model_cfg = cfg.model.to_dict()
    model_cfg["data_preprocessor"] = cfg.data_preprocessor.to_dict()
    model = MODELS.build(model_cfg)
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    torch.manual_seed(0)
    data = model.data_preprocessor(pseudo_collate([dataset[i] for i in indices]), True)
    return model, data
