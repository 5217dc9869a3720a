import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_python(*args, env=None, cwd=None, timeout=600, check=True):
    """Run ``python *args`` in a subprocess; return the CompletedProcess (text mode)."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, *args], env=full_env, cwd=cwd or ROOT, capture_output=True, text=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"python {' '.join(map(str, args))} failed with {proc.returncode}\n"
            f"--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


@pytest.fixture(scope="session")
def dummy_plugin_path(tmp_path_factory):
    """A real installed third-party distribution (tests/plugins/dummy_dist) in its own folder.

    Installed with pip into a target directory, so it has real ``dist-info`` metadata and
    entry points, without touching the test environment: put the folder on ``PYTHONPATH`` of
    a subprocess to "have it installed".
    """
    target = tmp_path_factory.mktemp("dummy-plugin-site")
    src = ROOT / "tests" / "plugins" / "dummy_dist"
    build = tmp_path_factory.mktemp("dummy-plugin-src")
    import shutil

    shutil.copytree(src, build, dirs_exist_ok=True)  # keep build artefacts out of the repo
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--disable-pip-version-check", "--no-index", "--target", str(target), str(build)],
        check=True, capture_output=True, text=True,
    )
    assert list(target.glob("labelwise_dummy_plugin-*.dist-info")), "dummy plugin did not install"
    return target


@pytest.fixture(scope="session")
def tiny_digits(tmp_path_factory):
    """A small digit-scenes dataset with every regime (shared by the tests; read-only)."""
    import dataclasses

    from labelwise.data import SceneConfig, make_dataset

    config = dataclasses.replace(SceneConfig(), num_train=160, num_val=40, num_test=80)
    root = tmp_path_factory.mktemp("digits") / "data"
    return make_dataset(root, config=config, seed=0, p=(0.3,), r=(0.2,), progress=False)


TINY_MM_CONFIG = """
_base_ = [{base!r}]
model = dict(backbone=dict(stem_channels=16, base_channels=8), head=dict(in_channels=64))
"""


def make_tiny_mm_model(root, base="baseline/digits_single.py", seed=0):
    """A tiny mmpretrain ResNet config under ``root`` and a checkpoint of its seeded initial weights.

    Returns:
        ``(config path, checkpoint path, model in eval mode)``.
    """
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from labelwise.checkpoint import save_checkpoint

    root = Path(root)
    config = root / "tiny.py"
    config.write_text(TINY_MM_CONFIG.format(base=str(ROOT / "configs" / base)))
    init_default_scope("mmpretrain")
    torch.manual_seed(seed)
    model = MODELS.build(Config.fromfile(str(config)).model)
    model.init_weights()
    save_checkpoint({"state_dict": model.state_dict(), "meta": {}}, root / "tiny.pth")
    return config, root / "tiny.pth", model.eval()


def write_random_label_maps(root, path, *, limit=None, num_classes=10):
    """A ReLabel store of random top-3 2x2 maps for the images of ``root``'s single/train split
    (the first ``limit`` of them if given); returns ``path``."""
    import numpy as np

    from labelwise.data import load_regime
    from labelwise.plugins.labelpool.store import LabelMapWriter

    keys = list(load_regime(root, "single", "train").ids)[:limit]
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 3, size=(len(keys), 3, 2, 2)).astype(np.float32)
    ids = np.stack([rng.permutation(num_classes)[:3] for _ in range(len(keys) * 4)])
    ids = ids.reshape(len(keys), 2, 2, 3).transpose(0, 3, 1, 2)
    writer = LabelMapWriter(path, keys=keys, num_classes=num_classes, k=3, height=2, width=2, shard_size=64)
    for shard in writer.pending_shards():
        start, stop = writer.shard_range(shard)
        writer.write_shard(shard, scores[start:stop], ids[start:stop])
    return path

