"""A small training driver for plain PyTorch (and timm) users.

The whole loop fits on one screen on purpose: a *task* owns the model and the loss, following
timm's ``timm.task.TrainingTask`` contract -- ``task(input, target)`` returns a dict with
``'loss'`` (to back-propagate) and ``'output'`` (the logits). Every labelwise method for timm or
plain PyTorch is such a task or a criterion, so it plugs into this loop, into timm's own
training scripts, or into yours.

Example::

    import timm, torch
    from timm.task import ClassificationTask
    from labelwise.adapters.loop import fit, predict

    model = timm.create_model("resnet18", pretrained=False, num_classes=10)
    task = ClassificationTask(model, torch.nn.CrossEntropyLoss(), verbose=False)
    fit(task, train_loader, epochs=10)
    scores, targets = predict(model, test_loader)
"""
from __future__ import annotations

import math

import torch
from torch import nn


def fit(
    task: nn.Module,
    loader,
    *,
    epochs: int,
    lr: float = 0.002,
    weight_decay: float = 0.05,
    warmup_epochs: float = 1.0,
    device: str | torch.device = "cpu",
    progress: bool = True,
) -> list[float]:
    """Train ``task`` with AdamW and a linear warm-up + cosine learning-rate schedule.

    The optimiser settings of the built-in mmpretrain configs (``configs/_base_/digits_resnet.py``).

    Args:
        task: a module whose ``forward(input, target)`` returns ``{'loss': ..., 'output': ...}``
            (a ``timm.task.TrainingTask`` or any labelwise task). Only parameters with
            ``requires_grad`` are optimised (frozen teachers are left out).
        loader: iterable of ``(input, target)`` batches; ``target`` may be a tensor or a dict of
            tensors, moved to ``device`` as a whole.
        epochs: number of passes over ``loader``.
        lr: peak learning rate, reached after ``warmup_epochs`` and decayed to 0 by a cosine.
        weight_decay: AdamW's decoupled weight decay.
        warmup_epochs: length of the linear warm-up, in epochs (may be fractional).
        device: where to train.
        progress: show a tqdm progress bar per epoch.

    Returns:
        The mean training loss of each epoch.
    """
    from tqdm.auto import tqdm

    task.to(device).train()
    params = [p for p in task.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    total = epochs * len(loader)
    warmup = max(1, int(warmup_epochs * len(loader)))

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))

    history, step = [], 0
    for epoch in range(epochs):
        running, seen = 0.0, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for inputs, target in bar:
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            inputs, target = inputs.to(device), _to(target, device)
            loss = task(inputs, target)["loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step += 1
            running += loss.item() * len(inputs)
            seen += len(inputs)
            bar.set_postfix(loss=f"{running / seen:.4f}")
        history.append(running / max(seen, 1))
    return history


@torch.no_grad()
def predict(model: nn.Module, loader, *, device: str | torch.device = "cpu"):
    """Run ``model`` in eval mode over ``loader``.

    Returns:
        ``(scores, targets)``: the logits ``(N, C)`` as a numpy array and the concatenated
        targets (numpy), in loader order.
    """
    model.to(device).eval()
    scores, targets = [], []
    for inputs, target in loader:
        scores.append(model(inputs.to(device)).float().cpu())
        targets.append(target)
    return torch.cat(scores).numpy(), torch.cat(targets).numpy()


def _to(target, device):
    if isinstance(target, dict):
        return {k: _to(v, device) for k, v in target.items()}
    return target.to(device) if isinstance(target, torch.Tensor) else target
