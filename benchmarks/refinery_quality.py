"""Label Refinery quality on the `single` digit scenes: test top-1, mean ± std over seeds.

    python benchmarks/refinery_quality.py --out outputs/bench-refinery --seeds 0,1,2,3,4

Variants (every one trained from scratch with ``configs/refinery/digits_single.py``'s recipe,
mmengine Runner, evaluated once on the clean test split):

* ``gen1``: generation 1, ground truth (one-hot targets; the baseline recipe);
* ``gen2``, ``gen3``: self-refined chain, generation t refined online by generation t-1
  (``labelwise refine --generations 3``);
* ``gen2-offline``: like ``gen2`` but with the offline approximation: gen 1's top-``k``
  probabilities on the whole image, stored once and served for every crop;
* ``small-gt``: a student with ``--small-width`` base channels (default 16, half width), on
  the ground truth;
* ``small-refined``: the same small student refined online by the full-width ``gen1``.

Runs are resumable: a run whose ``result.json`` exists is reused (the chain reuses finished
generations too). Data: ``labelwise data make`` defaults (seed 0) under OUT/data unless
``--data-root`` is given. ``--tiny`` is a smoke run (tiny data, 1 epoch, base width 8; the
numbers mean nothing). ``--variants`` picks a subset. The table is printed and written to
OUT/table.md.
"""
import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

VARIANTS = ("gen1", "gen2", "gen3", "gen2-offline", "small-gt", "small-refined")
CONFIG = "refinery/digits_single"
METRIC = "accuracy/top1"


def log(message):
    print(message, file=sys.stderr, flush=True)


def mean_std(a, sign=""):
    """``mean ± sample std`` (std 0 for a single seed)."""
    return f"{a.mean():{sign}.2f} ± {a.std(ddof=1) if len(a) > 1 else 0.0:.2f}"


def width_options(width):
    return {"model.backbone.base_channels": width, "model.head.in_channels": width * 8}


def chain(out, seed, generations, common):
    from labelwise.workflows.refinery import train_generations

    return train_generations(CONFIG, work_dir=out / f"chain-seed{seed}", generations=generations,
                             seed=seed, log=log, **common)


def train_single(work_dir, seed, common, *, options=None, refinery=None, store=None):
    """One run of CONFIG (optionally refined online, or with an offline store); cached."""
    from labelwise.adapters.mmpretrain.runner import load_config, train_and_test
    from labelwise.utils.fileio import write_json

    done = work_dir / "result.json"
    if done.exists():
        log(f"reusing {done}")
        return json.loads(done.read_text())
    work_dir.mkdir(parents=True, exist_ok=True)
    cfg = load_config(CONFIG, work_dir=work_dir, seed=seed, data_root=common["data_root"], epochs=common["epochs"],
                      cfg_options={**(common["cfg_options"] or {}), **(options or {})})
    if refinery is not None:
        cfg.data_preprocessor.refinery = refinery
    if store is not None:  # the same pipeline, with the stored label looked up first
        cfg.train_dataloader.dataset.pipeline = [dict(type="labelwise.LoadRefinedLabels", store=str(store)),
                                                 *cfg.train_dataloader.dataset.pipeline]
    log(f"training {work_dir.name} ...")
    start = time.perf_counter()
    metrics = train_and_test(cfg)
    result = {"value": float(metrics[METRIC]), "seconds": round(time.perf_counter() - start, 1), "seed": seed}
    write_json(done, result)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench-refinery")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--epochs", type=int, default=None, help="default: the config's")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--small-width", type=int, default=16, help="base_channels of the small student")
    parser.add_argument("--topk", type=int, default=5, help="offline mode: probabilities kept per image")
    parser.add_argument("--tiny", action="store_true", help="smoke run: tiny data, 1 epoch, width 8")
    args = parser.parse_args()

    from labelwise.workflows.refinery import build_refined_label_store
    from labelwise.data import SceneConfig, make_dataset

    out = Path(args.out)
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variants {unknown}; valid: {', '.join(VARIANTS)}")
    cfg_options, epochs, small = None, args.epochs, args.small_width
    if args.tiny:
        import dataclasses

        scene = dataclasses.replace(SceneConfig(), num_train=128, num_val=16, num_test=64)
        data_root = args.data_root or make_dataset(out / "data", config=scene, seed=0, regimes=("single",),
                                                   progress=False)
        cfg_options = {**width_options(8), "train_dataloader.batch_size": 32, "train_dataloader.num_workers": 0,
                       "train_dataloader.persistent_workers": False, "test_dataloader.num_workers": 0,
                       "test_dataloader.persistent_workers": False}
        epochs, small = 1, 4
    else:
        data_root = args.data_root or make_dataset(out / "data", seed=0, progress=True)
    common = {"data_root": str(data_root), "epochs": epochs, "cfg_options": cfg_options}
    runs = out / "runs"
    generations = 3 if "gen3" in variants else 2 if "gen2" in variants else 1  # the others need gen1 only
    values = {v: [] for v in variants}
    for seed in (int(s) for s in args.seeds.split(",")):
        records = chain(runs, seed, generations, common)
        gen1 = records[0]
        for t, record in enumerate(records, 1):
            if f"gen{t}" in values:
                values[f"gen{t}"].append(record["metrics"][METRIC])
        if "gen2-offline" in values:
            store = build_refined_label_store(gen1["config"], gen1["checkpoint"], runs / f"store-seed{seed}",
                                              data_root=data_root, k=args.topk, progress=False)
            values["gen2-offline"].append(train_single(runs / f"gen2-offline-seed{seed}", seed, common,
                                                       store=store)["value"])
        if "small-gt" in values:
            values["small-gt"].append(train_single(runs / f"small-gt-seed{seed}", seed, common,
                                                   options=width_options(small))["value"])
        if "small-refined" in values:
            refinery = {"config": gen1["config"], "checkpoint": gen1["checkpoint"]}
            values["small-refined"].append(train_single(runs / f"small-refined-seed{seed}", seed, common,
                                                        options=width_options(small), refinery=refinery)["value"])

    lines = [f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"{torch.get_num_threads()} threads; seeds {args.seeds}; epochs {epochs or 'config default'}",
             "| variant | refinery | test top-1 (%) mean ± std | per seed |", "|---|---|---|---|"]
    what = {"gen1": "none (ground truth)", "gen2": "gen1, online", "gen3": "gen2, online",
            "gen2-offline": f"gen1, offline top-{args.topk}", "small-gt": "none (ground truth)",
            "small-refined": "gen1 (full width), online"}
    for v in variants:
        a = np.array(values[v], dtype=float)
        name = f"{v} (width {small})" if v.startswith("small") else v
        lines.append(f"| {name} | {what[v]} | {mean_std(a)} | {' / '.join(f'{x:.1f}' for x in a)} |")
    pairs = [("gen2", "gen1"), ("gen3", "gen1"), ("gen3", "gen2"), ("gen2-offline", "gen1"), ("gen2", "gen2-offline"),
             ("small-refined", "small-gt")]
    pairs = [(a, b) for a, b in pairs if a in values and b in values]
    if pairs:  # paired by seed: the same data order and initial weights within a seed
        from labelwise.stats import compare

        lines += ["", "| paired change (same seed) | mean ± std | 95 % CI | verdict | per seed |", "|---|---|---|---|---|"]
        for a, b in pairs:
            c = compare(values[a], values[b])
            lines.append(f"| {a} - {b} | {mean_std(np.array(c.diff), '+')} | {c.interval()} | {c.verdict} | "
                         f"{' / '.join(f'{x:+.1f}' for x in c.diff)} |")
    from labelwise.utils.fileio import atomic_write

    with atomic_write(out / "table.md", "w") as f:  # the Runner logs to stdout too
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
