"""PU-MLC training followed by CFT calibration: configs/compose/digits_partial_pumlc_cft.py."""
import json

import numpy as np
import torch

from compose.helpers import train_batch

CONFIG = "compose/digits_partial_pumlc_cft"
#: A short CFT schedule (the config's is the reference one).
CFT = dict(epochs=30, early_stopping=10, population=8, optimizer="best", lr=1e-2)


def test_pumlc_then_cft_writes_a_calibrated_onnx_head(tiny_cfg, tmp_path):
    import onnxruntime as ort
    from mmengine.runner import Runner

    from labelwise.adapters.mmpretrain.pumlc import PUMLCClassifier, PUMLCLoss
    from labelwise.checkpoint import load_checkpoint

    cfg = tiny_cfg(CONFIG, tmp_path / "work")
    (hook,) = cfg.custom_hooks
    assert hook.type == "labelwise.CFTHook" and hook.apply and hook.val_ann == "partial-p0.3/val.json"
    hook.options = CFT
    hook.progress = False
    runner = Runner.from_cfg(cfg)
    assert isinstance(runner.model, PUMLCClassifier) and isinstance(runner.model.head.loss_module, PUMLCLoss)
    runner.train()
    metrics = runner.test()
    assert "multi-label/mAP" in metrics

    out = tmp_path / "work" / "cft"
    report = json.loads((out / "cft_report.json").read_text())
    assert len(report["categories"]) == 10 and report["onnx_max_abs_diff"] <= 1e-5
    for row in report["categories"]:
        if row["skipped"] is None:
            assert row["score_after"] >= row["score_before"]
    # apply=True: the runner's model now holds the calibrated layer the files hold
    calibrated = load_checkpoint(out / "calibrated.pth")["state_dict"]
    head = np.load(out / "cft_head.npz")
    fc = runner.model.head.fc
    assert np.array_equal(fc.weight.detach().numpy(), head["weight"])
    assert torch.equal(calibrated["head.fc.weight"], fc.weight.detach())

    # the ONNX head on real features of the trained backbone gives the calibrated model's logits
    model, data = train_batch(cfg, range(8))
    model.load_state_dict(calibrated)
    model.eval()
    with torch.no_grad():
        feats = model.neck(model.backbone(data["inputs"]))[-1]
        logits = model.head(model.extract_feat(data["inputs"]))
    session = ort.InferenceSession(str(out / "cft_head.onnx"), providers=["CPUExecutionProvider"])
    onnx_logits, onnx_probs = session.run(["logits", "probabilities"], {"features": feats.numpy()})
    np.testing.assert_allclose(onnx_logits, logits.numpy(), rtol=0, atol=1e-5)
    scale, shift = head["calibration_scale"], head["calibration_shift"]  # Platt scaling, the default
    np.testing.assert_allclose(onnx_probs, torch.sigmoid(logits * torch.as_tensor(scale, dtype=torch.float32)
                                                         + torch.as_tensor(shift, dtype=torch.float32)).numpy(),
                               rtol=0, atol=1e-5)
