"""CFT quality on the digit scenes: test mAP before / after GA, BP and the combined choice.

    python benchmarks/cft_quality.py --out outputs/bench-cft-quality --seeds 0,1,2

The published protocol starts from the pretrained digit backbone and reuses the PU-MLC
benchmark's assume-negative runs (same config, data and seeds):

    python benchmarks/cft_quality.py --out outputs/bench-cft-quality --seeds 0,1,2 --epochs 5 \
        --data-root outputs/bench-baselines/data --pretrained outputs/pretrain/single-seed0/mmpretrain/epoch_10.pth \
        --run-dir 'outputs/bench-pumlc/runs-pretrained-e5/negative-p0.3-seed{seed}'

Per seed: train the mmpretrain baseline on `partial-p0.3` ("assume negative": unknown labels
train as negatives; `labelwise.train.train_baseline`), extract features of the train, val and
(fully labelled) test splits with the test pipeline, then run CFT with each optimiser (fitting
on the known train labels, selecting on the known val labels, never looking at test) and
report the test mAP (%) of the original and the calibrated heads, mean ± std over seeds.

Resumable: a finished training run (its metrics.json), the features (features.npz) and each
CFT result (cft-<optimiser>.json) are reused. `--tiny` checks the pipeline end to end in a
few minutes on a small dataset (its numbers are meaningless).
"""
import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from labelwise.metrics import mean_average_precision
from labelwise.utils.fileio import write_json

REGIME = "partial-p0.3"
MODES = ("ga", "bp", "best")


def features(run_dir: Path, data_root) -> dict:
    path = run_dir / "features.npz"
    if not path.exists():
        from labelwise.adapters.mmpretrain.cft import _dataset_cfg, extract_features
        from labelwise.adapters.mmpretrain.runner import build_trained_model

        checkpoint = sorted((run_dir / "mmpretrain").glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[1]))[-1]
        model, cfg = build_trained_model("baseline/digits_partial", checkpoint, work_dir=run_dir / "cft-tmp",
                                         data_root=data_root)
        out = {}
        for split, ann in (("train", f"{REGIME}/train.json"), ("val", f"{REGIME}/val.json"), ("test", "multilabel/test.json")):
            ds = _dataset_cfg(cfg, "val_dataloader", ann, what="ann")  # train dataset type, test pipeline
            out[f"{split}_features"], out[f"{split}_labels"] = extract_features(model, ds, progress=False)
        out["weight"] = model.head.fc.weight.detach().numpy()
        out["bias"] = model.head.fc.bias.detach().numpy()
        tmp = run_dir / ".features.tmp.npz"
        np.savez(tmp, **out)
        tmp.replace(path)
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def run_cft(run_dir: Path, data: dict, mode: str, options: dict) -> dict:
    from labelwise.plugins.cft.calibrate import fit_calibrated_head
    from labelwise.plugins.cft.options import CFTOptions

    path = run_dir / f"cft-{mode}.json"
    if path.exists():
        return json.loads(path.read_text())
    result = fit_calibrated_head(data["train_features"], data["train_labels"], data["val_features"], data["val_labels"],
                                 data["weight"], data["bias"], options=CFTOptions(optimizer=mode, **options),
                                 progress=False)
    test = lambda w, b: mean_average_precision(data["test_features"] @ np.asarray(w).T + np.asarray(b), data["test_labels"])
    row = {"mode": mode, "test_map_before": test(data["weight"], data["bias"]),
           "test_map_after": test(result.weight, result.bias), "summary": result.summary()}
    write_json(path, row)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench-cft-quality")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=10, help="baseline training epochs (default: 10)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--cft-epochs", type=int, default=5000)
    parser.add_argument("--early-stopping", type=int, default=300)
    parser.add_argument("--tiny", action="store_true", help="small data, 1 epoch, short CFT: a smoke test")
    parser.add_argument("--data-root", default=None, help="existing digit scenes (default: OUT/data, generated)")
    parser.add_argument("--run-dir", default=None,
                        help="training run directory per seed, with {seed} (default: OUT/runs/seed{seed}); "
                        "a finished run there (e.g. a benchmarks/pumlc_quality.py 'negative' run) is reused")
    parser.add_argument("--pretrained", default=None,
                        help="start the baseline from this backbone checkpoint (benchmarks/pretrain_backbone.py)")
    args = parser.parse_args()
    from labelwise.data import SceneConfig, make_dataset
    from labelwise.errors import LabelwiseError
    from labelwise.train import pretrained_backbone, train_baseline

    out = Path(args.out)
    config = dataclasses.replace(SceneConfig(), num_train=160, num_val=60, num_test=80) if args.tiny else SceneConfig()
    data_root = args.data_root or make_dataset(out / "data", config=config, seed=0, p=(0.3,), r=(0.2,), progress=False)
    cfg_options = None
    if args.pretrained:
        try:
            cfg_options = pretrained_backbone(args.pretrained)
        except LabelwiseError as exc:
            parser.error(f"--pretrained: {exc}")
    if args.run_dir is not None and "{seed}" not in args.run_dir:
        parser.error(f"--run-dir {args.run_dir!r} must contain {{seed}}")
    options = dict(epochs=20 if args.tiny else args.cft_epochs, early_stopping=5 if args.tiny else args.early_stopping)
    rows = {m: [] for m in args.modes.split(",")}
    for seed in [int(s) for s in args.seeds.split(",")]:
        run_dir = Path(args.run_dir.format(seed=seed)) if args.run_dir else out / "runs" / f"seed{seed}"
        if not (run_dir / "metrics.json").exists():
            print(f"seed {seed}: training the baseline ...", file=sys.stderr, flush=True)
            train_baseline("mmpretrain", data_root=data_root, regime=REGIME, work_dir=run_dir, seed=seed,
                           epochs=1 if args.tiny else args.epochs, cfg_options=cfg_options, progress=False)
        data = features(run_dir, data_root)
        for mode in rows:
            r = run_cft(run_dir, data, mode, options)
            print(f"seed {seed} {mode}: test mAP {r['test_map_before']:.2f} -> {r['test_map_after']:.2f}",
                  file=sys.stderr, flush=True)
            rows[mode].append(r)
    ms = lambda v: f"{np.mean(v):.2f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.2f}"
    print(f"\n{REGIME}, assume-negative baseline then CFT; test mAP (%), mean ± std over {len(next(iter(rows.values())))} seeds")
    print("| optimiser | before | after | change | categories changed (mean) |")
    print("|---|---|---|---|---|")
    for mode, rs in rows.items():
        before = [r["test_map_before"] for r in rs]
        after = [r["test_map_after"] for r in rs]
        print(f"| {mode} | {ms(before)} | {ms(after)} | {ms(np.subtract(after, before))} | "
              f"{np.mean([len(r['summary']['changed']) for r in rs]):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
