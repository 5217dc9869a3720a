"""Shared fixtures of the composition tests: tiny settings, a score file, label maps, a teacher."""
import numpy as np
import pytest
import torch

from compose.helpers import MAP_LOGITS, NOISY, NUM_CLASSES, TINY


@pytest.fixture
def tiny_cfg(tiny_digits):
    """``tiny_cfg(config, work_dir, **options)`` -> a 1-epoch, seed-0 Config on tiny_digits."""
    from labelwise.adapters.mmpretrain.runner import load_config

    def make(config, work_dir, **options):
        return load_config(config, work_dir=work_dir, data_root=tiny_digits, epochs=1, seed=0,
                           cfg_options={**TINY, **options})

    return make


@pytest.fixture(scope="session")
def noisy_scores(tiny_digits, tmp_path_factory):
    """A CleanNet score file of the noisy training split with distinct weights 0.1 .. 1.0."""
    from labelwise.data import load_regime
    from labelwise.plugins.cleannet.scorefile import write_scores

    train = load_regime(tiny_digits, NOISY, "train")
    n = len(train.ids)
    weights = np.round(np.linspace(0.1, 1.0, n), 6)
    path = tmp_path_factory.mktemp("scores") / "scores.csv"
    write_scores(path, train.ids, train.labels, np.linspace(-0.5, 0.9, n), weights)
    return path, dict(zip(train.ids, weights))


@pytest.fixture(scope="session")
def noisy_maps(tiny_digits, tmp_path_factory):
    """A label-map store (1x1 maps, top-3, see MAP_LOGITS) of the noisy training images."""
    from labelwise.data import load_regime
    from labelwise.plugins.labelpool.store import LabelMapWriter

    keys = list(load_regime(tiny_digits, NOISY, "train").ids)
    scores = np.tile(MAP_LOGITS[None, :, None, None], (len(keys), 1, 1, 1))
    ids = np.array([[(i + j) % NUM_CLASSES for j in range(3)] for i in range(len(keys))])[:, :, None, None]
    path = tmp_path_factory.mktemp("labelmaps") / "noisy-train"
    writer = LabelMapWriter(path, keys=keys, num_classes=NUM_CLASSES, k=3, height=1, width=1, shard_size=64)
    for shard in writer.pending_shards():
        start, stop = writer.shard_range(shard)
        writer.write_shard(shard, scores[start:stop], ids[start:stop])
    return path, {key: i for i, key in enumerate(keys)}


@pytest.fixture(scope="session")
def teacher(tiny_digits, tmp_path_factory):
    """A tiny single-label teacher: its dumped config and an (untrained, seeded) checkpoint."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from labelwise.adapters.mmpretrain.runner import load_config
    from labelwise.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("teacher")
    cfg = load_config("baseline/digits_noisy", work_dir=root, data_root=tiny_digits, cfg_options=TINY)
    cfg.dump(str(root / "teacher.py"))
    init_default_scope("mmpretrain")
    model_cfg = cfg.model.to_dict()
    model_cfg["data_preprocessor"] = dict(type="ClsDataPreprocessor")
    torch.manual_seed(1)
    model = MODELS.build(model_cfg)
    model.init_weights()
    save_checkpoint({"state_dict": model.state_dict(), "meta": {}}, root / "teacher.pth")
    return dict(config=str(root / "teacher.py"), checkpoint=str(root / "teacher.pth"))
