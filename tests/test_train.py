"""The baseline trainer paths: mmpretrain's own tools/train.py, the Runner API, timm + loop."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import ROOT, run_python
from labelwise.errors import ConfigError, DataError


def _mmpretrain_tools_train():
    import mmpretrain

    path = Path(mmpretrain.__file__).parent / ".mim" / "tools" / "train.py"
    assert path.is_file(), f"mmpretrain's tools/train.py is not in the wheel at {path}"
    return path


def test_mmpretrain_tools_train_runs_labelwise_config(tiny_digits, tmp_path):
    """The real tools/train.py shipped in the mmpretrain wheel, on a config that needs
    custom_imports=['labelwise'] (its train dataset is labelwise.PartialMultiLabelDataset)."""
    work_dir = tmp_path / "work"
    proc = run_python(
        str(_mmpretrain_tools_train()), str(ROOT / "configs" / "baseline" / "digits_partial.py"),
        "--work-dir", str(work_dir),
        "--cfg-options", "train_cfg.max_epochs=1", "train_dataloader.batch_size=32",
        "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
        env={"LABELWISE_DATA_ROOT": str(tiny_digits)}, timeout=900,
    )
    log = proc.stdout + proc.stderr
    assert "Epoch(train) [1][5/5]" in log  # 160 images / 32 per batch = 5 iterations
    assert (work_dir / "epoch_1.pth").is_file()
    dumped = next(work_dir.glob("digits_partial.py")).read_text()
    assert "labelwise.PartialMultiLabelDataset" in dumped


def test_partial_dataset_keeps_unknown_state(tiny_digits):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    from labelwise.data import load_regime

    init_default_scope("mmpretrain")
    ds = DATASETS.build(dict(type="labelwise.PartialMultiLabelDataset", data_root=str(tiny_digits),
                             ann_file="partial-p0.3/train.json", data_prefix="", pipeline=[]))
    expected = load_regime(tiny_digits, "partial-p0.3", "train").labels
    assert np.array_equal(ds.get_partial_labels(), expected)
    assert (expected == -1).any()
    info = ds.get_data_info(3)
    assert sorted(info["gt_label"]) == np.flatnonzero(expected[3] == 1).tolist()


def test_partial_dataset_rejects_bad_labels(tmp_path):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    ann = tmp_path / "bad.json"
    ann.write_text(json.dumps({"metainfo": {"classes": ["a", "b"]},
                               "data_list": [{"img_path": "x.png", "gt_label": [0], "partial_labels": [1, 7]}]}))
    init_default_scope("mmpretrain")
    with pytest.raises(DataError, match=r"bad\.json: sample .*x\.png: partial_labels: label at row 0, class 1 is 7"):
        DATASETS.build(dict(type="labelwise.PartialMultiLabelDataset", data_root=str(tmp_path),
                            ann_file="bad.json", data_prefix="", pipeline=[], lazy_init=False))


@pytest.mark.parametrize("framework,regime,metric", [("mmpretrain", "single", "top1"),
                                                     ("timm", "partial-p0.3", "mAP")])
def test_train_baseline_writes_metrics(tiny_digits, tmp_path, framework, regime, metric):
    from labelwise.train import train_baseline

    result = train_baseline(framework, data_root=tiny_digits, regime=regime, work_dir=tmp_path / "run",
                            epochs=1, batch_size=32, progress=False)
    assert result["metric"] == metric
    assert 0.0 <= result["value"] <= 100.0
    assert json.loads((tmp_path / "run" / "metrics.json").read_text()) == result
    with pytest.raises(DataError, match="metrics.json exists"):
        train_baseline(framework, data_root=tiny_digits, regime=regime, work_dir=tmp_path / "run", epochs=1)


def test_timm_baseline_is_deterministic(tiny_digits, tmp_path):
    from labelwise.checkpoint import load_checkpoint
    from labelwise.train import train_baseline

    a = train_baseline("timm", data_root=tiny_digits, regime="single", work_dir=tmp_path / "a", epochs=1,
                       batch_size=32, seed=3, progress=False)
    b = train_baseline("timm", data_root=tiny_digits, regime="single", work_dir=tmp_path / "b", epochs=1,
                       batch_size=32, seed=3, progress=False)
    wa = load_checkpoint(tmp_path / "a" / "model.pth")["state_dict"]
    wb = load_checkpoint(tmp_path / "b" / "model.pth")["state_dict"]
    assert a["value"] == b["value"]
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa)


def test_train_baseline_bad_input(tiny_digits, tmp_path):
    from labelwise.train import train_baseline

    with pytest.raises(ConfigError, match="unknown framework 'keras'"):
        train_baseline("keras", data_root=tiny_digits, regime="single", work_dir=tmp_path)
    with pytest.raises(ConfigError, match="regime 'partial-p0.9' is not in"):
        train_baseline("timm", data_root=tiny_digits, regime="partial-p0.9", work_dir=tmp_path)
    with pytest.raises(DataError, match="dataset root .*nowhere does not exist"):
        train_baseline("timm", data_root=tmp_path / "nowhere", regime="single", work_dir=tmp_path)


def test_timm_model_matches_mmpretrain_backbone_size():
    import torch
    from mmpretrain.models.backbones import ResNet

    from labelwise.adapters.timm import create_digits_model

    timm_params = sum(p.numel() for p in create_digits_model().parameters())
    mm_params = sum(p.numel() for p in ResNet(depth=18, stem_channels=64, base_channels=32).parameters())
    assert timm_params == mm_params + 256 * 10 + 10  # + the linear head
    assert create_digits_model()(torch.zeros(2, 3, 64, 64)).shape == (2, 10)


def test_partial_labels_reach_the_data_sample(tiny_digits):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    from labelwise.data import load_regime

    init_default_scope("mmpretrain")
    ds = DATASETS.build(dict(
        type="labelwise.PartialMultiLabelDataset", data_root=str(tiny_digits), ann_file="partial-p0.3/train.json",
        data_prefix="", pipeline=[dict(type="LoadImageFromFile"), dict(type="PackInputs", algorithm_keys=["partial_labels"])]))
    expected = load_regime(tiny_digits, "partial-p0.3", "train").labels
    sample = ds[5]["data_samples"]
    assert np.array_equal(np.asarray(sample.partial_labels), expected[5])
    assert sorted(sample.gt_label.tolist()) == np.flatnonzero(expected[5] == 1).tolist()


def test_pretrained_backbone_through_cfg_options(tiny_digits, tmp_path):
    """``cfg_options`` reach the config: a backbone ``init_cfg=Pretrained`` loads another run's
    backbone (through mmengine's loader, i.e. labelwise's safe one) and leaves the head alone."""
    import torch
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from labelwise.adapters.mmpretrain.runner import load_config
    from labelwise.checkpoint import load_checkpoint
    from labelwise.train import train_baseline

    result = train_baseline("mmpretrain", data_root=tiny_digits, regime="single", work_dir=tmp_path / "pre",
                            epochs=1, batch_size=40, progress=False)
    checkpoint = tmp_path / "pre" / "mmpretrain" / "epoch_1.pth"
    assert result["value"] >= 0 and checkpoint.is_file()
    options = {"model.backbone.init_cfg": dict(type="Pretrained", checkpoint=str(checkpoint), prefix="backbone.")}
    cfg = load_config("baseline/digits_partial", work_dir=tmp_path / "w", data_root=tiny_digits, seed=1,
                      cfg_options=options)
    init_default_scope("mmpretrain")
    model = MODELS.build(cfg.model)
    model.init_weights()
    state = load_checkpoint(checkpoint)["state_dict"]
    assert torch.equal(model.backbone.layer3[0].conv1.weight, state["backbone.layer3.0.conv1.weight"])
    assert not torch.equal(model.head.fc.weight, state["head.fc.weight"])


def test_head_with_another_class_count_than_the_data_is_refused_before_training(tiny_digits, tmp_path):
    from labelwise.adapters.mmpretrain.runner import load_config, train_and_test

    options = {"train_dataloader.dataset.classes": str(tiny_digits / "classes.txt"),
               "train_dataloader.num_workers": 0, "train_dataloader.persistent_workers": False}
    cfg = load_config("baseline/digits_single", work_dir=tmp_path / "w", data_root=tiny_digits, epochs=1,
                      cfg_options={**options, "model.head.num_classes": 12})
    with pytest.raises(ConfigError, match=r"model.head.num_classes is 12, but the training data \(CustomDataset\) "
                                          r"has 10 classes; set num_classes=10"):
        train_and_test(cfg)
    assert not list((tmp_path / "w").rglob("*.pth"))  # refused before any training


def test_the_protocol_epochs_are_the_default(tiny_digits, tmp_path, monkeypatch):
    """No --epochs: single-label runs train 20 epochs, multi-label ones 10, in both frameworks."""
    import labelwise.train as train
    from labelwise.adapters.mmpretrain.runner import load_config

    for config, epochs in (("baseline/digits_single", 20), ("refinery/digits_single_small", 20),
                           ("labelpool/digits_single", 20), ("baseline/digits_multilabel", 10),
                           ("baseline/digits_partial", 10)):
        cfg = load_config(config, work_dir=tmp_path / "w", data_root=tiny_digits)
        assert cfg.train_cfg.max_epochs == epochs, config
    seen = {}
    monkeypatch.setattr(train, "_train_timm", lambda *args: seen.setdefault(args[1], args[4:7]) and 50.0)
    for regime, epochs in (("single", 20), ("partial-p0.3", 10)):
        result = train.train_baseline("timm", data_root=tiny_digits, regime=regime, work_dir=tmp_path / regime)
        assert result["epochs"] == epochs and seen[regime] == (epochs, 64, 0.002)
