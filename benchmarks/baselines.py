"""Baseline test metrics on the digit scenes: every regime, several seeds, mean ± std.

    python benchmarks/baselines.py --out outputs/bench-baselines \
        --regimes single,multilabel,partial-p0.1,partial-p0.3,partial-p0.5,noisy-symmetric-r0.2 \
        --frameworks mmpretrain --seeds 0,1,2

Generates the default digit scenes (seed 0) under OUT/data if missing, trains each
(framework, regime, seed) with `labelwise.train.train_baseline` (finished runs are reused, so
the script resumes), and prints the markdown table quoted in docs/benchmarks.md.
"""
import argparse
import platform
import sys

import torch

from labelwise.data import make_dataset
from labelwise.train import format_table, run_grid, summarize


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench-baselines")
    parser.add_argument("--regimes", default="single,multilabel,partial-p0.3,noisy-symmetric-r0.2")
    parser.add_argument("--frameworks", default="mmpretrain")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--epochs", type=int, default=None, help="default: the configs' (20 single-label, 10 multi-label)")
    args = parser.parse_args()
    data_root = make_dataset(f"{args.out}/data", seed=0, progress=True)
    results = run_grid(
        data_root=data_root, out_dir=f"{args.out}/runs", frameworks=args.frameworks.split(","),
        regimes=args.regimes.split(","), seeds=[int(s) for s in args.seeds.split(",")],
        epochs=args.epochs, progress=False, log=lambda m: print(m, file=sys.stderr, flush=True),
    )
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(format_table(summarize(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
