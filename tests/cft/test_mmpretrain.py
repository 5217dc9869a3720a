"""CFTHook in a real mmengine Runner, and `labelwise cft --config --checkpoint` on its checkpoint."""
import json

import numpy as np
import pytest
import torch

from labelwise.errors import ConfigError
from labelwise.plugins.cft.options import CFTOptions

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
    import onnx

    from labelwise.checkpoint import load_checkpoint
    from labelwise.data import load_regime
    from labelwise.plugins.cft.onnx_export import read_metadata
    from labelwise.utils.fileio import is_labelwise_figure

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
    assert is_labelwise_figure(out / "cft_reliability.png") and report["plots"]["reliability"] == "cft_reliability.png"
    assert sorted(p.name for p in out.glob("cft_state/category*")) != []
    # trained in memory: no single file holds the calibrated weights, so no hash anywhere (not even "")
    assert report["source"] == "the runner's model after training" and "source_sha256" not in report
    assert "source_sha256" not in {p.key for p in onnx.load(str(out / "cft_head.onnx")).metadata_props}
    assert "source_sha256" not in load_checkpoint(out / "calibrated.pth")["meta"]


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


def test_hook_on_an_untrained_resume_hashes_the_checkpoint(hooked_run, tiny_digits, tmp_path):
    """Resuming a finished run trains no step: the calibrated weights are the resumed checkpoint's."""
    import onnx
    from mmengine.runner import Runner

    from labelwise.adapters.mmpretrain.runner import load_config
    from labelwise.checkpoint import load_checkpoint
    from labelwise.utils.fingerprint import file_sha256

    checkpoint = hooked_run[0] / "epoch_1.pth"
    cfg = load_config("baseline/digits_partial", work_dir=tmp_path, data_root=tiny_digits, cfg_options=TINY)
    cfg.load_from, cfg.resume = str(checkpoint), True
    cfg.custom_hooks = [dict(type="labelwise.CFTHook", val_ann="partial-p0.3/val.json", options=CFT, progress=False,
                             plot=False)]
    runner = Runner.from_cfg(cfg)
    runner.train()
    # resumed after epoch 1 of 1: no step taken, no checkpoint saved
    assert runner.iter == load_checkpoint(checkpoint)["meta"]["iter"] > 0 and not list(tmp_path.glob("epoch_*.pth"))
    out = tmp_path / "cft"
    report = json.loads((out / "cft_report.json").read_text())
    meta = {p.key: p.value for p in onnx.load(str(out / "cft_head.onnx")).metadata_props}
    assert report["source"] == meta["source"] == str(checkpoint)
    assert report["source_sha256"] == meta["source_sha256"] == file_sha256(checkpoint)


def _csra_cfg(tiny_digits, work_dir):
    from labelwise.adapters.mmpretrain.runner import load_config

    cfg = load_config("baseline/digits_partial", work_dir=work_dir, data_root=tiny_digits, cfg_options=TINY)
    cfg.model.neck = None  # CSRA attends over the spatial map
    cfg.model.head = dict(type="CSRAClsHead", num_classes=10, in_channels=64, num_heads=1, lam=0.1,
                          loss=dict(type="CrossEntropyLoss", use_sigmoid=True))
    cfg.custom_hooks = [dict(type="labelwise.CFTHook", val_ann="partial-p0.3/val.json", options=CFT, progress=False)]
    return cfg


def test_hook_refuses_a_head_without_a_linear_layer_before_training(tiny_digits, tmp_path):
    from mmengine.runner import Runner

    runner = Runner.from_cfg(_csra_cfg(tiny_digits, tmp_path))
    assert type(runner.model.head).__name__ == "CSRAClsHead" and not hasattr(runner.model.head, "fc")
    with pytest.raises(ConfigError) as info:
        runner.train()
    assert str(info.value) == (
        "CFTHook (checked before training): CFT re-fits model.head.fc, an nn.Linear on the pooled feature vector, "
        "but model.head is a CSRAClsHead, which has no fc: its last step is class-specific residual attention over "
        "the spatial feature map, not one linear layer, so it cannot be re-fitted as a linear head; use a head whose "
        "last step is one nn.Linear (fc) on a pooled feature vector, such as LinearClsHead or "
        "MultiLabelLinearClsHead")
    assert runner.iter == 0 and not list(tmp_path.glob("*.pth")) and not (tmp_path / "cft").exists()


def test_calibrate_checkpoint_refuses_the_same_head_with_the_same_message(tiny_digits, tmp_path):
    """One lookup for the hook and the after-training / checkpoint path."""
    from mmengine.runner import Runner

    from labelwise.adapters.mmpretrain.cft import calibrate_model

    cfg = _csra_cfg(tiny_digits, tmp_path)
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ConfigError, match=r"^CFT re-fits model.head.fc, an nn.Linear on the pooled feature vector, "
                                          r"but model.head is a CSRAClsHead, which has no fc: its last step is "
                                          r"class-specific residual attention"):
        calibrate_model(runner.model, cfg, {}, {}, tmp_path / "cft", options=CFTOptions())


def test_before_train_passes_a_linear_head_and_checks_the_datasets(tiny_digits, tmp_path):
    from mmengine.runner import Runner

    from labelwise.adapters.mmpretrain.runner import load_config

    cfg = load_config("baseline/digits_partial", work_dir=tmp_path, data_root=tiny_digits, cfg_options=TINY)
    cfg.custom_hooks = [dict(type="labelwise.CFTHook", val_ann="partial-p0.3/val.json", options=CFT, progress=False)]
    runner = Runner.from_cfg(cfg)
    (hook,) = [h for h in runner.hooks if type(h).__name__ == "CFTHook"]
    assert type(runner.model.head).__name__ == "MultiLabelLinearClsHead"
    hook.before_train(runner)  # a linear head and both splits: passes
    assert hook._start_iter == 0 and hook._loaded_checkpoint is None
    hook.val_ann = None  # the config has no val_dataloader: CFT would have no validation split
    with pytest.raises(ConfigError, match="CFT needs val_dataloader to find its dataset, or val_ann="):
        hook.before_train(runner)


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


def test_cli_full_onnx_writes_the_whole_model_checked_with_onnxruntime(tiny_digits, tmp_path, capsys):
    """`labelwise cft --config --checkpoint --full-onnx`: backbone + calibrated head in one self-contained graph."""
    import onnx
    from mmpretrain.structures import DataSample

    from conftest import make_tiny_mm_model
    from labelwise.adapters.mmpretrain.runner import build_trained_model
    from labelwise.cli import main
    from labelwise.utils.fingerprint import file_sha256

    ort = pytest.importorskip("onnxruntime")
    config, checkpoint, _ = make_tiny_mm_model(tmp_path, base="baseline/digits_partial.py")
    out = tmp_path / "out"
    status = main(["cft", "--config", str(config), "--checkpoint", str(checkpoint), "--data-root", str(tiny_digits),
                   "--val-ann", "partial-p0.3/val.json", "--out", str(out), "--epochs", "10", "--early-stopping", "4",
                   "--population", "6", "--no-plot", "--no-progress", "--full-onnx"])
    assert status == 0
    report = json.loads((out / "cft_report.json").read_text())
    printed = capsys.readouterr().out
    assert f"full model ONNX: {out / 'cft_model.onnx'} (onnxruntime vs PyTorch: max |logit difference| " in printed
    assert 0 <= report["full_onnx_max_abs_diff"] <= 1e-4
    assert not list(out.glob("*.data")) and (out / "cft_head.onnx").is_file()  # one self-contained file each
    meta = {p.key: p.value for p in onnx.load(str(out / "cft_model.onnx")).metadata_props}
    assert meta["source_sha256"] == report["source_sha256"] == file_sha256(checkpoint)
    assert meta["input_channel_order"] == "RGB"
    session = ort.InferenceSession(str(out / "cft_model.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images"]
    assert [o.name for o in session.get_outputs()] == ["logits", "probabilities", "labels"]
    # the graph on an image = the calibrated model's own logits (mmpretrain's preprocessor and forward), then the
    # head's calibration and thresholds
    model, _ = build_trained_model(config, out / "calibrated.pth", work_dir=tmp_path / "check")
    model.eval()
    head = np.load(out / "cft_head.npz")
    assert meta["inputs"].startswith("images (batch, 3, 64, 64) float32 RGB in 0..255")  # the digit scenes' size
    bgr = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        data = model.data_preprocessor({"inputs": [bgr], "data_samples": [DataSample()]}, False)
        expected = model(data["inputs"], mode="tensor").numpy()
    logits, probabilities, labels = session.run(None, {"images": bgr.flip(0)[None].float().numpy()})
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)
    z = logits.astype(np.float64) * head["calibration_scale"] + head["calibration_shift"]
    np.testing.assert_allclose(probabilities, 1 / (1 + np.exp(-z)), atol=1e-5)
    assert np.array_equal(labels, (probabilities >= head["thresholds"]).astype(np.int64))
