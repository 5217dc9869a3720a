"""Training CleanNet (SGD, step schedule, best checkpoint by validation noise-detection accuracy).

The reference code's recipe (kuanghuei/clean-net ``train.py``): batches of 32 verified + 32
class-balanced unverified queries, SGD with momentum 0.9, learning rate 0.01 multiplied by 0.1
every 30k steps, 60k steps, validation every 2k steps, keep the weights with the best
validation accuracy at threshold 0.1.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import numpy as np
import torch

from labelwise.errors import ConfigError, DataError
from labelwise.plugins.cleannet import loss as L
from labelwise.plugins.cleannet.config import CleanNetConfig
from labelwise.plugins.cleannet.model import CleanNet
from labelwise.plugins.cleannet.sampling import ClassBalancedBatches, EpochBatches
from labelwise.plugins.cleannet.scoring import (
    DEFAULT_THRESHOLD,
    check_features,
    choose_threshold,
    detection_accuracy,
    score_samples,
)

STATE_FILE = "cleannet_state.pth"


@dataclasses.dataclass
class FitResult:
    """What :func:`fit_cleannet` returns.

    Attributes:
        model: the CleanNet with the best validation weights (eval mode).
        references: ``(C, K, D)`` float32 reference sets it was trained with.
        threshold: the noise-detection threshold chosen on the verified validation samples
            (:func:`~labelwise.plugins.cleannet.scoring.choose_threshold`; 0.1 without them).
        best_step: the step of the kept weights.
        val_accuracy: validation noise-detection accuracy of the kept weights at
            ``val_threshold`` (``nan`` without validation data).
        history: one dict per validation: ``step``, ``lr``, the mean training loss terms since
            the previous validation, ``val_accuracy``.
        config: the :class:`CleanNetConfig`.
    """

    model: CleanNet
    references: np.ndarray
    threshold: float
    best_step: int
    val_accuracy: float
    history: list
    config: CleanNetConfig


def restrict_verification(verification, labels, classes) -> np.ndarray:
    """The transfer setting: keep verification flags only for samples labelled with ``classes``.

    Returns:
        A copy of ``verification (N,)`` with every flag outside ``classes`` set to -1.
    """
    verification = np.array(verification, dtype=np.int8, copy=True)
    keep = np.isin(np.asarray(labels), np.asarray(list(classes), dtype=np.int64))
    verification[~keep] = -1
    return verification


def fit_cleannet(
    features,
    labels,
    verification,
    references,
    *,
    val_features=None,
    val_labels=None,
    val_verification=None,
    config: CleanNetConfig = CleanNetConfig(),
    work_dir=None,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> FitResult:
    """Train CleanNet on noisy features with a (partial) verified subset.

    Args:
        features: ``(N, D)`` raw training features (e.g. pooled penultimate activations).
        labels: ``(N,)`` noisy class ids.
        verification: ``(N,)`` 1 = label verified correct, 0 = verified wrong, -1 = not
            verified. Verification may cover only some classes (the transfer setting: every
            class is still sampled as unverified and scored). Unverified queries are drawn
            class-balanced from the samples flagged -1.
        references: ``(C, K, D)`` reference sets
            (:func:`~labelwise.plugins.cleannet.references.build_reference_sets`).
        val_features, val_labels, val_verification: validation data; only its verified
            samples are used (best-weights selection and the threshold). Optional.
        config: the options (:class:`CleanNetConfig`; defaults = the reference code).
        work_dir: if given, the training state is saved there every ``val_interval`` steps
            (atomically) and a run with the same options resumes from it.
        device: where to train.
        progress: show a progress bar.

    Returns:
        A :class:`FitResult`.

    Raises:
        DataError: malformed inputs, no verified training sample, no unverified sample while
            ``batch_unverified > 0``.
        ConfigError: a saved state in ``work_dir`` was made with other options or data.
    """
    from tqdm.auto import tqdm

    cfg = config
    references = np.asarray(references, dtype=np.float32)
    if references.ndim != 3:
        raise DataError(f"references: expected (C, K, D), got shape {references.shape}")
    num_classes = references.shape[0]
    features, labels = check_features(features, labels, num_classes=num_classes, norm=cfg.norm)
    verification = _check_verification(verification, len(labels), "verification")
    if references.shape[2] != features.shape[1]:
        raise DataError(f"references have D={references.shape[2]}, features D={features.shape[1]}")
    check_features(references.reshape(-1, references.shape[2]), np.zeros(references.shape[0] * references.shape[1],
                   dtype=np.int64), norm=cfg.norm, name="references")
    val = None
    if val_features is not None:
        vf, vl = check_features(val_features, val_labels, num_classes=num_classes, norm=cfg.norm,
                                name="val_features")
        vv = _check_verification(val_verification, len(vl), "val_verification")
        mask = vv >= 0
        if mask.any():
            val = (vf[mask], vl[mask], vv[mask])

    verified_idx = np.flatnonzero(verification >= 0)
    unverified_idx = np.flatnonzero(verification < 0)
    if len(verified_idx) == 0:
        raise DataError("verification: no verified training sample (flags 1 / 0); CleanNet needs some")
    if cfg.batch_unverified and len(unverified_idx) == 0:
        raise DataError("verification: every training sample is verified, no unverified pool; "
                        "set batch_unverified=0")

    device = torch.device(device)
    generator = torch.Generator().manual_seed(int(cfg.seed))
    model = CleanNet(features.shape[1], norm=cfg.norm, dropout=cfg.dropout, generator=generator).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    feats = torch.as_tensor(features, device=device)
    labs = torch.as_tensor(labels, device=device)
    ver = torch.as_tensor(verification.astype(np.float32), device=device)
    refs = torch.as_tensor(references, device=device)
    v_idx = torch.as_tensor(verified_idx)
    u_idx = torch.as_tensor(unverified_idx)
    v_batches = EpochBatches(len(v_idx), cfg.batch_verified, generator=generator)
    u_batches = (ClassBalancedBatches(torch.as_tensor(labels[unverified_idx]), cfg.batch_unverified,
                                      generator=generator) if cfg.batch_unverified else None)
    is_verified = torch.cat([torch.ones(cfg.batch_verified, dtype=torch.bool),
                             torch.zeros(cfg.batch_unverified, dtype=torch.bool)]).to(device)

    # ``steps`` is left out: a finished run can be resumed to train longer.
    fingerprint = {"config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "steps"}, "features": list(features.shape),
                   "references": list(references.shape), "verified": int(len(verified_idx)),
                   "feature_sum": float(np.float64(features.sum()))}
    step, best_acc, best_step, history = 0, -1.0, 0, []
    best_state = copy.deepcopy(model.state_dict())
    state_path = Path(work_dir) / STATE_FILE if work_dir is not None else None
    if state_path is not None and state_path.is_file():
        step, best_acc, best_step, history, best_state = _resume(
            state_path, fingerprint, model, optimizer, generator, v_batches)

    running: dict = {}
    bar = tqdm(total=cfg.steps, initial=step, desc="CleanNet", unit="step", disable=not progress, leave=False)
    while step < cfg.steps:
        lr = cfg.lr * cfg.lr_decay ** (step // cfg.lr_step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        model.train()
        idx = v_idx[v_batches.next()]
        if u_batches is not None:
            idx = torch.cat([idx, u_idx[u_batches.next()]])
        idx = idx.to(device)
        out = model(feats[idx], labs[idx], refs, generator=generator)
        terms = L.cleannet_loss(out["score"], out["v"], out["v_hat"], is_verified, ver[idx],
                                neg_weight=cfg.neg_weight, margin=cfg.margin,
                                pseudo_threshold=cfg.pseudo_threshold, beta=cfg.beta, gamma=cfg.gamma)
        l2 = L.l2_penalty(model.fc_weights(), cfg.weight_decay)
        total = terms["loss"] + l2
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        for key, value in (*terms.items(), ("l2", l2)):
            running[key] = running.get(key, 0.0) + float(value.detach())
        running["n"] = running.get("n", 0) + 1
        if step % cfg.val_interval == 0 or step == cfg.steps:
            n = running.pop("n")
            record = {"step": step, "lr": lr, **{k: v / n for k, v in running.items()}}
            running = {}
            if val is not None:
                acc = detection_accuracy(score_samples(model, val[0], val[1], references, device=device),
                                         val[2], cfg.val_threshold)
                record["val_accuracy"] = acc
                if acc > best_acc:
                    best_acc, best_step = acc, step
                    best_state = copy.deepcopy(model.state_dict())
                bar.set_postfix(loss=f"{record['loss']:.4f}", val_acc=f"{acc:.3f}")
            else:
                best_step, best_state = step, copy.deepcopy(model.state_dict())
            history.append(record)
            if state_path is not None:
                _save_state(state_path, fingerprint, model, optimizer, generator, v_batches, step, best_acc,
                            best_step, history, best_state)
    bar.close()

    model.load_state_dict(best_state)
    model.eval()
    threshold = DEFAULT_THRESHOLD
    if val is not None:
        threshold = choose_threshold(score_samples(model, val[0], val[1], references, device=device), val[2],
                                     default=cfg.val_threshold)
    return FitResult(model=model, references=references, threshold=threshold, best_step=best_step,
                     val_accuracy=best_acc if val is not None else float("nan"), history=history, config=cfg)


def _check_verification(verification, n: int, name: str) -> np.ndarray:
    if verification is None:
        raise DataError(f"{name} is required: (N,) flags 1 (correct) / 0 (wrong) / -1 (not verified)")
    flags = np.asarray(verification)
    if flags.shape != (n,):
        raise DataError(f"{name}: expected {n} flags, got shape {flags.shape}")
    flags = np.where(np.isnan(flags.astype(np.float64)), -1, flags) if flags.dtype.kind == "f" else flags
    bad = ~np.isin(flags, (1, 0, -1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"{name}: flag {i} is {flags[i].item()!r}; expected 1 (correct), 0 (wrong) or -1 (not verified)")
    return flags.astype(np.int8)


def _save_state(path, fingerprint, model, optimizer, generator, v_batches, step, best_acc, best_step, history,
                best_state) -> None:
    from labelwise.checkpoint import save_checkpoint

    save_checkpoint({
        "fingerprint": fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
        "generator": generator.get_state(), "verified_batches": v_batches.state_dict(), "step": step,
        "best_accuracy": best_acc, "best_step": best_step, "history": history, "best_state": best_state,
    }, path)


def _resume(path, fingerprint, model, optimizer, generator, v_batches):
    from labelwise.checkpoint import load_checkpoint

    state = load_checkpoint(path)
    if state.get("fingerprint") != fingerprint:
        raise ConfigError(f"{path} was saved by a CleanNet run with other options or data; "
                          "use another work dir or delete it")
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["generator"])
    v_batches.load_state_dict(state["verified_batches"])
    return state["step"], state["best_accuracy"], state["best_step"], state["history"], state["best_state"]
