"""The demo's steps for one seed: the baselines and the five methods, each through its public API.

Each step writes one result file; :class:`labelwise.demo.Steps` skips a step whose file
exists, and the results are read back from those files (so a resumed demo reports the same).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import os
from pathlib import Path

import numpy as np

from labelwise.utils.fileio import atomic_write, write_json

SINGLE, NOISY, PARTIAL = "single", "noisy-symmetric-r0.2", "partial-p0.3"
STEPS_PER_SEED = 14
#: CleanNet weights used for training: soft ``max(0, s)`` (robust to a short CleanNet schedule).
CLEANNET_WEIGHTS = "soft"
#: ReLabel input size: the whole 64 px image (2x2 maps from the stride-32 baseline ResNet).
RELABEL_SIZE = 64
#: The ONNX head must reproduce the calibrated logits on the test features within this.
ONNX_TOLERANCE = 1e-4


def have_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def make_data(root: Path, mode) -> Path:
    """The digit scenes of ``mode``'s sizes: single, multilabel, partial-p0.3, noisy-symmetric-r0.2."""
    from labelwise.data import SceneConfig, make_dataset

    scenes = dataclasses.replace(SceneConfig(), num_train=mode.num_train, num_val=mode.num_val,
                                 num_test=mode.num_test)
    return make_dataset(root, config=scenes, seed=0, p=(0.3,), r=(0.2,), noise=("symmetric",),
                        verified_fraction=mode.verified_fraction, progress=True)


@contextlib.contextmanager
def _env(**values):
    """Set environment variables (read by configs as ``{{$NAME:default}}``) for a block."""
    old = {key: os.environ.get(key) for key in values}
    os.environ.update({key: str(value) for key, value in values.items()})
    try:
        yield
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class Run:
    """One training run of a built-in config through mmengine's Runner, in ``work``."""

    def __init__(self, work: Path, config: str, regime: str):
        self.work, self.config, self.regime = Path(work), config, regime

    @property
    def metrics_file(self) -> Path:
        from labelwise.train import METRICS_FILE

        return self.work / METRICS_FILE

    def train(self, data_root, mode, seed, *, cfg_options=None, env=None, batch_size: int = 64):
        from labelwise.train import train_baseline

        with _env(**(env or {})):
            return train_baseline("mmpretrain", data_root=data_root, regime=self.regime, work_dir=self.work,
                                  seed=seed, epochs=mode.epochs, batch_size=batch_size, config=self.config,
                                  cfg_options={**mode.model_options(), **(cfg_options or {})}, progress=True)

    def checkpoint(self, mode) -> Path:
        return self.work / "mmpretrain" / f"epoch_{mode.epochs}.pth"

    def dumped_config(self) -> Path:
        """The exact config the Runner trained (it dumps it into its work dir under the file's name)."""
        return self.work / "mmpretrain" / f"{Path(self.config).name}.py"  # a built-in name, e.g. baseline/digits_single

    def result(self) -> dict:
        return json.loads(self.metrics_file.read_text())


def pretrain(work: Path, mode, steps) -> dict:
    """The backbone P: ``single`` labels of a second set of scenes (data seed 1, no image shared)."""
    from labelwise.data import SceneConfig, make_dataset

    data_root = work / "data-seed1"
    scenes = dataclasses.replace(SceneConfig(), num_train=mode.pretrain_train, num_val=max(20, mode.num_val // 4),
                                 num_test=mode.num_test)
    steps.run(f"pretrain: generating {mode.pretrain_train} other scenes (data seed 1)", data_root / "labelwise-data.json",
              lambda: make_dataset(data_root, config=scenes, seed=1, regimes=("single",), progress=True))
    run = Run(work / "single", "baseline/digits_single", SINGLE)
    steps.run(f"pretrain: training the backbone P on them ({mode.pretrain_epochs} epoch(s), batch "
              f"{mode.pretrain_batch})", run.metrics_file,
              lambda: run.train(data_root, dataclasses.replace(mode, epochs=mode.pretrain_epochs), 0,
                                batch_size=mode.pretrain_batch))
    return {"checkpoint": str(run.work / "mmpretrain" / f"epoch_{mode.pretrain_epochs}.pth"),
            "config": str(run.dumped_config()), "train_images": mode.pretrain_train, "epochs": mode.pretrain_epochs,
            "top1": run.result()["value"]}


def run_seed(work: Path, data_root: Path, mode, seed: int, steps, *, pretrained: dict) -> dict:
    """Every step of one seed; returns the per-method results read back from their files."""
    work.mkdir(parents=True, exist_ok=True)
    tag = f"seed {seed}: " if len(mode.seeds) > 1 else ""
    s = lambda what: tag + what  # noqa: E731
    from labelwise.train import pretrained_backbone

    from_p = pretrained_backbone(pretrained["checkpoint"])
    init = from_p if mode.pretrain_all else {}
    start = "from P" if mode.pretrain_all else "from scratch"

    # 1. the single-label baseline: checkpoint A
    single = Run(work / "baseline-single", "baseline/digits_single", SINGLE)
    steps.run(s(f"baseline: training on '{SINGLE}' {start} ({mode.epochs} epoch(s); checkpoint A)"),
              single.metrics_file, lambda: single.train(data_root, mode, seed, cfg_options=init))
    a_ckpt, a_cfg = single.checkpoint(mode), single.dumped_config()

    # 2-3. ReLabel with A, then LabelPooling
    maps, maps_done = work / "labelmaps", work / "labelmaps.json"
    steps.run(s("labelpool: ReLabel label maps of the train split with A"), maps_done,
              lambda: _relabel(maps, maps_done, data_root, a_cfg, a_ckpt))
    labelpool = Run(work / "labelpool", "labelpool/digits_single", SINGLE)
    steps.run(s("labelpool: training with LabelPooling targets"), labelpool.metrics_file,
              lambda: labelpool.train(data_root, mode, seed, cfg_options=init, env={"LABELWISE_LABEL_MAPS": maps}))

    # 4. Label Refinery: generation 2 refined online by A
    refinery = Run(work / "refinery-gen2", "refinery/digits_single", SINGLE)
    steps.run(s("refinery: training generation 2 (refinery: A)"), refinery.metrics_file,
              lambda: refinery.train(data_root, mode, seed, cfg_options={
                  **init, "data_preprocessor.refinery": dict(config=str(a_cfg), checkpoint=str(a_ckpt))}))

    # 5-9. CleanNet on P's features (the stand-in for the paper's ImageNet ResNet-50 features, as in
    # benchmarks/cleannet_quality.py --features-from)
    noisy = Run(work / "baseline-noisy", "baseline/digits_noisy", NOISY)
    steps.run(s(f"cleannet: baseline on '{NOISY}'"), noisy.metrics_file,
              lambda: noisy.train(data_root, mode, seed, cfg_options=init))
    cn = work / "cleannet"
    steps.run(s("cleannet: P's features of the noisy train and val splits"), cn / "features-val.npz",
              lambda: _cleannet_features(cn, data_root, pretrained["config"], pretrained["checkpoint"]))
    steps.run(s(f"cleannet: fit ({mode.cleannet_steps} steps)"), cn / "cleannet.pth",
              lambda: _cleannet_fit(cn, data_root, mode, seed))
    steps.run(s("cleannet: scores, noise detection and histogram"), cn / "detection.json",
              lambda: _cleannet_score(cn, data_root))
    weighted = Run(work / "cleannet-weighted", "cleannet/digits_noisy_weighted", NOISY)
    steps.run(s(f"cleannet: training with {CLEANNET_WEIGHTS} CleanNet weights"), weighted.metrics_file,
              lambda: weighted.train(data_root, mode, seed, cfg_options=init,
                                     env={"LABELWISE_CLEANNET_SCORES": cn / "scores.csv"}))

    # 10-11. PU-MLC against "assume negative", both from P (from scratch both stay at the floor)
    partial = Run(work / "baseline-partial", "baseline/digits_partial", PARTIAL)
    steps.run(s(f"pumlc: assume-negative baseline on '{PARTIAL}' from P"), partial.metrics_file,
              lambda: partial.train(data_root, mode, seed, cfg_options=from_p))
    pumlc = Run(work / "pumlc", "pumlc/digits_partial_pumlc", PARTIAL)
    steps.run(s("pumlc: training with the PU-MLC loss from P"), pumlc.metrics_file,
              lambda: pumlc.train(data_root, mode, seed, cfg_options=from_p))

    # 12-14. CFT on the partial baseline, its ONNX head checked with onnxruntime
    cft = work / "cft"
    steps.run(s(f"cft: calibrating the partial baseline's head (GA and BP, {mode.cft_epochs} epochs)"),
              cft / "cft_report.json",
              lambda: _cft_calibrate(cft, data_root, mode, seed, partial.dumped_config(), partial.checkpoint(mode)))
    steps.run(s("cft: features of the test split"), work / "cft-test-features.npz",
              lambda: _test_features(work / "cft-test-features.npz", partial.dumped_config(),
                                     partial.checkpoint(mode), data_root))
    steps.run(s("cft: ONNX head vs the calibrated logits (onnxruntime), test mAP"), work / "cft-test.json",
              lambda: _cft_check(work / "cft-test.json", cft, work / "cft-test-features.npz"))
    check = json.loads((work / "cft-test.json").read_text())
    if not check["onnx"]["passed"]:
        raise AssertionError(f"{cft / 'cft_head.onnx'}: onnxruntime logits differ from the calibrated head by "
                             f"{check['onnx']['max_abs_diff']:.3g} > {ONNX_TOLERANCE} on the test features")
    return {
        "seed": seed, "single": single.result(), "labelpool": labelpool.result(), "refinery": refinery.result(),
        "noisy": noisy.result(), "cleannet": weighted.result(),
        "detection": json.loads((cn / "detection.json").read_text()),
        "partial": partial.result(), "pumlc": pumlc.result(), "cft": check,
        "labelmaps": json.loads(maps_done.read_text()),
    }


def _relabel(store: Path, done: Path, data_root, config, checkpoint) -> None:
    """``labelwise relabel``'s steps with A as the annotator (mmpretrain config)."""
    from labelwise.adapters.mmpretrain.labelpool import build_annotator
    from labelwise.plugins.labelpool.relabel import WholeImageLoader, annotator_meta, read_image_list, relabel

    keys = read_image_list(data_root, f"{SINGLE}/train.txt")
    annotator, info = build_annotator(config, checkpoint)
    loader = WholeImageLoader(data_root, size=RELABEL_SIZE, mean=info["mean"], std=info["std"], bgr=info["bgr"])
    meta = annotator_meta({"framework": "mmpretrain", "config": str(config)}, checkpoint,
                          mean=info["mean"], std=info["std"], bgr=info["bgr"])
    result = relabel(annotator, keys, loader, store, input_size=RELABEL_SIZE, k=5, batch_size=64, meta=meta,
                     progress=True)
    write_json(done, {**result, "input_size": RELABEL_SIZE})


def _cleannet_features(work: Path, data_root, config, checkpoint) -> None:
    from labelwise.adapters.mmpretrain.cleannet import mm_feature_extractor
    from labelwise.plugins.cleannet.features import extract_features

    for split in ("train", "val"):  # val last: its file marks the step done
        job = mm_feature_extractor(config, checkpoint, data_root=data_root, ann_file=f"{NOISY}/{split}.txt")
        extract_features(job["embed"], job["dataset"], out=work / f"features-{split}.npz", ids=job["ids"],
                         labels=job["labels"], batch_size=200, collate_fn=job["collate_fn"], meta=job["meta"],
                         fingerprint=job.get("fingerprint"), progress=True)


def _cleannet_fit(work: Path, data_root, mode, seed) -> None:
    from labelwise.plugins.cleannet.cli import read_verification
    from labelwise.plugins.cleannet.config import CleanNetConfig
    from labelwise.plugins.cleannet.features import load_features
    from labelwise.plugins.cleannet.fit import fit_cleannet
    from labelwise.plugins.cleannet.references import build_reference_sets
    from labelwise.plugins.cleannet.store import save_cleannet

    train, val = load_features(work / "features-train.npz"), load_features(work / "features-val.npz")
    labels_file = lambda split: Path(data_root) / NOISY / f"{split}.labels.json"  # noqa: E731
    steps = mode.cleannet_steps
    config = CleanNetConfig(steps=steps, lr_step=max(1, steps // 2), val_interval=min(2000, steps), seed=seed)
    k = min(32, max(1, mode.num_train // 40))  # about a quarter of a class's samples at most
    references = build_reference_sets(train.features, train.labels, num_classes=10, k=k, seed=seed)
    result = fit_cleannet(train.features, train.labels, read_verification(labels_file("train"), train.ids),
                          references, val_features=val.features, val_labels=val.labels,
                          val_verification=read_verification(labels_file("val"), val.ids), config=config,
                          work_dir=work, progress=True)
    save_cleannet(work / "cleannet.pth", result, extra={"features": str(work / "features-train.npz"), "k": k})


def _cleannet_score(work: Path, data_root) -> None:
    """Score file, noise-detection error against the truth, and the score histogram."""
    from labelwise.data import load_regime
    from labelwise.plugins.cleannet.features import load_features
    from labelwise.plugins.cleannet.scorefile import write_scores
    from labelwise.plugins.cleannet.scoring import sample_weights, score_samples
    from labelwise.plugins.cleannet.store import load_cleannet

    model, references, info = load_cleannet(work / "cleannet.pth")
    fs = load_features(work / "features-train.npz")
    threshold = float(info["threshold"])
    scores = score_samples(model, fs.features, fs.labels, references)
    weights = sample_weights(scores, mode=CLEANNET_WEIGHTS, threshold=threshold)
    write_scores(work / "scores.csv", fs.ids, fs.labels, scores, weights)
    truth = load_regime(data_root, NOISY, "train")
    order = {key: i for i, key in enumerate(truth.ids)}
    idx = np.array([order[key] for key in fs.ids])
    wrong = truth.labels[idx] != truth.truth[idx]
    verified = np.asarray(truth.verified)[idx]
    judged = verified < 0  # the verified samples trained CleanNet: judge the others
    flagged = scores < threshold
    histogram = None
    if have_matplotlib():
        from labelwise.plugins.cleannet.plot import plot_score_histogram

        histogram = str(work / "cleannet_scores.png")
        plot_score_histogram(histogram, scores, verified, threshold=threshold)
    write_json(work / "detection.json", {
        "samples": int(judged.sum()), "noise_rate": float(wrong[judged].mean()),
        "error": float((flagged[judged] != wrong[judged]).mean()), "threshold": threshold,
        "flagged": float(flagged[judged].mean()), "mean_weight": float(weights.mean()),
        "weights": CLEANNET_WEIGHTS, "histogram": histogram})


def _cft_calibrate(out: Path, data_root, mode, seed, config, checkpoint) -> None:
    from labelwise.adapters.mmpretrain.cft import calibrate_checkpoint
    from labelwise.plugins.cft.options import CFTOptions

    options = CFTOptions(optimizer="best", epochs=mode.cft_epochs, early_stopping=mode.cft_patience, seed=seed)
    calibrate_checkpoint(config, checkpoint, out, options=options, data_root=data_root,
                         train_ann=f"{PARTIAL}/train.json", val_ann=f"{PARTIAL}/val.json",
                         plot=have_matplotlib(), progress=True)


def _test_features(path: Path, config, checkpoint, data_root) -> None:
    """Penultimate features of the fully labelled test split, and the original final layer."""
    import copy

    from labelwise.adapters.mmpretrain.cft import extract_features
    from labelwise.adapters.mmpretrain.runner import build_trained_model

    model, cfg = build_trained_model(config, checkpoint, work_dir=path.parent / "cft", data_root=data_root)
    features, labels = extract_features(model, copy.deepcopy(cfg.test_dataloader.dataset), progress=True)
    fc = model.head.fc
    with atomic_write(path, "wb") as f:
        np.savez(f, features=features, labels=labels, weight=fc.weight.detach().numpy(),
                 bias=fc.bias.detach().numpy())


def _cft_check(path: Path, cft: Path, features_file: Path) -> None:
    """Run the exported ONNX head with onnxruntime on the test features; per-class test AP."""
    import onnxruntime as ort

    from labelwise.metrics import average_precision_per_class
    from labelwise.plugins.cft.calibration import calibration_errors
    from labelwise.plugins.cft.outputs import load_calibration

    with np.load(features_file) as f:
        x, labels, weight0, bias0 = f["features"], f["labels"], f["weight"], f["bias"]
    with np.load(cft / "cft_head.npz") as f:
        weight, bias = f["weight"], f["bias"]
        calibration, thresholds = load_calibration(f)
    session = ort.InferenceSession(str(cft / "cft_head.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    got = dict(zip(names, session.run(None, {session.get_inputs()[0].name: x.astype(np.float32)})))
    expected = x.astype(np.float64) @ weight.astype(np.float64).T + bias.astype(np.float64)
    calibrated = calibration.probabilities(expected) if calibration is not None else 1.0 / (1.0 + np.exp(-expected))
    diff = max(float(np.abs(got["logits"] - expected).max()), float(np.abs(got["probabilities"] - calibrated).max()))
    before = average_precision_per_class(x @ weight0.T + bias0, labels)
    after = average_precision_per_class(expected, labels)
    report = json.loads((cft / "cft_report.json").read_text())
    write_json(path, {
        "onnx": {"file": str(cft / "cft_head.onnx"), "samples": int(len(x)), "max_abs_diff": diff,
                 "tolerance": ONNX_TOLERANCE, "passed": bool(diff < ONNX_TOLERANCE)},
        "map_before": float(np.nanmean(before) * 100), "map_after": float(np.nanmean(after) * 100),
        # calibration on the fully labelled test split (fitted on the known validation labels)
        "test_calibration": {"cft_sigmoid": calibration_errors(1.0 / (1.0 + np.exp(-expected)), labels)["overall"],
                             "calibrated": calibration_errors(calibrated, labels)["overall"]},
        "ap_before": [None if np.isnan(v) else float(v) for v in before],
        "ap_after": [None if np.isnan(v) else float(v) for v in after],
        "changed": report["summary"]["changed"], "chosen": report["summary"]["chosen"]})
