"""CleanNet in mmpretrain: per-sample weights through the pipeline, a head whose loss uses them,
batch Mixup / CutMix that mix them correctly, hard-mode dropping, and feature extraction.

Registered (``type='labelwise.<Name>'``) by :mod:`labelwise.plugins.cleannet`:

* :class:`CleanNetWeights` (TRANSFORMS): reads a CleanNet score file and adds ``sample_weight``;
* :class:`CleanNetSubset` (DATASETS): keeps only the samples with ``score >= threshold``;
* :class:`WeightedLinearClsHead` (MODELS): a ``LinearClsHead`` whose loss is weighted per sample;
* :class:`WeightedClsDataPreprocessor` (MODELS): a ``ClsDataPreprocessor`` whose batch
  augments mix the weights with the same permutation and ratio as the images and targets.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from mmcv.transforms import BaseTransform
from mmpretrain.models.heads import LinearClsHead
from mmpretrain.models.utils.data_preprocessor import ClsDataPreprocessor
from mmpretrain.structures import DataSample

from labelwise.adapters.mmpretrain.targets import multi_label_evidence
from labelwise.errors import ConfigError, DataError
from labelwise.plugins.cleannet.scorefile import read_scores
from labelwise.plugins.cleannet.scoring import sample_weights

WEIGHT_SOURCES = ("file", "hard", "soft")
NORMALIZATIONS = ("weight_sum", "batch")


class _ScoreLookup:
    """A score file indexed by sample id; finds a sample by the longest path suffix that is an id."""

    def __init__(self, score_file, *, mode: str = "file", threshold: float | None = None):
        if mode not in WEIGHT_SOURCES:
            raise ConfigError(f"CleanNet weight mode must be one of {', '.join(WEIGHT_SOURCES)}, got {mode!r}")
        self.path = str(score_file)
        self.table = read_scores(score_file)
        self.index = self.table.index()
        if mode == "file":
            self.weights = self.table.weights
        else:
            if mode == "hard" and threshold is None:
                raise ConfigError(f"CleanNet weight mode 'hard' needs threshold=... (score file {self.path})")
            self.weights = sample_weights(self.table.scores, mode=mode, threshold=threshold)

    def row(self, img_path: str) -> int:
        parts = Path(str(img_path)).as_posix().split("/")
        for start in range(len(parts)):
            row = self.index.get("/".join(parts[start:]))
            if row is not None:
                return row
        raise DataError(f"score file {self.path} has no row for sample {img_path!r} (ids are matched to the "
                        f"end of the image path; e.g. {self.table.ids[0]!r}); score the whole dataset")


class CleanNetWeights(BaseTransform):
    """Attach each sample's CleanNet weight, read from a score file
    (:mod:`labelwise.plugins.cleannet.scorefile`).

    Pack it into the data sample with ``dict(type='PackInputs', algorithm_keys=['sample_weight'])``
    and train with :class:`WeightedLinearClsHead`, whose loss uses it.

    Args:
        score_file: CSV written by ``labelwise cleannet score`` (``id,label,score,weight``).
            Read and validated when the transform is built: a malformed file (missing or extra
            columns, NaN or non-numeric scores, duplicate ids) raises ``DataError`` at once.
        mode: ``'file'`` (default) uses the file's ``weight`` column; ``'hard'`` recomputes
            ``1[score >= threshold]``; ``'soft'`` recomputes ``max(0, score)``.
        threshold: the threshold of ``mode='hard'``.
        key: the results key to add (default ``'sample_weight'``).
        check_label: refuse a sample whose ``gt_label`` differs from the label the file scored
            (a score file of other labels) (default True).

    Required Keys:

    - img_path (the id is matched against its end: ``data/digits/images/train/0.png`` finds
      the id ``images/train/0.png``)
    - gt_label (optional; checked against the file's ``label`` when ``check_label``)

    Added Keys:

    - sample_weight (float)
    """

    def __init__(self, score_file, mode: str = "file", threshold: float | None = None, key: str = "sample_weight",
                 check_label: bool = True):
        self.score_file, self.mode, self.threshold = str(score_file), mode, threshold
        self.key, self.check_label = key, bool(check_label)
        self._lookup = _ScoreLookup(score_file, mode=mode, threshold=threshold)

    def transform(self, results: dict) -> dict:
        evidence = multi_label_evidence(results)
        if evidence is not None:
            raise ConfigError(f"labelwise.CleanNetWeights cannot weight sample {results.get('img_path', '?')!r}: "
                              f"{evidence}. CleanNet scores one (possibly noisy) label per sample and the "
                              "weighted head (labelwise.WeightedLinearClsHead) is single-label softmax; a multi-label "
                              "/ partial-label regime (PU-MLC, CFT) has no per-sample label to score")
        if "img_path" not in results:
            raise DataError(f"CleanNetWeights needs 'img_path' in the results to find the sample in {self.score_file}")
        row = self._lookup.row(results["img_path"])
        if self.check_label and results.get("gt_label") is not None:
            label = np.asarray(results["gt_label"]).reshape(-1)
            if label.size == 1 and int(label[0]) != int(self._lookup.table.labels[row]):
                raise DataError(f"score file {self.score_file}: sample {results['img_path']!r} has label "
                                f"{int(label[0])} in the dataset but {int(self._lookup.table.labels[row])} in the "
                                "score file (scored with other labels?)")
        results[self.key] = float(self._lookup.weights[row])
        return results

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}(score_file={self.score_file!r}, mode={self.mode!r}, "
                f"threshold={self.threshold!r}, key={self.key!r}, check_label={self.check_label})")


class CleanNetSubset:
    """Hard mode that drops suspected noise: a dataset wrapper keeping the samples whose
    CleanNet score is ``>= threshold``.

    Args:
        dataset: the dataset (a config dict, built with mmpretrain's ``DATASETS``, or a dataset).
        score_file: CSV written by ``labelwise cleannet score``; every sample of ``dataset``
            must have a row (``DataError`` names the first missing one).
        threshold: keep ``score >= threshold``; ``None`` (default) keeps the samples whose
            ``weight`` column is > 0 (the file's own hard weights).
        ann_file: if given, replaces the wrapped dataset config's ``ann_file`` (``labelwise
            train`` sets ``train_dataloader.dataset.ann_file`` to the regime's list).

    The kept samples keep their order; ``len()`` is the number kept. Other attributes
    (``metainfo``, ``data_root`` ...) are the wrapped dataset's.
    """

    def __init__(self, dataset, score_file, threshold: float | None = None, ann_file: str | None = None):
        from mmpretrain.registry import DATASETS

        if isinstance(dataset, dict):
            dataset = DATASETS.build(dict(dataset, ann_file=ann_file) if ann_file is not None else dataset)
        self.dataset = dataset
        self.score_file, self.threshold = str(score_file), threshold
        lookup = _ScoreLookup(score_file)
        self.dataset.full_init()
        keep = []
        for i in range(len(self.dataset)):
            row = lookup.row(self.dataset.get_data_info(i)["img_path"])
            ok = lookup.table.scores[row] >= threshold if threshold is not None else lookup.table.weights[row] > 0
            if ok:
                keep.append(i)
        if not keep:
            raise DataError(f"CleanNetSubset: no sample of the dataset passes threshold {threshold} in {score_file}")
        self.indices = keep

    @property
    def metainfo(self) -> dict:
        return copy.deepcopy(self.dataset.metainfo)

    def full_init(self) -> None:
        """Nothing to do: the wrapped dataset is initialised in ``__init__``."""

    def get_data_info(self, idx: int) -> dict:
        return self.dataset.get_data_info(self.indices[idx])

    def __getitem__(self, idx: int):
        return self.dataset[self.indices[idx]]

    def __len__(self) -> int:
        return len(self.indices)

    def __getattr__(self, name):
        if name == "dataset":  # not yet set: avoid recursion while unpickling
            raise AttributeError(name)
        return getattr(self.dataset, name)


class WeightedLinearClsHead(LinearClsHead):
    """A :class:`mmpretrain.models.heads.LinearClsHead` whose loss weights each sample.

    mmpretrain's heads pass no per-sample weight to the loss; this head reads it from each
    data sample's ``weight_key`` field (``PackInputs(algorithm_keys=['sample_weight'])`` after
    :class:`CleanNetWeights`) and computes::

        loss = sum_i w_i * loss_i / Z,   Z = sum_i w_i  (normalize='weight_sum', default)
                                           Z = N        (normalize='batch')

    where ``loss_i`` is the configured loss module's per-sample loss (``reduction='none'``,
    ``loss_weight`` included). ``'weight_sum'`` makes hard weights exactly equivalent to
    training on the kept samples only, and keeps the loss scale (and so the effective learning
    rate) independent of the mean weight; a batch whose weights are all 0 gives 0. ``'batch'``
    is mmpretrain's ``avg_factor=N`` (down-weighted batches shrink the step). Under
    data-parallel training ``Z`` is the local batch's.

    Targets: ``gt_score`` when present (soft targets from other methods, e.g. LabelPooling or
    Label Refinery, or from batch Mixup / CutMix), else ``gt_label``. With soft targets the
    weight multiplies the per-sample soft-target loss. With batch augments use
    :class:`WeightedClsDataPreprocessor`, which mixes the weights with the samples (a plain
    ``ClsDataPreprocessor`` would leave each weight on its slot while the images move).

    Args:
        weight_key: the data-sample field holding the weight (default ``'sample_weight'``).
        normalize: ``'weight_sum'`` (default) or ``'batch'``.
        missing_weight: weight of a sample without the field; ``None`` (default) raises a
            ``DataError`` naming the field and the transform to add.
        **kwargs: :class:`LinearClsHead`'s (``num_classes``, ``in_channels``, ``loss``, ...).
    """

    def __init__(self, *args, weight_key: str = "sample_weight", normalize: str = "weight_sum",
                 missing_weight: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        if normalize not in NORMALIZATIONS:
            raise ConfigError(f"WeightedLinearClsHead normalize must be one of {', '.join(NORMALIZATIONS)}, "
                              f"got {normalize!r}")
        self.weight_key, self.normalize, self.missing_weight = weight_key, normalize, missing_weight

    def _get_loss(self, cls_score: torch.Tensor, data_samples, **kwargs):
        from mmpretrain.evaluation import Accuracy

        for sample in data_samples:
            evidence = multi_label_evidence(sample)
            if evidence is not None:
                raise ConfigError(f"labelwise.WeightedLinearClsHead (CleanNet weights) is a single-label softmax "
                                  f"head, but a training sample is multi-label: {evidence}. CleanNet weights do not "
                                  "compose with a multi-label / partial-label regime (PU-MLC, CFT)")
        if "gt_score" in data_samples[0]:
            target = torch.stack([s.gt_score for s in data_samples])
        else:
            target = torch.cat([s.gt_label for s in data_samples])
        weights = cls_score.new_tensor([self._weight(s) for s in data_samples])
        per_sample = self.loss_module(cls_score, target, reduction_override="none", **kwargs)
        if per_sample.shape != weights.shape:
            raise ConfigError(f"WeightedLinearClsHead needs a loss whose reduction='none' output is one value per "
                              f"sample {tuple(weights.shape)}; {type(self.loss_module).__name__} gave "
                              f"{tuple(per_sample.shape)}")
        denom = weights.sum().clamp_min(1e-12) if self.normalize == "weight_sum" else float(len(weights))
        losses = {"loss": (weights * per_sample).sum() / denom}
        if self.cal_acc and target.ndim == 1:
            acc = Accuracy.calculate(cls_score, target, topk=self.topk)
            losses.update({f"accuracy_top-{k}": a for k, a in zip(self.topk, acc)})
        return losses

    def _weight(self, sample) -> float:
        if self.weight_key in sample:
            w = float(sample.get(self.weight_key))
            if not np.isfinite(w) or w < 0:
                raise DataError(f"data sample field {self.weight_key!r} is {w}; expected a finite weight >= 0")
            return w
        if self.missing_weight is None:
            raise DataError(f"WeightedLinearClsHead: a data sample has no {self.weight_key!r} field; add "
                            f"dict(type='labelwise.CleanNetWeights', score_file=...) to the train pipeline and "
                            f"dict(type='PackInputs', algorithm_keys=['{self.weight_key}'])")
        return float(self.missing_weight)


class WeightedClsDataPreprocessor(ClsDataPreprocessor):
    """A :class:`ClsDataPreprocessor` whose batch augments (Mixup, CutMix) mix per-sample weights.

    mmpretrain's batch augments draw a permutation and a ratio internally and mix only the
    images and ``gt_score``. Here each target row is first multiplied by its sample's weight
    and the weight appended as an extra column; both are mixed by the same augment call; then
    the mixed weight ``w' = lam * w_i + (1 - lam) * w_j`` is stored back in the data sample and
    the target divided by it. With :class:`WeightedLinearClsHead` the loss of a mixed sample is
    then ``w' * CE(p, t / w') = lam * w_i * CE(p, y_i) + (1 - lam) * w_j * CE(p, y_j)``, exactly
    the weighted loss of the two mixed samples, and ``sum w'`` equals ``sum w``, so the
    ``'weight_sum'`` normalisation is unchanged. Without batch augments, or when the samples
    carry no weight, it is a plain ``ClsDataPreprocessor``.

    Args:
        weight_key: the data-sample field holding the weight (default ``'sample_weight'``).
        **kwargs: :class:`ClsDataPreprocessor`'s (``mean``, ``std``, ``batch_augments`` ...).
    """

    def __init__(self, *args, weight_key: str = "sample_weight", **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_key = weight_key

    def forward(self, data: dict, training: bool = False) -> dict:
        samples = data.get("data_samples")
        if not (training and self.batch_augments is not None and samples
                and isinstance(samples[0], DataSample) and self.weight_key in samples[0]):
            return super().forward(data, training)
        augments = self.batch_augments
        folding = _FoldWeights(augments, torch.tensor([float(s.get(self.weight_key)) for s in samples]))
        self.batch_augments = folding
        try:
            result = super().forward(data, training)
        finally:
            self.batch_augments = augments
        if folding.mixed is not None:
            for sample, w in zip(result["data_samples"], folding.mixed.tolist()):
                sample.set_field(float(w), self.weight_key)
        return result


class _FoldWeights:
    """Wraps a batch augment: mixes ``[w * score, w]`` and unfolds the result (see above)."""

    def __init__(self, augments, weights: torch.Tensor):
        self.augments, self.weights, self.mixed = augments, weights, None

    def __call__(self, inputs, score):
        w = self.weights.to(score.device, torch.float32)
        combined = torch.cat([score.float() * w[:, None], w[:, None]], dim=1)
        inputs, mixed = self.augments(inputs, combined)
        self.mixed = mixed[:, -1]
        target = mixed[:, :-1] / self.mixed.clamp_min(1e-12)[:, None]
        target = torch.where(self.mixed[:, None] > 0, target, torch.zeros_like(target))
        return inputs, target


def mm_feature_extractor(config, checkpoint=None, *, data_root=None, ann_file=None, device="cpu",
                         cfg_options: dict | None = None) -> dict:
    """Everything :func:`labelwise.plugins.cleannet.features.extract_features` needs for an
    mmpretrain model: pooled penultimate features (``extract_feat``: backbone + neck, the
    input of the head; a 4-D output is global-average-pooled) of the config's **test**
    pipeline over a dataset.

    Args:
        config: mmpretrain config file or built-in name (``'baseline/digits_noisy'``).
        checkpoint: model weights (mmengine Runner ``.pth`` or a state dict), read with
            :func:`labelwise.checkpoint.load_checkpoint`; ``None`` keeps the initial weights.
        data_root: replaces the test dataset's ``data_root``.
        ann_file: replaces the test dataset's ``ann_file`` (e.g. ``'noisy-symmetric-r0.2/train.txt'``).
        device: where to run the model.
        cfg_options: extra ``{'dotted.key': value}`` config overrides.

    Returns:
        dict with ``embed``, ``model`` (the built classifier), ``dataset``, ``ids`` (``img_path`` relative to ``data_root``),
        ``labels`` (the dataset's ``gt_label``, -1 where absent), ``collate_fn``, ``meta`` and
        ``fingerprint`` (the checkpoint's content fingerprint and a SHA-256 of the model, test
        pipeline and preprocessor settings: an existing feature file is reused only if they
        match).
    """
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    from labelwise.adapters.mmpretrain.runner import build_model, load_config, load_trained_weights, model_config
    from labelwise.plugins.cleannet.features import file_fingerprint

    options = dict(cfg_options or {})
    if ann_file is not None:
        options["test_dataloader.dataset.ann_file"] = str(ann_file)
    cfg = load_config(config, work_dir="unused", data_root=data_root, cfg_options=options)
    init_default_scope(cfg.get("default_scope", "mmpretrain"))
    if not cfg.get("test_dataloader"):
        raise ConfigError(f"{config}: no test_dataloader; its dataset and pipeline define what is embedded")
    model_cfg = model_config(cfg)  # with the config's data_preprocessor, as mmengine's Runner: normalise like training
    model = build_model(cfg)
    if checkpoint is not None:
        load_trained_weights(model, checkpoint, target=f"the model of {cfg.filename}")
    model.to(device).eval()
    dataset = DATASETS.build(cfg.test_dataloader.dataset)
    dataset.full_init()
    from labelwise.utils.keys import image_key

    root = getattr(dataset, "data_root", None) or None
    ids, labels = [], []
    for i in range(len(dataset)):
        info = dataset.get_data_info(i)
        ids.append(image_key(info["img_path"], root))
        label = np.asarray(info.get("gt_label", -1)).reshape(-1)
        labels.append(int(label[0]) if label.size == 1 else -1)

    def embed(batch):
        data = model.data_preprocessor(batch, False)
        feats = model.extract_feat(data["inputs"])
        feats = feats[-1] if isinstance(feats, (tuple, list)) else feats
        return feats.mean(dim=(2, 3)) if feats.ndim == 4 else feats.flatten(1)

    meta = {"framework": "mmpretrain", "config": str(config), "checkpoint": str(checkpoint),
            "ann_file": str(cfg.test_dataloader.dataset.get("ann_file")), "data_root": str(data_root)}
    settings = {"model": model_cfg.to_dict(), "pipeline": cfg.test_dataloader.dataset.get("pipeline"),
                "data_preprocessor": cfg.get("data_preprocessor"), "preprocessor_from_config": True}
    settings = json.dumps(settings, sort_keys=True, default=lambda v: v.to_dict() if hasattr(v, "to_dict") else str(v))
    fingerprint = {"framework": "mmpretrain", "config_sha256": hashlib.sha256(settings.encode()).hexdigest(),
                   "checkpoint": None if checkpoint is None else file_fingerprint(checkpoint)}
    return {"embed": embed, "dataset": dataset, "ids": ids, "labels": np.asarray(labels, dtype=np.int64),
            "collate_fn": pseudo_collate, "meta": meta, "fingerprint": fingerprint, "model": model}
