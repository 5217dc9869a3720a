"""Label Refinery for timm and plain PyTorch, built on ``timm.task``'s distillation classes.

Online Label Refinery is logit distillation with the task loss off (weight 0) and temperature
1; what timm's :class:`~timm.task.LogitDistillationTask` lacks is added here:

* :class:`RefineryTeacher` -- a :class:`~timm.task.DistillationTeacher` that is frozen
  (``requires_grad=False``), runs under :func:`torch.inference_mode`, and can use BatchNorm
  batch statistics (``bn_mode='train'``, the reference behaviour) without touching its
  running buffers;
* :class:`RefineryTask` -- the task: loss = ``-sum_c softmax(teacher(x))_c log
  softmax(student(x))_c`` on the very tensor the student sees; the ground-truth target is
  not used. It works with :func:`labelwise.adapters.loop.fit` and any ``timm.task`` loop;
* :class:`RefineryLoss` -- the criterion (soft-target cross-entropy, optional per-sample
  weight), e.g. for the offline mode with :class:`RefinedLabelsDataset` and timm's
  :class:`~timm.task.ClassificationTask`.

Example::

    from labelwise.adapters.timm import create_digits_model
    from labelwise.adapters.timm.refinery import RefineryTask
    from labelwise.adapters.loop import fit

    task = RefineryTask(create_digits_model(), teacher_model=trained_model)
    fit(task, train_loader, epochs=10)
"""
from __future__ import annotations

import contextlib

import torch
from timm.task import DistillationTeacher, LogitDistillationTask
from timm.task.task import TrainingTask
from torch import nn

from labelwise.errors import ConfigError
from labelwise.plugins.refinery.loss import refinery_targets, soft_target_cross_entropy
from labelwise.plugins.refinery.teacher import BN_MODES, batch_statistics, freeze


class RefineryTeacher(DistillationTeacher):
    """A frozen :class:`~timm.task.DistillationTeacher` for Label Refinery.

    Args:
        model: the trained teacher module (any classifier returning logits).
        bn_mode: ``'eval'`` (default): running statistics; ``'train'``: batch statistics,
            running buffers left unchanged (:func:`labelwise.plugins.refinery.teacher.batch_statistics`).
        mean, std: the teacher's input normalisation (0..1 units), used only when the task
            re-normalises (student and teacher differ). Default: the model's
            ``pretrained_cfg``, or ImageNet's, as timm does.
    """

    def __init__(self, model: nn.Module, *, bn_mode: str = "eval", mean=None, std=None):
        if bn_mode not in BN_MODES:
            raise ConfigError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
        super().__init__(freeze(model))
        self.bn_mode = bn_mode
        if (mean is None) != (std is None):
            raise ConfigError("give both mean and std for the refinery, or neither")
        if mean is not None:
            self.mean_kd = torch.tensor(mean, dtype=self.mean_kd.dtype).view(1, -1, 1, 1)
            self.std_kd = torch.tensor(std, dtype=self.std_kd.dtype).view(1, -1, 1, 1)

    def train(self, mode: bool = True) -> "RefineryTeacher":
        """Stay in eval mode whatever is asked: the refinery is frozen."""
        return super().train(False)

    def forward(self, input: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        """Logits (or pooled features) of the frozen teacher, as ordinary float tensors."""
        bn = batch_statistics(self.model) if self.bn_mode == "train" else contextlib.nullcontext()
        with torch.inference_mode(), bn:
            out = super().forward(input, return_features=return_features)
        return out.clone()  # inference tensors cannot be used in the student's graph


class RefineryTask(LogitDistillationTask):
    """Online Label Refinery as a ``timm.task`` training task.

    ``task(input, target)`` returns ``{'loss', 'output', 'kd_loss', 'teacher_entropy'}``:
    ``loss`` is the soft-target cross-entropy of the student's logits against
    ``softmax(teacher(input) / temperature)``; ``kd_loss`` the KL divergence (``loss -
    teacher_entropy``, the quantity timm's task reports). ``target`` is ignored (Label
    Refinery does not train on the ground truth); pass anything.

    ``LogitDistillationTask``'s ``train()`` (teacher kept in eval mode),
    ``prepare_distributed()`` (only the student in DDP) and ``compile()`` are inherited.
    Its constructor is not called: it needs timm-only attributes (``pretrained_cfg``, and
    ``num_classes`` / ``in_chans`` even for a module teacher) that plain PyTorch models lack,
    and its loss weights are fixed here (task 0, distillation 1).

    Args:
        student_model: the model to train (timm or any ``nn.Module`` returning logits).
        teacher_model: the refinery: an ``nn.Module`` or a :class:`~timm.task.DistillationTeacher`
            (a plain ``DistillationTeacher`` is used as is: timm keeps it in eval mode under
            ``no_grad``; ``bn_mode`` then applies to its ``model``).
        bn_mode: ``'eval'`` (default) or ``'train'``.
        temperature: softmax temperature of the targets (default 1, the paper's).
        device, dtype, verbose: as ``timm.task.TrainingTask``.

    Inputs are re-normalised for the teacher only when both models carry a ``pretrained_cfg``
    whose ``mean`` / ``std`` differ (timm's rule); plain modules see the student's tensor.

    The refinery is not part of the task's state: ``state_dict()`` leaves out every
    ``teacher.*`` entry (so a checkpoint of the task holds the student, as timm's
    ``get_checkpoint_state`` does), and ``load_state_dict()`` leaves the teacher as it is:
    it needs no ``teacher.*`` entries, also with ``strict=True``, and ignores any it is given
    (e.g. from a checkpoint saved before they were left out).
    """

    def __init__(self, student_model: nn.Module, teacher_model, *, bn_mode: str = "eval",
                 temperature: float = 1.0, device=None, dtype=None, verbose: bool = False):
        TrainingTask.__init__(self, device=device, dtype=dtype, verbose=verbose)
        if bn_mode not in BN_MODES:
            raise ConfigError(f"bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
        if not temperature > 0:
            raise ConfigError(f"temperature must be > 0, got {temperature!r}")
        if isinstance(teacher_model, DistillationTeacher):
            teacher = teacher_model
            freeze(teacher.model)
        elif isinstance(teacher_model, nn.Module):
            teacher = RefineryTeacher(teacher_model, bn_mode=bn_mode)
        else:
            raise ConfigError(f"teacher_model must be an nn.Module or a DistillationTeacher, "
                              f"got {type(teacher_model).__name__}")
        self.trainable_module = student_model
        self.teacher = teacher.to(device=self.device)
        self.bn_mode = bn_mode
        self.criterion = RefineryLoss()
        self.loss_type = "kl"
        self.temperature = float(temperature)
        self.task_loss_weight, self.distill_loss_weight = 0.0, 1.0
        cfg = getattr(student_model, "pretrained_cfg", None) or {}
        if "mean" in cfg and "std" in cfg and getattr(teacher.model, "pretrained_cfg", None):
            for name in ("mean", "std"):
                value = torch.tensor(cfg[name], device=self.device).view(1, -1, 1, 1)
                self.register_buffer(f"student_{name}", value, persistent=False)
        else:
            self.student_mean = self.student_std = None
        self.register_state_dict_post_hook(_drop_teacher_state)
        self.register_load_state_dict_pre_hook(_keep_teacher_state)

    def forward(self, input: torch.Tensor, target=None) -> dict:
        student_logits = self.trainable_module(input)
        teacher_logits = self.teacher_logits(input)
        probs = refinery_targets(teacher_logits, temperature=self.temperature)
        loss = self.criterion(student_logits, probs)
        entropy = -(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()
        return {"loss": loss, "output": student_logits, "kd_loss": loss.detach() - entropy,
                "teacher_entropy": entropy}

    def teacher_logits(self, input: torch.Tensor) -> torch.Tensor:
        """The refinery's logits on ``input`` (re-normalised if needed), without gradients."""
        plain = not isinstance(self.teacher, RefineryTeacher)
        bn = batch_statistics(self.teacher.model) if plain and self.bn_mode == "train" else contextlib.nullcontext()
        with torch.no_grad(), bn:
            x = self.teacher.normalize_input(input, self.student_mean, self.student_std)
            return self.teacher(x.detach())


def _drop_teacher_state(module, state_dict, prefix, local_metadata) -> None:
    """``state_dict`` post-hook of :class:`RefineryTask`: remove the teacher's entries."""
    teacher = prefix + "teacher"
    for key in [k for k in state_dict if k.startswith(teacher + ".")]:
        del state_dict[key]
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        for key in [k for k in metadata if k == teacher or k.startswith(teacher + ".")]:
            del metadata[key]


def _keep_teacher_state(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                        error_msgs) -> None:
    """``load_state_dict`` pre-hook of :class:`RefineryTask`: the teacher keeps its own state.

    Given ``teacher.*`` entries are dropped and the teacher's current tensors put in their
    place, so loading leaves it unchanged (copying a tensor onto itself) and ``strict`` loading
    does not miss them.
    """
    teacher = prefix + "teacher."
    for key in [k for k in state_dict if k.startswith(teacher)]:
        del state_dict[key]
    state_dict.update(module.teacher.state_dict(prefix=teacher))


class RefineryLoss(nn.Module):
    """Soft-target cross-entropy criterion ``(logits, target_probs[, weight]) -> loss``.

    :func:`labelwise.plugins.refinery.loss.soft_target_cross_entropy` as a module; ``'mean'``
    divides by the batch size (also with weights).

    Args:
        reduction: ``'mean'`` (default), ``'sum'`` or ``'none'``.
    """

    def __init__(self, *, reduction: str = "mean"):
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise ConfigError(f"reduction must be one of mean, sum, none, got {reduction!r}")
        self.reduction = reduction

    def forward(self, logits: torch.Tensor, target_probs: torch.Tensor, weight: torch.Tensor | None = None):
        return soft_target_cross_entropy(logits, target_probs, weight=weight, reduction=self.reduction)


class RefinedLabelsDataset(torch.utils.data.Dataset):
    """Offline mode for plain PyTorch: a dataset's images with stored refined labels as targets.

    Args:
        dataset: yields ``(image, target)``; the target is replaced.
        store: a :class:`labelwise.plugins.refinery.store.RefinedLabelStore` or its directory.
        ids: the image path (or id) of each sample of ``dataset``, in order; default
            ``dataset.ids`` (as :class:`labelwise.adapters.torch_data.DigitScenesDataset` has).

    Items are ``(image, soft_label)`` with a float32 ``(C,)`` distribution; train with
    ``timm.task.ClassificationTask(model, RefineryLoss())``.
    """

    def __init__(self, dataset, store, *, ids=None):
        from labelwise.plugins.refinery.store import RefinedLabelStore

        self.dataset = dataset
        self.store = store if isinstance(store, RefinedLabelStore) else RefinedLabelStore(store)
        ids = list(ids if ids is not None else getattr(dataset, "ids", None) or [])
        if len(ids) != len(dataset):
            raise ConfigError(f"ids has {len(ids)} entries for a dataset of {len(dataset)}; pass ids=... "
                              "(the image path of each sample)")
        self.rows = [self.store.row_of(i) for i in ids]  # every image must be in the store

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        from labelwise.plugins.refinery.store import expand_topk

        image, _ = self.dataset[index]
        row = self.rows[index]
        label = expand_topk(self.store.values[row], self.store.indices[row], self.store.num_classes,
                            rest=self.store.rest)
        return image, torch.from_numpy(label)
