"""CFT for mmpretrain: a post-training hook and calibration of an already-trained checkpoint.

Features are the classifier's ``head.pre_logits(extract_feat(inputs))`` in eval mode, computed
with the config's **test** pipeline (no augmentation) on a training split (CFT's fitting data)
and a validation split (selection). The final layer is ``head.fc`` (an ``nn.Linear``, as in
``LinearClsHead`` and ``MultiLabelLinearClsHead``); :class:`CFTHook` checks for it before
training starts. Labels: a
:class:`~labelwise.adapters.mmpretrain.datasets.PartialMultiLabelDataset` gives 1 / 0 / -1;
any other multi-label dataset gives fully known labels (its ``gt_label`` positives, the rest
negatives).
"""
from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from mmengine.hooks import Hook
from torch import nn

from labelwise.errors import ConfigError
from labelwise.plugins.cft.options import CFTOptions

__all__ = ["CFTHook", "calibrate_checkpoint", "calibrate_model", "extract_features"]

CALIBRATED_CHECKPOINT = "calibrated.pth"
FULL_ONNX = "cft_model.onnx"


class CFTHook(Hook):
    """Run CFT after training and write the calibrated head (``type='labelwise.CFTHook'``).

    Before training starts the hook checks that CFT will be able to run: the model (the EMA
    copy under an ``EMAHook``) has a re-fittable final layer ``model.head.fc`` (an
    ``nn.Linear`` on the pooled feature vector) and the config gives the train and validation
    datasets; otherwise it raises :class:`~labelwise.errors.ConfigError` then, not after
    training.

    After ``runner.train()`` finishes, features of ``train_ann`` and ``val_ann`` are extracted
    with the test pipeline, CFT calibrates ``model.head.fc``, and rank 0 writes into
    ``out_dir``: ``calibrated.pth`` (the model's state dict with the calibrated layer),
    ``cft_head.npz``, ``cft_report.json``, ``cft_scores.png``, ``cft_reliability.png`` and
    ``cft_head.onnx`` (plus ``cft_model.onnx``, backbone + calibrated head, with
    ``full_onnx=True``). Under a distributed launcher, feature extraction and categories are
    split over the ranks.

    Provenance: the calibrated weights are the trained ones in memory, which no single file
    holds, so the report, the ONNX metadata and ``calibrated.pth`` carry no ``source_sha256``
    (``source`` says where training started). Only when the train loop ran no iteration (a
    resumed run that had already finished) are they the weights of the checkpoint the runner
    loaded (``load_from`` or the resumed checkpoint); then ``source`` is that file and
    ``source_sha256`` its SHA-256.

    Under an ``EMAHook`` (mmengine's or mmpretrain's) the trained model is the EMA copy: the
    hook saves its weights as the checkpoints' ``state_dict`` and swaps them in before every
    validation / test epoch. CFT then takes features and the layer from
    ``hook.ema_model.module``, and ``calibrated.pth`` holds the EMA weights. With ``apply=True``
    the calibrated layer goes into the EMA model, and the EMA model's whole state (weights and
    buffers, calibrated layer included) is copied into the raw model: ``runner.test()`` calls
    ``before_run``, where ``EMAHook`` rebuilds its EMA copy from the raw model, so only then
    does the test evaluate exactly ``calibrated.pth`` (the raw, non-averaged weights are
    replaced; the last checkpoint keeps them as ``ema_state_dict``). mmpretrain's
    ``EMAHook(evaluate_on_ema=False)`` evaluates the raw model, which is then the one
    calibrated.

    Example::

        custom_hooks = [dict(type='labelwise.CFTHook', val_ann='partial-p0.3/val.json',
                             options=dict(optimizer='best', epochs=5000, early_stopping=300))]

    Args:
        train_ann: annotation file (relative to the dataset's ``data_root``) of CFT's
            training split. Default ``None``: the train dataloader's dataset.
        val_ann: annotation file of the validation split. Default ``None``: the val
            dataloader's dataset, else an error (CFT needs a validation split).
        options: keyword arguments of :class:`~labelwise.plugins.cft.options.CFTOptions`
            (default: the reference schedule).
        out_dir: output folder. Default ``None``: ``<work_dir>/cft``.
        apply: also load the calibrated layer into the runner's model (so a following
            ``runner.test()`` evaluates it; under an ``EMAHook`` see above). Default False.
        onnx: export the calibrated head to ONNX. Default True.
        full_onnx: also export backbone + calibrated head as one graph. Default False.
        plot: write the PNG plots (scores, reliability diagram). Default True.
        batch_size: feature-extraction batch size. Default 64.
        progress: show progress bars. Default True.
    """

    priority = "LOW"

    def __init__(self, *, train_ann: str | None = None, val_ann: str | None = None, options: dict | None = None,
                 out_dir: str | None = None, apply: bool = False, onnx: bool = True, full_onnx: bool = False,
                 plot: bool = True, batch_size: int = 64, progress: bool = True):
        self.train_ann, self.val_ann = train_ann, val_ann
        self.options = CFTOptions(**(options or {}))
        self.out_dir, self.apply, self.onnx, self.full_onnx, self.plot = out_dir, apply, onnx, full_onnx, plot
        self.batch_size, self.progress = batch_size, progress
        self._start_iter, self._loaded_checkpoint = None, None

    def before_train(self, runner) -> None:
        """Fail before training when CFT could not run after it (no ``head.fc`` to re-fit, no datasets).

        Raises:
            ConfigError: naming the head's class, what CFT looks for and the heads that work;
                or the missing dataset.
        """
        model, ema = _runner_models(runner)
        try:
            _final_layer(ema if ema is not None else model)
        except ConfigError as exc:
            raise ConfigError(f"CFTHook (checked before training): {exc}") from None
        _dataset_cfg(runner.cfg, "train_dataloader", self.train_ann, what="train_ann")
        _dataset_cfg(runner.cfg, "val_dataloader", self.val_ann, what="val_ann")
        self._start_iter, self._loaded_checkpoint = runner.iter, _loaded_checkpoint(runner)

    def after_train(self, runner) -> None:
        from labelwise.utils.fingerprint import file_sha256

        cfg = runner.cfg
        train_ds = _dataset_cfg(cfg, "train_dataloader", self.train_ann, what="train_ann")
        val_ds = _dataset_cfg(cfg, "val_dataloader", self.val_ann, what="val_ann")
        out = Path(self.out_dir) if self.out_dir else Path(runner.work_dir) / "cft"
        model, ema = _runner_models(runner)
        if ema is not None:
            runner.logger.info("CFT: an EMAHook evaluates the EMA weights; calibrating the EMA model"
                               + (" and loading it, calibrated, into the runner's model" if self.apply else ""))
        checkpoint = self._loaded_checkpoint
        if checkpoint is not None and runner.iter == self._start_iter and Path(checkpoint).is_file():
            source, source_sha256 = checkpoint, file_sha256(checkpoint)  # no step taken: the file's weights
        else:  # trained in memory: no single file holds these weights
            source = "the runner's model after training" + (f" (started from {checkpoint})" if checkpoint else "")
            source_sha256 = None
        summary = calibrate_model(ema if ema is not None else model, cfg, train_ds, val_ds, out,
                                  options=self.options, apply=self.apply, onnx=self.onnx,
                                  full_onnx=self.full_onnx, plot=self.plot, batch_size=self.batch_size,
                                  progress=self.progress, source=source, source_sha256=source_sha256)
        if ema is not None and self.apply:
            # runner.test() rebuilds the EMA copy from the raw model (EMAHook.before_run)
            model.load_state_dict(ema.state_dict())
        runner.logger.info(f"CFT: mean validation {self.options.metric} {summary['mean_score_before']} -> "
                           f"{summary['mean_score_after']}; changed {summary['changed']}; wrote {out}")


def _runner_models(runner):
    """``(model, EMA model or None)`` of ``runner``: the model unwrapped from its DDP wrapper, and
    the EMA copy an ``EMAHook`` evaluates (the one CFT calibrates when there is one)."""
    model = runner.model.module if hasattr(runner.model, "module") else runner.model
    return model, _evaluated_ema_model(runner)


def _loaded_checkpoint(runner) -> str | None:
    """The checkpoint ``runner.train()`` loaded its weights from (``load_from``, or with ``resume``
    the given or the latest one in ``work_dir``), or None. Call it before training saves new ones."""
    load_from = getattr(runner, "_load_from", None)
    if getattr(runner, "_resume", False) and load_from is None:
        from mmengine.runner import find_latest_checkpoint

        load_from = find_latest_checkpoint(runner.work_dir)
    return str(load_from) if load_from else None


def _evaluated_ema_model(runner):
    """The EMA model an ``EMAHook`` of ``runner`` swaps in for testing, or None.

    mmengine's ``EMAHook`` always evaluates the EMA weights; mmpretrain's subclass does unless
    ``evaluate_on_ema=False``.
    """
    from mmengine.hooks import EMAHook

    for hook in runner.hooks:
        if isinstance(hook, EMAHook) and getattr(hook, "evaluate_on_ema", True):
            return hook.ema_model.module
    return None


def _dataset_cfg(cfg, loader_key: str, ann_file: str | None, *, what: str) -> dict:
    loader = cfg.get(loader_key)
    if not loader and loader_key == "val_dataloader" and ann_file:
        loader = cfg.get("train_dataloader")  # same dataset type (partial labels) and root, other file
    if not loader:
        raise ConfigError(f"{cfg.filename}: CFT needs {loader_key} to find its dataset, or {what}='split/file.json' "
                          "(read with the train dataset's type and data_root)")
    ds = copy.deepcopy(loader["dataset"])
    if ann_file is not None:
        ds["ann_file"] = ann_file
    test_pipeline = (cfg.get("test_dataloader") or {}).get("dataset", {}).get("pipeline") or cfg.get("test_pipeline")
    if test_pipeline is None:
        raise ConfigError(f"{cfg.filename}: CFT extracts features with the test pipeline; the config has none")
    ds["pipeline"] = copy.deepcopy(test_pipeline)
    return ds


def _labels_of(dataset) -> np.ndarray:
    if hasattr(dataset, "get_partial_labels"):
        return dataset.get_partial_labels()
    num_classes = len(dataset.metainfo["classes"])
    labels = np.zeros((len(dataset), num_classes), dtype=np.int8)
    for i in range(len(dataset)):
        labels[i, np.asarray(dataset.get_data_info(i)["gt_label"], dtype=np.int64)] = 1
    return labels


@torch.no_grad()
def extract_features(model, dataset_cfg: dict, *, batch_size: int = 64, num_workers: int = 0, progress: bool = True):
    """Features ``(N, D)`` (``head.pre_logits(extract_feat(x))``, eval mode) and labels ``(N, C)``.

    Under ``torch.distributed`` each rank extracts its share and every rank receives all rows,
    in dataset order.
    """
    from mmengine.dist import all_gather_object, get_dist_info
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner
    from tqdm.auto import tqdm

    init_default_scope("mmpretrain")
    loader = Runner.build_dataloader(dict(batch_size=batch_size, num_workers=num_workers,
                                          sampler=dict(type="DefaultSampler", shuffle=False), dataset=dataset_cfg))
    dataset = loader.dataset
    was_training = model.training
    model.eval()
    indices, chunks = [], []
    rank, _ = get_dist_info()
    for data in tqdm(loader, desc=f"cft features {Path(str(dataset_cfg.get('ann_file', ''))).name}",
                     disable=not progress or rank != 0, leave=False):
        data = model.data_preprocessor(data, False)
        chunks.append(model.head.pre_logits(model.extract_feat(data["inputs"])).float().cpu())
        indices.extend(int(s.sample_idx) for s in data["data_samples"])
    model.train(was_training)
    parts = all_gather_object((indices, torch.cat(chunks) if chunks else None))
    features = None
    for idx, feats in parts:
        if feats is None:
            continue
        if features is None:
            features = torch.empty(len(dataset), feats.shape[1])
        features[torch.as_tensor(idx)] = feats
    return features.numpy(), _labels_of(dataset)


#: Why a head without ``fc`` cannot be re-fitted, for the heads whose last step is known.
_NOT_LINEAR = {
    "CSRAClsHead": "its last step is class-specific residual attention over the spatial feature map, not one "
                   "linear layer, so it cannot be re-fitted as a linear head",
}


def _final_layer(model) -> nn.Linear:
    """The layer CFT re-fits: ``model.head.fc``, an ``nn.Linear`` on the pooled feature vector.

    The one lookup of both :meth:`CFTHook.before_train` and :func:`calibrate_model`.

    Raises:
        ConfigError: the model has none; the message names the head's class, what was looked
            for and which heads work.
    """
    head = getattr(model, "head", None)
    fc = getattr(head, "fc", None)
    if isinstance(fc, nn.Linear):
        return fc
    if head is None:
        found = f"{type(model).__name__} has no head"
    else:
        name = type(head).__name__
        found = (f"model.head is a {name}, whose fc is a {type(fc).__name__}" if fc is not None
                 else f"model.head is a {name}, which has no fc")
        if name in _NOT_LINEAR:
            found += f": {_NOT_LINEAR[name]}"
    raise ConfigError(f"CFT re-fits model.head.fc, an nn.Linear on the pooled feature vector, but {found}; use a "
                      "head whose last step is one nn.Linear (fc) on a pooled feature vector, such as LinearClsHead "
                      "or MultiLabelLinearClsHead")


def calibrate_model(model, cfg, train_dataset: dict, val_dataset: dict, out_dir, *, options: CFTOptions,
                    apply: bool = False, onnx: bool = True, full_onnx: bool = False, plot: bool = True,
                    batch_size: int = 64, progress: bool = True, source: str = "",
                    source_sha256: str | None = None) -> dict:
    """Extract features, run CFT, and (rank 0) write the outputs; return the run's summary.

    ``source_sha256`` is the SHA-256 of the single file the weights came from (a checkpoint);
    ``None`` when there is none (weights trained in memory): the key is then left out of the
    report, the ONNX metadata and ``calibrated.pth``'s ``meta``.
    """
    from labelwise.checkpoint import save_checkpoint
    from labelwise.utils.distributed import is_main_process
    from labelwise.workflows.cft import fit_and_write

    fc = _final_layer(model)
    device = fc.weight.device
    train_x, train_y = extract_features(model, train_dataset, batch_size=batch_size, progress=progress)
    val_x, val_y = extract_features(model, val_dataset, batch_size=batch_size, progress=progress)
    classes = list(_class_names(cfg, train_y.shape[1]))
    out = Path(out_dir)

    def full_export(result) -> dict:
        if not full_onnx:
            return {}
        return {"full_onnx_max_abs_diff": _export_full(model, result, out / FULL_ONNX, size=_image_size(val_dataset),
                                                       classes=classes, source=source,
                                                       source_sha256=source_sha256)}

    result = fit_and_write(train_x, train_y, val_x, val_y, fc.weight.detach().cpu(), fc.bias.detach().cpu(),
                           options=options, class_names=classes, out_dir=out, device=device, progress=progress,
                           source=source, source_sha256=source_sha256, onnx=onnx, plot=plot, before_write=full_export)
    if apply:
        with torch.no_grad():
            fc.weight.copy_(result.weight.to(device))
            fc.bias.copy_(result.bias.to(device))
    if is_main_process():
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        prefix = next(k for k, v in model.named_parameters() if v is fc.weight)[: -len("weight")]
        state[prefix + "weight"], state[prefix + "bias"] = result.weight.clone(), result.bias.clone()
        meta = {"cft": result.summary(), "source": source}
        if source_sha256:
            meta["source_sha256"] = source_sha256
        save_checkpoint({"state_dict": state, "meta": meta}, out / CALIBRATED_CHECKPOINT)
    return result.summary()


def _class_names(cfg, num_classes):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    for key in ("train_dataloader", "test_dataloader"):
        loader = cfg.get(key)
        classes = loader and loader["dataset"].get("metainfo", {}).get("classes")
        if classes:
            return [str(c) for c in classes]
    init_default_scope("mmpretrain")
    try:
        ds = DATASETS.build({**copy.deepcopy(cfg.train_dataloader["dataset"]), "lazy_init": True})
        classes = ds.metainfo.get("classes")
    except Exception:  # names are cosmetic: fall back to indices
        classes = None
    return [str(c) for c in classes] if classes and len(classes) == num_classes else [str(i) for i in range(num_classes)]


class _ImageToFeatures(nn.Module):
    """RGB images ``(B, 3, H, W)`` in 0..255 -> the model's preprocessing -> backbone, neck -> pre-logits.

    Reproduces ``ClsDataPreprocessor`` for an RGB input. mmpretrain loads images as BGR; with
    ``to_rgb=True`` the preprocessor flips them to RGB and then normalises, so ``mean`` / ``std``
    are in RGB order and the RGB input is normalised as is. With ``to_rgb=False`` the model was
    trained on BGR, with ``mean`` / ``std`` in BGR order: the input is flipped to BGR first
    (``bgr=True``), then normalised.

    Args:
        model: the classifier (``extract_feat``, ``head.pre_logits``).
        mean, std: the preprocessor's normalisation, in the order of the model's channels.
        bgr: the model takes BGR (flip the RGB input before normalising).
    """

    def __init__(self, model, mean, std, *, bgr: bool):
        super().__init__()
        self.model = model
        self.bgr = bool(bgr)
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images):
        if self.bgr:
            images = images[:, [2, 1, 0]]
        return self.model.head.pre_logits(self.model.extract_feat((images - self.mean) / self.std))


def _image_to_features(model) -> _ImageToFeatures:
    """A CPU copy of ``model`` behind its data preprocessor's normalisation and channel order."""
    pre = model.data_preprocessor
    mean = pre.mean.flatten().cpu() if getattr(pre, "mean", None) is not None else torch.zeros(3)
    std = pre.std.flatten().cpu() if getattr(pre, "std", None) is not None else torch.ones(3)
    # ClsDataPreprocessor keeps ``to_rgb``; mmengine's ImgDataPreprocessor ``_channel_conversion``
    to_rgb = getattr(pre, "to_rgb", getattr(pre, "_channel_conversion", False))
    return _ImageToFeatures(copy.deepcopy(model).cpu().eval(), mean, std, bgr=not to_rgb)


def _export_full(model, result, path, *, size, classes, source: str = "", source_sha256: str | None = None) -> float:
    """Export backbone + calibrated head as one graph taking RGB images ``(B, 3, *size)``.

    ``source_sha256`` goes into the metadata only when given (see :func:`head_metadata`).
    """
    from labelwise.plugins.cft.onnx_export import CalibratedHead, export_onnx, head_metadata, verify_onnx

    body = _image_to_features(model)
    module = CalibratedHead.from_result(result, body=body)
    generator = torch.Generator().manual_seed(result.options.seed)
    example = torch.rand(2, 3, *size, generator=generator) * 255
    order = "BGR" if body.bgr else "RGB"
    metadata = head_metadata(result, classes, source=str(source), source_sha256=source_sha256,
                             input_channel_order="RGB", model_channel_order=order,
                             inputs=f"images (batch, 3, {size[0]}, {size[1]}) float32 RGB in 0..255 (converted to "
                                    f"the model's {order} order and normalised inside)")
    export_onnx(module, path, example, metadata=metadata, input_name="images")
    return verify_onnx(path, module, torch.rand(4, 3, *size, generator=generator) * 255)


def _image_size(dataset_cfg) -> tuple[int, int]:
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    init_default_scope("mmpretrain")
    sample = DATASETS.build(copy.deepcopy(dataset_cfg))[0]
    return tuple(sample["inputs"].shape[-2:])


def calibrate_checkpoint(config, checkpoint, out_dir, *, options: CFTOptions | None = None, data_root=None,
                         train_ann: str | None = None, val_ann: str | None = None, device: str = "cpu",
                         onnx: bool = True, full_onnx: bool = False, plot: bool = True, batch_size: int = 64,
                         progress: bool = True) -> dict:
    """CFT for an already-trained mmpretrain model (what ``labelwise cft --config --checkpoint`` runs).

    Args:
        config: config file or built-in name; checkpoint: its trained weights (read with
            :func:`labelwise.checkpoint.load_checkpoint`, never unpickling code).
        out_dir: output folder (as :class:`CFTHook`, plus ``calibrated.pth``).
        data_root: replace the datasets' ``data_root``.
        train_ann, val_ann: as :class:`CFTHook`.
        device: where to extract features and run CFT.

    Returns:
        The run's summary (see :meth:`~labelwise.plugins.cft.calibrate.CFTResult.summary`).
    """
    from labelwise.adapters.mmpretrain.runner import build_trained_model
    from labelwise.utils.fingerprint import file_sha256

    model, cfg = build_trained_model(config, checkpoint, work_dir=out_dir, data_root=data_root)
    model.to(device)
    train_ds = _dataset_cfg(cfg, "train_dataloader", train_ann, what="--train-ann")
    val_ds = _dataset_cfg(cfg, "val_dataloader", val_ann, what="--val-ann")
    return calibrate_model(model, cfg, train_ds, val_ds, out_dir, options=options or CFTOptions(), onnx=onnx,
                           full_onnx=full_onnx, plot=plot, batch_size=batch_size, progress=progress,
                           source=str(checkpoint), source_sha256=file_sha256(checkpoint))
