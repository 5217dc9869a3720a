"""Per-class test AP and mean probabilities of trained partial-label runs (why PU-MLC ranks worse).

    python benchmarks/pumlc_diagnose.py --runs outputs/bench-pumlc/runs-pretrained \
        --data-root outputs/bench-baselines/data --p 0.3 --seed 0 --variants negative,ignore,pumlc

For each run ``RUNS/<variant>-p<p>-seed<seed>/mmpretrain`` (made by benchmarks/pumlc_quality.py):
the final layer's logits on the fully labelled test split (the config's test pipeline), per-class
AP (ties grouped as scikit-learn), test mAP, and the mean raw ``sigmoid`` probability on positive
and on negative entries. Prints a markdown table.
"""
import argparse
import copy
from pathlib import Path

import numpy as np


def logits_of(run_dir: Path, data_root):
    from labelwise.adapters.mmpretrain.cft import extract_features
    from labelwise.adapters.mmpretrain.runner import build_trained_model

    configs = sorted(run_dir.glob("*.py"))
    checkpoints = sorted(run_dir.glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
    if not configs or not checkpoints:
        raise SystemExit(f"{run_dir}: no dumped config or epoch_*.pth checkpoint (run benchmarks/pumlc_quality.py)")
    model, cfg = build_trained_model(configs[0], checkpoints[-1], work_dir=run_dir.parent / "diagnose",
                                     data_root=data_root)
    features, labels = extract_features(model, copy.deepcopy(cfg.test_dataloader.dataset), progress=False)
    fc = model.head.fc
    return features @ fc.weight.detach().numpy().T + fc.bias.detach().numpy(), labels


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="outputs/bench-pumlc/runs-pretrained")
    parser.add_argument("--data-root", default="outputs/bench-baselines/data")
    parser.add_argument("--p", default="0.3")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--variants", default="negative,ignore,pumlc")
    args = parser.parse_args()
    from labelwise.metrics import average_precision_per_class

    rows = []
    for variant in args.variants.split(","):
        z, y = logits_of(Path(args.runs) / f"{variant}-p{args.p}-seed{args.seed}" / "mmpretrain", args.data_root)
        ap = average_precision_per_class(z, y)
        prob = 1.0 / (1.0 + np.exp(-z))
        rows.append((variant, ap, prob[y == 1].mean(), prob[y == 0].mean()))
    print(f"p = {args.p}, seed {args.seed}, test split")
    print("| variant | test mAP | per-class AP (0..9) | mean probability on positives | on negatives |")
    print("|---|---|---|---|---|")
    for variant, ap, pos, neg in rows:
        print(f"| {variant} | {100 * np.nanmean(ap):.2f} | {' '.join(f'{100 * a:.0f}' for a in ap)} | {pos:.2f} | "
              f"{neg:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
