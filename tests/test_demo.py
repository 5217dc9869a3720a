"""`labelwise demo --tiny` end to end as a real process: every method, the ONNX check, plots, resume."""
import json
import re

from conftest import run_python

ROWS = (("LabelPooling", "single", "top-1"), ("Label Refinery", "single", "top-1"),
        ("CleanNet", "noisy-symmetric-r0.2", "top-1"), ("PU-MLC", "partial-p0.3", "mAP"),
        ("CFT", "partial-p0.3", "mAP"))
HEADER = "| method | regime | metric | baseline | method | delta |"
PLOTS = ("results.png", "cft_per_category_ap.png", "seed0/cleannet/cleannet_scores.png")
RUNS = ("baseline-single", "labelpool", "refinery-gen2", "baseline-noisy", "cleannet-weighted", "baseline-partial",
        "pumlc")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _row(text: str, method: str, regime: str, metric: str) -> tuple:
    match = re.search(rf"^\| {re.escape(method)} \| {re.escape(regime)} \| {metric} \(%\) \| "
                      r"([0-9.]+) \| ([0-9.]+) \| ([+-][0-9.]+) \|$", text, re.MULTILINE)
    assert match, f"no {method} row in:\n{text}"
    return tuple(float(v) for v in match.groups())


def test_demo_tiny_end_to_end_and_resume(tmp_path):
    out = tmp_path / "demo"
    proc = run_python("-m", "labelwise", "demo", "--tiny", "--out", str(out), timeout=900)
    table = proc.stdout[proc.stdout.index(HEADER):]
    summary = (out / "summary.md").read_text()
    assert HEADER in summary
    for method, regime, metric in ROWS:
        baseline, value, delta = _row(table, method, regime, metric)
        assert _row(summary, method, regime, metric) == (baseline, value, delta)
        assert 0 <= baseline <= 100 and 0 <= value <= 100
        assert abs(value - baseline - delta) <= 0.011
    # the table holds what the Runner reported
    metrics = {run: json.loads((out / "seed0" / run / "metrics.json").read_text()) for run in RUNS}
    assert _row(table, "LabelPooling", "single", "top-1")[:2] == (round(metrics["baseline-single"]["value"], 2),
                                                                   round(metrics["labelpool"]["value"], 2))
    assert _row(table, "CleanNet", "noisy-symmetric-r0.2", "top-1")[1] == round(metrics["cleannet-weighted"]["value"], 2)
    assert _row(table, "PU-MLC", "partial-p0.3", "mAP")[1] == round(metrics["pumlc"]["value"], 2)
    for run in RUNS:  # every run trained through mmengine's Runner (its checkpoint and dumped config)
        assert (out / "seed0" / run / "mmpretrain" / "epoch_1.pth").is_file()
    checkpoint_a = str(out / "seed0" / "baseline-single" / "mmpretrain" / "epoch_1.pth")
    assert checkpoint_a in metrics["refinery-gen2"]["cfg_options"]["data_preprocessor.refinery"]
    backbone_p = str(out / "pretrain" / "single" / "mmpretrain" / "epoch_1.pth")
    for run in RUNS:  # --tiny: every run starts from the pretrained backbone P
        assert backbone_p in metrics[run]["cfg_options"]["model.backbone.init_cfg"]
    detection = json.loads((out / "seed0" / "cleannet" / "detection.json").read_text())
    assert 0 <= detection["error"] <= 1 and detection["samples"] > 0
    # the ONNX head was run with onnxruntime and reproduces the calibrated logits
    onnx = re.search(r"ONNX check \(seed 0\): cft_head\.onnx run with onnxruntime on (\d+) test feature rows "
                     r"reproduces the calibrated logits: max abs diff (\S+) \(< 0\.0001\): passed", proc.stdout)
    assert onnx and int(onnx.group(1)) > 0 and float(onnx.group(2)) < 1e-4
    assert onnx.group(0) in summary
    for name in PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
        assert f"`{name}`" in summary
    # one progress line per step, numbered
    assert "[1/17] data: generating the digit scenes" in proc.stderr
    assert "[7/17] refinery: training generation 2 (refinery: A) ..." in proc.stderr
    assert "[17/17] cft: ONNX head" in proc.stderr

    # a second run reuses every step and prints the same table
    again = run_python("-m", "labelwise", "demo", "--tiny", "--out", str(out), timeout=300)
    assert again.stderr.count(": reusing ") == 17
    assert "(17 of 17 steps reused;" in again.stdout
    assert again.stdout[again.stdout.index(HEADER):again.stdout.index("summary:")] == \
        proc.stdout[proc.stdout.index(HEADER):proc.stdout.index("summary:")]

    # results of another size are not mixed into the folder
    other = run_python("-m", "labelwise", "demo", "--quick", "--out", str(out), timeout=120, check=False)
    assert other.returncode != 0
    assert f"{out} holds a 'tiny' demo" in other.stderr and "--quick" in other.stderr


def test_summary_caveat_names_a_baseline_at_the_constant_score_floor(tiny_digits, tmp_path):
    import numpy as np

    from labelwise.data import load_regime
    from labelwise.demo.report import _measured_caveats

    (tmp_path / "data").symlink_to(tiny_digits)
    labels = np.asarray(load_regime(tiny_digits, "partial-p0.3", "test").labels, dtype=float)
    floor = 100 * labels.mean(axis=0).mean()  # hand check: AP of a constant score = prevalence
    run = lambda partial: [{"seed": 0, "partial": {"value": partial}, "single": {"value": 61.5}}]  # noqa: E731
    at_floor = _measured_caveats(tmp_path, run(floor + 1.0))
    assert any(f"({floor + 1.0:.2f} mAP) is within 5 points of the constant-score floor ({floor:.2f}" in line
               for line in at_floor)
    trained = _measured_caveats(tmp_path, run(floor + 30.0))
    assert not any("constant-score floor" in line for line in trained)
    assert any("checkpoint A, 61.50 % top-1" in line for line in trained)


def test_table_gives_the_paired_interval_and_verdict_for_several_seeds():
    from labelwise.demo.report import format_table

    row = {"method": "X", "regime": "single", "metric": "top-1", "baseline": [50, 52, 51], "value": [55, 56, 57],
           "delta": [5, 4, 6]}
    # differences 5, 4, 6: mean 5, std 1, t(0.975, 2) = 4.3027, half-width 4.3027 / sqrt(3) = 2.484
    assert format_table([row]).splitlines()[-1] == ("| X | single | top-1 (%) | 51.00 ± 1.00 | 56.00 ± 1.00 | "
                                                    "+5.00 ± 1.00 | [+2.52, +7.48] | helps |")
    flat = {**row, "value": [52, 51, 52], "delta": [2, -1, 1]}
    assert format_table([flat]).splitlines()[-1].endswith("| within noise |")
