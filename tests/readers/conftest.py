"""Fixtures of the reader tests: copies of the format miniatures (tests/data/formats) with images."""
import importlib
import shutil
from pathlib import Path

import pytest

FORMATS = Path(__file__).resolve().parents[1] / "data" / "formats"
#: The pipeline every registry test loads a sample through: mmpretrain's own transforms.
PIPELINE = [dict(type="LoadImageFromFile"), dict(type="PackInputs", algorithm_keys=["partial_labels"])]


@pytest.fixture
def miniature(tmp_path):
    """``miniature(name)``: a copy of ``tests/data/formats/<name>`` under ``tmp_path`` (made on the
    test's first call; later calls of the same test return the same copy)."""

    def copy(name: str) -> Path:
        target = tmp_path / name
        if not target.exists():
            shutil.copytree(FORMATS / name, target)
        return target

    return copy


def image_colour(index: int) -> tuple:
    """The flat colour of the ``index``-th image :func:`write_images` writes (far apart per index)."""
    return (40 + 50 * (index % 4), 200 - 60 * (index % 3), 30 + 90 * (index % 2))


def write_images(root, paths, *, mode: str = "RGB", size=(16, 12)) -> None:
    """A small flat-colour image at every ``root / path`` (JPEG for .jpg / .jpeg, else PNG)."""
    from PIL import Image

    for i, path in enumerate(paths):
        file = Path(root) / path
        file.parent.mkdir(parents=True, exist_ok=True)
        colour = image_colour(i) if mode == "RGB" else image_colour(i)[0]
        fmt = "JPEG" if file.suffix.lower() in (".jpg", ".jpeg") else "PNG"
        Image.new(mode, size, colour).save(file, format=fmt, quality=95)


def build_mm_dataset(cfg: dict):
    """``DATASETS.build(cfg)`` through mmpretrain's registry, as a config's dataloader does."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    importlib.import_module("labelwise")  # what a config's custom_imports=dict(imports=['labelwise']) does
    init_default_scope("mmpretrain")
    return DATASETS.build(cfg)


def check_loaded_sample(dataset, index: int, *, colour=None):
    """Load sample ``index`` through the pipeline; check the image is the file's; return its data sample."""
    import numpy as np

    packed = dataset[index]
    inputs, sample = packed["inputs"], packed["data_samples"]
    assert tuple(inputs.shape) == (3, 12, 16)  # CHW of the 16x12 image written
    if colour is not None:  # LoadImageFromFile decodes BGR
        mean = inputs.float().mean(dim=(1, 2)).numpy()
        assert np.allclose(mean, colour[::-1], atol=4), (mean, colour)
    return sample
