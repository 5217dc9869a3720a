"""PU-MLC vs the partial-label baselines on the digit scenes: test mAP, several seeds, mean ± std.

    python benchmarks/pumlc_quality.py --out outputs/bench-pumlc --ps 0.1,0.3,0.5 --seeds 0,1,2,3,4 \
        --variants negative,ignore,asl,pumlc-full --pretrained P.pth

Every run is the mmpretrain Runner on a built-in config (10 epochs, the baseline recipe of
docs/benchmarks.md); only the loss / head / classifier differ:

    negative     baseline/digits_partial          BCE, unknown labels as negatives
    ignore       pumlc/digits_partial_ignore      BCE on the known labels only
    asl          pumlc/digits_partial_asl         mmpretrain AsymmetricLoss, unknowns as negatives
    pumlc        pumlc/digits_partial_pumlc       PU-MLC loss (gamma 0.55, alpha 1.0: the paper's COCO setting)
    pumlc-voc    pumlc/digits_partial_pumlc       PU-MLC loss (gamma 0.85, alpha 2.0: the paper's VOC setting)
    pumlc-mixup  pumlc/digits_partial_pumlc_mixup PU-MLC loss + MixUp regulariser
    pumlc-lgc    pumlc/digits_partial_pumlc_lgc   PU-MLC loss + local-global convolution
    pumlc-full   pumlc/digits_partial_pumlc_full  the reference recipe: loss + MixUp + LGC, frozen
                                                  layer1-3 and BatchNorms, Adam + OneCycle, EMA
                                                  (docs/methods/pumlc.md, "Protocol")

After the table, every PU-MLC variant is paired seed by seed with each baseline run
(negative, ignore, asl): mean ± std of the change, its 95 % confidence interval and the
verdict of ``labelwise.stats``.

With ``--pretrained CKPT`` every run starts from that backbone (the digit-scenes analogue of
ImageNet pretraining, made by ``benchmarks/pretrain_backbone.py`` on disjoint images).

Generates the default digit scenes (seed 0) under OUT/data if missing. Finished runs
(OUT/runs/<variant>-p<p>-seed<s>/metrics.json) are reused, so the script resumes; the same
command started twice shares the runs between the two processes (benchmarks/_claims.py; e.g.
two single-threaded processes on 2 cores). Prints a markdown table and the per-seed values.
"""
import argparse
import json
import platform
import sys
from pathlib import Path

import torch

from labelwise.data import make_dataset
from labelwise.errors import LabelwiseError
from labelwise.train import METRICS_FILE, pretrained_backbone, train_baseline

from _claims import claim, release, wait_for  # benchmarks/_claims.py

VARIANTS = {
    "negative": "baseline/digits_partial",
    "ignore": "pumlc/digits_partial_ignore",
    "asl": "pumlc/digits_partial_asl",
    "pumlc": "pumlc/digits_partial_pumlc",
    "pumlc-mixup": "pumlc/digits_partial_pumlc_mixup",
    "pumlc-lgc": "pumlc/digits_partial_pumlc_lgc",
    "pumlc-voc": "pumlc/digits_partial_pumlc",
    "pumlc-full": "pumlc/digits_partial_pumlc_full",
}
BASELINES = ("negative", "ignore", "asl")
#: config overrides of a variant on top of its config
VARIANT_OPTIONS = {"pumlc-voc": {"model.head.loss.gamma": 0.85, "model.head.loss.alpha": 2.0}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench-pumlc")
    parser.add_argument("--data-root", default=None, help="existing digit scenes (default: OUT/data, generated)")
    parser.add_argument("--ps", default="0.1,0.3,0.5", help="known-label proportions (regimes partial-pX)")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--variants", default="negative,ignore,asl,pumlc,pumlc-mixup")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--pretrained", default=None,
                        help="start every run from this backbone checkpoint (benchmarks/pretrain_backbone.py); "
                        "runs go to OUT/runs-pretrained (OUT/runs-pretrained-eN with --epochs N other than 10)")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
    data_root = args.data_root or make_dataset(f"{args.out}/data", seed=0, p=(0.1, 0.3, 0.5), progress=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = [(v, p, s) for p in args.ps.split(",") for v in variants for s in seeds]
    runs_dir = Path(args.out) / ("runs" + ("-pretrained" if args.pretrained else "")
                                 + (f"-e{args.epochs}" if args.epochs != 10 else ""))
    cfg_options = None
    if args.pretrained:
        try:
            cfg_options = pretrained_backbone(args.pretrained)
        except LabelwiseError as exc:
            parser.error(f"--pretrained: {exc}")
    def train(i, variant, p, seed, work_dir):
        print(f"[{i}/{len(runs)}] {variant} p={p} seed {seed} ...", file=sys.stderr, flush=True)
        try:
            return train_baseline("mmpretrain", data_root=data_root, regime=f"partial-p{p}", work_dir=work_dir,
                                  seed=seed, epochs=args.epochs, config=VARIANTS[variant],
                                  cfg_options={**(cfg_options or {}), **VARIANT_OPTIONS.get(variant, {})},
                                  progress=False)
        finally:
            release(work_dir)

    # a second process of the same command shares the runs (benchmarks/_claims.py)
    found, deferred = {}, []
    for i, (variant, p, seed) in enumerate(runs, 1):
        work_dir = runs_dir / f"{variant}-p{p}-seed{seed}"
        if (work_dir / METRICS_FILE).exists():
            found[i] = json.loads((work_dir / METRICS_FILE).read_text())
        elif claim(work_dir):
            found[i] = train(i, variant, p, seed, work_dir)
        else:
            deferred.append(i)
    for i in deferred:  # claimed by another process: wait for its result (or take the run over)
        variant, p, seed = runs[i - 1]
        work_dir = runs_dir / f"{variant}-p{p}-seed{seed}"
        while not wait_for(work_dir / METRICS_FILE, work_dir):
            if claim(work_dir):
                train(i, variant, p, seed, work_dir)
        found[i] = json.loads((work_dir / METRICS_FILE).read_text())
    results = {}
    for i, (variant, p, seed) in enumerate(runs, 1):
        result = found[i]
        print(f"[{i}/{len(runs)}] {variant} p={p} seed {seed}: mAP {result['value']:.2f} ({result['seconds']:.0f} s)",
              file=sys.stderr, flush=True)
        results.setdefault((variant, p), []).append(result["value"])
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    ps = args.ps.split(",")
    print("| variant | " + " | ".join(f"p = {p}" for p in ps) + " |")
    print("|---|" + "---|" * len(ps))
    for v in variants:
        cells = []
        for p in ps:
            values = torch.tensor(results[(v, p)], dtype=torch.float64)
            std = values.std().item() if len(values) > 1 else 0.0
            cells.append(f"{values.mean().item():.2f} ± {std:.2f}")
        print(f"| {v} | " + " | ".join(cells) + " |")
    from labelwise.stats import compare

    pairs = [(v, b) for v in variants if v.startswith("pumlc") for b in variants if b in BASELINES]
    if pairs and len(seeds) > 1:
        print("\n| paired change (same seed) | p | mean ± std | 95 % CI | verdict |\n|---|---|---|---|---|")
        for v, b in pairs:
            for p in ps:
                c = compare(results[(v, p)], results[(b, p)])
                print(f"| {v} - {b} | {p} | {c.mean:+.2f} ± {c.std:.2f} | {c.interval()} | {c.verdict} |")
    print("\nper seed (" + ", ".join(map(str, seeds)) + "):")
    for (v, p), values in results.items():
        print(f"  {v} p={p}: " + " / ".join(f"{x:.2f}" for x in values))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
