"""CFTHook in a real mmengine Runner, and `labelwise cft --config --checkpoint` on its checkpoint."""
import json

import numpy as np
import pytest

from labelwise.errors import ConfigError

TINY = {
    "model.backbone.base_channels": 8,
    "model.backbone.stem_channels": 16,
    "model.head.in_channels": 64,
    "train_cfg.max_epochs": 1,
    "train_dataloader.batch_size": 32,
    "train_dataloader.num_workers": 0,
    "train_dataloader.persistent_workers": False,
    "test_dataloader.num_workers": 0,
    "test_dataloader.persistent_workers": False,
    "default_hooks.logger.interval": 1,
}
CFT = dict(epochs=30, early_stopping=10, population=8, optimizer="best", lr=1e-2)


@pytest.fixture(scope="module")
def hooked_run(tiny_digits, tmp_path_factory):
    from labelwise.adapters.mmpretrain.runner import load_config, train_and_test

    work = tmp_path_factory.mktemp("cft-hook")
    cfg = load_config("baseline/digits_partial", work_dir=work, data_root=tiny_digits, cfg_options=TINY)
    cfg.custom_hooks = [dict(type="labelwise.CFTHook", val_ann="partial-p0.3/val.json", options=CFT, progress=False,
                             apply=True)]
    metrics = train_and_test(cfg)
    return work, metrics


def test_hook_writes_calibrated_outputs(hooked_run, tiny_digits):
    from labelwise.checkpoint import load_checkpoint
    from labelwise.data import load_regime
    from labelwise.plugins.cft.onnx_export import read_metadata

    work, metrics = hooked_run
    out = work / "cft"
    report = json.loads((out / "cft_report.json").read_text())
    assert "multi-label/mAP" in metrics
    train = load_regime(tiny_digits, "partial-p0.3", "train").labels
    val = load_regime(tiny_digits, "partial-p0.3", "val").labels
    rows = report["categories"]
    assert [r["name"] for r in rows] == [str(i) for i in range(10)]
    for c, r in enumerate(rows):
        assert r["train_known"] == int((train[:, c] >= 0).sum()) and r["val_positive"] == int((val[:, c] == 1).sum())
        if r["skipped"] is None:
            assert r["score_after"] >= r["score_before"]
    head = np.load(out / "cft_head.npz")
    ckpt = load_checkpoint(out / "calibrated.pth")["state_dict"]
    assert np.array_equal(ckpt["head.fc.weight"].numpy(), head["weight"])
    assert np.array_equal(ckpt["head.fc.bias"].numpy(), head["bias"])
    assert report["onnx_max_abs_diff"] <= 1e-5
    meta = read_metadata(out / "cft_head.onnx")
    assert json.loads(meta["class_names"]) == [str(i) for i in range(10)]
    assert json.loads(meta["changed_categories"]) == report["summary"]["changed"]
    assert (out / "cft_scores.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.glob("cft_state/category*")) != []


def test_cli_config_checkpoint(hooked_run, tiny_digits, tmp_path, capsys):
    """An already-trained checkpoint (the run's epoch_1.pth, before calibration) through the CLI."""
    from labelwise.cli import main

    work, _ = hooked_run
    checkpoint = next(work.glob("epoch_1.pth"))
    config = tmp_path / "tiny_partial.py"
    config.write_text("_base_ = ['{}']\nmodel = dict(backbone=dict(base_channels=8, stem_channels=16), "
                      "head=dict(in_channels=64))\n".format(
                          (__import__("labelwise.adapters.mmpretrain.runner", fromlist=["x"]).CONFIG_DIR
                           / "baseline" / "digits_partial.py").as_posix()))
    status = main(["cft", "--config", str(config), "--checkpoint", str(checkpoint), "--data-root", str(tiny_digits),
                   "--val-ann", "partial-p0.3/val.json", "--out", str(tmp_path / "out"), "--epochs", "20",
                   "--early-stopping", "5", "--population", "6", "--no-onnx", "--no-plot", "--no-progress"])
    assert status == 0
    assert "mean validation AP" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "cft_report.json").read_text())
    assert len(report["source_sha256"]) == 64 and report["source"] == str(checkpoint)
    # the hook's run started from the same weights, but with other options: same "before" scores
    hook_report = json.loads((work / "cft" / "cft_report.json").read_text())
    for a, b in zip(report["categories"], hook_report["categories"]):
        if a["skipped"] is None:
            assert a["score_before"] == pytest.approx(b["score_before"], abs=1e-6)


def test_hook_needs_a_validation_split(tiny_digits, tmp_path):
    from mmengine.config import Config

    from labelwise.adapters.mmpretrain.cft import _dataset_cfg
    from labelwise.adapters.mmpretrain.runner import load_config

    cfg = load_config("baseline/digits_partial", work_dir=tmp_path, data_root=tiny_digits)
    assert isinstance(cfg, Config)
    with pytest.raises(ConfigError, match="CFT needs val_dataloader"):
        _dataset_cfg(cfg, "val_dataloader", None, what="val_ann")
    ds = _dataset_cfg(cfg, "val_dataloader", "partial-p0.3/val.json", what="val_ann")
    assert ds["type"] == "labelwise.PartialMultiLabelDataset" and ds["ann_file"] == "partial-p0.3/val.json"
    assert [t["type"] for t in ds["pipeline"]] == ["LoadImageFromFile", "PackInputs"]


def test_example_config_builds_the_hook(tmp_path):
    from mmengine.registry import HOOKS, init_default_scope

    from labelwise.adapters.mmpretrain.cft import CFTHook
    from labelwise.adapters.mmpretrain.runner import load_config

    cfg = load_config("cft/digits_partial_cft", work_dir=tmp_path)
    init_default_scope("mmpretrain")
    hook = HOOKS.build(cfg.custom_hooks[0])
    assert isinstance(hook, CFTHook) and hook.apply and hook.val_ann == "partial-p0.3/val.json"
    assert hook.options.optimizer == "best" and hook.options.epochs == 5000
