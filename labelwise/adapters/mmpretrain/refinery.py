"""Label Refinery for mmpretrain: the online data preprocessor, the offline transform, chaining.

* :class:`RefineryDataPreprocessor` (``type='labelwise.RefineryDataPreprocessor'``): a
  ``ClsDataPreprocessor`` that, in training, runs a frozen refinery on the finished batch --
  after normalisation and after Mixup / CutMix -- and puts ``softmax(refinery(x))`` into each
  data sample's ``gt_score``. The head needs ``CrossEntropyLoss(use_soft=True)``; the ground
  truth stays in ``gt_label`` for evaluation and is unused by the loss.
* :class:`LoadRefinedLabels` (``type='labelwise.LoadRefinedLabels'``): the offline mode's
  pipeline step, serving stored per-image soft labels as ``gt_score``.
* :func:`train_generations` / :func:`build_refined_label_store`: what ``labelwise refine`` and
  ``labelwise refine-store`` run.
"""
from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch
from mmcv.transforms import BaseTransform
from mmpretrain.models.utils.data_preprocessor import ClsDataPreprocessor

from labelwise.adapters.mmpretrain.cleannet import WeightedClsDataPreprocessor
from labelwise.adapters.mmpretrain.targets import check_single_soft_target, multi_label_evidence
from labelwise.errors import ConfigError, DataError
from labelwise.plugins.refinery.teacher import BN_MODES, Refinery

#: Keys of a refinery spec (``refinery=dict(...)``); exactly one of ``config``, ``model``,
#: ``timm`` says what the teacher is.
REFINERY_KEYS = ("config", "model", "timm", "timm_kwargs", "checkpoint", "checkpoint_key",
                 "bn_mode", "temperature", "mean", "std")
_SOURCES = ("config", "model", "timm")


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
        if refinery is None or (isinstance(refinery, Mapping) and not refinery):
            self.refinery = None
        else:
            mean = self.mean.flatten().tolist() if self._enable_normalize else None
            std = self.std.flatten().tolist() if self._enable_normalize else None
            self.refinery = build_refinery(refinery, student_mean=mean, student_std=std,
                                           student_to_rgb=self.to_rgb)

    def forward(self, data: dict, training: bool = False) -> dict:
        if training and self.refinery is not None:
            _check_single_target(data.get("data_samples"))
        data = super().forward(data, training)
        if training and self.refinery is not None:
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
        return f"refinery={self.refinery!r}"


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


def train_generations(config, *, work_dir, generations: int, data_root=None, seed=None, epochs=None,
                      cfg_options: dict | None = None, first_checkpoint=None, log=print) -> list[dict]:
    """Chain ``generations`` mmpretrain trainings: generation t+1 refined by generation t.

    Every generation trains ``config`` from scratch in ``WORK_DIR/gen{t}`` (same seed, same
    schedule). Generation 1 runs with ``refinery=dict()`` (ground truth, one-hot targets); each
    later one fills the config's refinery with the previous generation's dumped config and
    final checkpoint. Other keys of the config's refinery dict (``bn_mode``, ``temperature``)
    are kept. Finished generations are reused (see
    :func:`labelwise.plugins.refinery.chain.run_generations`).

    Args:
        config: a config file or built-in name whose data preprocessor is
            ``labelwise.RefineryDataPreprocessor`` (e.g. ``'refinery/digits_single'``).
        work_dir: output folder.
        generations: how many generations (>= 1).
        data_root, seed, epochs, cfg_options: as :func:`labelwise.adapters.mmpretrain.runner.load_config`.
        first_checkpoint: use these weights (trained with ``config``'s model) as generation 1
            instead of training it.
        log: where progress lines go.

    Returns:
        The generation records: ``generation``, ``checkpoint``, ``config``, ``metrics`` (test
        metrics of the final model), ``refinery_checkpoint``, ``seconds``.
    """
    from labelwise.adapters.mmpretrain.runner import load_config, train_and_test
    from labelwise.plugins.refinery.chain import run_generations

    work_dir = Path(work_dir)

    def load(gen_dir, refinery):
        cfg = load_config(config, work_dir=gen_dir, data_root=data_root, seed=seed, epochs=epochs,
                          cfg_options=cfg_options)
        pre = _refinery_preprocessor(cfg)
        teacher_keys = (*_SOURCES, "checkpoint", "checkpoint_key", "timm_kwargs", "mean", "std")
        template = {k: v for k, v in dict(pre.get("refinery") or {}).items() if k not in teacher_keys}
        pre["refinery"] = {} if refinery is None else {**template, **refinery}
        return cfg

    def train_one(t, previous, gen_dir):
        refinery = None if previous is None else {"config": previous["config"], "checkpoint": previous["checkpoint"]}
        cfg = load(gen_dir, refinery)
        cfg.dump(str(gen_dir / "config.py"))
        metrics = train_and_test(cfg)
        return {"checkpoint": _last_checkpoint(gen_dir), "config": str(gen_dir / "config.py"),
                "metrics": {k: float(v) for k, v in metrics.items()}}

    first = None
    if first_checkpoint is not None:
        gen1 = work_dir / "gen1"
        gen1.mkdir(parents=True, exist_ok=True)
        load(gen1, None).dump(str(gen1 / "config.py"))
        first = {"checkpoint": str(first_checkpoint), "config": str(gen1 / "config.py")}
    return run_generations(work_dir, generations, train_one, first=first, log=log)


def build_refined_label_store(config, checkpoint, out_dir, *, data_root=None, ann_file=None, k: int = 5,
                              batch_size: int = 64, bn_mode: str = "eval", device="cpu",
                              overwrite: bool = False, progress: bool = True) -> Path:
    """Precompute the offline mode's store: the refinery's top-k labels of every training image.

    The images are the config's training dataset (``ann_file`` overrides its annotation
    file) read through the config's **test** pipeline -- the evaluation view, no random crop --
    and normalised by the config's data preprocessor; the refinery is the config's model with
    ``checkpoint``'s weights. Resumes an interrupted build (see
    :func:`labelwise.plugins.refinery.store.write_refined_labels`). The store's provenance is
    the checkpoint's content fingerprint (size and SHA-256 of its ends, see
    :func:`~labelwise.plugins.refinery.store.file_fingerprint`), a SHA-256 of the model, test
    pipeline and preprocessor settings, and ``bn_mode``: a store in ``out_dir`` made from
    another checkpoint or config is refused (``overwrite=True`` rebuilds it).

    Returns:
        The store directory.
    """
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    from labelwise.adapters.mmpretrain.runner import load_config
    from labelwise.plugins.refinery.store import file_fingerprint, write_refined_labels

    cfg = load_config(config, work_dir=Path(out_dir), data_root=data_root)
    init_default_scope(cfg.get("default_scope", "mmpretrain"))
    dataset_cfg = copy.deepcopy(cfg.train_dataloader.dataset)
    if ann_file is not None:
        dataset_cfg["ann_file"] = str(ann_file)
    dataset_cfg["pipeline"] = copy.deepcopy(cfg.test_dataloader.dataset.pipeline)
    dataset = DATASETS.build(dataset_cfg)
    training_only = ("type", "refinery", "batch_augments", "weight_key")
    pre_cfg = {k: v for k, v in dict(_preprocessor_cfg(cfg)).items() if k not in training_only}
    preprocessor = ClsDataPreprocessor(**pre_cfg).to(device)
    refinery = build_refinery({"config": str(config if Path(str(config)).is_file() else cfg.filename),
                               "checkpoint": str(checkpoint), "bn_mode": bn_mode})
    root = Path(dataset.data_root or "")
    ids = [Path(dataset.get_data_info(i)["img_path"]).relative_to(root).as_posix() if dataset.data_root
           else dataset.get_data_info(i)["img_path"] for i in range(len(dataset))]

    def predict(rows):
        batch = preprocessor(pseudo_collate([dataset[i] for i in rows]), False)
        return refinery(batch["inputs"]).cpu()

    num_classes = pre_cfg.get("num_classes") or len(dataset.metainfo.get("classes") or ())
    if not num_classes:
        raise ConfigError(f"{cfg.filename}: set data_preprocessor.num_classes (or dataset classes)")
    info = {"config": str(cfg.filename), "checkpoint": str(checkpoint), "view": "test pipeline",
            "ann_file": str(dataset.ann_file), "bn_mode": bn_mode}
    # what turns an image into a label besides the weights (the preprocessor's own refinery and
    # batch augments are left out: they act in training only)
    settings = {"model": {k: _plain(v) for k, v in cfg.model.items() if k != "data_preprocessor"},
                "pipeline": _plain(cfg.test_dataloader.dataset.pipeline), "preprocessor": _plain(pre_cfg)}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()
    provenance = {"checkpoint": file_fingerprint(checkpoint), "config_sha256": digest, "bn_mode": bn_mode}
    return write_refined_labels(out_dir, ids, predict, num_classes=int(num_classes), k=k,
                                batch_size=batch_size, info=info, provenance=provenance, overwrite=overwrite,
                                progress=progress)


def _plain(value):
    """A config value as plain dicts and lists (for a stable JSON digest)."""
    if hasattr(value, "to_dict"):
        value = value.to_dict()
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


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
    from mmengine.registry import DefaultScope, init_default_scope
    from mmpretrain.registry import MODELS

    model_cfg = dict(model_cfg)
    model_cfg["data_preprocessor"] = dict(type="ClsDataPreprocessor")  # the teacher gets finished batches
    if DefaultScope.get_current_instance() is None:
        init_default_scope("mmpretrain")
    return MODELS.build(model_cfg)


def _load_weights(model, checkpoint, key) -> None:
    from labelwise.checkpoint import extract_state_dict, load_checkpoint
    from labelwise.errors import CheckpointError

    state = extract_state_dict(load_checkpoint(checkpoint), key=key)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0:3]
        raise CheckpointError(f"refinery checkpoint {checkpoint} does not fit the refinery model "
                              f"{type(model).__name__}: {' '.join(s.strip() for s in first)}") from exc


def _preprocessor_cfg(cfg):
    pre = cfg.model.get("data_preprocessor") or cfg.get("data_preprocessor")
    if pre is None:
        raise ConfigError(f"{cfg.filename}: no data_preprocessor (top level or model.data_preprocessor)")
    return pre


def _refinery_preprocessor(cfg):
    pre = _preprocessor_cfg(cfg)
    if pre.get("type") not in ("labelwise.RefineryDataPreprocessor", "RefineryDataPreprocessor"):
        raise ConfigError(f"{cfg.filename}: data_preprocessor.type is {pre.get('type')!r}; generation "
                          "chaining needs 'labelwise.RefineryDataPreprocessor' (see configs/refinery/)")
    return pre


def _last_checkpoint(work_dir: Path) -> str:
    marker = Path(work_dir) / "last_checkpoint"
    if not marker.is_file():
        raise DataError(f"{work_dir}: the Runner left no last_checkpoint; is CheckpointHook enabled?")
    path = Path(marker.read_text().strip())
    if not path.is_absolute():
        path = Path(work_dir) / path.name
    if not path.is_file():
        raise DataError(f"{marker} names {path}, which does not exist")
    return str(path)
