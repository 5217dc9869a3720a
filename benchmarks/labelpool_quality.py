"""Quality of LabelPooling on the single-label multi-object digit scenes (ReLabel, CVPR 2021).

    python benchmarks/labelpool_quality.py --data-root data/digits --out outputs/bench-labelpool

1. trains a machine annotator on the ``single`` regime (a wider ResNet-18 with output stride
   16, twice the baseline schedule by default);
2. ``labelwise relabel``: top-5 label maps of every training image, the whole image resized
   to ``--annotator-size`` px (80 -> 5x5 maps at output stride 16);
3. trains the target model (the baseline config) with one-hot labels, label smoothing (0.1)
   and LabelPooling, ``--seeds`` seeds each, all with the same RandomResizedCrop;
4. prints mean +- std of test top-1 (the main digit), "any-digit" top-1 (the prediction is
   one of the digits in the scene, ImageNet-ReaL style) and mAP of the class scores against
   the scene's full digit set.

Resumable: a finished step leaves ``result.json`` (or a complete store) and is skipped when
the script runs again. ``--tiny`` checks the whole pipeline in a few minutes (meaningless
numbers).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

VARIANTS = ("onehot", "smooth", "labelpool")


def _narrow(tiny: bool) -> dict:
    if not tiny:
        return {}
    return {"model.backbone.stem_channels": 16, "model.backbone.base_channels": 8,
            "model.head.in_channels": 64}


def _loader_options(tiny: bool) -> dict:
    if not tiny:
        return {}
    return {f"{split}_dataloader.{key}": value for split in ("train", "test")
            for key, value in (("num_workers", 0), ("persistent_workers", False))}


def train_annotator(args, work: Path) -> Path:
    from labelwise.adapters.mmpretrain.runner import load_config, train_and_test
    from labelwise.utils.fileio import write_json

    done = work / "result.json"
    if done.exists():
        return Path(json.loads(done.read_text())["checkpoint"])
    base = load_config("baseline/digits_single", work_dir=work, data_root=args.data_root)
    epochs = args.annotator_epochs or 2 * int(base.train_cfg.max_epochs)
    width = 8 if args.tiny else args.annotator_width
    options = {
        # output stride 16 (last stage dilated instead of strided): twice the map resolution
        "model.backbone.strides": (1, 2, 2, 1), "model.backbone.dilations": (1, 1, 1, 2),
        "model.backbone.base_channels": width, "model.backbone.stem_channels": max(16, width),
        "model.head.in_channels": 8 * width, **_loader_options(args.tiny),
    }
    cfg = load_config("baseline/digits_single", work_dir=work, data_root=args.data_root, seed=0,
                      epochs=epochs, cfg_options=options)
    metrics = train_and_test(cfg)
    checkpoint = work / f"epoch_{epochs}.pth"
    cfg.dump(str(work / "annotator_config.py"))
    write_json(done, {"checkpoint": str(checkpoint), "config": str(work / "annotator_config.py"),
                      "epochs": epochs, "test_top1": float(metrics["accuracy/top1"])})
    return checkpoint


def make_label_maps(args, work: Path, annotator_dir: Path) -> Path:
    from labelwise.cli import main as cli

    store = work / "labelmaps"
    status = cli(["relabel", str(store), "--data-root", str(args.data_root), "--ann-file", "single/train.txt",
                  "--config", str(annotator_dir / "annotator_config.py"),
                  "--checkpoint", json.loads((annotator_dir / "result.json").read_text())["checkpoint"],
                  "--input-size", str(args.annotator_size), "--batch-size", "64"]
                 + ([] if args.progress else ["--no-progress"]))
    if status != 0:
        raise SystemExit(f"relabel failed with status {status}")
    return store


def train_target(args, variant: str, seed: int, work: Path, store: Path) -> dict:
    from labelwise.adapters.mmpretrain.runner import load_config, train_and_test
    from labelwise.utils.fileio import write_json

    done = work / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    if variant == "onehot" and args.onehot_runs:
        return evaluate_finished_run(args, seed, Path(args.onehot_runs.format(seed=seed)), done)
    options = {**_narrow(args.tiny), **_loader_options(args.tiny)}
    config = "baseline/digits_single"
    if variant == "smooth":
        options["model.head.loss"] = dict(type="LabelSmoothLoss", label_smooth_val=0.1, mode="original")
    elif variant == "labelpool":
        config = "labelpool/digits_single"
        os.environ["LABELWISE_LABEL_MAPS"] = str(store)  # read by the config when it is loaded
    cfg = load_config(config, work_dir=work, data_root=args.data_root, seed=seed, epochs=args.epochs,
                      cfg_options=options)
    metrics = train_and_test(cfg)
    epochs = int(cfg.train_cfg.max_epochs)
    result = {"variant": variant, "seed": seed, "epochs": epochs,
              "runner_top1": float(metrics["accuracy/top1"]),
              **evaluate(args, cfg, work / f"epoch_{epochs}.pth")}
    write_json(done, result)
    return result


def evaluate_finished_run(args, seed: int, run_dir: Path, done: Path) -> dict:
    """The one-hot variant from a finished baseline run (``benchmarks/baselines.py``, same recipe)."""
    from mmengine.config import Config

    from labelwise.utils.fileio import write_json

    metrics = json.loads((run_dir / "metrics.json").read_text())
    if metrics.get("regime") != "single" or metrics.get("seed") != seed or metrics.get("cfg_options"):
        raise SystemExit(f"{run_dir}: not a plain `single` baseline run of seed {seed}: {metrics}")
    work = run_dir / "mmpretrain"
    epochs = int(metrics["epochs"])
    cfg = Config.fromfile(str(work / "digits_single.py"))
    result = {"variant": "onehot", "seed": seed, "epochs": epochs, "runner_top1": float(metrics["value"]),
              "reused_run": str(run_dir), **evaluate(args, cfg, work / f"epoch_{epochs}.pth")}
    done.parent.mkdir(parents=True, exist_ok=True)
    write_json(done, result)
    return result


def evaluate(args, cfg, checkpoint: Path) -> dict:
    """Top-1, any-digit top-1 and mAP (vs every digit in the scene) on the test split."""
    import torch
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from labelwise.checkpoint import extract_state_dict, load_checkpoint
    from labelwise.data import load_regime
    from labelwise.metrics import mean_average_precision, top1_accuracy
    from labelwise.plugins.labelpool.relabel import WholeImageLoader

    init_default_scope("mmpretrain")
    model_cfg = cfg.model.copy()
    model_cfg.pop("data_preprocessor", None)
    model = MODELS.build(model_cfg)
    model.load_state_dict(extract_state_dict(load_checkpoint(checkpoint)), strict=False)
    model.eval()
    single = load_regime(args.data_root, "single", "test")
    multi = load_regime(args.data_root, "multilabel", "test")
    pre = cfg.data_preprocessor
    load = WholeImageLoader(args.data_root, size=64, mean=pre["mean"], std=pre["std"], bgr=not pre.get("to_rgb", False))
    scores = []
    with torch.no_grad():
        for start in range(0, len(single.ids), 200):
            batch = torch.stack([load(key) for key in single.ids[start:start + 200]])
            scores.append(model(batch, mode="tensor"))
    scores = torch.cat(scores).numpy()
    present = multi.truth
    hit = present[np.arange(len(scores)), scores.argmax(1)] == 1
    return {"top1": top1_accuracy(scores, single.truth), "any_digit_top1": float(hit.mean() * 100),
            "mAP": mean_average_precision(scores, present)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", required=True, type=Path, help="from `labelwise data make` (made if missing)")
    parser.add_argument("--out", type=Path, default=Path("outputs/bench-labelpool"))
    parser.add_argument("--seeds", type=int, default=3, help="default: 3")
    parser.add_argument("--epochs", type=int, default=None, help="target schedule (default: the config's)")
    parser.add_argument("--annotator-epochs", type=int, default=None, help="default: twice the config's")
    parser.add_argument("--annotator-width", type=int, default=64, help="annotator base channels (default: 64)")
    parser.add_argument("--annotator-size", type=int, default=80,
                        help="relabel input size; 80 px -> 5x5 maps at output stride 16 (default: 80)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"default: {','.join(VARIANTS)}")
    parser.add_argument("--tiny", action="store_true", help="a smoke run: tiny models, 1 epoch")
    parser.add_argument("--onehot-runs", default=None,
                        help="reuse finished `benchmarks/baselines.py` single-regime runs (same recipe) as the "
                        "one-hot variant: a run directory with {seed}, e.g. "
                        "outputs/bench-baselines/runs/mmpretrain-single-seed{seed}")
    parser.add_argument("--no-progress", dest="progress", action="store_false")
    args = parser.parse_args(argv)
    if args.tiny:
        args.epochs = args.epochs or 1
        args.annotator_epochs = args.annotator_epochs or 1
    if not (args.data_root / "labelwise-data.json").exists():
        from labelwise.data import make_dataset

        make_dataset(args.data_root, progress=args.progress)
    args.out.mkdir(parents=True, exist_ok=True)
    annotator_dir = args.out / "annotator"
    train_annotator(args, annotator_dir)
    store = make_label_maps(args, args.out, annotator_dir)
    results = []
    variants = [v for v in args.variants.split(",") if v]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
    for variant in variants:
        for seed in range(args.seeds):
            results.append(train_target(args, variant, seed, args.out / f"{variant}-seed{seed}", store))
            print(f"{variant} seed {seed}: {results[-1]}", file=sys.stderr)
    annotator = json.loads((annotator_dir / "result.json").read_text())
    print(f"\nannotator (ResNet-18 x{args.annotator_width if not args.tiny else 8}, output stride 16, "
          f"{annotator['epochs']} epochs): test top-1 {annotator['test_top1']:.2f}; maps at "
          f"{args.annotator_size} px\n")
    print("| target labels | test top-1 | any-digit top-1 | mAP (all digits) | seeds |")
    print("|---|---:|---:|---:|---:|")
    for variant in variants:
        rows = [r for r in results if r["variant"] == variant]
        cells = [f"{np.mean([r[m] for r in rows]):.2f} ± {np.std([r[m] for r in rows], ddof=1) if len(rows) > 1 else 0:.2f}"
                 for m in ("top1", "any_digit_top1", "mAP")]
        print(f"| {variant} | {' | '.join(cells)} | {len(rows)} |")


if __name__ == "__main__":
    main()
