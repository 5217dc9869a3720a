"""ONNX export of a calibrated head (features -> logits, probabilities, labels), verified with onnxruntime.

Uses ``torch.onnx.export(dynamo=True)`` with a dynamic batch axis and ``external_data=False``
(torch 2.14 otherwise writes a separate ``.data`` file even for a tiny model). Metadata goes
into ``metadata_props``, which onnxruntime returns as
``session.get_modelmeta().custom_metadata_map`` (values are strings; lists are JSON).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from labelwise.utils.fileio import atomic_write

__all__ = ["OUTPUT_NAMES", "CalibratedHead", "export_onnx", "head_metadata", "read_metadata", "verify_onnx"]

#: Largest difference between onnxruntime and PyTorch accepted by :func:`verify_onnx`, relative
#: to the logits' scale: ``TOLERANCE * max(1, max |logit|)`` (float32 rounding grows with it).
TOLERANCE = 1e-5
#: The graph's outputs: the re-fitted layer's logits, the calibrated probabilities, and 0 / 1
#: decisions at the per-class thresholds.
OUTPUT_NAMES = ("logits", "probabilities", "labels")


class CalibratedHead(nn.Module):
    """``features (B, D) -> (logits, probabilities, labels)``, each ``(B, C)``.

    ``probabilities`` are ``sigmoid(scale * logits + shift)`` (Platt / temperature scaling),
    or the isotonic map's piecewise-linear interpolation between its knots (clipped outside
    them); ``labels`` are ``probabilities >= thresholds`` as int64.

    Args:
        weight: ``(C, D)``; bias: ``(C,)``.
        body: optional module mapping the graph's input to features ``(B, D)`` (a backbone),
            so that one graph runs backbone + calibrated head.
        calibration: a :class:`~labelwise.plugins.cft.calibration.Calibration` or ``None``
            (the plain sigmoid).
        thresholds: ``(C,)`` decision thresholds (default 0.5).
    """

    def __init__(self, weight, bias, body: nn.Module | None = None, *, calibration=None, thresholds=None):
        super().__init__()
        weight = torch.as_tensor(weight, dtype=torch.float32)
        num_classes = weight.shape[0]
        self.linear = nn.Linear(weight.shape[1], num_classes)
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        self.body = body
        self.isotonic = calibration is not None and calibration.method == "isotonic"
        scale = np.ones(num_classes) if calibration is None or self.isotonic else calibration.scale
        shift = np.zeros(num_classes) if calibration is None or self.isotonic else calibration.shift
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))
        self.register_buffer("shift", torch.as_tensor(shift, dtype=torch.float32))
        thresholds = np.full(num_classes, 0.5) if thresholds is None else np.asarray(thresholds, dtype=np.float64)
        self.register_buffer("thresholds", torch.as_tensor(thresholds, dtype=torch.float32))
        if self.isotonic:
            xs, ys = calibration.padded_knots()
            fitted = ~np.isnan(xs[:, 0])
            xs, ys = np.nan_to_num(xs), np.nan_to_num(ys)
            dx, dy = np.diff(xs, axis=1), np.diff(ys, axis=1)
            self.register_buffer("x0", torch.as_tensor(xs[:, :-1], dtype=torch.float32))
            self.register_buffer("inv_dx", torch.as_tensor(np.where(dx > 0, 1.0 / np.where(dx > 0, dx, 1.0), 0.0),
                                                           dtype=torch.float32))
            self.register_buffer("dy", torch.as_tensor(np.where(dx > 0, dy, 0.0), dtype=torch.float32))
            self.register_buffer("y0", torch.as_tensor(ys[:, 0], dtype=torch.float32))
            self.register_buffer("fitted", torch.as_tensor(fitted))

    def max_slope(self) -> float:
        """The largest d(probability) / d(logit): how much a logit's rounding moves a probability."""
        if self.isotonic:
            return max(0.25, float((self.dy * self.inv_dx).max()))
        return 0.25 * max(1.0, float(self.scale.abs().max()))

    @classmethod
    def from_result(cls, result, body: nn.Module | None = None) -> "CalibratedHead":
        """The head of a :class:`~labelwise.plugins.cft.calibrate.CFTResult`, with its calibration."""
        return cls(result.weight, result.bias, body=body, calibration=result.calibration,
                   thresholds=result.thresholds)

    @classmethod
    def from_npz(cls, path) -> "CalibratedHead":
        """The head written to a ``cft_head.npz`` (weight, bias, calibration, thresholds)."""
        from labelwise.plugins.cft.outputs import load_calibration
        from labelwise.utils.fileio import read_npz

        arrays = read_npz(path, what="a CFT head (cft_head.npz)")
        calibration, thresholds = load_calibration(arrays)
        return cls(arrays["weight"], arrays["bias"], calibration=calibration, thresholds=thresholds)

    def forward(self, x):
        features = self.body(x) if self.body is not None else x
        logits = self.linear(features)
        if self.isotonic:
            # p = y0 + sum_i clamp((z - x_i) / (x_{i+1} - x_i), 0, 1) (y_{i+1} - y_i): np.interp, clipped
            steps = ((logits.unsqueeze(-1) - self.x0) * self.inv_dx).clamp(0.0, 1.0)
            interpolated = self.y0 + (steps * self.dy).sum(-1)
            probabilities = torch.where(self.fitted, interpolated, torch.sigmoid(logits))
        else:
            probabilities = torch.sigmoid(logits * self.scale + self.shift)
        return logits, probabilities, (probabilities >= self.thresholds).to(torch.int64)


def head_metadata(result, class_names, *, source_sha256: str | None = None, **extra) -> dict:
    """ONNX metadata of a CFT head: classes, changes, calibration, thresholds, errors before / after.

    Args:
        result: a :class:`~labelwise.plugins.cft.calibrate.CFTResult`.
        class_names: ``C`` names.
        source_sha256: SHA-256 of the single file the head came from (a checkpoint, a ``.npz``).
            ``None`` or empty (no such file, e.g. weights trained in memory): the key is left
            out, never stored empty.
        **extra: more entries (``source``, ``inputs``, ...).
    """
    if source_sha256:
        extra["source_sha256"] = source_sha256
    report = result.calibration_report or {}
    overall = {key: (report.get(key) or {}).get("overall") for key in ("original_sigmoid", "cft_sigmoid", "calibrated")}
    return {"producer": "labelwise cft", "class_names": list(class_names), "changed_categories": result.changed,
            "metric": result.options.metric, "optimizer": result.options.optimizer,
            "calibration": result.options.calibration, "threshold_objective": result.options.threshold_objective,
            "thresholds": [float(t) for t in result.thresholds] if result.thresholds is not None else None,
            "calibration_errors_validation": overall,
            "outputs": "logits (re-fitted layer), probabilities (calibrated), labels (int64 0/1 at the thresholds)",
            **extra}


def _require_onnx():
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as exc:
        raise ImportError(f"ONNX export needs onnx, onnxscript and onnxruntime: pip install 'labelwise[onnx]' ({exc})") from exc


def export_onnx(module: nn.Module, path, example: torch.Tensor, *, metadata: dict | None = None,
                input_name: str = "features") -> Path:
    """Export ``module`` (returning logits and probabilities) to one ONNX file, atomically.

    Args:
        module: e.g. a :class:`CalibratedHead`; exported in eval mode on CPU.
        path: the ``.onnx`` file to write.
        example: an example input (its batch axis is made dynamic).
        metadata: ``{key: value}`` stored as metadata_props (non-strings as JSON).
        input_name: the graph input's name.

    Returns:
        ``path`` as a :class:`~pathlib.Path`.
    """
    _require_onnx()
    import onnx

    path = Path(path)
    module = module.eval().cpu()
    batch = torch.export.Dim("batch", min=1)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "model.onnx"
        torch.onnx.export(module, (example.cpu(),), str(raw), dynamo=True, external_data=False,
                          input_names=[input_name], output_names=list(OUTPUT_NAMES),
                          dynamic_shapes=({0: batch},), verbose=False)
        model = onnx.load(str(raw))
    for key, value in (metadata or {}).items():
        entry = model.metadata_props.add()
        entry.key, entry.value = str(key), value if isinstance(value, str) else json.dumps(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as f:
        f.write(model.SerializeToString())
    return path


@torch.no_grad()
def verify_onnx(path, module: nn.Module, inputs: torch.Tensor) -> float:
    """Check logits, probabilities and labels of onnxruntime against ``module``; the logits' max abs difference.

    The accepted difference of the logits is relative to their scale: ``TOLERANCE * max(1,
    max |logit|)``; that of the probabilities is the same times the calibration's largest
    slope (a Platt scale of 40 turns a logit's rounding into 10 times more in probability).
    ``labels`` must agree exactly except where a probability is within its tolerance of the
    threshold.

    Raises:
        AssertionError: a difference above the tolerance, or labels that differ.
    """
    report = onnx_parity(path, module, inputs)
    if not report["logits_diff"] <= report["logits_tolerance"]:
        raise AssertionError(f"{path}: onnxruntime's logits differ from PyTorch's by {report['logits_diff']:.3g} > "
                             f"{report['logits_tolerance']:.3g} ({TOLERANCE:g} x the largest |logit|, at least "
                             f"{TOLERANCE:g})")
    if not report["probabilities_diff"] <= report["probabilities_tolerance"]:
        raise AssertionError(f"{path}: onnxruntime's probabilities differ from PyTorch's by "
                             f"{report['probabilities_diff']:.3g} > {report['probabilities_tolerance']:.3g} (the "
                             f"logits' tolerance x the calibration's slope {report['slope']:.3g})")
    if not report["labels_agree"]:
        raise AssertionError(f"{path}: onnxruntime's labels differ from PyTorch's away from the thresholds")
    return report["logits_diff"]


@torch.no_grad()
def onnx_parity(path, module: nn.Module, inputs: torch.Tensor) -> dict:
    """onnxruntime's outputs of ``path`` against ``module``'s on ``inputs``: differences and tolerances.

    Returns:
        ``{"samples", "logits_diff", "logits_tolerance", "probabilities_diff",
        "probabilities_tolerance", "slope", "labels_agree", "passed"}`` (the tolerances of
        :func:`verify_onnx`, which raises where this reports ``passed: False``).
    """
    _require_onnx()
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {name: inputs.cpu().numpy()})))
    logits, probabilities, labels = (t.numpy() for t in module.eval().cpu()(inputs.cpu()))
    tolerance = TOLERANCE * max(1.0, float(np.abs(logits).max()))
    slope = module.max_slope() if isinstance(module, CalibratedHead) else 0.25
    p_tolerance = tolerance * max(1.0, slope)
    diff = float(np.abs(got["logits"] - logits).max())
    p_diff = float(np.abs(got["probabilities"] - probabilities).max())
    thresholds = module.thresholds.numpy()
    close = np.abs(probabilities - thresholds) <= p_tolerance
    agree = bool(((got["labels"] == labels) | close).all())
    return {"samples": int(inputs.shape[0]), "logits_diff": diff, "logits_tolerance": tolerance,
            "probabilities_diff": p_diff, "probabilities_tolerance": p_tolerance, "slope": float(slope),
            "labels_agree": agree, "passed": bool(diff <= tolerance and p_diff <= p_tolerance and agree)}


def read_metadata(path) -> dict:
    """The metadata map of an ONNX file, as onnxruntime reads it (string values)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)
