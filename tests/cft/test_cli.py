"""`labelwise cft --npz`: outputs, ONNX parity and metadata, resume, errors; torchrun with 2 processes."""
import json
import re

import numpy as np
import pytest

from conftest import run_python
from labelwise.cli import main
from labelwise.plugins.cft.synthetic import make_synthetic_problem
from labelwise.utils.fileio import is_labelwise_figure
from labelwise.utils.fingerprint import file_sha256

FAST = ["--epochs", "25", "--early-stopping", "8", "--population", "10", "--no-progress"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    p = make_synthetic_problem(n_train=240, n_val=160, n_test=10, dim=10, num_classes=5, head_steps=30,
                               prevalence=(0.1, 0.4), seed=2)
    path = tmp_path_factory.mktemp("cft-npz") / "head.npz"
    keys = ("train_features", "train_labels", "val_features", "val_labels", "weight", "bias")
    np.savez(path, **{k: p[k] for k in keys}, class_names=np.array(["cat", "dog", "car", "sky", "sea"]))
    return path


def test_npz_outputs_and_onnx(npz, tmp_path, capsys):
    import onnxruntime as ort

    from labelwise.plugins.cft.onnx_export import read_metadata

    out = tmp_path / "out"
    assert main(["cft", "--npz", str(npz), "--out", str(out), "--optimizer", "best", "--lr", "0.01", *FAST]) == 0
    printed = capsys.readouterr().out
    assert "cft best: mean validation AP" in printed
    assert re.search(r"calibration platt on \d+ known validation entries \(in-sample\): ECE [0-9.]+ -> [0-9.]+", printed)
    assert f"reliability diagram: {out / 'cft_reliability.png'}\n" in printed
    report = json.loads((out / "cft_report.json").read_text())
    head = np.load(out / "cft_head.npz")
    assert head["weight"].shape == (5, 10) and head["bias"].shape == (5,)
    assert list(head["class_names"]) == ["cat", "dog", "car", "sky", "sea"]
    assert report["summary"]["mean_score_after"] >= report["summary"]["mean_score_before"]
    assert report["onnx_max_abs_diff"] <= 1e-5
    assert (out / "cft_scores.png").read_bytes()[:4] == b"\x89PNG"
    assert is_labelwise_figure(out / "cft_reliability.png")
    assert report["plots"] == {"scores": "cft_scores.png", "reliability": "cft_reliability.png"}
    meta = read_metadata(out / "cft_head.onnx")
    assert json.loads(meta["class_names"]) == ["cat", "dog", "car", "sky", "sea"]
    assert json.loads(meta["changed_categories"]) == report["summary"]["changed"]
    assert meta["metric"] == "ap" and meta["source_sha256"] == report["source_sha256"] == file_sha256(npz)
    assert not list(out.glob("*.data"))  # one self-contained file
    session = ort.InferenceSession(str(out / "cft_head.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 7):  # dynamic batch axis
        x = np.random.default_rng(batch).standard_normal((batch, 10)).astype(np.float32)
        logits, probs, labels = session.run(["logits", "probabilities", "labels"], {"features": x})
        np.testing.assert_allclose(logits, x @ head["weight"].T + head["bias"], atol=1e-5)
        # Platt scaling (the default), fitted on the known validation labels, and F1 thresholds
        z = logits.astype(np.float64) * head["calibration_scale"] + head["calibration_shift"]
        np.testing.assert_allclose(probs, 1 / (1 + np.exp(-z)), atol=1e-6)
        assert labels.dtype == np.int64 and np.array_equal(labels, (probs >= head["thresholds"]).astype(np.int64))
    assert meta["calibration"] == "platt" and len(json.loads(meta["thresholds"])) == 5
    errors = report["calibration"]
    assert errors["calibrated"]["overall"]["ece"] <= errors["cft_sigmoid"]["overall"]["ece"]
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_npz_resume_and_errors(npz, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["cft", "--npz", str(npz), "--out", str(out), "--no-onnx", "--no-plot", *FAST]
    assert main(args) == 0
    first = np.load(out / "cft_head.npz")["weight"]
    states = sorted((out / "cft_state").glob("category*-ga.json"))
    assert len(states) == 5
    states[3].unlink()
    assert main(args) == 0
    assert np.array_equal(np.load(out / "cft_head.npz")["weight"], first)
    assert main([*args, "--seed", "3"]) == 2
    assert "cft_report.json holds the results of another CFT run (seed: 0, now 3)" in capsys.readouterr().err
    bad = tmp_path / "bad.npz"
    np.savez(bad, weight=np.zeros((2, 3)))
    assert main(["cft", "--npz", str(bad), "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "bad.npz: missing key(s) train_features, train_labels, val_features, val_labels, bias" in err
    assert main(["cft", "--out", str(tmp_path / "o3")]) == 2
    assert "give either --npz FILE or --config CONFIG --checkpoint CKPT" in capsys.readouterr().err


def test_no_plot_writes_no_reliability_diagram(npz, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["cft", "--npz", str(npz), "--out", str(out), "--no-onnx", "--no-plot", *FAST]) == 0
    assert "reliability diagram" not in capsys.readouterr().out and not list(out.glob("*.png"))
    assert json.loads((out / "cft_report.json").read_text())["plots"] == {}


def test_full_onnx_with_npz_is_refused_before_fitting(npz, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["cft", "--npz", str(npz), "--out", str(out), "--full-onnx", *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"labelwise cft: error: --full-onnx needs a model (--config CONFIG --checkpoint CKPT) to export "
                   f"backbone + calibrated head; --npz {npz} holds features only (cft_head.onnx is the head alone)")
    assert not out.exists()  # refused before anything was fitted or written


def test_torchrun_two_processes_equal_one(npz, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--npz", str(npz), "--no-onnx", "--no-plot", "--optimizer", "best", "--lr", "0.01", *FAST]
    env = {"OMP_NUM_THREADS": "1"}
    run_python("-m", "labelwise", "cft", "--out", str(one), *common, env=env, timeout=300)
    proc = run_python("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "labelwise", "cft",
                      "--out", str(two), "--launcher", "pytorch", *common, env=env, timeout=300)
    assert proc.stdout.count("cft best: mean validation AP") == 1  # only rank 0 reports and writes
    a, b = np.load(one / "cft_head.npz"), np.load(two / "cft_head.npz")
    assert np.array_equal(a["weight"], b["weight"]) and np.array_equal(a["bias"], b["bias"])
    ra = json.loads((one / "cft_report.json").read_text())["categories"]
    rb = json.loads((two / "cft_report.json").read_text())["categories"]
    assert [r["score_after"] for r in ra] == [r["score_after"] for r in rb]
    # the merged head is calibrated as one process calibrates it (not left at the plain sigmoid)
    ca = json.loads((one / "cft_report.json").read_text())["calibration"]
    cb = json.loads((two / "cft_report.json").read_text())["calibration"]
    assert ca is not None and ca == cb
    for key in a.files:
        assert np.array_equal(a[key], b[key]), key
