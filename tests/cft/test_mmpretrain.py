"""CFTHook in a real mmengine Runner, and `labelwise cft --config --checkpoint` on its checkpoint."""
import json

import numpy as np
import pytest
import torch

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


def _record_tested_model(seen):
    """A hook that copies the state of the model the test loop evaluates (run after EMAHook's swap)."""
    from mmengine.hooks import Hook

    class RecordTestedModel(Hook):
        def before_test_epoch(self, runner):
            model = runner.model.module if hasattr(runner.model, "module") else runner.model
            seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})

    return RecordTestedModel()


def test_hook_under_ema_calibrates_the_ema_model_and_test_evaluates_it(tiny_digits, tmp_path):
    """Under an EMAHook the trained model is the EMA copy (the checkpoints' state_dict): CFT
    calibrates it, and with apply=True runner.test() evaluates exactly calibrated.pth."""
    from mmengine.runner import Runner

    from labelwise.adapters.mmpretrain.runner import load_config
    from labelwise.checkpoint import load_checkpoint

    cfg = load_config("baseline/digits_partial", work_dir=tmp_path, data_root=tiny_digits, cfg_options=TINY)
    cfg.custom_hooks = [dict(type="EMAHook"),
                        dict(type="labelwise.CFTHook", val_ann="partial-p0.3/val.json", options=CFT, progress=False,
                             apply=True, onnx=False, plot=False)]
    runner = Runner.from_cfg(cfg)
    seen = []
    runner.register_hook(_record_tested_model(seen), priority="LOWEST")  # after EMAHook's swap (NORMAL)
    runner.train()
    runner.test()
    head = np.load(tmp_path / "cft" / "cft_head.npz")
    calibrated = load_checkpoint(tmp_path / "cft" / "calibrated.pth")["state_dict"]
    epoch = load_checkpoint(tmp_path / "epoch_1.pth")
    assert len(seen) == 1
    tested = seen[0]
    assert np.array_equal(tested["head.fc.weight"].numpy(), head["weight"])  # the calibrated layer is evaluated
    assert np.array_equal(tested["head.fc.bias"].numpy(), head["bias"])
    assert tested.keys() == calibrated.keys()
    assert all(torch.equal(tested[k], calibrated[k]) for k in tested)  # with the weights it was fitted on
    # those are the EMA weights, which EMAHook saved as the checkpoint's state_dict; the raw
    # (non-averaged) weights, saved as ema_state_dict, differ
    conv = "backbone.conv1.weight"
    assert torch.equal(calibrated[conv], epoch["state_dict"][conv])
    assert not torch.equal(calibrated[conv], epoch["ema_state_dict"]["module." + conv])


def _tiny_classifier(to_rgb):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from labelwise.adapters.mmpretrain.runner import load_config

    init_default_scope("mmpretrain")
    cfg = load_config("baseline/digits_partial", work_dir="unused", cfg_options=TINY)
    pre = dict(type="ClsDataPreprocessor", mean=[10.0, 120.0, 240.0], std=[20.0, 50.0, 90.0], to_rgb=to_rgb)
    torch.manual_seed(0)
    model = MODELS.build({**cfg.model, "data_preprocessor": pre})
    model.init_weights()
    return model.eval()


def _bgr_image(seed=0):
    """A uint8 ``(3, 32, 32)`` image as mmpretrain's LoadImageFromFile + PackInputs give it (BGR)."""
    return torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("to_rgb", [True, False])
def test_full_model_graph_input_is_rgb_whatever_the_models_channel_order(to_rgb):
    from mmpretrain.structures import DataSample

    from labelwise.adapters.mmpretrain.cft import _image_to_features

    model = _tiny_classifier(to_rgb)
    bgr = _bgr_image()
    with torch.no_grad():
        data = model.data_preprocessor({"inputs": [bgr], "data_samples": [DataSample()]}, False)
        expected = model.head.pre_logits(model.extract_feat(data["inputs"]))
        body = _image_to_features(model)
        got = body(bgr.flip(0)[None].float())  # the same picture, RGB
        swapped = _image_to_features(_tiny_classifier(not to_rgb))(bgr.flip(0)[None].float())
    assert body.bgr is (not to_rgb)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(swapped, expected, atol=1e-3)  # the channel order matters here


def test_full_onnx_records_the_channel_order_and_matches_the_model(tmp_path):
    from mmpretrain.structures import DataSample

    from labelwise.adapters.mmpretrain.cft import _export_full
    from labelwise.plugins.cft.calibrate import CFTResult
    from labelwise.plugins.cft.onnx_export import read_metadata
    from labelwise.plugins.cft.options import CFTOptions

    ort = pytest.importorskip("onnxruntime")
    model = _tiny_classifier(to_rgb=False)  # a BGR model: the graph flips its RGB input
    fc = model.head.fc
    result = CFTResult(fc.weight.detach().clone(), fc.bias.detach().clone(), [], CFTOptions())
    path = tmp_path / "full.onnx"
    assert _export_full(model, result, path, size=(32, 32), classes=[str(i) for i in range(10)],
                        source_sha256="") <= 1e-5
    meta = read_metadata(path)
    assert meta["input_channel_order"] == "RGB" and meta["model_channel_order"] == "BGR"
    assert "RGB in 0..255 (converted to the model's BGR order" in meta["inputs"]
    bgr = _bgr_image(1)
    with torch.no_grad():
        data = model.data_preprocessor({"inputs": [bgr], "data_samples": [DataSample()]}, False)
        expected = model(data["inputs"], mode="tensor")  # the model's own logits
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"images": bgr.flip(0)[None].float().numpy()})[0]
    np.testing.assert_allclose(logits, expected.numpy(), rtol=0, atol=1e-4)
