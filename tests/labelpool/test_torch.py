"""timm / plain PyTorch: the box-returning crop and the (image, soft_target) dataset."""
import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import functional as F

from labelwise.adapters.torch_labelpool import LabelPoolingDataset, RandomResizedCropWithBox
from labelwise.errors import ConfigError, DataError
from labelwise.plugins.labelpool.pooling import pool_label_map_numpy
from labelwise.plugins.labelpool.store import LabelMapStore


def _pil(h=40, w=60):
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8))


def test_crop_returns_the_box_of_the_pixels_it_shows():
    img = _pil()
    crop = RandomResizedCropWithBox(16, scale=(0.2, 0.7), generator=torch.Generator().manual_seed(0))
    boxes = set()
    for _ in range(5):
        out, box = crop(img)
        x1, y1, x2, y2 = box.int().tolist()
        boxes.add((x1, y1, x2, y2))
        again = F.resize(img.crop((x1, y1, x2, y2)), [16, 16], antialias=True)
        assert np.array_equal(np.asarray(again), np.asarray(out))
        assert 0 <= x1 < x2 <= 60 and 0 <= y1 < y2 <= 40
    assert len(boxes) == 5
    a = RandomResizedCropWithBox(16, generator=torch.Generator().manual_seed(7))(img)[1]
    b = RandomResizedCropWithBox(16, generator=torch.Generator().manual_seed(7))(img)[1]
    assert torch.equal(a, b)  # the generator makes it reproducible
    torch.manual_seed(0)
    _, box = RandomResizedCropWithBox(16, scale=(1.0, 1.0), ratio=(1.5, 1.5))(img)  # global RNG path
    assert box.tolist() == [0.0, 0.0, 60.0, 40.0]


def test_dataset_gives_image_and_pooled_soft_target(single_train_maps, tiny_digits):
    from torchvision import transforms as T

    from labelwise.adapters.torch_data import MEAN, STD, DigitScenesDataset

    base = DigitScenesDataset(tiny_digits, "single", "train", transform=lambda img: img)
    recorded = []

    class Recording(RandomResizedCropWithBox):
        def forward(self, img):
            out, box = super().forward(img)
            recorded.append(box)
            return out, box

    ds = LabelPoolingDataset(base, single_train_maps, num_classes=10,
                             crop=Recording(32, scale=(0.3, 0.6), generator=torch.Generator().manual_seed(0)),
                             transform=T.Compose([T.RandomHorizontalFlip(1.0), T.ToTensor(), T.Normalize(MEAN, STD)]))
    image, target = ds[11]
    assert image.shape == (3, 32, 32) and target.shape == (10,) and target.dtype == torch.float32
    scores, ids = LabelMapStore(single_train_maps).get(base.ids[11])
    expected = pool_label_map_numpy(scores, ids, recorded[-1].numpy() / 64.0, num_classes=10)
    np.testing.assert_allclose(target.numpy(), expected, atol=1e-7)
    whole = LabelPoolingDataset(base, single_train_maps, num_classes=10, transform=T.ToTensor())[11][1]
    np.testing.assert_allclose(whole.numpy(), pool_label_map_numpy(scores, ids, [0, 0, 1, 1], num_classes=10))
    with pytest.raises(ConfigError, match="pass keys="):
        LabelPoolingDataset([(None, 0)], single_train_maps, num_classes=10)
    with pytest.raises(DataError, match="made for 10 classes, but the model has num_classes=5"):
        LabelPoolingDataset(base, single_train_maps, num_classes=5)


def test_timm_task_trains_on_pooled_targets(single_train_maps, tiny_digits):
    from timm.loss import SoftTargetCrossEntropy
    from timm.task import ClassificationTask
    from torchvision import transforms as T

    from labelwise.adapters.loop import fit
    from labelwise.adapters.timm import create_digits_model
    from labelwise.adapters.torch_data import MEAN, STD, DigitScenesDataset

    base = DigitScenesDataset(tiny_digits, "single", "train", transform=lambda img: img)
    ds = LabelPoolingDataset(base, single_train_maps, num_classes=10,
                             crop=RandomResizedCropWithBox(32, scale=(0.5, 1.0)),
                             transform=T.Compose([T.ToTensor(), T.Normalize(MEAN, STD)]))
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(ds, range(64)), batch_size=32, shuffle=True,
                                         num_workers=0, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(0)
    model = create_digits_model(width=8)
    task = ClassificationTask(model, SoftTargetCrossEntropy(), verbose=False)
    history = fit(task, loader, epochs=1, progress=False)
    assert len(history) == 1 and np.isfinite(history[0]) and history[0] > 0
