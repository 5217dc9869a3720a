"""CFT's checks after calibration: the exported ONNX head against the calibrated head, on given features."""
from __future__ import annotations

from pathlib import Path

__all__ = ["check_onnx_head", "fit_and_write"]


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


def fit_and_write(train_features, train_labels, val_features, val_labels, weight, bias, *, options, class_names,
                  out_dir=None, device="cpu", progress: bool = True, source: str = "",
                  source_sha256: str | None = None, onnx: bool = True, plot: bool = True, before_write=None):
    """CFT on features, then rank 0 writes the outputs: what ``labelwise cft``, :class:`labelwise.CFTHook`
    and the timm path run.

    Categories are split over ``torch.distributed`` ranks when a process group is initialised
    (every rank gets the merged result); the resumable per-category state goes to
    ``out_dir/cft_state``. Rank 0 then writes ``cft_head.npz``, ``cft_report.json``, the plots
    (``cft_scores.png``, ``cft_reliability.png``) and the ONNX head
    (:func:`labelwise.plugins.cft.outputs.write_outputs`).

    Args:
        train_features, train_labels, val_features, val_labels, weight, bias: as
            :func:`labelwise.plugins.cft.calibrate.fit_calibrated_head`.
        options: a :class:`~labelwise.plugins.cft.options.CFTOptions`.
        class_names: one name per category (report and ONNX metadata); ``None``: ``"0"``, ``"1"``, ...
        out_dir: output folder; ``None`` writes nothing (and keeps no state).
        source, source_sha256: where the original head came from, for the report and metadata;
            ``source_sha256`` is the SHA-256 of the single file it came from, ``None`` when there
            is none (the key is then left out).
        before_write: ``callable(result) -> dict`` run on rank 0 before writing (e.g. a full
            ONNX export); its entries go into the report.

    Returns:
        The :class:`~labelwise.plugins.cft.calibrate.CFTResult`.
    """
    from labelwise.plugins.cft.distributed import fit_calibrated_head_distributed
    from labelwise.plugins.cft.outputs import write_outputs
    from labelwise.utils.distributed import is_main_process

    result = fit_calibrated_head_distributed(
        train_features, train_labels, val_features, val_labels, weight, bias, options=options,
        class_names=class_names, device=device, state_dir=Path(out_dir) / "cft_state" if out_dir else None,
        progress=progress)
    if out_dir is not None and is_main_process():
        extra = before_write(result) if before_write is not None else {}
        names = list(class_names) if class_names is not None else [str(i) for i in range(result.weight.shape[0])]
        write_outputs(result, out_dir, class_names=names, source=source, source_sha256=source_sha256,
                      onnx=onnx, plot=plot, extra=extra, seed=result.options.seed)
    return result
