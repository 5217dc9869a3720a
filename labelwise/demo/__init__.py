"""``labelwise demo``: the five methods against their baselines on the built-in digit scenes.

First a "pretrained" backbone P is trained on single labels of a second, disjoint set of
scenes (the digit-scenes stand-in for ImageNet pretraining, as ``benchmarks/pretrain_backbone.py``).
Then, per seed: the ``single`` baseline (checkpoint A) is the baseline of LabelPooling and
Label Refinery, ReLabel's annotator and the refinery of generation 2; CleanNet, on P's features
(the stand-in for the paper's ImageNet features), scores the ``noisy-symmetric-r0.2`` training
set and reweights a new run against the noisy baseline; PU-MLC and the
"assume negative" baseline on ``partial-p0.3`` both start from P; CFT calibrates that
baseline's final layer, whose ONNX export is checked with onnxruntime. In the quick and tiny
modes every run starts from P (a few epochs from scratch stay at chance level); in the full
mode only the partial-label runs do, as in docs/benchmarks.md. Every training run goes
through mmengine's Runner (:func:`labelwise.train.train_baseline`). Every finished step
leaves a file under the output folder and is reused when the demo runs again.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

from labelwise.errors import ConfigError, DataError
from labelwise.utils.fileio import write_json

__all__ = ["MODES", "DemoMode", "run_demo"]

MARKER = "demo.json"
MARKER_FORMAT = "labelwise-demo/1"


@dataclasses.dataclass(frozen=True)
class DemoMode:
    """Sizes of one demo mode.

    Attributes:
        name: ``'tiny'``, ``'quick'`` or ``'full'``.
        num_train, num_val, num_test: images per split of the generated digit scenes.
        verified_fraction: share of the noisy train / val labels verified (CleanNet's input).
        epochs: epochs of every training run.
        seeds: one full chain of runs per seed.
        cleannet_steps: CleanNet SGD steps (the learning rate drops 10x at half of them).
        cft_epochs, cft_patience: CFT generations / steps per category and early stopping.
        width: base channels of the ResNet-18 (``None``: the config's).
        workers: data-loading workers of the Runner (``None``: the config's).
        pretrain_train, pretrain_epochs, pretrain_batch: the "pretrained" backbone P, trained
            on ``single`` labels of a second, disjoint set of scenes (data seed 1), as
            ``benchmarks/pretrain_backbone.py`` does.
        pretrain_all: every run starts from P (else only the partial-label runs, as in the
            benchmarks; from scratch they stay at the constant-score floor).
    """

    name: str
    num_train: int
    num_val: int
    num_test: int
    verified_fraction: float
    epochs: int
    seeds: tuple
    cleannet_steps: int
    cft_epochs: int
    cft_patience: int
    pretrain_train: int = 5000
    pretrain_epochs: int = 10
    pretrain_batch: int = 64
    pretrain_all: bool = False
    width: int | None = None
    workers: int | None = None

    def model_options(self) -> dict:
        """``cfg_options`` applied to every run (architecture and loaders)."""
        options = {}
        if self.width is not None:
            options.update({"model.backbone.stem_channels": 2 * self.width,
                            "model.backbone.base_channels": self.width,
                            "model.head.in_channels": 8 * self.width})
        if self.workers is not None:
            for split in ("train", "test"):
                options[f"{split}_dataloader.num_workers"] = self.workers
                options[f"{split}_dataloader.persistent_workers"] = self.workers > 0
        return options


MODES = {
    # seconds: checks that every step runs; the numbers mean nothing
    "tiny": DemoMode("tiny", num_train=160, num_val=80, num_test=80, verified_fraction=0.25, epochs=1, seeds=(0,),
                     cleannet_steps=100, cft_epochs=20, cft_patience=5, pretrain_train=160, pretrain_epochs=1,
                     pretrain_all=True, width=8, workers=0),
    # about 9 minutes on 2 idle CPU cores (522 s measured, 175 s of it for P); one seed, so the
    # deltas are noisy. From scratch, a few epochs on
    # 1,200 images stay on the initial plateau (chance level), so every run fine-tunes P. P needs
    # about 900 steps of batch 64 to leave the plateau: 10 epochs at batch 32 gave 24% top-1 on
    # its own test split, 20 epochs at batch 64 gave 60.4% (width 16, 3,000 scenes, seed 0).
    "quick": DemoMode("quick", num_train=1200, num_val=300, num_test=500, verified_fraction=0.1, epochs=4,
                      seeds=(0,), cleannet_steps=3000, cft_epochs=300, cft_patience=100, pretrain_train=3000,
                      pretrain_epochs=20, pretrain_batch=64, pretrain_all=True, width=16),
    # the benchmark protocol: default data, 10 epochs, 3 seeds, the reference schedules (hours)
    "full": DemoMode("full", num_train=5000, num_val=600, num_test=1000, verified_fraction=0.05, epochs=10,
                     seeds=(0, 1, 2), cleannet_steps=60000, cft_epochs=5000, cft_patience=300),
}


class Steps:
    """Numbered progress lines (``[3/29] refinery: training generation 2 ...``) and step reuse."""

    def __init__(self, total: int, log, *, timings=None):
        self.total, self.done, self.reused, self.log = total, 0, 0, log
        self.timings_file = Path(timings) if timings is not None else None
        self.timings = {}
        if self.timings_file is not None and self.timings_file.exists():
            self.timings = json.loads(self.timings_file.read_text())

    @property
    def seconds(self) -> float:
        """Seconds the steps took when they ran (this run or earlier ones)."""
        return float(sum(self.timings.values()))

    def run(self, what: str, result_file, fn):
        """Run ``fn()`` unless ``result_file`` exists (then reuse it); return ``fn``'s value or None."""
        self.done += 1
        prefix = f"[{self.done}/{self.total}] {what}"
        if result_file is not None and Path(result_file).exists():
            self.reused += 1
            self.log(f"{prefix}: reusing {result_file}")
            return None
        self.log(f"{prefix} ...")
        start = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - start
        self.log(f"{prefix}: done in {seconds:.0f} s")
        if self.timings_file is not None:
            self.timings[str(result_file)] = round(seconds, 1)
            write_json(self.timings_file, self.timings)
        return value


def check_out_dir(out: Path, mode: DemoMode) -> None:
    """Refuse an output folder made by another mode (or not by the demo); write the marker.

    Raises:
        DataError: ``out`` holds a demo of another mode or sizes, or files but no marker.
    """
    marker = out / MARKER
    wanted = {"format": MARKER_FORMAT, "mode": mode.name, "sizes": dataclasses.asdict(mode)}
    wanted["sizes"]["seeds"] = list(mode.seeds)
    if marker.exists():
        try:
            found = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{marker}: unreadable demo marker ({exc}); remove {out} or choose another --out") from None
        if found.get("mode") != mode.name or found.get("sizes") != wanted["sizes"]:
            raise DataError(f"{out} holds a '{found.get('mode')}' demo with other sizes than '--{mode.name}'; results "
                            f"of different sizes are not mixed: use another --out (e.g. {out}-{mode.name}) or delete "
                            f"{out}")
        return
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} is not empty and has no {MARKER}: it was not made by this demo; use another --out "
                        f"or delete {out}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker, wanted)


def run_demo(out_dir, *, mode: str = "quick", log=None) -> dict:
    """Run the demo of ``mode`` (``'tiny'``, ``'quick'``, ``'full'``) into ``out_dir``.

    Prints the results table and writes ``out_dir/summary.md``, ``results.json`` and the plots.

    Returns:
        ``{"rows": [...], "onnx": [...], "plots": {...}, "seconds": float, "reused": int}``.

    Raises:
        ConfigError: unknown ``mode``.
        DataError: ``out_dir`` holds results of another mode (see :func:`check_out_dir`).
        AssertionError: the ONNX head does not reproduce the calibrated logits.
    """
    from labelwise.demo import methods, report

    if mode not in MODES:
        raise ConfigError(f"unknown demo mode {mode!r}; valid: {', '.join(MODES)}")
    m = MODES[mode]
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start = time.perf_counter()
    out = Path(out_dir)
    check_out_dir(out, m)
    steps = Steps(3 + methods.STEPS_PER_SEED * len(m.seeds), log, timings=out / "timings.json")
    data_root = out / "data"
    steps.run(f"data: generating the digit scenes ({m.num_train} train / {m.num_val} val / {m.num_test} test)",
              data_root / "labelwise-data.json", lambda: methods.make_data(data_root, m))
    pretrained = methods.pretrain(out / "pretrain", m, steps)
    per_seed = [methods.run_seed(out / f"seed{seed}", data_root, m, seed, steps, pretrained=pretrained)
                for seed in m.seeds]
    rows = report.table_rows(per_seed)
    table = report.format_table(rows)
    seconds = time.perf_counter() - start
    plots = report.make_plots(out, rows, per_seed, log=log)
    onnx = [r["cft"]["onnx"] for r in per_seed]
    print(f"\nlabelwise demo ({mode}): each method against its baseline on the digit scenes "
          f"(test split: full, clean labels; {len(m.seeds)} seed{'s' if len(m.seeds) > 1 else ''})\n")
    print(table)
    for seed, check in zip(m.seeds, onnx):
        print(f"\n{report.onnx_line(seed, check)}")
    report.write_summary(out, m, table, onnx, plots, per_seed, seconds=seconds, reused=steps.reused,
                         step_seconds=steps.seconds, pretrained=pretrained)
    write_json(out / "results.json", {"mode": mode, "rows": rows, "per_seed": per_seed, "plots": plots,
                                      "pretrained": pretrained})
    print(f"\nsummary: {out / 'summary.md'}")
    print(f"total time: {seconds:.0f} s ({steps.reused} of {steps.total} steps reused; the steps took "
          f"{steps.seconds:.0f} s when they ran)")
    return {"rows": rows, "onnx": onnx, "plots": plots, "seconds": seconds, "reused": steps.reused}
