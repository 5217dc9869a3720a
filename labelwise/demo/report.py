"""The demo's results table, plots and ``summary.md``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from labelwise.utils.fileio import atomic_write, write_figure

#: (method, regime, metric, baseline key, method key) of the table rows, in order.
ROWS = (
    ("LabelPooling", "single", "top-1", "single", "labelpool"),
    ("Label Refinery", "single", "top-1", "small", "refinery"),
    ("CleanNet", "noisy-scene-r0.4", "top-1", "noisy", "cleannet"),
    ("PU-MLC", "partial-p0.3", "mAP", "partial", "pumlc"),
    ("CFT", "partial-p0.3", "mAP", "cft_before", "cft_after"),  # on the PU-MLC run's head
)
#: the bootstrap entry of each row (keyed by the method key; CFT's by "cft")
_BOOTSTRAP_KEY = {"labelpool": "labelpool", "refinery": "refinery", "cleannet": "cleannet", "pumlc": "pumlc",
                  "cft_after": "cft"}


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
                     "delta": [o - b for o, b in zip(ours, base)],
                     "bootstrap": [r["bootstrap"][_BOOTSTRAP_KEY[method_key]] for r in per_seed]})
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
    """Markdown table: method, regime, metric, baseline, method, delta (mean ± std over seeds), and the noise.

    One seed: the 95 % paired bootstrap interval of the delta over the test images and its
    verdict (test-set noise only). Several seeds: the 95 % confidence interval of the paired
    delta over seeds and its verdict (:mod:`labelwise.stats`: "helps" only where the interval
    excludes zero).
    """
    from labelwise.stats import compare

    several = len(rows[0]["delta"]) > 1 if rows else False
    noise = "95 % CI over seeds | verdict" if several else "95 % CI over test images | verdict"
    lines = [f"| method | regime | metric | baseline | method | delta | {noise} |",
             "|---|---|---|---:|---:|---:|---|---|"]
    for r in rows:
        line = (f"| {r['method']} | {r['regime']} | {r['metric']} (%) | {_cell(r['baseline'])} | "
                f"{_cell(r['value'])} | {_delta(r['delta'])} |")
        if several:
            c = compare(r["value"], r["baseline"])
            line += f" {c.interval()} | {c.verdict} |"
        else:
            b = r["bootstrap"][0]
            line += f" [{b['low']:+.2f}, {b['high']:+.2f}] | {b['verdict']} |"
        lines.append(line)
    return "\n".join(lines)


def onnx_line(seed: int, check: dict) -> str:
    return (f"ONNX check (seed {seed}): {Path(check['file']).name} run with onnxruntime on {check['samples']} test "
            f"feature rows reproduces the calibrated head: logits max abs diff {check['max_abs_diff']:.2e} "
            f"(tolerance {check['tolerance']:.2g}), probabilities {check['probabilities_diff']:.2e} (tolerance "
            f"{check['probabilities_tolerance']:.2g}), labels {'equal' if check['labels_agree'] else 'DIFFERENT'}: "
            f"{'passed' if check['passed'] else 'FAILED'}")


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


def verdict_lines(rows: list) -> list:
    """One line per row saying, from the run's own numbers, whether its delta is larger than the noise."""
    from labelwise.stats import compare

    lines = []
    for r in rows:
        if len(r["delta"]) > 1:
            c = compare(r["value"], r["baseline"])
            noise = (f"95 % CI of the paired delta over {c.seeds} seeds {c.interval()}")
            verdict = c.verdict
        else:
            b = r["bootstrap"][0]
            noise = (f"95 % paired bootstrap interval over the test images [{b['low']:+.2f}, {b['high']:+.2f}] "
                     f"({b['resamples']} resamples; seed-to-seed noise is not in it)")
            verdict = b["verdict"]
        said = {"helps": "larger than the noise: **helps** here",
                "hurts": "larger than the noise, and negative: **hurts** here",
                "within noise": "**within noise**: not larger than the noise"}[verdict]
        lines.append(f"- {r['method']}: delta {np.mean(r['delta']):+.2f} points, {noise}: {said}.")
    return lines


def write_summary(out: Path, mode, table: str, onnx: list, plots: dict, per_seed: list, *, seconds: float,
                  reused: int, step_seconds: float, pretrained: dict, rows: list) -> None:
    seeds = ", ".join(str(r["seed"]) for r in per_seed)
    det = per_seed[0]["detection"]
    maps = per_seed[0]["labelmaps"]
    diag = pretrained["diagnostic"]
    p, small, annotator, refinery = (pretrained[k] for k in ("backbone", "backbone-small", "annotator", "refinery"))
    where = "shipped in the package" if mode.shipped else f"trained by this run into {out / 'models'}"
    share = lambda key: 100.0 * diag[key] / max(1, diag["crops"])  # noqa: E731
    lines = [
        f"# labelwise demo (`--{mode.name}`)", "",
        f"Data: the built-in digit scenes under `{out / 'data'}`: {mode.num_train} train / {mode.num_val} val / "
        f"{mode.num_test} test images (64x64, 1-3 digits), regimes `single`, `multilabel`, `partial-p0.3`, "
        f"`noisy-scene-r0.4` ({mode.verified_fraction:.0%} of the noisy train and val labels verified). "
        f"Every run: mmengine's Runner on a built-in config, {mode.epochs} epoch{'s' if mode.epochs != 1 else ''}, "
        f"fine-tuned from a trained backbone, ResNet-18 base width {mode.width} (the Label Refinery student "
        f"{mode.small_width}); seed(s) {seeds}. Test split: full, clean labels. Time: the steps took "
        f"{step_seconds:.0f} s when they ran; this invocation {seconds:.0f} s"
        + (f" ({reused} steps reused from an earlier run)" if reused else "") + ".", "",
        f"Models ({where}; `python -m labelwise.demo.models` rebuilds them, their SHA-256 are checked before use): "
        f"P, the backbone of every run, trained on the `single` labels of {mode.pretrain_train} disjoint scenes "
        f"(data seed 1), {mode.pretrain_epochs} epochs: test top-1 {p['test']['value']:.2f} % on their test split; "
        f"P-small (width {small['width']}): {small['test']['value']:.2f} %. ReLabel's annotator (output stride 16): "
        f"from P, {annotator['trained_on']['extra']['epochs']} epochs on the disjoint scenes' multi-labels (test "
        f"mAP {annotator['trained_on']['extra']['test_mAP']:.2f}), then {annotator['trained_on']['epochs']} on the "
        f"demo's single labels: test top-1 {annotator['test']['value']:.2f} %. The refinery (width "
        f"{refinery['width']}): from P, {refinery['trained_on']['epochs']} epochs on the demo's single labels: test "
        f"top-1 {refinery['test']['value']:.2f} %.", "",
        f"Machine: {machine()}. The same command on the same machine kind and thread count gives the same "
        "table (the runs are seeded and deterministic on the CPU); another CPU model or thread count changes "
        "float rounding, which a training run can amplify into a different result.", "",
        "## Results", "", table, "",
        *verdict_lines(rows), "",
        f"- LabelPooling: targets pooled over each crop from the annotator's {maps['map_size'][0]}x"
        f"{maps['map_size'][1]} top-{maps['k']} maps of the whole image at {maps['input_size']} px. On "
        f"{diag['crops']} random crops of the students' distribution ({diag['images']} training images): the "
        f"pooled target's top class is a digit inside the crop in {share('pooled_top_in_crop'):.1f} % of them, the "
        f"one-hot label in {share('label_in_crop'):.1f} %; {share('crops_without_label'):.1f} % of the crops miss "
        "the labelled digit (the scenes keep every digit's box; a digit is in a crop when its box centre is).",
        f"- Label Refinery: the width-{mode.small_width} student from P-small, with ground truth and with the "
        f"width-{refinery['width']} refinery's soft targets of each crop (online).",
        f"- CleanNet: on P's features, {mode.cleannet_steps} steps, {det['weights']} weights; noise where a wrong "
        f"label is another digit of the same scene. Noise detection on the {det['samples']} unverified noisy "
        f"training samples (truth from the data): error {100 * det['error']:.1f} % (flag nothing: "
        f"{100 * det['noise_rate']:.1f} %), threshold {det['threshold']:.3f}, {100 * det['flagged']:.1f} % flagged.",
        "- PU-MLC: the reference recipe (`configs/pumlc/digits_partial_pumlc_full.py`: PU loss, MixUp "
        "regulariser, LGC, layers 1-3 frozen, Adam 1e-4, OneCycle over twice the run stopped halfway, EMA over "
        "the last ~5 % of the steps) against assume-negative (the baseline config), both from P.",
        f"- CFT: `labelwise.CFTHook` after the PU-MLC run, on the EMA model the Runner evaluates (a well-trained "
        f"head), GA and BP ({mode.cft_epochs} epochs, early stopping {mode.cft_patience}), best per category on "
        "the known validation labels; test mAP from the penultimate features (scikit-learn-style AP, ties "
        "grouped; the PU-MLC row's Runner mAP does not group ties, so the two may differ slightly). In this short "
        f"schedule ({mode.epochs} epochs, the head at Adam's lr of at most 1e-4) part of CFT's gain is the fit of a "
        "final layer the run left short of converged, on fixed features: what CFT does after any training run; "
        "docs/methods/cft.md gives the protocol on longer-trained heads."
        + _calibration_sentence(per_seed[0]["cft"]), "",
        "## ONNX check", "",
        *[f"- {onnx_line(r['seed'], c)}" for r, c in zip(per_seed, onnx)], "",
        "## Plots", "",
        *([f"- `{Path(p).relative_to(out) if Path(p).is_relative_to(out) else p}`: {name}"
           for name, p in plots.items()] or ["- none (matplotlib is not installed)"]), "",
        "## Caveats", "",
        ("- One seed: the intervals above are test-set noise only; seeds of the same recipe differ by several "
         "points, which only several seeds show (docs/benchmarks.md has the five-seed runs). "
         if len(per_seed) == 1 else "- Mean ± sample std over seeds; deltas are paired per seed. ")
        + ("Small data and few epochs: these are not the benchmark figures." if mode.name != "full"
           else "See docs/benchmarks.md for the published figures."),
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
    """Caveats that follow from this run's own numbers (a baseline that learned nothing)."""
    from labelwise.data import load_regime

    lines = []
    test = load_regime(out / "data", "partial-p0.3", "test")
    floor = 100 * float(np.mean(np.asarray(test.labels, dtype=float).mean(axis=0)))  # AP of a constant score
    partial = float(np.mean([r["partial"]["value"] for r in per_seed]))
    if partial < floor + 5:
        lines.append(f"- The assume-negative baseline ({partial:.2f} mAP) is within 5 points of the constant-score "
                     f"floor ({floor:.2f}: the mean class prevalence of the test split, the mAP of a model that ranks "
                     "nothing): in this schedule it did not learn to rank, so the PU-MLC row compares with an "
                     "untrained head.")
    return lines
