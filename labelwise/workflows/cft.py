"""CFT's checks after calibration: the exported ONNX head against the calibrated head, on given features."""
from __future__ import annotations

from pathlib import Path

__all__ = ["check_onnx_head"]


def check_onnx_head(cft_dir, features) -> dict:
    """Run ``cft_head.onnx`` of ``cft_dir`` with onnxruntime on ``features`` and compare it with ``cft_head.npz``.

    The comparison and its tolerances are :func:`labelwise.plugins.cft.onnx_export.onnx_parity`'s
    (the one ONNX check of labelwise: logits within ``1e-5 x max(1, max |logit|)``, the
    probabilities within that times the calibration's slope, the labels equal away from the
    thresholds).

    Args:
        cft_dir: a CFT output folder (``cft_head.npz`` and ``cft_head.onnx``).
        features: ``(N, D)`` penultimate features (e.g. of a test split).

    Returns:
        ``{"file", "samples", "max_abs_diff" (logits), "tolerance" (logits), "probabilities_diff",
        "probabilities_tolerance", "labels_agree", "passed"}``.
    """
    import numpy as np
    import torch

    from labelwise.plugins.cft.onnx_export import CalibratedHead, onnx_parity
    from labelwise.plugins.cft.outputs import OUTPUT_FILES

    cft_dir = Path(cft_dir)
    head = CalibratedHead.from_npz(cft_dir / OUTPUT_FILES["head"])
    onnx = cft_dir / OUTPUT_FILES["onnx"]
    report = onnx_parity(onnx, head, torch.as_tensor(np.asarray(features, dtype=np.float32)))
    return {"file": str(onnx), "samples": report["samples"], "max_abs_diff": report["logits_diff"],
            "tolerance": report["logits_tolerance"], "probabilities_diff": report["probabilities_diff"],
            "probabilities_tolerance": report["probabilities_tolerance"], "labels_agree": report["labels_agree"],
            "passed": report["passed"]}
