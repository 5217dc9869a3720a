"""CleanNet's three jobs, file to file: embed a dataset, fit CleanNet, score and weight samples.

``labelwise cleannet features|fit|score``, the demo and the benchmarks call these functions.
"""
from __future__ import annotations

import json
from pathlib import Path

from labelwise.errors import ConfigError, DataError

__all__ = ["HISTORY_FILE", "MODEL_FILE", "REFERENCES_FILE", "REFERENCES_META", "export_features", "fit",
           "read_verification", "score"]

MODEL_FILE = "cleannet.pth"
REFERENCES_FILE = "references.npy"
#: What the reference sets in REFERENCES_FILE were built from (compared before reusing them).
REFERENCES_META = "references.json"
REFERENCES_FORMAT = "labelwise-cleannet-references/1"
HISTORY_FILE = "history.json"


def export_features(out, *, data_root, ann_file, framework: str = "mmpretrain", config="baseline/digits_noisy",
                    model: str = "resnet18", checkpoint=None, batch_size: int = 64, chunk_size: int = 1024,
                    num_workers: int = 0, device: str | None = None, overwrite: bool = False,
                    progress: bool = True) -> dict:
    """Pooled penultimate features of every image of ``ann_file``, embedded by a trained model, into ``out`` (.npz).

    The model is an mmpretrain config (``framework='mmpretrain'``, ``config``) or a timm model
    (``model``) with ``checkpoint``'s weights. Resumes an interrupted run; under ``torchrun``
    the work is sharded over the ranks.

    Returns:
        ``{"out": path, "samples": N, "dim": D, "rank": rank}``.

    Raises:
        DataError: the annotation file lists no samples.
    """
    from labelwise.plugins.cleannet.features import extract_features, load_features
    from labelwise.utils.distributed import join_process_group

    group = join_process_group(device)
    try:
        if framework == "mmpretrain":
            from labelwise.adapters.mmpretrain.cleannet import mm_feature_extractor

            job = mm_feature_extractor(config, checkpoint, data_root=data_root, ann_file=ann_file, device=group.device)
        elif framework == "timm":
            from labelwise.adapters.timm.cleannet import timm_feature_extractor

            job = timm_feature_extractor(model, checkpoint, data_root=data_root, ann_file=ann_file,
                                         device=group.device)
        else:
            raise ConfigError(f"framework {framework!r}: expected 'mmpretrain' or 'timm'")
        if len(job["ids"]) == 0:
            raise DataError(f"annotation file {ann_file} (under {data_root}) lists no samples; expected one "
                            "'<image path> <class id>' line per image (or an OpenMMLab .json data_list)")
        path = extract_features(job["embed"], job["dataset"], out=out, ids=job["ids"], labels=job["labels"],
                                batch_size=batch_size, chunk_size=chunk_size, num_workers=num_workers,
                                collate_fn=job["collate_fn"], meta=job["meta"], fingerprint=job.get("fingerprint"),
                                overwrite=overwrite, progress=progress)
        result = {"out": str(path), "rank": group.rank}
        if group.is_main:
            fs = load_features(path)
            result.update(samples=len(fs.ids), dim=int(fs.features.shape[1]))
    finally:
        group.close()
    return result


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


def fit(work_dir, *, features, verification, val_features=None, val_verification=None, verified_classes=None,
        num_classes: int | None = None, k: int = 32, config=None, device: str = "cpu", overwrite: bool = False,
        progress: bool = True, extra: dict | None = None):
    """Reference sets (k-means per class) and CleanNet training on feature files; writes ``work_dir``.

    Writes ``cleannet.pth``, ``references.npy`` (+ ``references.json``: what they were built
    from) and ``history.json``; an interrupted run resumes. Reference sets or a training state
    made from other features, ``k`` or seed are refused unless ``overwrite`` (start over).

    Args:
        work_dir: output folder.
        features: training feature file (noisy labels inside).
        verification: the training samples' verification flags: a CSV ``id,verified`` or a
            digit-scenes ``{split}.labels.json`` (see :func:`read_verification`).
        val_features, val_verification: the validation pair (optional; both or neither).
        verified_classes: keep verification only for these class ids (the transfer setting).
        num_classes: default: largest training label + 1.
        k: references per class.
        config: a :class:`~labelwise.plugins.cleannet.config.CleanNetConfig` (default: the
            reference schedule).
        extra: more entries stored in ``cleannet.pth``'s info.

    Returns:
        The :class:`~labelwise.plugins.cleannet.fit.FitResult`.

    Raises:
        DataError: unlabelled samples, features that do not fit, or reference sets built
            from other features or settings (without ``overwrite``).
        ConfigError: ``val_features`` without ``val_verification``.
    """
    import numpy as np

    from labelwise.plugins.cleannet.config import CleanNetConfig
    from labelwise.plugins.cleannet.features import load_features
    from labelwise.plugins.cleannet.fit import STATE_FILE, fit_cleannet, restrict_verification
    from labelwise.plugins.cleannet.references import build_reference_sets
    from labelwise.plugins.cleannet.scoring import check_features
    from labelwise.plugins.cleannet.store import save_cleannet
    from labelwise.utils.fileio import atomic_write, write_json

    config = config or CleanNetConfig()
    train = load_features(features)
    if (train.labels < 0).any():
        raise DataError(f"{features}: some samples have no label (-1); CleanNet scores labelled samples")
    num_classes = num_classes or int(train.labels.max()) + 1
    check_features(train.features, train.labels, num_classes=num_classes, norm=config.norm, name=str(features))
    flags = read_verification(verification, train.ids)
    val = {}
    if val_features:
        if not val_verification:
            raise ConfigError("--val-features needs --val-verification")
        vs = load_features(val_features)
        val = dict(val_features=vs.features, val_labels=vs.labels,
                   val_verification=read_verification(val_verification, vs.ids))
    if verified_classes:
        flags = restrict_verification(flags, train.labels, verified_classes)
        if val:
            val["val_verification"] = restrict_verification(val["val_verification"], val["val_labels"],
                                                            verified_classes)
    work = Path(work_dir)
    work.mkdir(parents=True, exist_ok=True)
    ref_path, ref_meta = work / REFERENCES_FILE, work / REFERENCES_META
    if overwrite:
        for name in (REFERENCES_FILE, REFERENCES_META, STATE_FILE):
            (work / name).unlink(missing_ok=True)
    provenance = {"format": REFERENCES_FORMAT, "features": str(features),
                  "features_sha256": _array_digest(train.features, train.labels),
                  "num_classes": int(num_classes), "k": int(k), "seed": int(config.seed)}
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
        references = build_reference_sets(train.features, train.labels, num_classes=num_classes, k=k,
                                          seed=config.seed, progress=progress)
        with atomic_write(ref_path, "wb") as f:
            np.save(f, references)
        write_json(ref_meta, provenance)
    result = fit_cleannet(train.features, train.labels, flags, references, config=config, work_dir=work,
                          device=device, progress=progress, **val)
    save_cleannet(work / MODEL_FILE, result, extra={"features": str(features), "k": int(k), **(extra or {})})
    write_json(work / HISTORY_FILE, result.history)
    return result


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


def score(model, *, features, out, weights: str = "hard", threshold: float | None = None, batch_size: int = 1024,
          verification=None, histogram=None, overwrite: bool = False) -> dict:
    """Score every sample of a feature file against its label; write ``id,label,score,weight`` to ``out``.

    Relevance ``s = cos(phi_q, phi_s(label))`` and the training weight: ``hard`` ``1[s >=
    threshold]`` or ``soft`` ``max(0, s)``. A re-run of the same job keeps an identical score
    file; another run's file at ``out`` is refused unless ``overwrite``.

    Args:
        model: ``cleannet.pth`` written by :func:`fit` (or its work dir).
        features: the feature file of the samples.
        threshold: default: the one :func:`fit` chose.
        verification: these samples' verification flags (accuracy on them; split histogram).
        histogram: also write a PNG histogram of the scores there.

    Returns:
        ``{"out", "samples", "threshold", "above", "mean_weight", "verified", "accuracy",
        "histogram", "ids", "labels", "scores", "weights", "verification"}`` (the last five
        are arrays).
    """
    import numpy as np

    from labelwise.plugins.cleannet.features import load_features
    from labelwise.plugins.cleannet.scorefile import format_scores, write_scores
    from labelwise.plugins.cleannet.scoring import detection_accuracy, sample_weights, score_samples
    from labelwise.plugins.cleannet.store import load_cleannet
    from labelwise.utils.fileio import check_distinct, is_labelwise_figure

    model_path = Path(model)
    if model_path.is_dir():
        model_path = model_path / MODEL_FILE
    check_distinct({"--model": model_path, "--features": features, "--verification": verification,
                    "--out": out, "--histogram": histogram})
    exists = f"{out} exists: another run's scores are there (choose another --out, or --overwrite to replace it)"
    keep = Path(out).exists() and not overwrite
    if keep and not _is_score_file(out):
        raise DataError(exists)
    if histogram and Path(histogram).exists() and not overwrite and not is_labelwise_figure(histogram):
        raise DataError(f"--histogram {histogram} exists and is not a plot labelwise wrote; choose another "
                        "file (or --overwrite to replace it)")
    net, references, info = load_cleannet(model_path)
    fs = load_features(features)
    threshold = float(info["threshold"] if threshold is None else threshold)
    scores = score_samples(net, fs.features, fs.labels, references, batch_size=batch_size)
    sample_w = sample_weights(scores, mode=weights, threshold=threshold)
    if keep:  # a re-run of the same command (e.g. after a crash before the histogram) keeps the same file
        if Path(out).read_bytes() != format_scores(fs.ids, fs.labels, scores, sample_w).encode("utf-8"):
            raise DataError(exists)
    else:
        write_scores(out, fs.ids, fs.labels, scores, sample_w)
    flags = read_verification(verification, fs.ids) if verification else None
    verified = flags is not None and bool((flags >= 0).any())
    accuracy = None
    if verified:
        v = flags >= 0
        accuracy = float(detection_accuracy(scores[v], flags[v], threshold))
    if histogram:
        from labelwise.plugins.cleannet.plot import plot_score_histogram

        plot_score_histogram(histogram, scores, flags, threshold=threshold, overwrite=overwrite)
    return {"out": str(out), "samples": int(len(scores)), "threshold": threshold,
            "above": float(np.mean(scores >= threshold)), "mean_weight": float(sample_w.mean()),
            "verified": int((flags >= 0).sum()) if verified else 0, "accuracy": accuracy,
            "histogram": str(histogram) if histogram else None, "ids": fs.ids, "labels": fs.labels,
            "scores": scores, "weights": sample_w, "verification": flags}
