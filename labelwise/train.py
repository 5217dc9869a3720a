"""Baseline training on the digit scenes, through mmpretrain's Runner or timm + the plain loop.

This is what ``labelwise train`` and the demo run; each method later adds its own variant.
Metrics are computed on the fully and correctly labelled test split: top-1 accuracy (%) for
single-label regimes (``single``, ``noisy-*``), mAP (%) for multi-label ones (``multilabel``,
``partial-*``; the partial baseline is "assume negative": unknown labels train as negatives).
"""
from __future__ import annotations

import time
from pathlib import Path

from labelwise.errors import ConfigError, DataError
from labelwise.utils.fileio import write_json

FRAMEWORKS = ("mmpretrain", "timm")
LAUNCHERS = ("none", "pytorch")
METRICS_FILE = "metrics.json"
#: Epochs of the protocol (docs/benchmarks.md), as in the built-in configs: single-label runs
#: with crops of 8-100 % of the area need 20; multi-label runs keep 10.
SINGLE_LABEL_EPOCHS, MULTI_LABEL_EPOCHS = 20, 10
#: Peak AdamW learning rate of the timm path (the configs' value).
TIMM_LR = 0.002


def baseline_config_name(regime: str) -> str:
    """The built-in mmpretrain config of a regime directory name."""
    from labelwise.data import Regime

    kind = Regime.from_name(regime).kind
    return {"single": "baseline/digits_single", "noisy": "baseline/digits_noisy",
            "multilabel": "baseline/digits_multilabel", "partial": "baseline/digits_partial"}[kind]


def pretrained_backbone(checkpoint) -> dict:
    """``cfg_options`` that start an mmpretrain run from the backbone of ``checkpoint``.

    The head is initialised as usual; this is how the partial-label benchmarks start from the
    digit backbone of ``benchmarks/pretrain_backbone.py`` (the stand-in for ImageNet weights).

    Raises:
        DataError: ``checkpoint`` is not a file.
    """
    if not Path(checkpoint).is_file():
        raise DataError(f"pretrained backbone {checkpoint}: no such checkpoint (make one with "
                        "benchmarks/pretrain_backbone.py, or train any digit-scenes config)")
    return {"model.backbone.init_cfg": dict(type="Pretrained", checkpoint=str(checkpoint), prefix="backbone.")}


def train_baseline(
    framework: str,
    *,
    data_root,
    regime: str,
    work_dir,
    seed: int = 0,
    epochs: int | None = None,
    batch_size: int = 64,
    lr: float | None = None,
    config: str | None = None,
    cfg_options: dict | None = None,
    overwrite: bool = False,
    progress: bool = True,
    launcher: str = "none",
) -> dict:
    """Train a narrow ResNet-18 (64 px) on one regime and evaluate it on the test split.

    Args:
        framework: ``'mmpretrain'`` (mmengine Runner with a built-in or given config) or
            ``'timm'`` (``timm.create_model`` + a ``timm.task`` task + :func:`labelwise.adapters.loop.fit`).
        data_root: dataset root from ``labelwise data make``.
        regime: regime directory, e.g. ``'single'`` or ``'partial-p0.3'``.
        work_dir: output folder; ``metrics.json`` is written there. An existing
            ``metrics.json`` is refused unless ``overwrite``.
        seed: seed of model initialisation, data order and augmentation.
        epochs, batch_size, lr: the schedule (AdamW, weight decay 0.05, one warm-up epoch
            then cosine). ``epochs=None``: the config's (the protocol of docs/benchmarks.md:
            20 for single-label regimes, 10 for multi-label ones; timm the same). ``lr=None``:
            the config's optimiser learning rate (2e-3 for the baseline configs; timm 2e-3).
        config: mmpretrain only: a config file or built-in name (default: the regime's
            ``baseline/digits_*`` config).
        cfg_options: mmpretrain only: extra ``{'dotted.key': value}`` config overrides, applied
            after the regime's, e.g. ``{'model.backbone.init_cfg': dict(type='Pretrained',
            checkpoint=..., prefix='backbone.')}`` to start from a pretrained backbone.
        overwrite: replace the results of a previous run in ``work_dir``.
        progress: show progress bars (timm) / log lines (mmpretrain).
        launcher: mmpretrain only: ``'pytorch'`` under ``torchrun`` (one process per rank).
            The process group is joined before mmengine's Runner is built (gloo on CPU, NCCL
            on CUDA; mmengine's own set-up would call ``torch.cuda.set_device``), the model is
            wrapped in ``MMDistributedDataParallel`` (``device_ids=None`` on CPU), each rank
            takes ``batch_size`` samples per step, and rank 0 writes ``metrics.json``.

    Returns:
        ``{"framework", "regime", "seed", "epochs", "metric", "value", "seconds", ...}``.
    """
    from labelwise.data import Regime, load_manifest

    if framework not in FRAMEWORKS:
        raise ConfigError(f"unknown framework {framework!r}; valid: {', '.join(FRAMEWORKS)}")
    if launcher not in LAUNCHERS:
        raise ConfigError(f"launcher must be one of {', '.join(LAUNCHERS)}, got {launcher!r}")
    if launcher == "pytorch" and framework != "mmpretrain":
        raise ConfigError("--launcher pytorch runs mmengine's Runner (--framework mmpretrain); for timm, run "
                          "`torchrun --nproc_per_node N -m labelwise.timm_train ...`")
    manifest = load_manifest(data_root)
    if regime not in manifest["regime_dirs"]:
        raise ConfigError(f"regime {regime!r} is not in {data_root}; available: {', '.join(manifest['regime_dirs'])}")
    group = _join(launcher)
    work_dir = Path(work_dir)
    if (work_dir / METRICS_FILE).exists() and not overwrite:
        raise DataError(f"{work_dir / METRICS_FILE} exists: a finished run is there (use another --work-dir, "
                        "or --overwrite / overwrite=True to replace it)")
    work_dir.mkdir(parents=True, exist_ok=True)
    multi_label = not Regime.from_name(regime).is_single_label
    start = time.perf_counter()
    if framework == "mmpretrain":
        value, epochs = _train_mmpretrain(config or baseline_config_name(regime), data_root, regime, work_dir,
                                          seed, epochs, batch_size, lr, multi_label, cfg_options, group)
    else:
        if cfg_options:
            raise ConfigError("cfg_options apply to the mmpretrain framework only")
        epochs = epochs or (MULTI_LABEL_EPOCHS if multi_label else SINGLE_LABEL_EPOCHS)
        value = _train_timm(data_root, regime, work_dir, seed, epochs, batch_size, lr or TIMM_LR, multi_label,
                            progress)
    result = {
        "framework": framework, "regime": regime, "seed": seed, "epochs": epochs,
        "metric": "mAP" if multi_label else "top1", "value": round(value, 4),
        "seconds": round(time.perf_counter() - start, 1), "data_root": str(data_root),
    }
    if cfg_options:
        result["cfg_options"] = {key: repr(value) for key, value in cfg_options.items()}
    if group is not None:
        result["world_size"] = group.world_size
    if group is None or group.is_main:
        write_json(work_dir / METRICS_FILE, result)
    return result


def _join(launcher):
    """The torchrun process group for ``launcher='pytorch'`` (``None`` for one process)."""
    if launcher != "pytorch":
        return None
    import os

    from labelwise.utils.distributed import join_process_group

    if "WORLD_SIZE" not in os.environ:
        raise ConfigError("--launcher pytorch needs torchrun's environment (WORLD_SIZE, RANK, MASTER_ADDR): run "
                          "`torchrun --nproc_per_node N -m labelwise train --launcher pytorch ...`")
    return join_process_group()


def distributed_options(group) -> dict:
    """mmengine ``Config`` keys for a Runner in the process group ``group`` (already joined)."""
    import torch

    options = {"launcher": "pytorch"}
    if torch.device(group.device).type == "cpu":
        # mmengine's default wrapper passes device_ids=[LOCAL_RANK], which DDP refuses for a CPU model
        options["model_wrapper_cfg"] = dict(type="MMDistributedDataParallel", device_ids=None)
    return options


def _train_mmpretrain(config, data_root, regime, work_dir, seed, epochs, batch_size, lr, multi_label,
                      cfg_options=None, group=None) -> tuple[float, int]:
    from labelwise.adapters.mmpretrain.runner import load_config, train_and_test

    kind = "json" if multi_label else "txt"
    options = {
        "train_dataloader.batch_size": batch_size,
        **({"optim_wrapper.optimizer.lr": lr} if lr is not None else {}),
        "train_dataloader.dataset.ann_file": f"{regime}/train.{kind}",
        # the test split of every regime is fully and correctly labelled
        "test_dataloader.dataset.ann_file": f"{'multilabel' if multi_label else 'single'}/test.{kind}",
        **(cfg_options or {}),
    }
    cfg = load_config(config, work_dir=work_dir / "mmpretrain", data_root=data_root, seed=seed,
                      epochs=epochs, cfg_options=options)
    if group is not None:
        cfg.merge_from_dict(distributed_options(group))
    metrics = train_and_test(cfg)
    key = "multi-label/mAP" if multi_label else "accuracy/top1"
    if key not in metrics:
        raise DataError(f"the test evaluator of {config} did not report {key!r}; it reported {sorted(metrics)}")
    return float(metrics[key]), int(cfg.train_cfg.max_epochs)


def _train_timm(data_root, regime, work_dir, seed, epochs, batch_size, lr, multi_label, progress) -> float:
    import torch
    from timm.task import ClassificationTask, MultiLabelClassificationTask

    from labelwise.adapters.loop import fit, predict
    from labelwise.checkpoint import save_checkpoint
    from labelwise.adapters.timm import create_digits_model
    from labelwise.adapters.torch_data import DigitScenesDataset, digits_transform
    from labelwise.metrics import mean_average_precision, top1_accuracy

    generator = torch.Generator().manual_seed(seed)  # data order and augmentation
    from labelwise.adapters.torch_data import MULTI_LABEL_SCALE, SINGLE_LABEL_SCALE

    scale = MULTI_LABEL_SCALE if multi_label else SINGLE_LABEL_SCALE
    train = DigitScenesDataset(data_root, regime, "train", transform=digits_transform(train=True, scale=scale),
                               unknown_as="negative")
    test = DigitScenesDataset(data_root, "multilabel" if multi_label else "single", "test",
                              transform=digits_transform(train=False))
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, drop_last=True,
                                         num_workers=2, generator=generator, persistent_workers=True)
    with torch.random.fork_rng():  # timm initialises from the global generator: seed it locally
        torch.manual_seed(seed)
        model = create_digits_model(num_classes=10)
    if multi_label:
        task = MultiLabelClassificationTask(model, torch.nn.BCEWithLogitsLoss(), verbose=False)
    else:
        task = ClassificationTask(model, torch.nn.CrossEntropyLoss(), verbose=False)
    history = fit(task, loader, epochs=epochs, lr=lr, progress=progress)
    save_checkpoint({"state_dict": model.state_dict(), "train_loss": history}, work_dir / "model.pth")
    scores, targets = predict(model, torch.utils.data.DataLoader(test, batch_size=256, num_workers=2))
    return mean_average_precision(scores, targets) if multi_label else top1_accuracy(scores, targets)



def run_grid(*, data_root, out_dir, frameworks, regimes, seeds, epochs: int | None = None, progress: bool = True,
             log=print) -> list[dict]:
    """Train every (framework, regime, seed); reuse runs whose ``metrics.json`` exists (resume).

    Returns:
        One result dict (see :func:`train_baseline`) per run, in loop order.
    """
    import json

    results = []
    runs = [(f, r, s) for f in frameworks for r in regimes for s in seeds]
    for i, (framework, regime, seed) in enumerate(runs, 1):
        work_dir = Path(out_dir) / f"{framework}-{regime}-seed{seed}"
        done = work_dir / METRICS_FILE
        if done.exists():
            result = json.loads(done.read_text())
            log(f"[{i}/{len(runs)}] {framework} {regime} seed {seed}: reusing {done}")
        else:
            log(f"[{i}/{len(runs)}] {framework} {regime} seed {seed}: training "
                f"{f'{epochs} epochs' if epochs else 'the protocol epochs'} ...")
            result = train_baseline(framework, data_root=data_root, regime=regime, work_dir=work_dir,
                                    seed=seed, epochs=epochs, progress=progress)
        log(f"    {result['metric']} {result['value']:.2f} ({result['seconds']:.0f} s)")
        results.append(result)
    return results


def summarize(results: list[dict]) -> list[dict]:
    """Group results by (framework, regime): mean and sample std over seeds."""
    import numpy as np

    groups: dict = {}
    for r in results:
        groups.setdefault((r["framework"], r["regime"], r["metric"]), []).append(r)
    rows = []
    for (framework, regime, metric), runs in groups.items():
        values = np.array([r["value"] for r in runs], dtype=float)
        rows.append({
            "framework": framework, "regime": regime, "metric": metric, "seeds": len(values),
            "mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0,
            "seconds": float(np.mean([r["seconds"] for r in runs])),
        })
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table of :func:`summarize` rows."""
    lines = ["| framework | regime | test metric | seeds | mean ± std | s / run |", "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['framework']} | {r['regime']} | {r['metric']} (%) | {r['seeds']} | "
                     f"{r['mean']:.2f} ± {r['std']:.2f} | {r['seconds']:.0f} |")
    return "\n".join(lines)
