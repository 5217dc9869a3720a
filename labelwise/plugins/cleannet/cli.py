"""``labelwise cleannet features|fit|score``: argument parsing for :mod:`labelwise.workflows.cleannet`.

This module is imported when the CLI parser is built: it imports no torch or framework at
module level.
"""
from __future__ import annotations

from pathlib import Path

from labelwise.errors import ConfigError
from labelwise.workflows.cleannet import MODEL_FILE


def add_commands(subparsers) -> None:
    parser = subparsers.add_parser(
        "cleannet", help="CleanNet: learn label noise from a verified subset, score and weight samples",
        description="CleanNet (Lee et al., CVPR 2018) in three steps: `features` embeds a dataset with a "
        "trained classifier, `fit` trains CleanNet on the features with a small verified subset, `score` "
        "writes a per-sample score file (id,label,score,weight) for labelwise.CleanNetWeights. "
        "See docs/methods/cleannet.md.",
    )
    sub = parser.add_subparsers(dest="cleannet_command", metavar="STEP", required=True)

    f = sub.add_parser("features", help="pooled penultimate features of an mmpretrain or timm model",
                       description="Embed every image of an annotation list with a trained model and write a "
                       "feature file (.npz). Resumes an interrupted run; under torchrun the work is sharded "
                       "over the processes (gloo on CPU, nccl on GPU).")
    f.add_argument("--framework", choices=("mmpretrain", "timm"), default="mmpretrain", help="default: mmpretrain")
    f.add_argument("--config", default="baseline/digits_noisy",
                   help="mmpretrain config (file or built-in name) whose model and test pipeline are used "
                   "(default: baseline/digits_noisy)")
    f.add_argument("--model", default="resnet18", help="timm model name (default: resnet18, digit-scenes width)")
    f.add_argument("--checkpoint", default=None, help="trained weights (default: none, the initial weights)")
    f.add_argument("--data-root", required=True, help="dataset root")
    f.add_argument("--ann-file", required=True,
                   help="annotation list relative to the root, e.g. noisy-symmetric-r0.2/train.txt")
    f.add_argument("--out", required=True, help="feature file to write (.npz)")
    f.add_argument("--batch-size", type=int, default=64, help="default: 64")
    f.add_argument("--chunk-size", type=int, default=1024, help="samples per resumable chunk (default: 1024)")
    f.add_argument("--num-workers", type=int, default=0, help="data loading workers (default: 0)")
    f.add_argument("--device", default=None, help="default: cuda:LOCAL_RANK if available, else cpu")
    f.add_argument("--overwrite", action="store_true", help="recompute an existing feature file")
    f.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    f.set_defaults(func=_run_features)

    t = sub.add_parser("fit", help="build reference sets and train CleanNet",
                       description="k-means reference sets per class, then CleanNet training (SGD, the reference "
                       "code's schedule); keeps the weights with the best validation noise-detection accuracy and "
                       "picks the threshold on the verified validation samples. Writes WORK_DIR/cleannet.pth, "
                       "references.npy (+ references.json, what they were built from), history.json; an interrupted "
                       "run resumes. Reference sets or a training state in WORK_DIR made from other features, k or "
                       "seed are refused (--overwrite starts over).")
    t.add_argument("--features", required=True, help="training feature file (noisy labels inside)")
    t.add_argument("--verification", required=True,
                   help="verification flags of the training samples: a CSV with columns id,verified (1 correct, "
                   "0 wrong; absent ids are unverified) or a digit-scenes {split}.labels.json")
    t.add_argument("--val-features", default=None, help="validation feature file (optional)")
    t.add_argument("--val-verification", default=None, help="verification flags of the validation samples")
    t.add_argument("--verified-classes", default=None,
                   help="comma-separated class ids: keep verification only for these (the transfer setting)")
    t.add_argument("--num-classes", type=int, default=None, help="default: largest training label + 1")
    t.add_argument("--k", type=int, default=32, help="references per class (k-means centres, default: 32)")
    t.add_argument("--work-dir", required=True, help="output folder")
    t.add_argument("--device", default="cpu", help="default: cpu")
    t.add_argument("--overwrite", action="store_true",
                   help="delete the reference sets and training state in WORK_DIR first (rebuild and retrain) "
                   "instead of refusing ones made from other features or settings")
    t.add_argument("--no-progress", action="store_true", help="hide progress bars")
    import dataclasses

    from labelwise.plugins.cleannet.config import CleanNetConfig

    for field in dataclasses.fields(CleanNetConfig):
        t.add_argument(f"--{field.name.replace('_', '-')}", type=type(field.default), default=field.default,
                       help=f"default: {field.default}")
    t.set_defaults(func=_run_fit)

    s = sub.add_parser("score", help="score every sample; write id,label,score,weight",
                       description="Relevance s = cos(phi_q, phi_s(label)) of every sample of a feature file to "
                       "its label, and its training weight: hard 1[s >= threshold] or soft max(0, s).")
    s.add_argument("--model", required=True, help="cleannet.pth written by `fit` (or its work dir)")
    s.add_argument("--features", required=True, help="feature file of the samples to score")
    s.add_argument("--out", required=True, help="score file to write (.csv)")
    s.add_argument("--weights", choices=("hard", "soft"), default="hard", help="default: hard")
    s.add_argument("--threshold", type=float, default=None, help="default: the one chosen by `fit`")
    s.add_argument("--batch-size", type=int, default=1024, help="default: 1024")
    s.add_argument("--verification", default=None,
                   help="verification flags of these samples (report accuracy, split the histogram)")
    s.add_argument("--histogram", default=None, help="also write a PNG histogram of the scores")
    s.add_argument("--overwrite", action="store_true",
                   help="replace an existing score file at --out (and a file at --histogram that is not a labelwise plot)")
    s.set_defaults(func=_run_score)


def _run_features(args) -> int:
    from labelwise.workflows.cleannet import export_features

    result = export_features(args.out, data_root=args.data_root, ann_file=args.ann_file, framework=args.framework,
                             config=args.config, model=args.model, checkpoint=args.checkpoint,
                             batch_size=args.batch_size, chunk_size=args.chunk_size, num_workers=args.num_workers,
                             device=args.device, overwrite=args.overwrite, progress=not args.no_progress)
    if result["rank"] == 0:
        print(f"{result['out']}: {result['samples']} samples x {result['dim']} features")
    return 0


def _run_fit(args) -> int:
    import dataclasses

    from labelwise.plugins.cleannet.config import CleanNetConfig
    from labelwise.workflows.cleannet import fit

    config = CleanNetConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(CleanNetConfig)})
    classes = None
    if args.verified_classes:
        try:
            classes = [int(c) for c in args.verified_classes.split(",")]
        except ValueError:
            raise ConfigError(f"--verified-classes must be comma-separated class ids, got {args.verified_classes!r}")
    result = fit(args.work_dir, features=args.features, verification=args.verification,
                 val_features=args.val_features, val_verification=args.val_verification, verified_classes=classes,
                 num_classes=args.num_classes, k=args.k, config=config, device=args.device,
                 overwrite=args.overwrite, progress=not args.no_progress)
    print(f"CleanNet: best step {result.best_step}, validation accuracy {result.val_accuracy:.4f}, "
          f"threshold {result.threshold:.4f} -> {Path(args.work_dir) / MODEL_FILE}")
    return 0


def _run_score(args) -> int:
    from labelwise.workflows.cleannet import score

    result = score(args.model, features=args.features, out=args.out, weights=args.weights, threshold=args.threshold,
                   batch_size=args.batch_size, verification=args.verification, histogram=args.histogram,
                   overwrite=args.overwrite)
    print(f"{args.out}: {result['samples']} samples, threshold {result['threshold']:.4f}, "
          f"{result['above']:.1%} above it, mean weight {result['mean_weight']:.4f}")
    if result["accuracy"] is not None:
        print(f"noise-detection accuracy on {result['verified']} verified samples: {result['accuracy']:.4f}")
    if result["histogram"]:
        print(f"histogram: {result['histogram']}")
    return 0
