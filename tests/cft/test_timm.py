"""The timm path: forward_features + forward_head(pre_logits=True) features, get_classifier() row."""
import json

import pytest
import torch
from torch.utils.data import DataLoader

from labelwise.adapters.timm.cft import calibrate_timm_model, extract_timm_features, timm_classifier
from labelwise.adapters.torch_data import DigitScenesDataset, digits_transform
from labelwise.plugins.cft.options import CFTOptions


def test_timm_model_calibration(tiny_digits, tmp_path):
    from labelwise.adapters.timm import create_digits_model

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = create_digits_model(num_classes=10, width=8)
    tf = digits_transform(train=False)
    train = DataLoader(DigitScenesDataset(tiny_digits, "partial-p0.3", "train", transform=tf), batch_size=80)
    val = DataLoader(DigitScenesDataset(tiny_digits, "partial-p0.3", "val", transform=tf), batch_size=80)
    feats, targets = extract_timm_features(model, val, progress=False)
    assert feats.shape == (40, 64) and set(targets.ravel().tolist()) <= {-1.0, 0.0, 1.0} and (targets == -1).any()
    with torch.no_grad():  # the features are what the classifier sees
        x = next(iter(val))[0]
        model.eval()  # extract_timm_features restored training mode
        torch.testing.assert_close(model(x), timm_classifier(model)(torch.from_numpy(feats[:len(x)])), rtol=1e-4,
                                   atol=1e-5)
    before = timm_classifier(model).weight.detach().clone()
    result = calibrate_timm_model(model, train, val, options=CFTOptions(epochs=15, early_stopping=5, population=6),
                                  out_dir=tmp_path, apply=True, plot=False, progress=False)
    report = json.loads((tmp_path / "cft_report.json").read_text())
    assert report["summary"] == result.summary()
    # no checkpoint given: no file is known to hold the weights, so no hash (not an empty one)
    assert "source_sha256" not in report and "source_sha256" not in _onnx_metadata(tmp_path / "cft_head.onnx")
    assert torch.equal(timm_classifier(model).weight.detach(), result.weight)
    for c in result.changed:
        assert not torch.equal(before[c], result.weight[c])


def _onnx_metadata(path) -> dict:
    onnx = pytest.importorskip("onnx")
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


def test_timm_checkpoint_hash_in_report_and_both_onnx_files(tiny_digits, tmp_path):
    from labelwise.adapters.timm import create_digits_model
    from labelwise.utils.fingerprint import file_sha256

    with torch.random.fork_rng():
        torch.manual_seed(1)
        trained = create_digits_model(num_classes=10, width=8)
    checkpoint = tmp_path / "digits.pth"
    torch.save(trained.state_dict(), checkpoint)
    model = create_digits_model(num_classes=10, width=8)
    model.load_state_dict(torch.load(checkpoint, weights_only=True))
    tf = digits_transform(train=False)
    train = DataLoader(DigitScenesDataset(tiny_digits, "partial-p0.3", "train", transform=tf), batch_size=80)
    val = DataLoader(DigitScenesDataset(tiny_digits, "partial-p0.3", "val", transform=tf), batch_size=80)
    out = tmp_path / "out"
    calibrate_timm_model(model, train, val, options=CFTOptions(epochs=10, early_stopping=4, population=6), out_dir=out,
                         full_onnx=True, example_input=torch.zeros(1, 3, 64, 64), plot=False, progress=False,
                         checkpoint=checkpoint)
    report = json.loads((out / "cft_report.json").read_text())
    assert report["source"] == str(checkpoint) and report["source_sha256"] == file_sha256(checkpoint)
    for name in ("cft_head.onnx", "cft_model.onnx"):
        meta = _onnx_metadata(out / name)
        assert meta["source_sha256"] == report["source_sha256"] and meta["source"] == str(checkpoint), name
    assert report["full_onnx_max_abs_diff"] <= 1e-4
