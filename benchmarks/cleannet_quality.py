"""CleanNet quality on the noisy digit scenes: noise detection and weighted classifier training.

    python benchmarks/cleannet_quality.py --out outputs/bench-cleannet \
        --regimes noisy-symmetric-r0.2,noisy-symmetric-r0.4,noisy-pairflip-r0.2,noisy-pairflip-r0.4 \
        --seeds 0,1,2                      # every regime, 3 seeds
    python benchmarks/cleannet_quality.py --out /tmp/cn-tiny --tiny      # smoke test, minutes
    # the protocol of docs/methods/cleannet.md: noise a classifier suffers from, P everywhere
    python benchmarks/cleannet_quality.py --out outputs/bench-cleannet \
        --regimes noisy-pairflip-r0.4,noisy-scene-r0.4 --seeds 0,1,2,3,4 \
        --features-from P.pth --init-from P.pth

Per regime (default data: `labelwise data make`, seed 0; 5 % of train and val verified):

1. the baseline classifier (mmpretrain, seed 0) trained on the noisy labels: the feature
   extractor (pooled 256-d penultimate features of train and val) and the self-confidence
   baseline (its softmax probability of the given label);
2. cleanlab `find_label_issues` on out-of-sample predicted probabilities: 5-fold
   cross-validated logistic regression on the same features (the features come from a network
   trained on all the noisy labels, so they are not fully out-of-sample; training the CNN 5
   times is left out for CPU time);
3. CleanNet with every class verified and in the transfer setting (verification kept only for
   classes --verified-classes, default 0-4): thresholds for CleanNet and self-confidence are
   chosen on the verified validation samples;
4. noise-detection error = share of the unverified training samples whose "label is wrong"
   prediction disagrees with the truth, on all classes and on the classes held out of
   verification;
5. test top-1 of classifiers trained with no weighting / hard / soft CleanNet weights (the
   all-classes CleanNet model's score file), each over --seeds, from scratch or, with
   --init-from CKPT, all three from that backbone (the paper's classifiers start from ImageNet
   weights; with --features-from P and classifiers from scratch, the weights carry P's
   knowledge that the unweighted baseline never sees).

With --features-from CKPT, CleanNet and cleanlab work on features of CKPT instead (the
reported protocol: the digit backbone pretrained on disjoint scenes by
benchmarks/pretrain_backbone.py, standing in for the paper's ImageNet ResNet-50); the
self-confidence baseline still uses the noisy classifier.

Every step writes its result under OUT and is skipped when the file exists (resumable). Prints
markdown tables (mean ± std over seeds for the training part). cleanlab is a benchmark-only
dependency: `pip install cleanlab`.
"""
import argparse
import copy
import dataclasses
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench-cleannet")
    parser.add_argument("--regimes", default="noisy-symmetric-r0.2,noisy-symmetric-r0.4,noisy-pairflip-r0.2,"
                        "noisy-pairflip-r0.4")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--epochs", type=int, default=20, help="default: 20, the single-label protocol")
    parser.add_argument("--steps", type=int, default=60000, help="CleanNet SGD steps (default: 60000)")
    parser.add_argument("--k", type=int, default=32)
    parser.add_argument("--verified-classes", default="0,1,2,3,4")
    parser.add_argument("--skip-training", action="store_true", help="noise detection only")
    parser.add_argument("--tiny", action="store_true", help="smoke run: tiny data, 1 epoch, 200 steps, 1 seed")
    parser.add_argument("--features-from", metavar="CKPT", default=None,
                        help="take CleanNet's and cleanlab's features from this mmpretrain checkpoint of the "
                             "digit classifier architecture (e.g. one pretrained on other scenes, "
                             "benchmarks/pretrain_backbone.py) instead of the noisy classifier; results go to "
                             "files and folders suffixed '-pre'")
    parser.add_argument("--init-from", metavar="CKPT", default=None,
                        help="start the classifier runs of the training part (no / hard / soft weights) from this "
                             "backbone checkpoint instead of from scratch; their folders get '-init'")
    args = parser.parse_args()
    if args.init_from is not None and not Path(args.init_from).is_file():
        parser.error(f"--init-from: no checkpoint at {args.init_from}")
    if args.features_from is not None and not Path(args.features_from).is_file():
        parser.error(f"--features-from: no checkpoint at {args.features_from}")
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.tiny:
        args.epochs, args.steps, args.k, seeds = 1, 200, 4, seeds[:1]
    data_root = _data(out, args.tiny)
    detection, training = [], []
    for regime in args.regimes.split(","):
        detection.append(_detection(out / regime, data_root, regime, args))
        if not args.skip_training:
            training.extend(_training(out / regime, data_root, regime, seeds, args))
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}; CleanNet features: "
          f"{args.features_from or 'noisy classifier'}; {args.steps} SGD steps")
    print(_detection_table(detection))
    if training:
        print()
        print(_training_table(training))
    return 0


def _data(out: Path, tiny: bool) -> Path:
    from labelwise.data import SceneConfig, make_dataset

    config = SceneConfig()
    if tiny:
        config = dataclasses.replace(config, num_train=400, num_val=200, num_test=100)
    return make_dataset(out / "data", config=config, seed=0, progress=False)


def _baseline(work: Path, data_root, regime, seed, args, config=None, env=None, cfg_options=None) -> dict:
    from labelwise.train import train_baseline

    done = work / "metrics.json"
    if done.exists():
        return json.loads(done.read_text())
    log(f"training {work} ...")
    old = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        return train_baseline("mmpretrain", data_root=data_root, regime=regime, work_dir=work, seed=seed,
                              epochs=args.epochs, config=config, cfg_options=cfg_options, progress=False)
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _tag(args) -> str:
    return "" if args.features_from is None else "-pre"


def _features(work: Path, data_root, regime, args, ckpt=None, tag=""):
    from labelwise.plugins.cleannet.features import load_features
    from labelwise.workflows.cleannet import export_features

    ckpt = ckpt or work / "classifier" / "mmpretrain" / f"epoch_{args.epochs}.pth"
    result = {}
    for split in ("train", "val"):  # `labelwise cleannet features`' workflow
        path = export_features(work / f"features{tag}-{split}.npz", data_root=data_root,
                               ann_file=f"{regime}/{split}.txt", config="baseline/digits_noisy", checkpoint=ckpt,
                               batch_size=200, device="cpu", progress=False)["out"]
        result[split] = load_features(path)
    from labelwise.checkpoint import extract_state_dict, load_checkpoint

    state = extract_state_dict(load_checkpoint(ckpt))
    return result, state["head.fc.weight"].numpy(), state["head.fc.bias"].numpy()


def _detection(work: Path, data_root, regime, args) -> dict:
    from labelwise.data import load_regime

    tag = _tag(args)
    done = work / f"detection{tag}.json"
    if done.exists():
        return json.loads(done.read_text())
    from scipy.special import softmax

    from labelwise.plugins.cleannet.config import CleanNetConfig
    from labelwise.plugins.cleannet.fit import fit_cleannet, restrict_verification
    from labelwise.plugins.cleannet.references import build_reference_sets
    from labelwise.plugins.cleannet.scorefile import write_scores
    from labelwise.plugins.cleannet.scoring import choose_threshold, sample_weights, score_samples
    from labelwise.plugins.cleannet.store import save_cleannet
    from labelwise.utils.fileio import write_json

    work.mkdir(parents=True, exist_ok=True)
    _baseline(work / "classifier", data_root, regime, 0, args)
    feats, w, b = _features(work, data_root, regime, args)
    # self-confidence always uses the noisy classifier's own probabilities
    conf = softmax(feats["train"].features @ w.T + b, axis=1)
    vconf = softmax(feats["val"].features @ w.T + b, axis=1)
    if args.features_from is not None:
        feats, _, _ = _features(work, data_root, regime, args, ckpt=args.features_from, tag=tag)
    train, val = load_regime(data_root, regime, "train"), load_regime(data_root, regime, "val")
    x, y, truth, ver = feats["train"].features, train.labels, train.truth, train.verified
    vx, vy, vver = feats["val"].features, val.labels, val.verified
    assert feats["train"].ids == list(train.ids)
    noisy = y != truth
    eval_mask = ver < 0  # unverified training samples, judged against the truth
    held = np.isin(y, [c for c in range(10) if c not in {int(c) for c in args.verified_classes.split(",")}])

    def error(flag_noisy, mask):
        return float(np.mean(flag_noisy[mask] != noisy[mask]))

    def auroc(clean_score):  # threshold-free: how well a score ranks wrong labels below right ones
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(noisy[eval_mask], -np.asarray(clean_score)[eval_mask]))

    row = {"regime": regime, "features": args.features_from or "noisy classifier", "steps": args.steps,
           "noise": float(noisy.mean()), "verified_train": int((ver >= 0).sum()),
           "verified_val": int((vver >= 0).sum())}
    # self-confidence of the classifier, threshold on verified val
    conf, vconf = conf[np.arange(len(y)), y], vconf[np.arange(len(vy)), vy]
    t = choose_threshold(vconf[vver >= 0], vver[vver >= 0], default=0.5)
    row["self_confidence"] = [error(conf < t, eval_mask), error(conf < t, eval_mask & held)]
    row["auroc"] = {"self_confidence": auroc(conf)}
    # cleanlab on cross-validated probabilities
    from cleanlab.filter import find_label_issues
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probs = cross_val_predict(make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)), np.log1p(x), y,
                              cv=5, method="predict_proba")
    issues = find_label_issues(y, probs)
    row["cleanlab"] = [error(issues, eval_mask), error(issues, eval_mask & held)]
    row["auroc"]["cleanlab (CV probability of the label)"] = auroc(probs[np.arange(len(y)), y])
    # CleanNet: all classes verified, and the transfer setting
    refs = build_reference_sets(x, y, num_classes=10, k=args.k, seed=0)
    for name, classes in (("cleannet_all", range(10)), ("cleannet_transfer", [int(c) for c in args.verified_classes.split(",")])):
        cfg = CleanNetConfig(steps=args.steps, lr_step=max(1, args.steps // 2), val_interval=min(2000, args.steps))
        result = fit_cleannet(x, y, restrict_verification(ver, y, classes), refs, val_features=vx, val_labels=vy,
                              val_verification=restrict_verification(vver, vy, classes), config=cfg,
                              work_dir=work / f"{name}{tag}", progress=False)
        save_cleannet(work / f"{name}{tag}" / "cleannet.pth", result)
        s = score_samples(result.model, x, y, refs)
        row[name] = [error(s < result.threshold, eval_mask), error(s < result.threshold, eval_mask & held)]
        row["auroc"][f"{name} (selected step {result.best_step})"] = auroc(s)
        # the last step's model, from the resumable training state: what the best-step rule saved us from
        from labelwise.checkpoint import load_checkpoint
        from labelwise.plugins.cleannet.fit import STATE_FILE

        final = copy.deepcopy(result.model)
        final.load_state_dict(load_checkpoint(work / f"{name}{tag}" / STATE_FILE)["model"])
        row["auroc"][f"{name} (last step {args.steps})"] = auroc(score_samples(final.eval(), x, y, refs))
        if name == "cleannet_all":
            for mode in ("hard", "soft"):
                write_scores(work / f"scores-{mode}{tag}.csv", train.ids, y, s,
                             sample_weights(s, mode=mode, threshold=result.threshold))
    write_json(done, row)
    return row


def _training(work: Path, data_root, regime, seeds, args) -> list:
    tag = _tag(args)
    init, start = None, ""
    if args.init_from is not None:  # every classifier run (weighted or not) starts from this backbone
        from labelwise.train import pretrained_backbone

        init, start = pretrained_backbone(args.init_from), "-init"
    results = []
    for seed in seeds:
        none_dir = (work / "classifier" if seed == 0 else work / f"none-seed{seed}") if init is None else \
            work / f"none-init-seed{seed}"
        label = "pretrained backbone" if init is not None else "scratch"
        results.append({"regime": regime, "weights": "none", "start": label,
                        **_baseline(none_dir, data_root, regime, seed, args, cfg_options=init)})
        for mode in ("hard", "soft"):
            results.append({"regime": regime, "weights": mode, "start": label, **_baseline(
                work / f"{mode}{tag}{start}-seed{seed}", data_root, regime, seed, args,
                config="cleannet/digits_noisy_weighted", cfg_options=init,
                env={"LABELWISE_CLEANNET_SCORES": str(work / f"scores-{mode}{tag}.csv")})})
    return results


def _detection_table(rows) -> str:
    lines = ["Noise-detection error (%) on unverified training samples: all classes / classes held out of "
             "verification", "",
             "| regime | noise (%) | verified train/val | self-confidence | cleanlab (CV) | CleanNet (all verified) "
             "| CleanNet (transfer) |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = [f"{100 * r[k][0]:.1f} / {100 * r[k][1]:.1f}" for k in
                 ("self_confidence", "cleanlab", "cleannet_all", "cleannet_transfer")]
        lines.append(f"| {r['regime']} | {100 * r['noise']:.1f} | {r['verified_train']}/{r['verified_val']} | "
                     + " | ".join(cells) + " |")
    lines += ["", "AUROC of each score at ranking the wrong labels of the unverified training samples below the "
              "right ones (all classes; threshold-free)", "", "| regime | detector | AUROC |", "|---|---|---|"]
    for r in rows:
        lines += [f"| {r['regime']} | {name} | {value:.3f} |" for name, value in r.get("auroc", {}).items()]
    return "\n".join(lines)


def _training_table(results) -> str:
    groups = {}
    for r in results:
        groups.setdefault((r["regime"], r.get("start", "scratch"), r["weights"]), []).append(r["value"])
    from labelwise.stats import compare

    lines = ["Test top-1 (%), mean ± std over seeds; change paired with no weighting on the same seed, its 95 % "
             "confidence interval and verdict (labelwise.stats)", "",
             "| regime | classifier starts from | weights | top-1 | per seed | change vs none | 95 % CI | verdict |",
             "|---|---|---|---|---|---|---|---|"]

    def mean_std(v, sign=""):
        return f"{v.mean():{sign}.2f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.2f}"

    for (regime, start, weights), values in groups.items():
        v, none = np.array(values), np.array(groups[(regime, start, "none")])
        change, ci, verdict = "-", "-", "-"
        if weights != "none" and len(v) == len(none):
            c = compare(v, none)
            change, ci, verdict = mean_std(v - none, "+"), c.interval(), c.verdict
        lines.append(f"| {regime} | {start} | {weights} | {mean_std(v)} | {' / '.join(f'{x:.1f}' for x in v)} | "
                     f"{change} | {ci} | {verdict} |")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
