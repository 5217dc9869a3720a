"""`labelwise demo --tiny` end to end as a real process: every method, the ONNX check, plots, resume."""
import hashlib
import json
import re

import numpy as np

from conftest import run_python

ROWS = (("LabelPooling", "single", "top-1"), ("Label Refinery", "single", "top-1"),
        ("CleanNet", "noisy-scene-r0.4", "top-1"), ("PU-MLC", "partial-p0.3", "mAP"),
        ("CFT", "partial-p0.3", "mAP"))
HEADER = "| method | regime | metric | baseline | method | delta | 95 % CI over test images | verdict |"
PLOTS = ("results.png", "cft_per_category_ap.png", "seed0/cleannet/cleannet_scores.png")
RUNS = ("baseline-single", "labelpool", "baseline-small", "refinery-small", "baseline-noisy", "cleannet-weighted",
        "baseline-partial", "pumlc")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STEPS = 22


def _row(text: str, method: str, regime: str, metric: str) -> tuple:
    match = re.search(rf"^\| {re.escape(method)} \| {re.escape(regime)} \| {metric} \(%\) \| "
                      r"([0-9.]+) \| ([0-9.]+) \| ([+-][0-9.]+) \| \[([+-][0-9.]+), ([+-][0-9.]+)\] \| "
                      r"(helps|hurts|within noise) \|$", text, re.MULTILINE)
    assert match, f"no {method} row in:\n{text}"
    return tuple(float(v) for v in match.groups()[:5]) + (match.group(6),)


def test_demo_tiny_end_to_end_and_resume(tmp_path):
    out = tmp_path / "demo"
    proc = run_python("-m", "labelwise", "demo", "--tiny", "--out", str(out), timeout=900)
    table = proc.stdout[proc.stdout.index(HEADER):]
    summary = (out / "summary.md").read_text()
    assert HEADER in summary
    results = json.loads((out / "results.json").read_text())
    for method, regime, metric in ROWS:
        baseline, value, delta, low, high, verdict = _row(table, method, regime, metric)
        assert _row(summary, method, regime, metric) == (baseline, value, delta, low, high, verdict)
        assert 0 <= baseline <= 100 and 0 <= value <= 100
        assert abs(value - baseline - delta) <= 0.011
        assert low <= delta + 0.011 and delta - 0.011 <= high  # the observed change lies in its interval
        assert verdict == ("helps" if low > 0 else "hurts" if high < 0 else "within noise")
        assert f"- {method}: delta {delta:+.2f} points, 95 % paired bootstrap interval" in summary
    # the table holds what the Runner reported, and the bootstrap compares the same test samples
    metrics = {run: json.loads((out / "seed0" / run / "metrics.json").read_text()) for run in RUNS}
    assert _row(table, "LabelPooling", "single", "top-1")[:2] == (round(metrics["baseline-single"]["value"], 2),
                                                                   round(metrics["labelpool"]["value"], 2))
    assert _row(table, "Label Refinery", "single", "top-1")[:2] == (round(metrics["baseline-small"]["value"], 2),
                                                                     round(metrics["refinery-small"]["value"], 2))
    assert _row(table, "CleanNet", "noisy-scene-r0.4", "top-1")[1] == round(metrics["cleannet-weighted"]["value"], 2)
    assert _row(table, "PU-MLC", "partial-p0.3", "mAP")[1] == round(metrics["pumlc"]["value"], 2)
    for run in RUNS:  # every run trained through mmengine's Runner and wrote its test scores
        assert (out / "seed0" / run / "mmpretrain" / "epoch_1.pth").is_file()
        with np.load(out / "seed0" / run / "test_scores.npz") as f:
            assert f["scores"].shape[0] == 80 and list(f["sample_idx"]) == list(range(80))
    labelpool_boot = results["per_seed"][0]["bootstrap"]["labelpool"]
    assert abs(labelpool_boot["delta"] - (metrics["labelpool"]["value"] - metrics["baseline-single"]["value"])) < 0.01
    # the models: trained by the tiny run, fingerprinted, and used where the protocol says
    manifest = json.loads((out / "models" / "manifest.json").read_text())
    for name, entry in manifest["models"].items():
        assert hashlib.sha256((out / "models" / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
    refinery = str(out / "models" / "refinery.safetensors")
    assert refinery in metrics["refinery-small"]["cfg_options"]["data_preprocessor.refinery"]
    backbone_p = str(out / "models" / "backbone.safetensors")
    small_p = str(out / "models" / "backbone-small.safetensors")
    for run in RUNS:
        assert (small_p if run in ("baseline-small", "refinery-small") else backbone_p) in \
            metrics[run]["cfg_options"]["model.backbone.init_cfg"]
    labelmaps = json.loads((out / "shared" / "labelmaps.json").read_text())
    assert labelmaps["map_size"] == [4, 4] and labelmaps["input_size"] == 64  # output stride 16 at 64 px
    diagnostic = json.loads((out / "shared" / "labelmaps-diagnostic.json").read_text())
    assert diagnostic["crops"] == 8 * 160 and 0 <= diagnostic["pooled_top_in_crop"] <= diagnostic["crops"]
    detection = json.loads((out / "seed0" / "cleannet" / "detection.json").read_text())
    assert 0 <= detection["error"] <= 1 and detection["samples"] > 0
    # the ONNX head was run with onnxruntime and reproduces the calibrated head
    onnx = re.search(r"ONNX check \(seed 0\): cft_head\.onnx run with onnxruntime on (\d+) test feature rows "
                     r"reproduces the calibrated head: logits max abs diff (\S+) \(tolerance (\S+)\), "
                     r"probabilities \S+ \(tolerance \S+\), labels equal: passed", proc.stdout)
    assert onnx and int(onnx.group(1)) == 80 and float(onnx.group(2)) <= float(onnx.group(3))
    assert onnx.group(0) in summary
    for name in PLOTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
        assert f"`{name}`" in summary
    # one progress line per step, numbered
    assert f"[1/{STEPS}] data: generating the digit scenes" in proc.stderr
    assert f"[3/{STEPS}] models: backbone (single labels of the disjoint scenes" in proc.stderr
    assert f"[14/{STEPS}] refinery: the same student refined online by the width-8 refinery ..." in proc.stderr
    assert f"[{STEPS}/{STEPS}] cft: ONNX head" in proc.stderr

    # a second run reuses every step and prints the same table
    again = run_python("-m", "labelwise", "demo", "--tiny", "--out", str(out), timeout=300)
    assert again.stderr.count(": reusing ") == STEPS - 6  # the 6 model steps: the manifest is there
    assert f"({STEPS} of {STEPS} steps reused;" in again.stdout
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


def test_table_gives_the_paired_interval_and_verdict_for_several_seeds():
    from labelwise.demo.report import format_table

    row = {"method": "X", "regime": "single", "metric": "top-1", "baseline": [50, 52, 51], "value": [55, 56, 57],
           "delta": [5, 4, 6], "bootstrap": [None] * 3}
    # differences 5, 4, 6: mean 5, std 1, t(0.975, 2) = 4.3027, half-width 4.3027 / sqrt(3) = 2.484
    assert format_table([row]).splitlines()[-1] == ("| X | single | top-1 (%) | 51.00 ± 1.00 | 56.00 ± 1.00 | "
                                                    "+5.00 ± 1.00 | [+2.52, +7.48] | helps |")
    flat = {**row, "value": [52, 51, 52], "delta": [2, -1, 1]}
    assert format_table([flat]).splitlines()[-1].endswith("| within noise |")


def test_one_seed_table_and_verdicts_use_the_bootstrap_over_test_images():
    from labelwise.demo.report import format_table, verdict_lines

    boot = {"delta": 3.0, "low": 0.5, "high": 5.5, "level": 0.95, "resamples": 1000, "verdict": "helps"}
    row = {"method": "X", "regime": "single", "metric": "top-1", "baseline": [50.0], "value": [53.0], "delta": [3.0],
           "bootstrap": [boot]}
    assert format_table([row]).splitlines()[-1] == ("| X | single | top-1 (%) | 50.00 | 53.00 | +3.00 | "
                                                    "[+0.50, +5.50] | helps |")
    line = verdict_lines([row])[0]
    assert line.startswith("- X: delta +3.00 points, 95 % paired bootstrap interval over the test images "
                           "[+0.50, +5.50] (1000 resamples; seed-to-seed noise is not in it)")
    assert line.endswith("**helps** here.")
    noisy = {**row, "bootstrap": [{**boot, "low": -1.0, "verdict": "within noise"}]}
    assert "**within noise**" in verdict_lines([noisy])[0]


def test_seeds_option_parses_and_a_folder_takes_more_seeds_but_not_other_sizes(tmp_path):
    import dataclasses

    import pytest

    from labelwise.demo import MODES, check_out_dir, parse_seeds
    from labelwise.errors import ConfigError, DataError

    assert parse_seeds("0,1, 2,3,4") == (0, 1, 2, 3, 4)
    for bad in ("", "0,0", "a,1", "-1"):
        with pytest.raises(ConfigError, match="--seeds"):
            parse_seeds(bad)
    out = tmp_path / "demo"
    quick = MODES["quick"]
    check_out_dir(out, quick)
    check_out_dir(out, dataclasses.replace(quick, seeds=(0, 1, 2, 3, 4)))  # more seeds: same folder, reused
    with pytest.raises(DataError, match="other sizes"):
        check_out_dir(out, dataclasses.replace(quick, epochs=5))
    with pytest.raises(DataError, match="other sizes"):
        check_out_dir(out, MODES["tiny"])
