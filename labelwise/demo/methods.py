"""The demo's steps for one seed: the baselines and the five methods, each through its public API.

Each step writes one result file; :class:`labelwise.demo.Steps` skips a step whose file
exists, and the results are read back from those files (so a resumed demo reports the same).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
from pathlib import Path

import numpy as np

from labelwise.utils.fileio import atomic_write, write_json

SINGLE, NOISY, PARTIAL = "single", "noisy-scene-r0.4", "partial-p0.3"
STEPS_PER_SEED = 12
SHARED_STEPS = 3
PUMLC_CONFIG = "pumlc/digits_partial_pumlc_full"
#: CleanNet weights used for training: soft ``max(0, s)`` (robust to a short CleanNet schedule).
CLEANNET_WEIGHTS = "soft"
#: ReLabel input size: the whole 64 px image (4x4 maps from the output-stride-16 annotator).
RELABEL_SIZE = 64


def have_matplotlib() -> bool:
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


def make_data(root: Path, mode) -> Path:
    """The digit scenes of ``mode``'s sizes: single, multilabel, partial-p0.3, noisy-scene-r0.4."""
    from labelwise.data import SceneConfig, make_dataset

    scenes = dataclasses.replace(SceneConfig(), num_train=mode.num_train, num_val=mode.num_val,
                                 num_test=mode.num_test)
    return make_dataset(root, config=scenes, seed=0, p=(0.3,), r=(0.4,), noise=("scene",),
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
    """One training run of a built-in config through mmengine's Runner, in ``work``.

    Besides the Runner's test metric (``metrics.json``), every run writes the test split's
    per-sample scores (``test_scores.npz``, :class:`labelwise.adapters.mmpretrain.metrics.SampleScores`)
    for the paired bootstrap of the demo's table.
    """

    def __init__(self, work: Path, config: str, regime: str):
        self.work, self.config, self.regime = Path(work), config, regime

    @property
    def metrics_file(self) -> Path:
        from labelwise.train import METRICS_FILE

        return self.work / METRICS_FILE

    @property
    def scores_file(self) -> Path:
        return self.work / "test_scores.npz"

    def train(self, data_root, mode, seed, *, cfg_options=None, env=None, batch_size: int = 64, width="mode"):
        from labelwise.adapters.mmpretrain.runner import load_config
        from labelwise.data import Regime
        from labelwise.train import train_baseline

        multi_label = not Regime.from_name(self.regime).is_single_label
        base = load_config(self.config, work_dir=self.work).test_evaluator
        evaluators = list(base) if isinstance(base, (list, tuple)) else [base]
        scores = dict(type="labelwise.SampleScores", out_file=str(self.scores_file), multi_label=multi_label)
        options = {**mode.model_options(width), "test_evaluator": [*evaluators, scores], **(cfg_options or {})}
        with _env(**(env or {})):
            return train_baseline("mmpretrain", data_root=data_root, regime=self.regime, work_dir=self.work,
                                  seed=seed, epochs=mode.epochs, batch_size=batch_size, config=self.config,
                                  cfg_options=options, progress=True)

    def checkpoint(self) -> Path:
        return self.work / "mmpretrain" / f"epoch_{self.result()['epochs']}.pth"

    def dumped_config(self) -> Path:
        """The exact config the Runner trained (it dumps it into its work dir under the file's name)."""
        return self.work / "mmpretrain" / f"{Path(self.config).name}.py"  # a built-in name, e.g. baseline/digits_single

    def result(self) -> dict:
        return json.loads(self.metrics_file.read_text())

    def test_scores(self) -> dict:
        from labelwise.utils.fileio import read_npz

        return read_npz(self.scores_file, what="test scores (labelwise.SampleScores)")


def shared_steps(out: Path, data_root: Path, mode, steps, *, models: dict) -> dict:
    """The steps every seed shares: ReLabel's maps (a fixed annotator) and CleanNet's features (from P)."""
    from labelwise.workflows.cleannet import export_features
    from labelwise.workflows.relabel import relabel_split

    annotator = models["annotator"]
    maps, maps_done = out / "labelmaps", out / "labelmaps.json"
    steps.run(f"labelpool: ReLabel label maps of the train split with the annotator (output stride "
              f"{annotator['output_stride']}, {RELABEL_SIZE} px)", maps_done,
              lambda: write_json(maps_done, _summary(relabel_split(
                  maps, data_root=data_root, ann_file=f"{SINGLE}/train.txt", config=annotator["config"],
                  checkpoint=annotator["checkpoint"], input_size=RELABEL_SIZE, topk=5, batch_size=64))))
    steps.run("labelpool: where the pooled targets' top class lies (the scenes keep every digit's box)",
              out / "labelmaps-diagnostic.json",
              lambda: write_json(out / "labelmaps-diagnostic.json", _crop_diagnostic(maps, data_root, mode)))
    features = out / "cleannet-features"
    backbone = models["backbone"]
    steps.run(f"cleannet: P's features of the '{NOISY}' train and val splits", features / "features-val.npz",
              lambda: [export_features(features / f"features-{split}.npz", data_root=data_root,
                                       ann_file=f"{NOISY}/{split}.txt", config=backbone["config"],
                                       checkpoint=backbone["checkpoint"], batch_size=200, device="cpu")
                       for split in ("train", "val")])  # val last: its file marks the step done
    return {"labelmaps": maps, "labelmaps_summary": maps_done, "features": features}


def _summary(result: dict) -> dict:
    return {key: result[key] for key in ("store", "images", "num_classes", "k", "map_size", "complete", "input_size")}


def _crop_diagnostic(store: Path, data_root: Path, mode) -> dict:
    from labelwise.workflows.labelpool import pooled_target_diagnostic

    return pooled_target_diagnostic(store, data_root, split="train", crops_per_image=8,
                                    images=min(1000, mode.num_train), seed=0)


def pumlc_options(mode, seed: int, cft_dir: Path, batch_size: int = 64) -> dict:
    """The PU-MLC recipe's schedule at the demo's length, and CFT as its post-training hook.

    OneCycle over twice the run (stopped halfway, as the reference), EMA over the last ~5 % of
    the steps (the reference's window), then :class:`labelwise.CFTHook` calibrating the EMA
    model the Runner evaluates (the product's post-training path) into ``cft_dir``.
    """
    from labelwise.adapters.mmpretrain.runner import load_config

    steps = math.ceil(mode.num_train / batch_size) * mode.epochs
    hooks = [dict(hook) for hook in load_config(PUMLC_CONFIG, work_dir=cft_dir).custom_hooks]
    ema = next(h for h in hooks if h["type"] == "EMAHook")
    ema["momentum"] = min(0.5, 20.0 / steps)
    cft = dict(type="labelwise.CFTHook", train_ann=f"{PARTIAL}/train.json", val_ann=f"{PARTIAL}/val.json",
               options=dict(optimizer="best", epochs=mode.cft_epochs, early_stopping=mode.cft_patience, seed=seed),
               out_dir=str(cft_dir), plot=have_matplotlib())
    return {"param_scheduler.0.end": 2 * mode.epochs, "custom_hooks": [*hooks, cft]}


def run_seed(work: Path, data_root: Path, mode, seed: int, steps, *, models: dict, shared: dict) -> dict:
    """Every step of one seed; returns the per-method results read back from their files."""
    from labelwise.train import pretrained_backbone

    work.mkdir(parents=True, exist_ok=True)
    tag = f"seed {seed}: " if len(mode.seeds) > 1 else ""
    s = lambda what: tag + what  # noqa: E731
    from_p = pretrained_backbone(models["backbone"]["checkpoint"])
    from_small = pretrained_backbone(models["backbone-small"]["checkpoint"])

    # 1-2. the single-label baseline (A) and LabelPooling with the annotator's maps
    single = Run(work / "baseline-single", "baseline/digits_single", SINGLE)
    steps.run(s(f"baseline: '{SINGLE}' from P ({mode.epochs} epoch(s), width {mode.width})"), single.metrics_file,
              lambda: single.train(data_root, mode, seed, cfg_options=from_p))
    labelpool = Run(work / "labelpool", "labelpool/digits_single", SINGLE)
    steps.run(s("labelpool: training with LabelPooling targets from P"), labelpool.metrics_file,
              lambda: labelpool.train(data_root, mode, seed, cfg_options=from_p,
                                      env={"LABELWISE_LABEL_MAPS": shared["labelmaps"]}))

    # 3-4. Label Refinery: the half-width student, alone and refined by the larger refinery
    small = Run(work / "baseline-small", "baseline/digits_single", SINGLE)
    steps.run(s(f"refinery: half-width student (width {mode.small_width}) from its backbone, ground truth"),
              small.metrics_file, lambda: small.train(data_root, mode, seed, cfg_options=from_small,
                                                      width=mode.small_width))
    refinery = models["refinery"]
    refined = Run(work / "refinery-small", "refinery/digits_single", SINGLE)
    steps.run(s(f"refinery: the same student refined online by the width-{refinery['width']} refinery"),
              refined.metrics_file,
              lambda: refined.train(data_root, mode, seed, width=mode.small_width, cfg_options={
                  **from_small, "data_preprocessor.refinery": dict(config=refinery["config"],
                                                                  checkpoint=refinery["checkpoint"])}))

    # 5-8. CleanNet on P's features (the stand-in for the paper's ImageNet features); every
    # classifier starts from P, as the paper's start from a pretrained model
    noisy = Run(work / "baseline-noisy", "baseline/digits_noisy", NOISY)
    steps.run(s(f"cleannet: baseline on '{NOISY}' from P"), noisy.metrics_file,
              lambda: noisy.train(data_root, mode, seed, cfg_options=from_p))
    cn = work / "cleannet"
    steps.run(s(f"cleannet: fit ({mode.cleannet_steps} steps)"), cn / "cleannet.pth",
              lambda: _cleannet_fit(cn, shared["features"], data_root, mode, seed))
    steps.run(s("cleannet: scores, noise detection and histogram"), cn / "detection.json",
              lambda: _cleannet_score(cn, shared["features"], data_root))
    weighted = Run(work / "cleannet-weighted", "cleannet/digits_noisy_weighted", NOISY)
    steps.run(s(f"cleannet: training with {CLEANNET_WEIGHTS} CleanNet weights from P"), weighted.metrics_file,
              lambda: weighted.train(data_root, mode, seed, cfg_options=from_p,
                                     env={"LABELWISE_CLEANNET_SCORES": cn / "scores.csv"}))

    # 9-10. PU-MLC with its reference recipe against "assume negative", both from P
    partial = Run(work / "baseline-partial", "baseline/digits_partial", PARTIAL)
    steps.run(s(f"pumlc: assume-negative baseline on '{PARTIAL}' from P"), partial.metrics_file,
              lambda: partial.train(data_root, mode, seed, cfg_options=from_p))
    pumlc = Run(work / "pumlc", PUMLC_CONFIG, PARTIAL)
    cft = work / "cft"
    steps.run(s(f"pumlc: the PU-MLC recipe (loss, MixUp, LGC, frozen layers, Adam, OneCycle, EMA) from P, then "
                f"CFTHook on its EMA head (GA and BP, {mode.cft_epochs} epochs)"),
              pumlc.metrics_file, lambda: pumlc.train(data_root, mode, seed,
                                                      cfg_options={**from_p, **pumlc_options(mode, seed, cft)}))

    # 11-12. CFT's head on the test split: its ONNX export checked with onnxruntime
    steps.run(s("cft: features of the test split (the EMA model)"), work / "cft-test-features.npz",
              lambda: _test_features(work / "cft-test-features.npz", pumlc.dumped_config(), cft, data_root))
    steps.run(s("cft: ONNX head vs the calibrated head (onnxruntime), test mAP"), work / "cft-test.json",
              lambda: _cft_check(work / "cft-test.json", cft, work / "cft-test-features.npz", pumlc))
    check = json.loads((work / "cft-test.json").read_text())
    if not check["onnx"]["passed"]:
        raise AssertionError(f"{cft / 'cft_head.onnx'}: onnxruntime's outputs differ from the calibrated head's "
                             f"on the test features (logits by {check['onnx']['max_abs_diff']:.3g}, tolerance "
                             f"{check['onnx']['tolerance']:.3g})")
    runs = {"single": single, "labelpool": labelpool, "small": small, "refinery": refined, "noisy": noisy,
            "cleannet": weighted, "partial": partial, "pumlc": pumlc}
    return {"seed": seed, **{key: run.result() for key, run in runs.items()},
            "bootstrap": _bootstrap(runs, work / "cft-test-features.npz", cft),
            "detection": json.loads((cn / "detection.json").read_text()), "cft": check,
            "labelmaps": json.loads(shared["labelmaps_summary"].read_text())}


#: (method key, baseline key) pairs of the table, whose test scores are compared per sample.
PAIRS = (("labelpool", "single"), ("refinery", "small"), ("cleannet", "noisy"), ("pumlc", "partial"))


def _bootstrap(runs: dict, features_file: Path, cft: Path) -> dict:
    """Paired bootstrap of every row's change over the test images (this run's test-set noise)."""
    from labelwise.stats import paired_bootstrap

    out = {}
    for method, baseline in PAIRS:
        m, b = runs[method].test_scores(), runs[baseline].test_scores()
        if not np.array_equal(m["sample_idx"], b["sample_idx"]):
            raise AssertionError(f"{runs[method].scores_file} and {runs[baseline].scores_file}: different test samples")
        out[method] = paired_bootstrap(m["scores"], b["scores"], m["labels"]).as_dict()
    with np.load(features_file) as f:
        x, labels = f["features"], f["labels"]
    with np.load(cft / "cft_head.npz") as f:
        weight, bias = f["weight"], f["bias"]
    before = runs["pumlc"].test_scores()
    if not np.array_equal(before["labels"], labels):
        raise AssertionError(f"{features_file} and {runs['pumlc'].scores_file}: different test samples")
    out["cft"] = paired_bootstrap(x @ weight.T + bias, before["scores"], labels).as_dict()
    return out


def _cleannet_fit(work: Path, features: Path, data_root, mode, seed) -> None:
    from labelwise.plugins.cleannet.config import CleanNetConfig
    from labelwise.workflows.cleannet import fit

    labels_file = lambda split: Path(data_root) / NOISY / f"{split}.labels.json"  # noqa: E731
    steps = mode.cleannet_steps
    config = CleanNetConfig(steps=steps, lr_step=max(1, steps // 2), val_interval=min(2000, steps), seed=seed)
    k = min(32, max(1, mode.num_train // 40))  # about a quarter of a class's samples at most
    fit(work, features=features / "features-train.npz", verification=labels_file("train"),
        val_features=features / "features-val.npz", val_verification=labels_file("val"), num_classes=10, k=k,
        config=config)


def _cleannet_score(work: Path, features: Path, data_root) -> None:
    """Score file and histogram (the workflow), noise-detection error against the data's truth."""
    from labelwise.data import load_regime
    from labelwise.workflows.cleannet import score

    histogram = work / "cleannet_scores.png" if have_matplotlib() else None
    labels_file = Path(data_root) / NOISY / "train.labels.json"
    result = score(work, features=features / "features-train.npz", out=work / "scores.csv", weights=CLEANNET_WEIGHTS,
                   verification=labels_file, histogram=histogram)
    truth = load_regime(data_root, NOISY, "train")
    order = {key: i for i, key in enumerate(truth.ids)}
    idx = np.array([order[key] for key in result["ids"]])
    wrong = truth.labels[idx] != truth.truth[idx]
    judged = np.asarray(truth.verified)[idx] < 0  # the verified samples trained CleanNet: judge the others
    flagged = result["scores"] < result["threshold"]
    write_json(work / "detection.json", {
        "samples": int(judged.sum()), "noise_rate": float(wrong[judged].mean()),
        "error": float((flagged[judged] != wrong[judged]).mean()), "threshold": result["threshold"],
        "flagged": float(flagged[judged].mean()), "mean_weight": result["mean_weight"],
        "weights": CLEANNET_WEIGHTS, "histogram": result["histogram"]})


def _test_features(path: Path, config, cft: Path, data_root) -> None:
    """Penultimate features of the fully labelled test split by the EMA model CFT calibrated
    (``cft/calibrated.pth``: the EMA weights with the calibrated final layer)."""
    import copy

    from labelwise.adapters.mmpretrain.cft import extract_features
    from labelwise.adapters.mmpretrain.runner import build_trained_model

    model, cfg = build_trained_model(config, cft / "calibrated.pth", work_dir=path.parent / "cft-features",
                                     data_root=data_root)
    features, labels = extract_features(model, copy.deepcopy(cfg.test_dataloader.dataset), progress=True)
    with atomic_write(path, "wb") as f:
        np.savez(f, features=features, labels=labels)


def _cft_check(path: Path, cft: Path, features_file: Path, pumlc: Run) -> None:
    """The ONNX head on the test features (:func:`labelwise.workflows.cft.check_onnx_head`); per-class test AP
    before CFT (the EMA model's test scores, written by the Runner) and after."""
    from labelwise.metrics import average_precision_per_class
    from labelwise.plugins.cft.calibration import calibration_errors
    from labelwise.plugins.cft.onnx_export import CalibratedHead
    from labelwise.workflows.cft import check_onnx_head

    with np.load(features_file) as f:
        x, labels = f["features"], f["labels"]
    onnx = check_onnx_head(cft, x)
    head = CalibratedHead.from_npz(cft / "cft_head.npz")
    import torch

    with torch.no_grad():
        logits, probabilities, _ = (t.double().numpy() for t in head(torch.as_tensor(x, dtype=torch.float32)))
    before = average_precision_per_class(pumlc.test_scores()["scores"], labels)
    after = average_precision_per_class(logits, labels)
    report = json.loads((cft / "cft_report.json").read_text())
    write_json(path, {
        "onnx": onnx, "map_before": float(np.nanmean(before) * 100), "map_after": float(np.nanmean(after) * 100),
        # calibration on the fully labelled test split (fitted on the known validation labels)
        "test_calibration": {"cft_sigmoid": calibration_errors(1.0 / (1.0 + np.exp(-logits)), labels)["overall"],
                             "calibrated": calibration_errors(probabilities, labels)["overall"]},
        "ap_before": [None if np.isnan(v) else float(v) for v in before],
        "ap_after": [None if np.isnan(v) else float(v) for v in after],
        "changed": report["summary"]["changed"], "chosen": report["summary"]["chosen"]})
