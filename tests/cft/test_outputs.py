"""write_outputs: the reliability diagram (drawn numbers, stamp, plot=False) and source_sha256 in report / ONNX."""
import json

import numpy as np
import pytest

from labelwise.errors import DataError
from labelwise.plugins.cft.outputs import OUTPUT_FILES, reliability_figure, write_outputs
from labelwise.utils.fileio import is_labelwise_figure

NAMES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def result():
    from labelwise.plugins.cft.calibrate import fit_calibrated_head
    from labelwise.plugins.cft.options import CFTOptions

    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 6))

    def labels(x):  # half the entries unknown
        return np.where(rng.random((len(x), 3)) < 0.5, x @ w.T + rng.normal(size=(len(x), 3)) > 0, -1).astype(int)

    x_train, x_val = rng.normal(size=(300, 6)), rng.normal(size=(300, 6))
    return fit_calibrated_head(x_train, labels(x_train), x_val, labels(x_val), 3 * w, np.zeros(3),
                               options=CFTOptions(epochs=10, early_stopping=5, population=6), progress=False)


def test_reliability_figure_draws_the_reported_bins(result):
    report = result.calibration_report
    fig = reliability_figure(report)
    top, bottom = fig.axes
    lines = top.get_lines()
    assert [tuple(v) for v in lines[0].get_xydata()] == [(0.0, 0.0), (1.0, 1.0)]  # the diagonal
    for line, key in zip(lines[1:], ("original_sigmoid", "cft_sigmoid", "calibrated")):
        bins = report["reliability"][key]
        shown = [i for i, v in enumerate(bins["mean_confidence"]) if v is not None]
        assert line.get_xdata().tolist() == pytest.approx([bins["mean_confidence"][i] for i in shown])
        assert line.get_ydata().tolist() == pytest.approx([bins["fraction_positive"][i] for i in shown])
        assert sum(bins["counts"]) == report[key]["overall"]["known"] > 0
    legend = [t.get_text() for t in top.get_legend().get_texts()]
    assert legend[1] == f"original sigmoid: ECE {report['original_sigmoid']['overall']['ece']:.4f}"
    assert legend[2] == f"CFT sigmoid: ECE {report['cft_sigmoid']['overall']['ece']:.4f}"
    assert legend[3] == f"calibrated (platt): ECE {report['calibrated']['overall']['ece']:.4f}"
    heights = [p.get_height() for p in bottom.patches]  # three bars per bin: the bin counts
    assert len(heights) == 45
    assert heights[:15] == report["reliability"]["original_sigmoid"]["counts"]
    assert heights[15:30] == report["reliability"]["cft_sigmoid"]["counts"]
    assert heights[30:] == report["reliability"]["calibrated"]["counts"]


def test_reliability_png_is_written_stamped_and_recorded(result, tmp_path):
    paths = write_outputs(result, tmp_path, class_names=NAMES, onnx=False)
    png = tmp_path / "cft_reliability.png"
    assert paths["reliability"] == png and OUTPUT_FILES["reliability"] == png.name
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and is_labelwise_figure(png)
    report = json.loads((tmp_path / "cft_report.json").read_text())
    assert report["plots"] == {"scores": "cft_scores.png", "reliability": "cft_reliability.png"}
    assert not list(tmp_path.glob(".*.tmp"))
    write_outputs(result, tmp_path, class_names=NAMES, onnx=False)  # a re-run replaces its own figure

    other = tmp_path / "other"
    other.mkdir()
    (other / "cft_reliability.png").write_bytes(b"someone else's picture")
    with pytest.raises(DataError, match="cft_reliability.png exists and is not a plot labelwise wrote"):
        write_outputs(result, other, class_names=NAMES, onnx=False)
    assert (other / "cft_reliability.png").read_bytes() == b"someone else's picture"


def test_plot_false_writes_no_png(result, tmp_path):
    paths = write_outputs(result, tmp_path, class_names=NAMES, onnx=False, plot=False)
    assert "reliability" not in paths and not list(tmp_path.glob("*.png"))
    assert json.loads((tmp_path / "cft_report.json").read_text())["plots"] == {}


@pytest.mark.parametrize("sha", [None, "", "ab" * 32])
def test_source_sha256_is_given_or_left_out(result, tmp_path, sha):
    onnx = pytest.importorskip("onnx")

    write_outputs(result, tmp_path, class_names=NAMES, source="weights.pth", source_sha256=sha, plot=False)
    report = json.loads((tmp_path / "cft_report.json").read_text())
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "cft_head.onnx")).metadata_props}
    assert report["source"] == meta["source"] == "weights.pth"
    if sha:
        assert report["source_sha256"] == meta["source_sha256"] == sha
    else:  # no hash: the key is absent, never an empty string
        assert "source_sha256" not in report and "source_sha256" not in meta
