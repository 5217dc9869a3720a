"""Writing a CFT run: calibrated head (.npz), report (.json), plots (.png) and ONNX head.

Every file is written atomically (temporary file, then rename).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from labelwise.utils.fileio import atomic_write, write_figure, write_json
from labelwise.utils.fingerprint import file_sha256  # noqa: F401  (re-exported: part of this module's API)

__all__ = ["OUTPUT_FILES", "calibration_arrays", "file_sha256", "load_calibration", "plot_reliability", "plot_scores",
           "reliability_figure", "write_outputs"]

#: File names written by :func:`write_outputs` inside the output directory.
OUTPUT_FILES = {"head": "cft_head.npz", "report": "cft_report.json", "plot": "cft_scores.png",
                "reliability": "cft_reliability.png", "onnx": "cft_head.onnx"}
#: The probabilities a reliability diagram compares: report key, legend label, colour, line width (the
#: original is drawn wide underneath, so it stays visible where CFT left the logits alone).
RELIABILITY_CURVES = (("original_sigmoid", "original sigmoid", "#9aa5b1", 4.0),
                      ("cft_sigmoid", "CFT sigmoid", "#2b6cb0", 1.5), ("calibrated", "calibrated", "#c05621", 1.5))


def _figure_class():
    """matplotlib's ``Figure`` on the Agg backend (no display needed)."""
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError(f"the CFT plots need matplotlib: pip install 'labelwise[plot]' ({exc})") from exc
    return Figure


def plot_scores(categories: list, path, *, metric: str) -> Path:
    """Bar chart of each category's validation score before / after calibration (PNG).

    Needs matplotlib (``pip install 'labelwise[plot]'``).
    """
    Figure = _figure_class()
    run = [c for c in categories if c["skipped"] is None]
    names = [c["name"] for c in run]
    x = np.arange(len(run))
    fig = Figure(figsize=(max(4.0, 0.35 * len(run) + 1.5), 3.2), dpi=100)
    ax = fig.subplots()
    ax.bar(x - 0.2, [c["score_before"] for c in run], 0.4, label="before", color="#9aa5b1")
    ax.bar(x + 0.2, [c["score_after"] for c in run], 0.4, label="after (CFT)", color="#2b6cb0")
    ax.set_xticks(x, names, rotation=90 if len(run) > 20 else 0, fontsize=7 if len(run) > 20 else 9)
    ax.set_ylabel(f"validation {metric.upper()}")
    low = min([c["score_before"] for c in run] or [0.0])
    ax.set_ylim(max(0.0, low - 0.05), 1.0)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"CFT: per-category validation {metric.upper()} ({len(categories) - len(run)} skipped)", fontsize=9)
    return write_figure(path, fig)


def reliability_figure(calibration_report: dict):
    """Reliability diagram of the known validation entries, all classes pooled (a matplotlib ``Figure``).

    Top: fraction positive against mean confidence in each non-empty bin, for the original
    head's sigmoid, the re-fitted (CFT) head's sigmoid and the calibrated probabilities, the
    diagonal, and each one's overall ECE in the legend. Below: the known entries per bin, one
    bar per curve.

    Args:
        calibration_report: ``CFTResult.calibration_report`` (see
            :func:`~labelwise.plugins.cft.calibration.calibrate_logits`), with ``"reliability"``.

    Needs matplotlib (``pip install 'labelwise[plot]'``).
    """
    Figure = _figure_class()
    reliability = calibration_report["reliability"]
    edges = np.asarray(reliability["edges"], dtype=np.float64)
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    fig = Figure(figsize=(5.0, 5.6), dpi=100)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.plot([0, 1], [0, 1], linestyle="--", color="#4a5568", linewidth=1, label="perfectly calibrated")
    for i, (key, label, colour, linewidth) in enumerate(RELIABILITY_CURVES):
        bins = reliability[key]
        confidence = np.array([np.nan if v is None else v for v in bins["mean_confidence"]], dtype=np.float64)
        positive = np.array([np.nan if v is None else v for v in bins["fraction_positive"]], dtype=np.float64)
        shown = ~np.isnan(confidence)
        ece = calibration_report[key]["overall"]["ece"]
        name = f"{label} ({calibration_report['method']})" if key == "calibrated" else label
        top.plot(confidence[shown], positive[shown], marker="o", markersize=linewidth + 2.5, linewidth=linewidth,
                 color=colour, label=f"{name}: ECE {ece:.4f}")
        bottom.bar(centres + (i - 1) * width / 3, bins["counts"], width / 3, color=colour, label=name)
    top.set_xlim(0.0, 1.0)
    top.set_ylim(-0.02, 1.02)
    top.set_ylabel("fraction positive")
    top.legend(loc="upper left", fontsize=8)
    known = calibration_report["calibrated"]["overall"]["known"]
    top.set_title(f"CFT reliability (in-sample): {known} known validation entries,\nall classes pooled", fontsize=9)
    bottom.set_xlabel(f"mean predicted probability ({len(centres)} equal-width bins)")
    bottom.set_ylabel("known entries")
    return fig


def plot_reliability(calibration_report: dict, path) -> Path:
    """Write :func:`reliability_figure` as a PNG to ``path`` (atomically, stamped by
    :func:`~labelwise.utils.fileio.write_figure`)."""
    return write_figure(path, reliability_figure(calibration_report))


def calibration_arrays(result) -> dict:
    """The calibration of ``result`` as arrays for ``cft_head.npz`` (see :func:`load_calibration`)."""
    cal = result.calibration
    method = "none" if cal is None else cal.method
    arrays = {"calibration_method": np.array(method), "thresholds": np.asarray(result.thresholds, dtype=np.float64)}
    if cal is not None:
        xs, ys = cal.padded_knots() if method == "isotonic" else (np.zeros((len(cal.scale), 0)),) * 2
        arrays.update(calibration_scale=cal.scale, calibration_shift=cal.shift, calibration_knots_x=xs,
                      calibration_knots_y=ys, calibration_fitted=cal.fitted, calibration_known=cal.known)
    return arrays


def load_calibration(npz) -> tuple:
    """``(Calibration or None, thresholds)`` from the arrays of a ``cft_head.npz``."""
    from labelwise.plugins.cft.calibration import Calibration

    method = str(npz["calibration_method"]) if "calibration_method" in npz else "none"
    thresholds = np.asarray(npz["thresholds"]) if "thresholds" in npz else None
    if method == "none":
        return None, thresholds
    xs, ys = npz["calibration_knots_x"], npz["calibration_knots_y"]
    # padded rows repeat their last knot, which np.interp reads the same; a class left out is NaN
    knots_x = tuple(np.empty(0) if np.isnan(r).any() else r for r in xs) if method == "isotonic" else ()
    knots_y = tuple(np.empty(0) if np.isnan(r).any() else r for r in ys) if method == "isotonic" else ()
    return Calibration(method, np.asarray(npz["calibration_scale"]), np.asarray(npz["calibration_shift"]), knots_x,
                       knots_y, np.asarray(npz["calibration_fitted"]), np.asarray(npz["calibration_known"])), thresholds


def write_outputs(result, out_dir, *, class_names, source: str = "", source_sha256: str | None = None,
                  onnx: bool = True, plot: bool = True, extra: dict | None = None, seed: int = 0) -> dict:
    """Write the calibrated head, the report, the plots and the ONNX head into ``out_dir``.

    Args:
        result: a :class:`~labelwise.plugins.cft.calibrate.CFTResult`.
        out_dir: output directory (created).
        class_names: ``C`` names (stored in the .npz, the report and the ONNX metadata).
        source: where the original head came from.
        source_sha256: SHA-256 of the single file it came from; ``None`` (or empty) when there
            is none (weights in memory): the key is then left out of the report and metadata.
        onnx: export and verify the ONNX head (needs ``labelwise[onnx]``).
        plot: write the PNGs (needs matplotlib): ``cft_scores.png`` and, when the result has
            a calibration report, the reliability diagram ``cft_reliability.png``.
        extra: more keys for the report.
        seed: seed of the random inputs of the ONNX parity check.

    Returns:
        ``{name: path}`` of the files written; the report holds ``onnx_max_abs_diff`` and
        ``plots`` (``{"scores": file name, "reliability": file name}`` of the PNGs written).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    names = [str(n) for n in class_names]
    buffer = io.BytesIO()
    np.savez(buffer, weight=result.weight.numpy(), bias=result.bias.numpy(), class_names=np.array(names),
             **calibration_arrays(result))
    with atomic_write(out / OUTPUT_FILES["head"], "wb") as f:
        f.write(buffer.getvalue())
    paths["head"] = out / OUTPUT_FILES["head"]
    provenance = {"source": str(source), **({"source_sha256": source_sha256} if source_sha256 else {})}
    report = result.report(class_names=names, **provenance, **(extra or {}))
    if onnx:
        from labelwise.plugins.cft.onnx_export import CalibratedHead, export_onnx, head_metadata, verify_onnx

        head = CalibratedHead.from_result(result)
        dim = result.weight.shape[1]
        metadata = head_metadata(result, names, **provenance, inputs=f"features (batch, {dim}) float32")
        export_onnx(head, out / OUTPUT_FILES["onnx"], torch.zeros(2, dim), metadata=metadata)
        generator = torch.Generator().manual_seed(seed)
        report["onnx_max_abs_diff"] = verify_onnx(out / OUTPUT_FILES["onnx"], head, torch.randn(64, dim, generator=generator))
        paths["onnx"] = out / OUTPUT_FILES["onnx"]
    report["plots"] = {}
    if plot:
        paths["plot"] = plot_scores(result.categories, out / OUTPUT_FILES["plot"], metric=result.options.metric)
        report["plots"]["scores"] = OUTPUT_FILES["plot"]
        if (result.calibration_report or {}).get("reliability"):
            paths["reliability"] = plot_reliability(result.calibration_report, out / OUTPUT_FILES["reliability"])
            report["plots"]["reliability"] = OUTPUT_FILES["reliability"]
    write_json(out / OUTPUT_FILES["report"], report)
    paths["report"] = out / OUTPUT_FILES["report"]
    return paths
