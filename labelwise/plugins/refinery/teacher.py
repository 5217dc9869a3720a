"""The frozen refinery: a teacher model run without gradients, outside the student's module tree.

Why :class:`Refinery` is not an ``nn.Module``: everything that walks a model --
``parameters()`` for the optimiser, ``state_dict()`` for checkpoints, DDP's gradient and
buffer synchronisation, EMA's parameter averaging, ``.train()`` / ``.eval()`` -- must leave
the refinery alone. Holding it in a plain object keeps it out of all of them by construction
instead of by exclusion lists; a deep copy of the owner (EMA copies the whole model) shares
the one refinery instead of copying it.
"""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence

import torch
from torch import nn

from labelwise.errors import ConfigError
from labelwise.plugins.refinery.loss import refinery_targets

#: ``'eval'``: the teacher's BatchNorm layers use their running statistics (deterministic
#: targets). ``'train'``: they normalise with the statistics of the batch, as the reference
#: code does (its wrapper's ``.train()`` reaches the teacher), but the running buffers are not
#: updated.
BN_MODES = ("eval", "train")


def freeze(model: nn.Module) -> nn.Module:
    """Put ``model`` in eval mode with ``requires_grad=False`` on every parameter; return it."""
    model.requires_grad_(False)
    return model.eval()


@contextlib.contextmanager
def batch_statistics(model: nn.Module):
    """Make ``model``'s BatchNorm layers normalise with batch statistics, leaving buffers alone.

    Inside the block every ``torch.nn.modules.batchnorm._BatchNorm`` (BatchNorm1d/2d/3d,
    SyncBatchNorm) is in training mode with ``track_running_stats=False``: the forward pass
    uses the batch mean and (biased) variance, exactly as in training, but neither
    ``running_mean``, ``running_var`` nor ``num_batches_tracked`` is written. The previous
    mode and flag of each layer are restored on exit. Other layers (dropout included) keep
    their mode.
    """
    saved = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            saved.append((m, m.training, m.track_running_stats))
            m.training = True
            m.track_running_stats = False
    try:
        yield model
    finally:
        for m, training, track in saved:
            m.training = training
            m.track_running_stats = track


def renormalize(
    inputs: torch.Tensor,
    *,
    from_mean: Sequence[float],
    from_std: Sequence[float],
    to_mean: Sequence[float],
    to_std: Sequence[float],
) -> torch.Tensor:
    """Re-express images normalised by ``(from_mean, from_std)`` in ``(to_mean, to_std)``.

    ``inputs`` is ``(N, C, H, W)``; ``x * from_std + from_mean`` recovers the pixels, which are
    then normalised as the teacher was trained (as ``timm.task.DistillationTeacher.normalize_input``).
    """
    def column(values):
        return torch.as_tensor(values, dtype=inputs.dtype, device=inputs.device).view(1, -1, 1, 1)

    return (inputs * column(from_std) + column(from_mean) - column(to_mean)) / column(to_std)


class Refinery:
    """A frozen teacher that turns a batch into soft targets ``softmax(teacher(x))``.

    Args:
        model: the teacher. It is frozen here (``requires_grad=False``, eval mode) and kept
            frozen: every call puts it back in eval mode.
        bn_mode: one of :data:`BN_MODES`; ``'eval'`` (default) or ``'train'`` (batch
            statistics, buffers untouched: see :func:`batch_statistics`).
        forward: ``forward(model, inputs) -> logits (N, C)``; default ``model(inputs)``. An
            mmpretrain classifier needs ``lambda m, x: m(x, mode='tensor')``.
        temperature: softmax temperature (the method uses 1, the default).
        student_mean, student_std, teacher_mean, teacher_std: per-channel normalisation of
            the inputs the student sees and of those the teacher was trained on. When the
            teacher's are given and differ from the student's, inputs are re-normalised
            (:func:`renormalize`); otherwise the teacher sees the student's tensor as is.

    Calling it runs the teacher under :func:`torch.inference_mode` on the device of the
    inputs (the teacher is moved there on first use) and returns ordinary (not inference)
    float32 tensors, so they can be used in the student's autograd graph as constants.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        bn_mode: str = "eval",
        forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
        temperature: float = 1.0,
        student_mean: Sequence[float] | None = None,
        student_std: Sequence[float] | None = None,
        teacher_mean: Sequence[float] | None = None,
        teacher_std: Sequence[float] | None = None,
    ):
        if not isinstance(model, nn.Module):
            raise ConfigError(f"the refinery must be a torch.nn.Module, got {type(model).__name__}")
        if bn_mode not in BN_MODES:
            raise ConfigError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature!r}")
        self.model = freeze(model)
        self.bn_mode = bn_mode
        self.temperature = float(temperature)
        self._forward = forward
        self._renorm = _renorm_args(student_mean, student_std, teacher_mean, teacher_std)

    def logits(self, inputs: torch.Tensor) -> torch.Tensor:
        """The teacher's logits ``(N, C)`` on ``inputs``, without gradients."""
        self.to(inputs.device)
        self.model.eval()
        bn = batch_statistics(self.model) if self.bn_mode == "train" else contextlib.nullcontext()
        with torch.inference_mode(), bn:
            x = renormalize(inputs, **self._renorm) if self._renorm else inputs
            out = self._forward(self.model, x) if self._forward else self.model(x)
        return out.clone()  # a normal tensor: inference tensors cannot enter autograd

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """Soft targets ``softmax(logits / temperature)`` ``(N, C)``, float32."""
        return refinery_targets(self.logits(inputs), temperature=self.temperature)

    def to(self, device) -> "Refinery":
        """Move the teacher to ``device`` (a no-op when it is there already)."""
        device = torch.device(device)
        first = next(iter(self.model.parameters()), None)
        if first is not None and first.device != device:
            self.model.to(device)
        return self

    def __deepcopy__(self, memo) -> "Refinery":
        return self  # frozen and shared: copies of the owner (e.g. EMA) use the same teacher

    def __repr__(self) -> str:
        return (f"Refinery({type(self.model).__name__}, bn_mode={self.bn_mode!r}, "
                f"temperature={self.temperature}, renormalize={bool(self._renorm)})")


def _renorm_args(student_mean, student_std, teacher_mean, teacher_std) -> dict | None:
    if teacher_mean is None and teacher_std is None:
        return None
    if None in (student_mean, student_std, teacher_mean, teacher_std):
        raise ConfigError(
            "re-normalising for the refinery needs all of student_mean, student_std, "
            "teacher_mean and teacher_std (got None for "
            + ", ".join(n for n, v in (("student_mean", student_mean), ("student_std", student_std),
                                       ("teacher_mean", teacher_mean), ("teacher_std", teacher_std))
                        if v is None) + ")")
    values = [tuple(float(v) for v in seq) for seq in (student_mean, student_std, teacher_mean, teacher_std)]
    if values[0] == values[2] and values[1] == values[3]:
        return None
    if any(s == 0 for s in values[3]):
        raise ConfigError(f"teacher_std must be non-zero, got {values[3]}")
    return dict(from_mean=values[0], from_std=values[1], to_mean=values[2], to_std=values[3])
