"""ONNX export of a calibrated head (features -> logits, probabilities), verified with onnxruntime.

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

__all__ = ["CalibratedHead", "export_onnx", "read_metadata", "verify_onnx"]

#: Largest max-abs difference between onnxruntime and PyTorch accepted by :func:`verify_onnx`.
TOLERANCE = 1e-5


class CalibratedHead(nn.Module):
    """``features (B, D) -> (logits (B, C), probabilities (B, C))`` with a fixed linear layer.

    Args:
        weight: ``(C, D)``; bias: ``(C,)``.
        body: optional module mapping the graph's input to features ``(B, D)`` (a backbone),
            so that one graph runs backbone + calibrated head.
    """

    def __init__(self, weight, bias, body: nn.Module | None = None):
        super().__init__()
        weight = torch.as_tensor(weight, dtype=torch.float32)
        self.linear = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.linear.weight.copy_(weight)
            self.linear.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        self.body = body

    def forward(self, x):
        features = self.body(x) if self.body is not None else x
        logits = self.linear(features)
        return logits, torch.sigmoid(logits)


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
                          input_names=[input_name], output_names=["logits", "probabilities"],
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
    """Max absolute difference of logits and probabilities between onnxruntime and ``module``.

    Raises:
        AssertionError: the difference exceeds :data:`TOLERANCE`.
    """
    _require_onnx()
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    got = session.run(None, {name: inputs.cpu().numpy()})
    expected = module.eval().cpu()(inputs.cpu())
    diff = max(float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected))
    if not diff <= TOLERANCE:
        raise AssertionError(f"{path}: onnxruntime differs from PyTorch by {diff:.3g} > {TOLERANCE}")
    return diff


def read_metadata(path) -> dict:
    """The metadata map of an ONNX file, as onnxruntime reads it (string values)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(session.get_modelmeta().custom_metadata_map)
