"""The demo's results table, plots and ``summary.md``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from labelwise.utils.fileio import atomic_write, write_figure

#: (method, regime, metric, baseline key, method key) of the table rows, in order.
ROWS = (
    ("LabelPooling", "single", "top-1", "single", "labelpool"),
    ("Label Refinery", "single", "top-1", "single", "refinery"),
    ("CleanNet", "noisy-symmetric-r0.2", "top-1", "noisy", "cleannet"),
    ("PU-MLC", "partial-p0.3", "mAP", "partial", "pumlc"),
    ("CFT", "partial-p0.3", "mAP", "cft_before", "cft_after"),
)


def _value(seed_result: dict, key: str) -> float:
    if key == "cft_before":
        return seed_result["cft"]["map_before"]
    if key == "cft_after":
        return seed_result["cft"]["map_after"]
    return float(seed_result[key]["value"])


def table_rows(per_seed: list) -> list:
    """One row per method: per-seed baseline / method values and paired deltas."""
    rows = []
    for method, regime, metric, base_key, method_key in ROWS:
        base = [_value(r, base_key) for r in per_seed]
        ours = [_value(r, method_key) for r in per_seed]
        rows.append({"method": method, "regime": regime, "metric": metric, "baseline": base, "value": ours,
                     "delta": [o - b for o, b in zip(ours, base)]})
    return rows


def _cell(values) -> str:
    values = np.asarray(values, dtype=float)
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{values.mean():.2f} ± {values.std(ddof=1):.2f}"


def _delta(values) -> str:
    values = np.asarray(values, dtype=float)
    text = f"{values.mean():+.2f}"
    return text if len(values) == 1 else f"{text} ± {values.std(ddof=1):.2f}"


def format_table(rows: list) -> str:
    """Markdown table: method, regime, metric, baseline, method, delta (mean ± std over seeds).

    With more than one seed, two more columns: the 95 % confidence interval of the paired delta
    and its verdict (:mod:`labelwise.stats`: "helps" only where the interval excludes zero).
    """
    from labelwise.stats import compare

    several = len(rows[0]["delta"]) > 1 if rows else False
    head = "| method | regime | metric | baseline | method | delta |"
    lines = [head + (" 95 % CI | verdict |" if several else ""),
             "|---|---|---|---:|---:|---:|" + ("---|---|" if several else "")]
    for r in rows:
        line = (f"| {r['method']} | {r['regime']} | {r['metric']} (%) | {_cell(r['baseline'])} | "
                f"{_cell(r['value'])} | {_delta(r['delta'])} |")
        if several:
            c = compare(r["value"], r["baseline"])
            line += f" {c.interval()} | {c.verdict} |"
        lines.append(line)
    return "\n".join(lines)


def onnx_line(seed: int, check: dict) -> str:
    return (f"ONNX check (seed {seed}): {Path(check['file']).name} run with onnxruntime on {check['samples']} test "
            f"feature rows reproduces the calibrated logits: max abs diff {check['max_abs_diff']:.2e} "
            f"(< {check['tolerance']:g}): {'passed' if check['passed'] else 'FAILED'}")


def make_plots(out: Path, rows: list, per_seed: list, *, log) -> dict:
    """Results bar chart and CFT per-category test AP; ``{name: path}`` (empty without matplotlib)."""
    from labelwise.demo.methods import have_matplotlib

    plots = {}
    first = per_seed[0]
    if first["detection"].get("histogram"):
        plots["cleannet_histogram"] = first["detection"]["histogram"]
    if not have_matplotlib():
        log("plots skipped: matplotlib is not installed (pip install 'labelwise[plot]')")
        return plots
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 3.6), dpi=100)
    ax = fig.subplots()
    x = np.arange(len(rows))
    base = [np.mean(r["baseline"]) for r in rows]
    ours = [np.mean(r["value"]) for r in rows]
    ax.bar(x - 0.2, base, 0.4, label="baseline", color="#9aa5b1")
    ax.bar(x + 0.2, ours, 0.4, label="method", color="#2b6cb0")
    for i, (b, o) in enumerate(zip(base, ours)):
        ax.text(i + 0.2, o + 1, f"{o - b:+.1f}", ha="center", fontsize=8)
    ax.set_xticks(x, [f"{r['method']}\n{r['regime']}\n{r['metric']}" for r in rows], fontsize=7)
    ax.set_ylabel("test metric (%)")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"labelwise demo: each method against its baseline ({len(per_seed)} seed(s), mean)", fontsize=9)
    plots["results"] = _save(fig, out / "results.png")

    fig = Figure(figsize=(6, 3.2), dpi=100)
    ax = fig.subplots()
    before = np.array([np.nan if v is None else v for v in first["cft"]["ap_before"]]) * 100
    after = np.array([np.nan if v is None else v for v in first["cft"]["ap_after"]]) * 100
    x = np.arange(len(before))
    ax.bar(x - 0.2, before, 0.4, label=f"before (mAP {first['cft']['map_before']:.2f})", color="#9aa5b1")
    ax.bar(x + 0.2, after, 0.4, label=f"after CFT (mAP {first['cft']['map_after']:.2f})", color="#2b6cb0")
    ax.set_xticks(x, [str(c) for c in range(len(before))])
    ax.set_xlabel("digit (category)")
    ax.set_ylabel("test AP (%)")
    ax.set_ylim(0, 105)
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"CFT on '{rows[-1]['regime']}': per-category test AP (seed {first['seed']})", fontsize=9)
    plots["cft_per_category_ap"] = _save(fig, out / "cft_per_category_ap.png")
    return plots


def _save(fig, path: Path) -> str:
    return str(write_figure(path, fig))


def write_summary(out: Path, mode, table: str, onnx: list, plots: dict, per_seed: list, *, seconds: float,
                  reused: int, step_seconds: float, pretrained: dict) -> None:
    seeds = ", ".join(str(r["seed"]) for r in per_seed)
    det = per_seed[0]["detection"]
    maps = per_seed[0]["labelmaps"]
    lines = [
        f"# labelwise demo (`--{mode.name}`)", "",
        f"Data: the built-in digit scenes under `{out / 'data'}`: {mode.num_train} train / {mode.num_val} val / "
        f"{mode.num_test} test images (64x64, 1-3 digits), regimes `single`, `multilabel`, `partial-p0.3`, "
        f"`noisy-symmetric-r0.2` ({mode.verified_fraction:.0%} of the noisy train and val labels verified). "
        f"Every run: mmengine's Runner on a built-in config, {mode.epochs} epoch{'s' if mode.epochs != 1 else ''}"
        + (f", ResNet-18 base width {mode.width}" if mode.width else ", the configs' ResNet-18")
        + f"; seed(s) {seeds}. Test split: full, clean labels. Time: the steps took {step_seconds:.0f} s "
        f"when they ran; this invocation {seconds:.0f} s"
        + (f" ({reused} steps reused from an earlier run)" if reused else "") + ".", "",
        f"Backbone P: the `single` model trained on {pretrained['train_images']} other scenes (data seed 1, no "
        f"image shared with the demo data), {pretrained['epochs']} epoch(s), test top-1 {pretrained['top1']:.2f} % "
        "on its own test split. "
        + ("Every run below starts from P: from scratch, a few epochs on this little data stay at chance level."
           if mode.pretrain_all else "The partial-label runs start from P; the others train from scratch, as in "
           "docs/benchmarks.md."), "",
        f"Machine: {machine()}. The same command on the same machine kind and thread count gives the same "
        "table (the runs are seeded and deterministic on the CPU); another CPU model or thread count changes "
        "float rounding, which a training run can amplify into a different result.", "",
        "## Results", "", table, "",
        "- LabelPooling and Label Refinery: baseline = the `single` run (checkpoint A), which is also ReLabel's "
        f"annotator ({maps['map_size'][0]}x{maps['map_size'][1]} maps of the whole image at {maps['input_size']} px, "
        "top-5) and the refinery of generation 2.",
        f"- CleanNet: on P's features, {mode.cleannet_steps} steps, {det['weights']} weights. Noise detection on the "
        f"{det['samples']} unverified noisy training samples (truth from the data): error "
        f"{100 * det['error']:.1f} % (flag nothing: {100 * det['noise_rate']:.1f} %), threshold "
        f"{det['threshold']:.3f}, {100 * det['flagged']:.1f} % flagged.",
        "- PU-MLC: both runs start from P (from scratch, the partial-label runs stay at the constant-score "
        "floor, see docs/benchmarks.md).",
        f"- CFT: the assume-negative baseline's final layer, GA and BP ({mode.cft_epochs} epochs, early stopping "
        f"{mode.cft_patience}), best per category on the known validation labels; test mAP from the "
        "penultimate features (scikit-learn-style AP, ties grouped), so its baseline differs slightly from "
        "the PU-MLC row's Runner mAP." + _calibration_sentence(per_seed[0]["cft"]), "",
        "## ONNX check", "",
        *[f"- {onnx_line(r['seed'], c)}" for r, c in zip(per_seed, onnx)], "",
        "## Plots", "",
        *([f"- `{Path(p).relative_to(out) if Path(p).is_relative_to(out) else p}`: {name}"
           for name, p in plots.items()] or ["- none (matplotlib is not installed)"]), "",
        "## Caveats", "",
        ("- One seed: the deltas are noisy (seeds of the same recipe differ by several points). "
         if len(per_seed) == 1 else "- Mean ± sample std over seeds; deltas are paired per seed. ")
        + ("Small data and few epochs: these are not the benchmark figures; see docs/benchmarks.md for "
           "the 3-seed results." if mode.name != "full" else "See docs/benchmarks.md for the published figures."),
        *_measured_caveats(out, per_seed),
    ]
    with atomic_write(out / "summary.md", "w") as f:
        f.write("\n".join(lines) + "\n")


def _calibration_sentence(check: dict) -> str:
    test = check.get("test_calibration")
    if not test:
        return ""
    before, after = test["cft_sigmoid"], test["calibrated"]
    return (f" Its probabilities, calibrated per class on the known validation labels (Platt scaling), on the "
            f"fully labelled test split: ECE {before['ece']:.4f} -> {after['ece']:.4f}, Brier {before['brier']:.4f} -> "
            f"{after['brier']:.4f} (first seed).")


def machine() -> str:
    """CPU model, cores, torch version and intra-op threads: what decides float rounding here."""
    import os
    import platform

    import torch

    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} intra-op "
            "thread(s)")


def _measured_caveats(out: Path, per_seed: list) -> list:
    """Caveats that follow from this run's own numbers (a baseline that learned nothing, a weak annotator)."""
    from labelwise.data import load_regime

    lines = []
    test = load_regime(out / "data", "partial-p0.3", "test")
    floor = 100 * float(np.mean(np.asarray(test.labels, dtype=float).mean(axis=0)))  # AP of a constant score
    partial = float(np.mean([r["partial"]["value"] for r in per_seed]))
    if partial < floor + 5:
        lines.append(f"- The assume-negative baseline ({partial:.2f} mAP) is within 5 points of the constant-score "
                     f"floor ({floor:.2f}: the mean class prevalence of the test split, the mAP of a model that ranks "
                     "nothing): in this schedule it did not learn to rank, so the PU-MLC and CFT rows compare with "
                     "an untrained head. docs/benchmarks.md gives the partial-label protocol that trains it.")
    annotator = float(np.mean([r["single"]["value"] for r in per_seed]))
    lines.append(f"- ReLabel's annotator and the refinery are the baseline itself (checkpoint A, {annotator:.2f} % "
                 "top-1): a target is only as good as the model that writes it, and the papers use annotators "
                 "much stronger than their students (docs/methods/labelpool.md and docs/methods/refinery.md).")
    return lines
