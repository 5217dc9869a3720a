"""Tiny mmpretrain settings shared by the refinery tests (derived from the built-in configs)."""
import pytest

#: A ResNet-18 with base_channels 8 (64-d features), the first 64 training images in batches
#: of 32 (2 iterations), 16 test images, no worker processes.
TINY_OPTIONS = {
    "train_dataloader.dataset.indices": 64,
    "test_dataloader.dataset.indices": 16,
    "model.backbone.base_channels": 8,
    "model.head.in_channels": 64,
    "train_dataloader.batch_size": 32,
    "train_dataloader.num_workers": 0,
    "train_dataloader.persistent_workers": False,
    "test_dataloader.batch_size": 80,
    "test_dataloader.num_workers": 0,
    "test_dataloader.persistent_workers": False,
    "default_hooks.logger.interval": 1,
}


@pytest.fixture
def tiny_options():
    """The options above, as a fresh dict."""
    return dict(TINY_OPTIONS)


@pytest.fixture
def tiny_config(tiny_digits):
    """``tiny_config(work_dir, config='refinery/digits_single', **options)`` -> a 1-epoch Config."""
    from labelwise.adapters.mmpretrain.runner import load_config

    def make(work_dir, config="refinery/digits_single", **options):
        return load_config(config, work_dir=work_dir, data_root=tiny_digits, epochs=1, seed=0,
                           cfg_options={**TINY_OPTIONS, **options})

    return make


@pytest.fixture(scope="session")
def refinery_chain(tiny_digits, tmp_path_factory):
    """Two generations of `labelwise refine` on the tiny data (the real Runner)."""
    from labelwise.cli import main

    work = tmp_path_factory.mktemp("refine")
    args = ["refine", "--config", "refinery/digits_single", "--generations", "2", "--work-dir", str(work),
            "--data-root", str(tiny_digits), "--epochs", "1", "--seed", "0", "--cfg-options"]
    args += [f"{k}={v}" for k, v in TINY_OPTIONS.items()]
    assert main(args) == 0
    return work
