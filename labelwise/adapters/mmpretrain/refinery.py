"""Label Refinery for mmpretrain: the online data preprocessor, the offline transform, chaining.

* :class:`RefineryDataPreprocessor` (``type='labelwise.RefineryDataPreprocessor'``): a
  ``ClsDataPreprocessor`` that, in training, runs a frozen refinery on the finished batch --
  after normalisation and after Mixup / CutMix -- and puts ``softmax(refinery(x))`` into each
  data sample's ``gt_score``. The head needs ``CrossEntropyLoss(use_soft=True)``; the ground
  truth stays in ``gt_label`` for evaluation and is unused by the loss.
* :class:`LoadRefinedLabels` (``type='labelwise.LoadRefinedLabels'``): the offline mode's
  pipeline step, serving stored per-image soft labels as ``gt_score``.
* :func:`build_refinery`: a frozen teacher from a spec (an mmpretrain config or model dict, a
  timm name, or a module) and its checkpoint.

The workflows ``labelwise refine`` and ``labelwise refine-store`` run (chained generations, the
offline store) are in :mod:`labelwise.workflows.refinery`.
"""
from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from mmcv.transforms import BaseTransform

from labelwise.adapters.mmpretrain.cleannet import WeightedClsDataPreprocessor
from labelwise.adapters.mmpretrain.targets import check_single_soft_target, multi_label_evidence
from labelwise.errors import ConfigError, DataError
from labelwise.plugins.refinery.teacher import BN_MODES, Refinery

#: Keys of a refinery spec (``refinery=dict(...)``); exactly one of ``config``, ``model``,
#: ``timm`` says what the teacher is.
REFINERY_KEYS = ("config", "model", "timm", "timm_kwargs", "checkpoint", "checkpoint_key",
                 "bn_mode", "temperature", "mean", "std")
_SOURCES = ("config", "model", "timm")


def check_refinery_spec(spec) -> dict:
    """Validate a refinery spec dict (see :func:`build_refinery`) without reading anything.

    Returns:
        The spec as a plain dict.

    Raises:
        ConfigError: not a dict, unknown or missing keys, several teacher sources, a bad
            ``bn_mode``.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError(f"refinery must be a dict, a Refinery or an nn.Module, got {type(spec).__name__}")
    spec = dict(spec)
    unknown = sorted(set(spec) - set(REFINERY_KEYS))
    if unknown:
        raise ConfigError(f"refinery has unknown keys {unknown}; valid keys: {', '.join(REFINERY_KEYS)}")
    sources = [k for k in _SOURCES if spec.get(k) is not None]
    if len(sources) != 1:
        raise ConfigError(f"refinery needs exactly one of {', '.join(_SOURCES)} to say what the teacher is; "
                          f"got {sources or 'none'}")
    if not spec.get("checkpoint"):
        raise ConfigError("refinery.checkpoint is required: the path of the teacher's weights")
    bn_mode = spec.get("bn_mode", "eval")
    if bn_mode not in BN_MODES:
        raise ConfigError(f"refinery.bn_mode must be one of {', '.join(BN_MODES)}, got {bn_mode!r}")
    return spec


def build_refinery(spec, *, student_mean=None, student_std=None, student_to_rgb=None) -> Refinery:
    """Build a frozen :class:`~labelwise.plugins.refinery.teacher.Refinery` from a spec.

    Args:
        spec: a :class:`Refinery` (returned as is), an ``nn.Module`` (used as the teacher with
            ``bn_mode='eval'``), or a dict with the keys of :data:`REFINERY_KEYS`:

            * ``config``: an mmpretrain config file (or built-in name) whose ``model`` is the
              teacher -- e.g. the config a previous generation was trained with. Its data
              preprocessor is ignored (so a refinery config's own refinery is never built);
              its ``mean`` / ``std`` are the teacher's normalisation.
            * ``model``: an mmpretrain model config dict (e.g. ``dict(type='ImageClassifier',
              ...)``).
            * ``timm``: a timm model name, created with ``pretrained=False`` and
              ``timm_kwargs`` (e.g. ``dict(num_classes=10)``).
            * ``checkpoint`` (required): the teacher's weights, read with
              :func:`labelwise.checkpoint.load_checkpoint` (weights only) and loaded strictly;
              ``checkpoint_key`` picks the entry (default: ``state_dict`` / ``model`` / the
              file itself, see :func:`labelwise.checkpoint.extract_state_dict`).
            * ``bn_mode``: ``'eval'`` (default) or ``'train'``.
            * ``temperature``: softmax temperature (default 1, as in the paper).
            * ``mean`` / ``std``: the teacher's per-channel normalisation in pixel units
              (0..255). Default: the teacher config's data preprocessor for ``config``,
              otherwise the student's (no re-normalisation).
        student_mean, student_std: the student's normalisation (the data preprocessor's);
            ``None``: inputs are already normalised for the teacher.
        student_to_rgb: the student's ``to_rgb``; a ``config`` teacher trained with another
            channel order is refused.

    Raises:
        ConfigError: unknown or missing keys, several teacher sources, a bad ``bn_mode``.
        CheckpointError: the checkpoint cannot be read or does not fit the teacher.
    """
    if isinstance(spec, Refinery):
        return spec
    if isinstance(spec, torch.nn.Module):
        return Refinery(spec)
    spec = check_refinery_spec(spec)
    bn_mode = spec.get("bn_mode", "eval")
    sources = [k for k in _SOURCES if spec.get(k) is not None]

    teacher_mean, teacher_std = spec.get("mean"), spec.get("std")
    source = sources[0]
    if source == "timm":
        from labelwise.adapters import require

        timm = require("timm", "timm")

        model = timm.create_model(spec["timm"], pretrained=False, **(spec.get("timm_kwargs") or {}))
        forward = None
    else:
        if source == "config":
            model_cfg, pre = _teacher_from_config(spec["config"])
            teacher_rgb = pre.get("to_rgb")
            if teacher_rgb is not None and student_to_rgb is not None and bool(teacher_rgb) != bool(student_to_rgb):
                raise ConfigError(f"refinery config {spec['config']}: its data_preprocessor has to_rgb="
                                  f"{pre['to_rgb']}, the student's has to_rgb={student_to_rgb}; the teacher "
                                  "would see the channels swapped")
            if teacher_mean is None and pre.get("mean") is not None:
                teacher_mean, teacher_std = pre["mean"], pre["std"]
        else:
            model_cfg = copy.deepcopy(dict(spec["model"]))
        model = _build_mm_model(model_cfg)
        forward = _mm_logits
    _load_weights(model, spec["checkpoint"], spec.get("checkpoint_key"))
    if teacher_mean is None or student_mean is None:
        # the student's normalisation is the teacher's, or unknown (the caller feeds
        # teacher-normalised batches, as build_refined_label_store does)
        student_mean = student_std = teacher_mean = teacher_std = None
    return Refinery(model, bn_mode=bn_mode, forward=forward, temperature=spec.get("temperature", 1.0),
                    student_mean=student_mean, student_std=student_std,
                    teacher_mean=teacher_mean, teacher_std=teacher_std)


class RefineryDataPreprocessor(WeightedClsDataPreprocessor):
    """``ClsDataPreprocessor`` + online Label Refinery targets.

    Does everything :class:`mmpretrain.models.ClsDataPreprocessor` does (stacking,
    ``to_rgb``, normalisation, Mixup / CutMix; per-sample CleanNet weights are mixed with the
    samples as by its parent :class:`labelwise.WeightedClsDataPreprocessor`), then, in
    training only, runs the frozen refinery on the resulting batch -- the exact tensor the
    student receives -- and sets each data sample's ``gt_score`` to ``softmax(refinery(x))``.
    The mixing permutation of a batch augment needs no tracking: the refinery sees the mixed
    image itself (the function matching property). Evaluation batches pass through untouched
    (``gt_label`` is used).

    The refinery is held outside the module tree (see
    :mod:`labelwise.plugins.refinery.teacher`): it has no parameters or buffers in the model,
    so it is not optimised, not synchronised by DDP, not averaged by EMA (an EMA copy shares
    it) and not saved in checkpoints.

    ``to_onehot`` is always on: without a refinery (``refinery=dict()``, generation 1) the
    ground truth reaches the head as a one-hot ``gt_score``, and ``CrossEntropyLoss
    (use_soft=True)`` on it is the ordinary cross-entropy, so every generation uses one head.

    Composition: per-sample weights (``labelwise.CleanNetWeights`` +
    ``labelwise.WeightedLinearClsHead``) multiply the refinery's per-sample soft-target loss;
    a mixed sample carries ``w' = lam w_i + (1 - lam) w_j`` and the refinery's target for the
    mixed image (``configs/compose/digits_noisy_cleannet_refinery.py``). With a refinery set,
    a training batch whose samples already carry a ``gt_score`` from the pipeline
    (``labelwise.LabelPooling``, ``labelwise.LoadRefinedLabels``) or are multi-label /
    partial-label is refused with a ``ConfigError``: the refinery's target is a single-label
    class distribution and there can be only one training target.

    Args:
        refinery: a refinery spec (see :func:`build_refinery`), a built ``Refinery``, or
            an empty dict / ``None`` (default) for no refinery. (Configs use ``dict()`` so
            that a child config can fill it in: mmengine cannot merge a dict into ``None``.)
        weight_key: the data-sample field holding a per-sample weight, mixed by batch
            augments (default ``'sample_weight'``; samples without it are not weighted).
        **kwargs: ``ClsDataPreprocessor``'s arguments (``mean``, ``std``, ``to_rgb``,
            ``num_classes`` -- required -- ``batch_augments``, ...).

    Config::

        data_preprocessor = dict(
            type='labelwise.RefineryDataPreprocessor',
            refinery=dict(config='work/gen1/config.py', checkpoint='work/gen1/epoch_10.pth'))
        model = dict(head=dict(loss=dict(type='CrossEntropyLoss', use_soft=True)))
    """

    def __init__(self, *, refinery=None, **kwargs):
        if kwargs.get("num_classes") is None:
            raise ConfigError("RefineryDataPreprocessor needs num_classes (soft targets are (N, num_classes))")
        kwargs["to_onehot"] = True
        super().__init__(**kwargs)
        self._refinery = None
        self._refinery_spec = None
        if refinery is None or (isinstance(refinery, Mapping) and not refinery):
            pass
        elif isinstance(refinery, Mapping):
            # checked now, read when training starts: testing or deploying the student
            # (tools/test.py, inference) never needs the teacher's files
            self._refinery_spec = check_refinery_spec(refinery)
        else:
            self._refinery = self._build(refinery)

    def _build(self, spec) -> Refinery:
        mean = self.mean.flatten().tolist() if self._enable_normalize else None
        std = self.std.flatten().tolist() if self._enable_normalize else None
        return build_refinery(spec, student_mean=mean, student_std=std, student_to_rgb=self.to_rgb)

    @property
    def has_refinery(self) -> bool:
        """Whether a refinery is set (built or not yet read)."""
        return self._refinery is not None or self._refinery_spec is not None

    @property
    def refinery(self) -> Refinery | None:
        """The frozen refinery, read from its spec on first use (``None``: no refinery)."""
        if self._refinery is None and self._refinery_spec is not None:
            self._refinery = self._build(self._refinery_spec)
        return self._refinery

    def train(self, mode: bool = True):
        """As ``nn.Module.train``; entering training mode reads the refinery (before the first
        iteration, so a bad teacher fails at once). Evaluation never reads it."""
        super().train(mode)
        if mode:
            self.refinery  # noqa: B018 -- builds it
        return self

    def forward(self, data: dict, training: bool = False) -> dict:
        if training and self.has_refinery:
            _check_single_target(data.get("data_samples"))
        data = super().forward(data, training)
        if training and self.has_refinery:
            samples = data.get("data_samples")
            if samples is None:
                raise DataError("RefineryDataPreprocessor needs data samples to attach soft targets to")
            targets = self.refinery(data["inputs"])
            if targets.shape[1] != self.num_classes:
                raise ConfigError(f"the refinery predicts {targets.shape[1]} classes, the student "
                                  f"num_classes is {self.num_classes}")
            for sample, score in zip(samples, targets):
                sample.set_gt_score(score)
        return data

    def extra_repr(self) -> str:
        if self._refinery is None and self._refinery_spec is not None:
            return f"refinery={self._refinery_spec!r} (read when training starts)"
        return f"refinery={self._refinery!r}"


def _check_single_target(samples) -> None:
    """Refuse a training batch the online refinery cannot own the target of (see the class)."""
    if not samples:
        return
    if "gt_score" in samples[0]:
        raise ConfigError(
            "labelwise.RefineryDataPreprocessor (Label Refinery) and the train pipeline both produce the training "
            "target: the samples already carry a soft gt_score from the pipeline (labelwise.LabelPooling or "
            "labelwise.LoadRefinedLabels), and which one wins is undefined. Use one: remove that pipeline step, "
            "or set data_preprocessor.refinery=dict() (no refinery)")
    for sample in samples:
        evidence = multi_label_evidence(sample)
        if evidence is not None:
            raise ConfigError(
                f"labelwise.RefineryDataPreprocessor (Label Refinery) gives single-label soft targets (a softmax "
                f"over classes), but a training sample is multi-label: {evidence}. Label Refinery does not "
                "compose with a multi-label / partial-label head or the PU-MLC loss (labelwise.PUMLCLoss)")


class LoadRefinedLabels(BaseTransform):
    """Offline Label Refinery: put an image's stored soft label into ``gt_score``.

    An approximation of the online method (one label per image, computed once on the
    evaluation view, top-k, instead of a label per random crop): see
    :mod:`labelwise.plugins.refinery.store`. Build the store with ``labelwise refine-store``.
    Batch augments (Mixup / CutMix) mix ``gt_score`` like any soft label.

    Required Keys:

    - img_path

    Added Keys:

    - gt_score (np.ndarray float32, (C,)): the stored distribution (``PackInputs`` puts it in
      the data sample).

    Args:
        store: the store directory.
        rest: override how probability outside the top-k is restored (``'uniform'`` or
            ``'renormalize'``; default: as recorded in the store).
    """

    def __init__(self, store: str, rest: str | None = None):
        self.store_dir = str(store)
        self.rest = rest
        self._store = None
        self._open()  # fail at build time, not in a worker

    def _open(self):
        from labelwise.plugins.refinery.store import RefinedLabelStore

        if self._store is None:
            self._store = RefinedLabelStore(self.store_dir, rest=self.rest)
        return self._store

    def transform(self, results: dict) -> dict:
        check_single_soft_target(results, "labelwise.LoadRefinedLabels (offline Label Refinery)", "serves")
        results["gt_score"] = self._open().soft_label(results["img_path"])
        return results

    def __getstate__(self):  # workers re-open the memory maps themselves
        return {**self.__dict__, "_store": None}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(store={self.store_dir!r}, rest={self.rest!r})"


def _mm_logits(model, inputs):
    return model(inputs, mode="tensor")


def _teacher_from_config(config) -> tuple[dict, dict]:
    from mmengine.config import Config

    from labelwise.adapters.mmpretrain.runner import resolve_config

    cfg = Config.fromfile(str(resolve_config(config)))
    if not cfg.get("model"):
        raise ConfigError(f"refinery config {config} has no 'model'")
    model_cfg = copy.deepcopy(cfg.model.to_dict() if hasattr(cfg.model, "to_dict") else dict(cfg.model))
    pre = dict(model_cfg.pop("data_preprocessor", None) or cfg.get("data_preprocessor") or {})
    return model_cfg, pre


def _build_mm_model(model_cfg: dict):
    """The teacher: mmpretrain's model of ``model_cfg``, fed finished (normalised) batches."""
    from mmengine.config import Config

    from labelwise.adapters.mmpretrain.runner import build_model

    model_cfg = dict(model_cfg)
    model_cfg["data_preprocessor"] = dict(type="ClsDataPreprocessor")  # the teacher gets finished batches
    return build_model(Config(dict(model=model_cfg)))


def _load_weights(model, checkpoint, key) -> None:
    """The teacher's weights, read by the safe loader and loaded strictly."""
    from labelwise.checkpoint import extract_state_dict, load_checkpoint, load_weights

    load_weights(model, extract_state_dict(load_checkpoint(checkpoint), key=key), checkpoint=checkpoint,
                 target=f"the refinery model {type(model).__name__}")
