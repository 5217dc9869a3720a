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

The protocol of docs/methods/labelpool.md ("Protocol") adds, with ``--annotator-extra-data
ROOT`` (disjoint scenes, e.g. ``labelwise data make ROOT --seed 1``): the annotator is first
trained on ROOT's ``multilabel`` regime (extra data the student never sees, multi-labels as
JFT's) and then fine-tuned on the student's ``single`` train labels from that backbone. The
``global`` variant trains on the annotator's whole-image target for every crop (LabelPooling
before the crop: the paper's "no localisation" ablation, which separates distillation from
localisation). After the maps are written, a diagnostic (``diagnostic.json``) draws random
crops of the training images with the students' crop distribution and reports how often the
top class of the pooled target (and of the one-hot label) is a digit whose box centre lies in
the crop; the scenes keep every digit's box. Every paired change against ``onehot`` gets its
95 % confidence interval and verdict (``labelwise.stats``).

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

VARIANTS = ("onehot", "smooth", "global", "labelpool")
#: RandomResizedCrop of the students (the single-label configs): area scale and aspect ratio
CROP_SCALE, CROP_RATIO = (0.08, 1.0), (3 / 4, 4 / 3)


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
    extra = train_on_extra_data(args, work / "extra") if args.annotator_extra_data else None
    options = _annotator_options(args)
    if extra is not None:  # fine-tune from the backbone trained on the extra data (head re-initialised)
        from labelwise.train import pretrained_backbone

        options.update(pretrained_backbone(extra["checkpoint"]))
    cfg = load_config("baseline/digits_single", work_dir=work, data_root=args.data_root, seed=0,
                      epochs=epochs, cfg_options=options)
    metrics = train_and_test(cfg)
    checkpoint = work / f"epoch_{epochs}.pth"
    cfg.dump(str(work / "annotator_config.py"))
    write_json(done, {"checkpoint": str(checkpoint), "config": str(work / "annotator_config.py"),
                      "epochs": epochs, "test_top1": float(metrics["accuracy/top1"]), "extra": extra})
    return checkpoint


def _annotator_options(args) -> dict:
    """The annotator's architecture: output stride 16 (last stage dilated instead of strided)."""
    width = 8 if args.tiny else args.annotator_width
    return {"model.backbone.strides": (1, 2, 2, 1), "model.backbone.dilations": (1, 1, 1, 2),
            "model.backbone.base_channels": width, "model.backbone.stem_channels": max(16, width),
            "model.head.in_channels": 8 * width, **_loader_options(args.tiny)}


def train_on_extra_data(args, work: Path) -> dict:
    """Stage 1 of the annotator: the multi-label regime of disjoint scenes (the analogue of JFT-300M)."""
    from labelwise.adapters.mmpretrain.runner import load_config, train_and_test
    from labelwise.utils.fileio import write_json

    done = work / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    root = Path(args.annotator_extra_data)
    if not (root / "labelwise-data.json").exists():
        from labelwise.data import make_dataset

        make_dataset(root, seed=1, regimes=("multilabel", "single"), progress=args.progress)
    cfg = load_config("baseline/digits_multilabel", work_dir=work, data_root=root, seed=0,
                      epochs=args.annotator_extra_epochs, cfg_options=_annotator_options(args))
    metrics = train_and_test(cfg)
    epochs = int(cfg.train_cfg.max_epochs)
    result = {"checkpoint": str(work / f"epoch_{epochs}.pth"), "data_root": str(root), "epochs": epochs,
              "own_test_mAP": float(metrics["multi-label/mAP"])}
    write_json(done, result)
    return result


def make_label_maps(args, work: Path, annotator_dir: Path) -> Path:
    """``labelwise relabel``'s workflow (:func:`labelwise.workflows.relabel.relabel_split`) with the annotator."""
    from labelwise.workflows.relabel import relabel_split

    store = work / "labelmaps"
    relabel_split(store, data_root=args.data_root, ann_file="single/train.txt",
                  config=str(annotator_dir / "annotator_config.py"),
                  checkpoint=json.loads((annotator_dir / "result.json").read_text())["checkpoint"],
                  input_size=args.annotator_size, batch_size=64, progress=args.progress)
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
    elif variant in ("labelpool", "global"):
        config = "labelpool/digits_single"
        os.environ["LABELWISE_LABEL_MAPS"] = str(store)  # read by the config when it is loaded
    cfg = load_config(config, work_dir=work, data_root=args.data_root, seed=seed, epochs=args.epochs,
                      cfg_options=options)
    if variant == "global":  # pool over the whole image, then crop: one target per image, no localisation
        pipeline = cfg.train_dataloader.dataset.pipeline
        crop = next(i for i, t in enumerate(pipeline) if t["type"] == "labelwise.RandomResizedCropWithBox")
        pool = next(i for i, t in enumerate(pipeline) if t["type"] == "labelwise.LabelPooling")
        step = dict(pipeline[crop], type="RandomResizedCrop")
        cfg.train_dataloader.dataset.pipeline = [*pipeline[:crop], pipeline[pool], step, *pipeline[pool + 1:]]
    metrics = train_and_test(cfg)
    epochs = int(cfg.train_cfg.max_epochs)
    result = {"variant": variant, "seed": seed, "epochs": epochs,
              "runner_top1": float(metrics["accuracy/top1"]),
              **evaluate(args, cfg, work / f"epoch_{epochs}.pth")}
    write_json(done, result)
    return result


def crop_diagnostic(args, store: Path, out: Path, *, crops_per_image: int = 8, images: int = 1000) -> dict:
    """:func:`labelwise.workflows.labelpool.pooled_target_diagnostic` of the train split, cached in ``out``."""
    from labelwise.utils.fileio import write_json
    from labelwise.workflows.labelpool import pooled_target_diagnostic

    if out.exists():
        return json.loads(out.read_text())
    result = pooled_target_diagnostic(store, args.data_root, crops_per_image=crops_per_image, images=images, seed=0,
                                      scale=CROP_SCALE, ratio=CROP_RATIO)
    write_json(out, result)
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
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default: 5)")
    parser.add_argument("--epochs", type=int, default=None, help="target schedule (default: the config's)")
    parser.add_argument("--annotator-epochs", type=int, default=None, help="default: twice the config's")
    parser.add_argument("--annotator-width", type=int, default=64, help="annotator base channels (default: 64)")
    parser.add_argument("--annotator-size", type=int, default=80,
                        help="relabel input size; 80 px -> 5x5 maps at output stride 16 (default: 80)")
    parser.add_argument("--annotator-extra-data", default=None,
                        help="disjoint scenes (made with data seed 1 if missing): train the annotator on their "
                        "multilabel regime first, then fine-tune it on the student's single labels")
    parser.add_argument("--annotator-extra-epochs", type=int, default=None,
                        help="epochs on the extra data (default: the multilabel config's)")
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
        args.annotator_extra_epochs = args.annotator_extra_epochs or 1
    if not (args.data_root / "labelwise-data.json").exists():
        from labelwise.data import make_dataset

        make_dataset(args.data_root, progress=args.progress)
    args.out.mkdir(parents=True, exist_ok=True)
    annotator_dir = args.out / "annotator"
    train_annotator(args, annotator_dir)
    store = make_label_maps(args, args.out, annotator_dir)
    diagnostic = crop_diagnostic(args, store, args.out / "diagnostic.json", images=100 if args.tiny else 1000)
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
    extra = annotator.get("extra")
    print(f"\nannotator (ResNet-18 x{args.annotator_width if not args.tiny else 8}, output stride 16, "
          + (f"first {extra['epochs']} epochs on the multilabel regime of {extra['data_root']} (own test mAP "
             f"{extra['own_test_mAP']:.2f}), then " if extra else "")
          + f"{annotator['epochs']} epochs on the student's labels): test top-1 {annotator['test_top1']:.2f}; "
          f"maps at {args.annotator_size} px")
    d = diagnostic
    print(f"crops ({d['crops']} random crops of {d['images']} training images, scale {CROP_SCALE}): the one-hot "
          f"label's digit is in the crop {100 * d['label_in_crop'] / d['crops']:.1f} % of the time; the pooled "
          f"target's top class is a digit in the crop {100 * d['pooled_top_in_crop'] / d['crops']:.1f} %; of the "
          f"{d['crops_without_label']} crops without the labelled digit, the pooled top class is a digit in the "
          f"crop in {100 * d['pooled_top_in_crop_when_label_is_not'] / max(1, d['crops_without_label']):.1f} % "
          f"({d['crops_without_any_digit']} crops hold no digit centre at all)\n")
    print("| target labels | test top-1 | any-digit top-1 | mAP (all digits) | seeds |")
    print("|---|---:|---:|---:|---:|")
    for variant in variants:
        rows = [r for r in results if r["variant"] == variant]
        cells = [f"{np.mean([r[m] for r in rows]):.2f} ± {np.std([r[m] for r in rows], ddof=1) if len(rows) > 1 else 0:.2f}"
                 for m in ("top1", "any_digit_top1", "mAP")]
        print(f"| {variant} | {' | '.join(cells)} | {len(rows)} |")
    if "onehot" in variants and args.seeds > 1:
        from labelwise.stats import compare

        print("\n| paired change vs one-hot (same seed) | metric | mean ± std | 95 % CI | verdict |\n|---|---|---|---|---|")
        base = {r["seed"]: r for r in results if r["variant"] == "onehot"}
        for variant in (v for v in variants if v != "onehot"):
            rows = sorted((r for r in results if r["variant"] == variant), key=lambda r: r["seed"])
            for metric in ("top1", "any_digit_top1", "mAP"):
                c = compare([r[metric] for r in rows], [base[r["seed"]][metric] for r in rows])
                print(f"| {variant} | {metric} | {c.mean:+.2f} ± {c.std:.2f} | {c.interval()} | {c.verdict} |")


if __name__ == "__main__":
    main()
