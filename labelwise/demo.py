"""``labelwise demo``: the built-in data, the baselines, a results table and a summary."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from labelwise.utils.fileio import atomic_write


def run_demo(out_dir, *, full: bool = False, tiny: bool = False, log=None) -> list[dict]:
    """Generate the digit scenes under ``out_dir/data`` and train the baselines.

    Default: one seed of the mmpretrain baseline on ``single`` and ``partial-p0.3`` and of the
    timm baseline on ``single``. ``full``: 3 seeds of every regime, both frameworks (hours on
    2 CPU cores). ``tiny``: 300 training images and 1 epoch, to check that everything runs.
    Finished runs are reused, so an interrupted demo resumes. Writes ``out_dir/summary.md``.

    Returns:
        The :func:`labelwise.train.summarize` rows.
    """
    from labelwise.data import SceneConfig, load_manifest, make_dataset
    from labelwise.train import format_table, run_grid, summarize

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = SceneConfig()
    epochs = 10
    if tiny:
        config = dataclasses.replace(config, num_train=300, num_val=60, num_test=200)
        epochs = 1
    log(f"labelwise demo: data -> {out / 'data'}")
    data_root = make_dataset(out / "data", config=config, seed=0, progress=True)
    if full:
        every_regime = load_manifest(data_root)["regime_dirs"]
        plan = [("mmpretrain", every_regime, [0, 1, 2]), ("timm", ["single", "multilabel"], [0, 1, 2])]
    else:
        plan = [("mmpretrain", ["single", "partial-p0.3"], [0]), ("timm", ["single"], [0])]
    results = []
    for framework, regimes, seeds in plan:
        results += run_grid(data_root=data_root, out_dir=out / "runs", frameworks=[framework],
                            regimes=regimes, seeds=seeds, epochs=epochs, progress=not tiny, log=log)
    rows = summarize(results)
    table = format_table(rows)
    print("\nBaselines on the digit scenes (test split: full, clean labels)\n")
    print(table)
    with atomic_write(out / "summary.md", "w") as f:
        f.write("# labelwise demo\n\n")
        f.write(f"Data: `{data_root}` ({config.num_train} train / {config.num_val} val / "
                f"{config.num_test} test images), {epochs} epochs per run.\n\n")
        f.write("## Baselines\n\n" + table + "\n")
    log(f"summary: {out / 'summary.md'}")
    return rows
