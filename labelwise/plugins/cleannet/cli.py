"""``labelwise cleannet features|fit|score``: the CleanNet workflow from the shell.

This module is imported when the CLI parser is built: it imports no torch or framework at
module level.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from labelwise.errors import ConfigError, DataError

MODEL_FILE = "cleannet.pth"
REFERENCES_FILE = "references.npy"
#: What the reference sets in REFERENCES_FILE were built from (compared before reusing them).
REFERENCES_META = "references.json"
REFERENCES_FORMAT = "labelwise-cleannet-references/1"
HISTORY_FILE = "history.json"


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


def read_verification(path, ids):
    """Verification flags ``(N,)`` (1 / 0 / -1) for ``ids`` from a CSV (``id,verified``) or a
    digit-scenes ``{split}.labels.json``; ids absent from the file are -1.

    Raises:
        DataError: unreadable file, wrong columns, a flag other than 1 / 0 / -1, or a file whose
            ids share nothing with ``ids``.
    """
    import csv

    import numpy as np

    from labelwise.utils.fileio import read_text

    path = Path(path)
    text = read_text(path, what="verification file")
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc}); expected a digit-scenes labels file or a CSV "
                            "with columns id,verified") from None
        if not isinstance(data, dict) or data.get("verified") is None or "ids" not in data:
            raise DataError(f"{path}: expected a labels file with 'ids' and 'verified' (a noisy regime)")
        table = dict(zip(data["ids"], data["verified"]))
    else:
        rows = list(csv.reader(text.splitlines()))
        if not rows or [c.strip() for c in rows[0]] != ["id", "verified"]:
            raise DataError(f"{path}: expected a CSV header 'id,verified', got {','.join(rows[0]) if rows else 'nothing'!r}")
        table = {}
        for n, row in enumerate(rows[1:], 2):
            if len(row) != 2:
                raise DataError(f"{path}, line {n}: expected 2 fields id,verified, got {len(row)}")
            try:
                table[row[0].strip()] = int(row[1])
            except ValueError:
                raise DataError(f"{path}, line {n}: verified {row[1]!r} is not 1, 0 or -1") from None
    bad = [v for v in table.values() if v not in (1, 0, -1)]
    if bad:
        raise DataError(f"{path}: verification flag {bad[0]!r}; expected 1 (correct), 0 (wrong) or -1")
    if table and not any(i in table for i in ids):
        raise DataError(f"{path}: none of its ids is in the feature file (e.g. {next(iter(table))!r})")
    return np.array([table.get(i, -1) for i in ids], dtype=np.int8)


def _init_distributed(device: str | None) -> str:
    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = (device or "").startswith("cuda") or (device is None and torch.cuda.is_available())
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
        if device is None:
            device = f"cuda:{local}" if use_cuda else "cpu"
    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def _run_features(args) -> int:
    import torch

    from labelwise.plugins.cleannet.features import distributed_context, extract_features

    device = _init_distributed(args.device)
    if args.framework == "mmpretrain":
        from labelwise.adapters.mmpretrain.cleannet import mm_feature_extractor

        job = mm_feature_extractor(args.config, args.checkpoint, data_root=args.data_root, ann_file=args.ann_file,
                                   device=device)
    else:
        from labelwise.adapters.timm.cleannet import timm_feature_extractor

        job = timm_feature_extractor(args.model, args.checkpoint, data_root=args.data_root, ann_file=args.ann_file,
                                     device=device)
    if len(job["ids"]) == 0:
        raise DataError(f"annotation file {args.ann_file} (under {args.data_root}) lists no samples; expected one "
                        "'<image path> <class id>' line per image (or an OpenMMLab .json data_list)")
    out = extract_features(job["embed"], job["dataset"], out=args.out, ids=job["ids"], labels=job["labels"],
                           batch_size=args.batch_size, chunk_size=args.chunk_size, num_workers=args.num_workers,
                           collate_fn=job["collate_fn"], meta=job["meta"], fingerprint=job.get("fingerprint"),
                           overwrite=args.overwrite, progress=not args.no_progress)
    rank, _ = distributed_context()
    if rank == 0:
        from labelwise.plugins.cleannet.features import load_features

        fs = load_features(out)
        print(f"{out}: {len(fs.ids)} samples x {fs.features.shape[1]} features")
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


def _run_fit(args) -> int:
    import dataclasses

    import numpy as np

    from labelwise.plugins.cleannet.features import load_features
    from labelwise.plugins.cleannet.config import CleanNetConfig
    from labelwise.plugins.cleannet.fit import STATE_FILE, fit_cleannet, restrict_verification
    from labelwise.plugins.cleannet.references import build_reference_sets
    from labelwise.plugins.cleannet.scoring import check_features
    from labelwise.plugins.cleannet.store import save_cleannet
    from labelwise.utils.fileio import atomic_write, write_json

    config = CleanNetConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(CleanNetConfig)})
    train = load_features(args.features)
    if (train.labels < 0).any():
        raise DataError(f"{args.features}: some samples have no label (-1); CleanNet scores labelled samples")
    num_classes = args.num_classes or int(train.labels.max()) + 1
    check_features(train.features, train.labels, num_classes=num_classes, norm=config.norm, name=str(args.features))
    verification = read_verification(args.verification, train.ids)
    val = {}
    if args.val_features:
        if not args.val_verification:
            raise ConfigError("--val-features needs --val-verification")
        vs = load_features(args.val_features)
        val = dict(val_features=vs.features, val_labels=vs.labels,
                   val_verification=read_verification(args.val_verification, vs.ids))
    if args.verified_classes:
        try:
            classes = [int(c) for c in args.verified_classes.split(",")]
        except ValueError:
            raise ConfigError(f"--verified-classes must be comma-separated class ids, got {args.verified_classes!r}")
        verification = restrict_verification(verification, train.labels, classes)
        if val:
            val["val_verification"] = restrict_verification(val["val_verification"], val["val_labels"], classes)
    work = Path(args.work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ref_path, ref_meta = work / REFERENCES_FILE, work / REFERENCES_META
    if args.overwrite:
        for name in (REFERENCES_FILE, REFERENCES_META, STATE_FILE):
            (work / name).unlink(missing_ok=True)
    provenance = {"format": REFERENCES_FORMAT, "features": str(args.features),
                  "features_sha256": _array_digest(train.features, train.labels),
                  "num_classes": int(num_classes), "k": int(args.k), "seed": int(config.seed)}
    if ref_path.is_file():
        found = json.loads(ref_meta.read_text()) if ref_meta.is_file() else {}
        differ = [f"{key}: {found.get(key)!r}, now {provenance[key]!r}" for key in provenance
                  if key != "features" and found.get(key) != provenance[key]]
        if differ:
            raise DataError(f"{ref_path} holds reference sets built from other features or settings "
                            f"({'; '.join(differ)}{'' if found else ': no ' + REFERENCES_META + ' next to it'}); "
                            f"they are not reused: pass --overwrite to rebuild them (and train anew in {work}), "
                            "or use another --work-dir")
        references = np.load(ref_path)
        print(f"reusing {ref_path}")
    else:
        references = build_reference_sets(train.features, train.labels, num_classes=num_classes, k=args.k,
                                          seed=config.seed, progress=not args.no_progress)
        with atomic_write(ref_path, "wb") as f:
            np.save(f, references)
        write_json(ref_meta, provenance)
    result = fit_cleannet(train.features, train.labels, verification, references, config=config, work_dir=work,
                          device=args.device, progress=not args.no_progress, **val)
    save_cleannet(work / MODEL_FILE, result, extra={"features": str(args.features)})
    write_json(work / HISTORY_FILE, result.history)
    print(f"CleanNet: best step {result.best_step}, validation accuracy {result.val_accuracy:.4f}, "
          f"threshold {result.threshold:.4f} -> {work / MODEL_FILE}")
    return 0


def _array_digest(*arrays) -> str:
    """SHA-256 of arrays' dtypes, shapes and bytes (what reference sets are built from)."""
    import hashlib

    import numpy as np

    digest = hashlib.sha256()
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _is_score_file(path) -> bool:
    from labelwise.plugins.cleannet.scorefile import read_scores

    try:
        read_scores(path)
    except DataError:
        return False
    return True


def _run_score(args) -> int:
    import numpy as np

    from labelwise.plugins.cleannet.features import load_features
    from labelwise.plugins.cleannet.scorefile import write_scores
    from labelwise.plugins.cleannet.scoring import detection_accuracy, sample_weights, score_samples
    from labelwise.plugins.cleannet.store import load_cleannet

    from labelwise.utils.fileio import check_distinct, is_labelwise_figure

    model_path = Path(args.model)
    if model_path.is_dir():
        model_path = model_path / MODEL_FILE
    check_distinct({"--model": model_path, "--features": args.features, "--verification": args.verification,
                    "--out": args.out, "--histogram": args.histogram})
    exists = f"{args.out} exists: another run's scores are there (choose another --out, or --overwrite to replace it)"
    keep = Path(args.out).exists() and not args.overwrite
    if keep and not _is_score_file(args.out):
        raise DataError(exists)
    if (args.histogram and Path(args.histogram).exists() and not args.overwrite
            and not is_labelwise_figure(args.histogram)):
        raise DataError(f"--histogram {args.histogram} exists and is not a plot labelwise wrote; choose another "
                        "file (or --overwrite to replace it)")
    model, references, info = load_cleannet(model_path)
    fs = load_features(args.features)
    threshold = info["threshold"] if args.threshold is None else args.threshold
    scores = score_samples(model, fs.features, fs.labels, references, batch_size=args.batch_size)
    weights = sample_weights(scores, mode=args.weights, threshold=threshold)
    if keep:  # a re-run of the same command (e.g. after a crash before the histogram) keeps the same file
        from labelwise.plugins.cleannet.scorefile import format_scores

        if Path(args.out).read_bytes() != format_scores(fs.ids, fs.labels, scores, weights).encode("utf-8"):
            raise DataError(exists)
    else:
        write_scores(args.out, fs.ids, fs.labels, scores, weights)
    print(f"{args.out}: {len(scores)} samples, threshold {threshold:.4f}, "
          f"{np.mean(scores >= threshold):.1%} above it, mean weight {weights.mean():.4f}")
    verification = read_verification(args.verification, fs.ids) if args.verification else None
    if verification is not None and (verification >= 0).any():
        v = verification >= 0
        print(f"noise-detection accuracy on {int(v.sum())} verified samples: "
              f"{detection_accuracy(scores[v], verification[v], threshold):.4f}")
    if args.histogram:
        from labelwise.plugins.cleannet.plot import plot_score_histogram

        plot_score_histogram(args.histogram, scores, verification, threshold=threshold, overwrite=args.overwrite)
        print(f"histogram: {args.histogram}")
    return 0

