import numpy as np
import pytest

NUM_CLASSES = 10


@pytest.fixture(scope="session")
def single_train_maps(tiny_digits, tmp_path_factory):
    """A store of random top-3 2x2 maps for every image of tiny_digits' single/train split."""
    from labelwise.data import load_regime
    from labelwise.plugins.labelpool.store import LabelMapWriter

    keys = list(load_regime(tiny_digits, "single", "train").ids)
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 3, size=(len(keys), 3, 2, 2)).astype(np.float32)
    ids = np.stack([rng.permutation(NUM_CLASSES)[:3] for _ in range(len(keys) * 4)])
    ids = ids.reshape(len(keys), 2, 2, 3).transpose(0, 3, 1, 2)
    path = tmp_path_factory.mktemp("labelmaps") / "single-train"
    writer = LabelMapWriter(path, keys=keys, num_classes=NUM_CLASSES, k=3, height=2, width=2, shard_size=64)
    for shard in writer.pending_shards():
        start, stop = writer.shard_range(shard)
        writer.write_shard(shard, scores[start:stop], ids[start:stop])
    return path
