"""``labelwise demo``: the five methods against their baselines on the built-in digit scenes,
each in the setting it was made for, at a size this machine runs in minutes.

The models the methods need first (:mod:`labelwise.demo.models`) come with the package for the
quick demo (trained once by ``python -m labelwise.demo.models``, checked by SHA-256, read by
the safe loader); the tiny and full modes train them on the spot. Then:

* **LabelPooling**: the ``single`` baseline from P against LabelPooling from P, whose targets
  are pooled from the label maps of a stronger annotator (extra multi-label data, output
  stride 16: 4x4 maps at 64 px);
* **Label Refinery**: a half-width student from its backbone, on ground truth and refined
  online by the larger refinery;
* **CleanNet**: on ``noisy-scene-r0.4`` (a wrong label is another digit of the same scene),
  CleanNet on P's features reweights a run against the noisy baseline, both from P;
* **PU-MLC**: on ``partial-p0.3``, the reference recipe against "assume negative", both from P;
* **CFT**: calibrates the assume-negative head; its ONNX export is checked with onnxruntime.

Every training run goes through mmengine's Runner (:func:`labelwise.train.train_baseline`)
and writes its test scores, so every row gets a paired bootstrap interval over the test
images, and with several seeds the paired t-interval over seeds (:mod:`labelwise.stats`).
Every finished step leaves a file under the output folder and is reused when the demo runs again.
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
        pretrain_train, pretrain_epochs: the disjoint scenes (data seed 1) and the schedule
            of the backbones P and P-small (:mod:`labelwise.demo.models`).
        width, small_width: base channels of the ResNet-18s: every run, and the Label
            Refinery student (``None``: the config's).
        annotator_extra_epochs, annotator_epochs: ReLabel's annotator: epochs on the disjoint
            scenes' multi-labels, then on the demo's single labels.
        refinery_epochs: the refinery's epochs on the demo's single labels.
        workers: data-loading workers of the Runner (``None``: the config's).
        shipped: use the models shipped in ``labelwise/demo/models/<name>`` (else train them
            into the output folder).
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
    pretrain_epochs: int = 20
    width: int | None = None
    small_width: int | None = None
    annotator_extra_epochs: int = 10
    annotator_epochs: int = 10
    refinery_epochs: int = 20
    workers: int | None = None
    shipped: bool = False

    def model_options(self, width: int | None = "mode") -> dict:
        """``cfg_options`` applied to every run: the architecture (``width``, default the mode's) and loaders."""
        from labelwise.demo.models import width_options

        options = width_options(self.width if width == "mode" else width)
        if self.workers is not None:
            for split in ("train", "test"):
                options[f"{split}_dataloader.num_workers"] = self.workers
                options[f"{split}_dataloader.persistent_workers"] = self.workers > 0
        return options


MODES = {
    # a minute or two: checks that every step runs, its models trained on the spot; the numbers mean nothing
    "tiny": DemoMode("tiny", num_train=160, num_val=80, num_test=80, verified_fraction=0.25, epochs=1, seeds=(0,),
                     cleannet_steps=100, cft_epochs=20, cft_patience=5, pretrain_train=160, pretrain_epochs=1,
                     width=8, small_width=4, annotator_extra_epochs=1, annotator_epochs=1, refinery_epochs=1,
                     workers=0),
    # the default: at most 10 minutes on 2 idle CPU cores, with the models of labelwise/demo/models/quick
    # (built once by `python -m labelwise.demo.models`); every run fine-tunes one of them
    "quick": DemoMode("quick", num_train=1200, num_val=300, num_test=500, verified_fraction=0.1, epochs=4,
                      seeds=(0,), cleannet_steps=3000, cft_epochs=300, cft_patience=100, pretrain_train=5000,
                      pretrain_epochs=20, width=16, small_width=8, annotator_extra_epochs=10, annotator_epochs=10,
                      refinery_epochs=20, shipped=True),
    # the benchmark sizes: default data, the single-label schedule, five seeds, the reference
    # schedules, its models trained on the spot (many hours)
    "full": DemoMode("full", num_train=5000, num_val=600, num_test=1000, verified_fraction=0.05, epochs=20,
                     seeds=(0, 1, 2, 3, 4), cleannet_steps=60000, cft_epochs=5000, cft_patience=300,
                     width=32, small_width=16, annotator_extra_epochs=10, annotator_epochs=20, refinery_epochs=20),
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
    # seeds are left out: each seed has its own folder, so a run with more seeds reuses the others
    sizes = {k: v for k, v in dataclasses.asdict(mode).items() if k != "seeds"}
    wanted = {"format": MARKER_FORMAT, "mode": mode.name, "sizes": sizes}
    if marker.exists():
        try:
            found = json.loads(marker.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise DataError(f"{marker}: unreadable demo marker ({exc}); remove {out} or choose another --out") from None
        found_sizes = {k: v for k, v in (found.get("sizes") or {}).items() if k != "seeds"}
        if found.get("mode") != mode.name or found_sizes != sizes:
            raise DataError(f"{out} holds a '{found.get('mode')}' demo with other sizes than '--{mode.name}'; results "
                            f"of different sizes are not mixed: use another --out (e.g. {out}-{mode.name}) or delete "
                            f"{out}")
        return
    if out.exists() and any(out.iterdir()):
        raise DataError(f"{out} is not empty and has no {MARKER}: it was not made by this demo; use another --out "
                        f"or delete {out}")
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker, wanted)


def parse_seeds(text: str) -> tuple:
    """``'0,1,2'`` -> ``(0, 1, 2)``; refuses an empty list, repeats and non-integers, naming ``--seeds``."""
    try:
        seeds = tuple(int(part) for part in str(text).split(",") if part.strip() != "")
    except ValueError:
        raise ConfigError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2,3,4") from None
    if not seeds or len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError(f"--seeds {text!r}: expected distinct non-negative integers, e.g. 0,1,2,3,4")
    return seeds


def run_demo(out_dir, *, mode: str = "quick", seeds=None, log=None) -> dict:
    """Run the demo of ``mode`` (``'tiny'``, ``'quick'``, ``'full'``) into ``out_dir``.

    ``seeds`` (a tuple, or ``'0,1,2'``) replaces the mode's seeds; seeds already run in
    ``out_dir`` are reused, so ``--seeds 0,1,2,3,4`` after a one-seed run trains four more.

    Prints the results table and writes ``out_dir/summary.md``, ``results.json`` and the plots.

    Returns:
        ``{"rows": [...], "onnx": [...], "plots": {...}, "seconds": float, "reused": int}``.

    Raises:
        ConfigError: unknown ``mode``, or bad ``seeds``.
        DataError: ``out_dir`` holds results of another mode (see :func:`check_out_dir`).
        AssertionError: the ONNX head does not reproduce the calibrated logits.
    """
    from labelwise.demo import methods, report

    if mode not in MODES:
        raise ConfigError(f"unknown demo mode {mode!r}; valid: {', '.join(MODES)}")
    m = MODES[mode]
    if seeds is not None:
        m = dataclasses.replace(m, seeds=parse_seeds(",".join(map(str, seeds)) if not isinstance(seeds, str)
                                                     else seeds))
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    start = time.perf_counter()
    out = Path(out_dir)
    check_out_dir(out, m)
    from labelwise.demo import models as demo_models

    build = 0 if m.shipped else 1 + len(demo_models.specs(m))
    steps = Steps(1 + build + methods.SHARED_STEPS + methods.STEPS_PER_SEED * len(m.seeds), log,
                  timings=out / "timings.json")
    data_root = out / "data"
    steps.run(f"data: generating the digit scenes ({m.num_train} train / {m.num_val} val / {m.num_test} test)",
              data_root / "labelwise-data.json", lambda: methods.make_data(data_root, m))
    if m.shipped:
        folder = demo_models.SHIPPED / m.name
        log(f"models: the shipped models of {folder} (SHA-256 checked against {demo_models.MANIFEST})")
    else:
        folder = out / "models"
        if not (folder / demo_models.MANIFEST).exists():
            demo_models.build_models(folder, m, work=out / "models-work", demo_data=data_root, steps=steps, log=log)
        else:
            steps.done += build
            steps.reused += build
    models = demo_models.prepare_models(folder, m, data_root=data_root, work=out / "model-configs")
    shared = methods.shared_steps(out / "shared", data_root, m, steps, models=models)
    per_seed = [methods.run_seed(out / f"seed{seed}", data_root, m, seed, steps, models=models, shared=shared)
                for seed in m.seeds]
    pretrained = {name: {k: v for k, v in entry.items() if k not in ("cfg_options",)} for name, entry in models.items()}
    pretrained["diagnostic"] = json.loads((out / "shared" / "labelmaps-diagnostic.json").read_text())
    rows = report.table_rows(per_seed)
    table = report.format_table(rows)
    seconds = time.perf_counter() - start
    plots = report.make_plots(out, rows, per_seed, log=log)
    onnx = [r["cft"]["onnx"] for r in per_seed]
    print(f"\nlabelwise demo ({mode}): each method against its baseline on the digit scenes "
          f"(test split: full, clean labels; {len(m.seeds)} seed{'s' if len(m.seeds) > 1 else ''})\n")
    print(table)
    print("\n" + "\n".join(report.verdict_lines(rows)))
    for seed, check in zip(m.seeds, onnx):
        print(f"\n{report.onnx_line(seed, check)}")
    report.write_summary(out, m, table, onnx, plots, per_seed, seconds=seconds, reused=steps.reused,
                         step_seconds=steps.seconds, pretrained=pretrained, rows=rows)
    write_json(out / "results.json", {"mode": mode, "rows": rows, "per_seed": per_seed, "plots": plots,
                                      "pretrained": pretrained})
    print(f"\nsummary: {out / 'summary.md'}")
    print(f"total time: {seconds:.0f} s ({steps.reused} of {steps.total} steps reused; the steps took "
          f"{steps.seconds:.0f} s when they ran)")
    return {"rows": rows, "onnx": onnx, "plots": plots, "seconds": seconds, "reused": steps.reused}
