"""mmpretrain integration: the box-recording crop, the LabelPooling transform, Mixup, the Runner."""
import mmcv
import numpy as np
import pytest
import torch

from labelwise.errors import DataError
from labelwise.plugins.labelpool.pooling import pool_label_map_numpy
from labelwise.plugins.labelpool.store import LabelMapStore


@pytest.fixture(autouse=True)
def _scope():
    from mmengine.registry import init_default_scope

    init_default_scope("mmpretrain")


def _build(cfg):
    from mmpretrain.registry import TRANSFORMS

    return TRANSFORMS.build(cfg)


def _image(h=48, w=64):
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, size=(h, w, 3), dtype=np.uint8)


CROP = dict(type="labelwise.RandomResizedCropWithBox", scale=32, crop_ratio_range=(0.2, 0.6), backend="pillow")


def test_crop_is_a_drop_in_replacement_and_records_its_box():
    img = _image()
    crop = _build(CROP)
    plain = _build({**CROP, "type": "RandomResizedCrop"})
    for seed in range(5):
        np.random.seed(seed)
        ours = crop({"img": img.copy(), "ori_shape": img.shape[:2]})
        np.random.seed(seed)
        theirs = plain({"img": img.copy()})
        assert np.array_equal(ours["img"], theirs["img"])
        x1, y1, x2, y2 = ours["crop_box"].astype(int)
        assert ours["crop_box"].dtype == np.float32 and (x2 - x1) * (y2 - y1) < 0.61 * 48 * 64
        again = mmcv.imresize(img[y1:y2, x1:x2], (32, 32), interpolation="bilinear", backend="pillow")
        assert np.array_equal(again, ours["img"])


def test_whole_image_box_and_resize_before_the_crop():
    full = _build({**CROP, "crop_ratio_range": (1.0, 1.0), "aspect_ratio_range": (0.75, 0.75)})
    out = full({"img": _image(48, 64), "ori_shape": (48, 64)})
    # no 3:4 crop of the whole area fits a 48x64 image: mmpretrain's fallback is the central
    # 36x48 crop at x = (64 - 36) // 2 = 14
    assert out["crop_box"].tolist() == [14.0, 0.0, 50.0, 48.0]
    # an image resized to twice its size before the crop: the box is in original pixels
    resize = _build(dict(type="Resize", scale=(128, 96)))
    whole = _build({**CROP, "crop_ratio_range": (1.0, 1.0), "aspect_ratio_range": (4 / 3, 4 / 3)})
    out = whole(resize({"img": _image(48, 64), "ori_shape": (48, 64)}))
    assert out["img"].shape[:2] == (32, 32)
    np.testing.assert_allclose(out["crop_box"], [0.0, 0.0, 64.0, 48.0])


def test_flip_before_the_crop_mirrors_the_box_and_flip_after_keeps_it():
    img = _image()
    flip = _build(dict(type="RandomFlip", prob=1.0, direction="horizontal"))
    crop = _build(CROP)
    np.random.seed(3)
    out = crop(flip({"img": img.copy(), "ori_shape": img.shape[:2]}))
    x1, y1, x2, y2 = out["crop_box"].astype(int)
    # the box is in the unflipped original: its region, flipped, is the training image
    region = mmcv.imflip(img[y1:y2, x1:x2], "horizontal")
    assert np.array_equal(mmcv.imresize(region, (32, 32), backend="pillow"), out["img"])
    np.random.seed(3)
    plain = crop({"img": img.copy(), "ori_shape": img.shape[:2]})
    assert plain["crop_box"][0] != out["crop_box"][0]  # mirrored: the test can tell
    np.random.seed(4)
    before = crop({"img": img.copy(), "ori_shape": img.shape[:2]})
    box = before["crop_box"].copy()
    after = flip(before)
    assert after["flip"] and np.array_equal(after["crop_box"], box)


def test_second_crop_is_refused_and_repr_names_the_arguments():
    crop = _build(CROP)
    out = crop({"img": _image(), "ori_shape": (48, 64)})
    with pytest.raises(DataError, match="only one box-recording crop"):
        crop(out)
    assert repr(crop).startswith("RandomResizedCropWithBox(scale=(32, 32), crop_ratio_range=(0.2, 0.6)")


def test_label_pooling_transform_sets_gt_score(single_train_maps, tiny_digits):
    store = LabelMapStore(single_train_maps)
    pooling = _build(dict(type="labelwise.LabelPooling", label_maps=str(single_train_maps), num_classes=10))
    key = store.keys[7]
    path = str(tiny_digits / key)
    out = pooling({"img_path": path, "img": np.zeros((32, 32, 3), np.uint8), "ori_shape": (64, 64),
                   "crop_box": np.array([0, 16, 32, 64], np.float32)})
    scores, ids = store.get(key)
    expected = pool_label_map_numpy(scores, ids, [0, 0.25, 0.5, 1.0], num_classes=10)
    np.testing.assert_allclose(out["gt_score"], expected, atol=1e-7)
    assert out["gt_score"].shape == (10,) and abs(out["gt_score"].sum() - 1) < 1e-5
    # no crop in the pipeline: the whole image
    whole = pooling({"img_path": path, "img": np.zeros((64, 64, 3), np.uint8), "ori_shape": (64, 64)})
    np.testing.assert_allclose(whole["gt_score"], pool_label_map_numpy(scores, ids, [0, 0, 1, 1], num_classes=10))
    # explicit data_root and sample_idx keys find the same map
    rooted = _build(dict(type="labelwise.LabelPooling", label_maps=str(single_train_maps), num_classes=10,
                         data_root=str(tiny_digits)))
    assert np.array_equal(rooted({"img_path": path, "img": None, "ori_shape": (64, 64)})["gt_score"],
                          whole["gt_score"])
    by_index = _build(dict(type="labelwise.LabelPooling", label_maps=str(single_train_maps), num_classes=10,
                           key="sample_idx"))
    assert np.array_equal(by_index({"sample_idx": 7, "ori_shape": (64, 64)})["gt_score"], whole["gt_score"])
    assert "coord_order='xy'" in repr(pooling)
    with pytest.raises(DataError, match=r"no label map for image '.*images/val/000000\.png'"):
        pooling({"img_path": str(tiny_digits / "images/val/000000.png"), "ori_shape": (64, 64)})
    with pytest.raises(DataError, match="made for 10 classes, but the model has num_classes=100"):
        _build(dict(type="labelwise.LabelPooling", label_maps=str(single_train_maps), num_classes=100))


def test_soft_target_reaches_the_loss_and_mixup_mixes_it(single_train_maps, tiny_digits):
    from mmpretrain.models import ClsDataPreprocessor
    from mmpretrain.models.losses import CrossEntropyLoss
    from mmpretrain.registry import DATASETS

    ds = DATASETS.build(dict(
        type="CustomDataset", data_root=str(tiny_digits), ann_file="single/train.txt", data_prefix="",
        classes=[str(i) for i in range(10)], pipeline=[
            dict(type="LoadImageFromFile"), {**CROP, "scale": 64},
            dict(type="labelwise.LabelPooling", label_maps=str(single_train_maps), num_classes=10),
            dict(type="PackInputs")]))
    batch = [ds[i] for i in range(6)]
    scores = torch.stack([b["data_samples"].gt_score for b in batch])
    assert scores.shape == (6, 10) and torch.allclose(scores.sum(1), torch.ones(6))
    labels = torch.stack([b["data_samples"].gt_label[0] for b in batch])
    assert (scores.max(1).values < 0.99).all()  # soft, not the one-hot dataset label
    assert not torch.equal(scores, torch.nn.functional.one_hot(labels, 10).float())
    pre = ClsDataPreprocessor(num_classes=10, batch_augments=dict(augments=dict(type="Mixup", alpha=1.0)))
    data = {"inputs": [b["inputs"] for b in batch], "data_samples": [b["data_samples"] for b in batch]}
    np.random.seed(0)
    torch.manual_seed(0)
    mixed = pre(data, training=True)["data_samples"]
    np.random.seed(0)
    torch.manual_seed(0)
    np.random.choice(1)  # RandomBatchAugment picks the augment first
    lam = np.random.beta(1.0, 1.0)
    index = torch.randperm(6)
    expected = lam * scores + (1 - lam) * scores[index]
    got = torch.stack([s.gt_score for s in mixed])
    assert torch.allclose(got, expected, atol=1e-6)
    assert not torch.allclose(got, scores, atol=1e-3)
    # mmpretrain's soft cross-entropy is mean_n(-sum_c t_c log softmax(z)_c)
    logits = torch.randn(6, 10, generator=torch.Generator().manual_seed(1))
    loss = CrossEntropyLoss(use_soft=True)(logits, got, avg_factor=6)
    manual = -(got * torch.log_softmax(logits, 1)).sum(1).mean()
    assert torch.allclose(loss, manual, atol=1e-6)


def test_example_config_trains_through_the_runner(single_train_maps, tiny_digits, tmp_path, monkeypatch):
    from labelwise.adapters.mmpretrain.runner import load_config, train_and_test

    monkeypatch.setenv("LABELWISE_LABEL_MAPS", str(single_train_maps))
    cfg = load_config("labelpool/digits_single", work_dir=tmp_path / "work", data_root=tiny_digits, epochs=1,
                      cfg_options={
                          "model.backbone.stem_channels": 16, "model.backbone.base_channels": 8,
                          "model.head.in_channels": 64, "train_dataloader.batch_size": 32,
                          "train_dataloader.num_workers": 0, "train_dataloader.persistent_workers": False,
                          "test_dataloader.num_workers": 0, "test_dataloader.persistent_workers": False,
                          "default_hooks.logger.interval": 1})
    assert cfg.train_dataloader.dataset.pipeline[2]["label_maps"] == str(single_train_maps)
    metrics = train_and_test(cfg)
    assert 0.0 <= metrics["accuracy/top1"] <= 100.0
    log = next((tmp_path / "work").glob("*/*.log")).read_text()
    assert "Epoch(train) [1][5/5]" in log


STOCK_CROP_ERROR = ("the dataset pipeline: RandomResizedCrop before labelwise.LabelPooling records no crop box, so the "
                    "pooled target would not match the pixels the model sees (the whole image would be pooled); use "
                    "labelwise.RandomResizedCropWithBox (the same arguments as RandomResizedCrop) as the pipeline's "
                    "only crop")


def _pooling_dataset(tiny_digits, maps, pipeline):
    from mmpretrain.registry import DATASETS

    return DATASETS.build(dict(type="CustomDataset", data_root=str(tiny_digits), ann_file="single/train.txt",
                               data_prefix="", with_label=True, pipeline=pipeline))


def _pool(maps):
    return dict(type="labelwise.LabelPooling", label_maps=str(maps), num_classes=10)


def test_stock_crop_before_label_pooling_is_refused_on_the_first_sample(single_train_maps, tiny_digits):
    """mmpretrain's own RandomResizedCrop records no box: the pooled target would be the whole
    image's. The dataset built by mmengine (as tools/train.py builds it) refuses it."""
    from labelwise.errors import ConfigError

    load = dict(type="LoadImageFromFile")
    stock = {**CROP, "type": "RandomResizedCrop"}
    dataset = _pooling_dataset(tiny_digits, single_train_maps, [load, stock, _pool(single_train_maps)])
    with pytest.raises(ConfigError) as err:
        dataset[0]
    assert str(err.value) == STOCK_CROP_ERROR
    # the same crop hidden in a RandomChoice, and a CenterCrop after the pooling
    nested = dict(type="RandomChoice", transforms=[[stock], [dict(type="RandomFlip", prob=0.5)]])
    with pytest.raises(ConfigError, match="RandomResizedCrop before labelwise.LabelPooling"):
        _pooling_dataset(tiny_digits, single_train_maps, [load, nested, _pool(single_train_maps)])[0]
    after = [load, CROP, _pool(single_train_maps), dict(type="CenterCrop", crop_size=16)]
    with pytest.raises(ConfigError, match="CenterCrop after labelwise.LabelPooling .* cropped again after pooling"):
        _pooling_dataset(tiny_digits, single_train_maps, after)[0]
    late = [load, _pool(single_train_maps), CROP]
    with pytest.raises(ConfigError, match="RandomResizedCropWithBox comes after labelwise.LabelPooling"):
        _pooling_dataset(tiny_digits, single_train_maps, late)[0]
    # the box crop first: accepted, and the target is pooled over its box
    ok = _pooling_dataset(tiny_digits, single_train_maps, [load, CROP, _pool(single_train_maps)])[0]
    assert ok["crop_box"].shape == (4,) and ok["gt_score"].shape == (10,)
    # called on its own (no pipeline around it) nothing is checked
    alone = _build(_pool(single_train_maps))
    sample = alone(_build(CROP)({"img": _image(), "ori_shape": (48, 64), "img_path": ok["img_path"]}))
    assert sample["gt_score"].shape == (10,)


def test_labelwise_training_checks_the_config_before_the_runner(single_train_maps, tiny_digits, tmp_path,
                                                                 monkeypatch):
    from labelwise.adapters.mmpretrain.runner import load_config, train_and_test
    from labelwise.errors import ConfigError

    monkeypatch.setenv("LABELWISE_LABEL_MAPS", str(single_train_maps))
    cfg = load_config("labelpool/digits_single", work_dir=tmp_path / "work", data_root=tiny_digits)
    assert cfg.train_dataloader.dataset.pipeline[1]["type"] == "labelwise.RandomResizedCropWithBox"
    cfg.train_dataloader.dataset.pipeline[1]["type"] = "RandomResizedCrop"
    with pytest.raises(ConfigError) as err:
        train_and_test(cfg)
    assert str(err.value).startswith(f"{cfg.filename}: train_dataloader.dataset.pipeline: RandomResizedCrop before "
                                     "labelwise.LabelPooling records no crop box")
    assert not (tmp_path / "work").exists()  # refused before the Runner made anything
