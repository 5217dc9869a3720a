"""CleanNet model files: weights, reference sets, threshold and options in one checkpoint."""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from labelwise.errors import CheckpointError

FORMAT = "labelwise-cleannet/1"


def save_cleannet(path, result, *, extra: dict | None = None) -> None:
    """Write a :class:`~labelwise.plugins.cleannet.fit.FitResult` to ``path`` atomically.

    The file holds ``format``, ``state_dict``, ``references (C, K, D)``, ``threshold``,
    ``config`` (the :class:`~labelwise.plugins.cleannet.fit.CleanNetConfig` as a dict),
    ``feature_dim``, ``best_step``, ``val_accuracy``, ``history`` and ``extra``.
    """
    from labelwise.checkpoint import save_checkpoint

    save_checkpoint({
        "format": FORMAT, "state_dict": result.model.state_dict(),
        "references": torch.as_tensor(np.asarray(result.references, dtype=np.float32)),
        "threshold": float(result.threshold), "config": dataclasses.asdict(result.config),
        "feature_dim": int(result.model.feature_dim), "best_step": int(result.best_step),
        "val_accuracy": float(result.val_accuracy), "history": result.history, "extra": dict(extra or {}),
    }, path)


def load_cleannet(path):
    """Read a file written by :func:`save_cleannet` (weights-only, through
    :func:`labelwise.checkpoint.load_checkpoint`).

    Returns:
        ``(model, references, info)``: the :class:`~labelwise.plugins.cleannet.model.CleanNet`
        in eval mode, the ``(C, K, D)`` float32 reference sets, and the rest of the file as a
        dict (``threshold``, ``config``, ``best_step``, ...).

    Raises:
        CheckpointError: the file is not a CleanNet model file.
    """
    from labelwise.checkpoint import load_checkpoint
    from labelwise.plugins.cleannet.model import CleanNet

    ckpt = load_checkpoint(path)
    if ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a CleanNet model file (format {ckpt.get('format')!r}, "
                              f"expected {FORMAT!r}; write one with `labelwise cleannet fit`)")
    _check_fields(path, ckpt)
    config = ckpt["config"]
    model = CleanNet(ckpt["feature_dim"], norm=config["norm"], dropout=config["dropout"])
    try:
        model.load_state_dict(ckpt["state_dict"])
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise CheckpointError(f"{path}: weights do not fit a CleanNet of D={ckpt['feature_dim']}: {exc}") from exc
    references = ckpt["references"]
    if references.shape[-1] != ckpt["feature_dim"]:
        raise CheckpointError(f"{path}: references {tuple(references.shape)} do not fit feature_dim "
                              f"{ckpt['feature_dim']}; expected (C, K, {ckpt['feature_dim']})")
    info = {k: v for k, v in ckpt.items() if k not in ("state_dict", "references")}
    return model.eval(), references.numpy(), info


def _check_fields(path, ckpt: dict) -> None:
    """A CleanNet model file holds what :func:`save_cleannet` writes, of the right types."""
    import math

    expected = {"state_dict": dict, "references": torch.Tensor, "threshold": float, "config": dict,
                "feature_dim": int}
    missing = [k for k in expected if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: CleanNet model file without {', '.join(missing)}; "
                              "write one with `labelwise cleannet fit`")
    wrong = [f"{k} is a {type(ckpt[k]).__name__}, expected {t.__name__}" for k, t in expected.items()
             if not isinstance(ckpt[k], t) or isinstance(ckpt[k], bool)]
    if wrong:
        raise CheckpointError(f"{path}: CleanNet model file with {'; '.join(wrong)}")
    if ckpt["feature_dim"] < 1 or ckpt["references"].dim() != 3 or not ckpt["references"].is_floating_point():
        raise CheckpointError(f"{path}: expected feature_dim >= 1 and float references (C, K, D), got "
                              f"feature_dim {ckpt['feature_dim']} and references {tuple(ckpt['references'].shape)} "
                              f"{ckpt['references'].dtype}")
    if not math.isfinite(ckpt["threshold"]) or not bool(torch.isfinite(ckpt["references"]).all()):
        raise CheckpointError(f"{path}: threshold or references hold NaN or infinite values")
    config = ckpt["config"]
    if config.get("norm") not in ("log", "l2", "none") or not isinstance(config.get("dropout"), (int, float)):
        raise CheckpointError(f"{path}: config norm {config.get('norm')!r} / dropout {config.get('dropout')!r}; "
                              "expected norm log, l2 or none and a number")
