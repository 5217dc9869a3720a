"""CleanNet speed on CPU: scoring throughput and training time per 1k steps (D = 2048).

    python benchmarks/cleannet_speed.py [--samples 20000] [--classes 101] [--steps 200] [--threads 1]

Random non-negative features (like pooled ResNet-50 activations), C classes x K = 32 references.
Scoring encodes every class once, then queries in batches of 1024. Training runs the reference
recipe's batches (32 verified + 32 class-balanced unverified) and reports seconds per 1,000 steps
(measured over --steps, after 10 warm-up steps).
"""
import argparse
import platform
import time

import numpy as np
import torch

from labelwise.plugins.cleannet.config import CleanNetConfig
from labelwise.plugins.cleannet.fit import fit_cleannet
from labelwise.plugins.cleannet.model import CleanNet
from labelwise.plugins.cleannet.scoring import score_samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--classes", type=int, default=101)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    feats = rng.exponential(0.5, (args.samples, args.dim)).astype(np.float32)
    labels = rng.integers(0, args.classes, args.samples)
    refs = rng.exponential(0.5, (args.classes, args.k, args.dim)).astype(np.float32)
    model = CleanNet(args.dim, generator=torch.Generator().manual_seed(0))

    score_samples(model, feats[:1024], labels[:1024], refs)  # warm-up
    start = time.perf_counter()
    score_samples(model, feats, labels, refs, batch_size=1024)
    score_s = time.perf_counter() - start

    verification = np.full(args.samples, -1, dtype=np.int8)
    verification[: args.samples // 20] = rng.integers(0, 2, args.samples // 20)
    times = []
    for steps in (10, 10 + args.steps):
        cfg = CleanNetConfig(steps=steps, val_interval=steps)
        start = time.perf_counter()
        fit_cleannet(feats, labels, verification, refs, config=cfg, progress=False)
        times.append(time.perf_counter() - start)
    per_1k = (times[1] - times[0]) / args.steps * 1000

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s)")
    print(f"| D | classes x K | scoring (samples/s) | training (s / 1k steps, batch 32+32) |")
    print("|---|---|---|---|")
    print(f"| {args.dim} | {args.classes} x {args.k} | {args.samples / score_s:,.0f} | {per_1k:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
