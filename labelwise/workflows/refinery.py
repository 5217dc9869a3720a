"""Label Refinery workflows over mmpretrain: chained generations and the offline label store.

* :func:`train_generations` (``labelwise refine``): generation t+1 trained with generation t as
  its online refinery (:class:`labelwise.adapters.mmpretrain.refinery.RefineryDataPreprocessor`).
* :func:`build_refined_label_store` (``labelwise refine-store``): the refinery's top-k labels of
  every training image, for the offline mode's ``labelwise.LoadRefinedLabels``.
"""
from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

from mmpretrain.models.utils.data_preprocessor import ClsDataPreprocessor

from labelwise.adapters.mmpretrain.refinery import _SOURCES, build_refinery
from labelwise.errors import ConfigError, DataError
from labelwise.utils.keys import image_key

__all__ = ["build_refined_label_store", "train_generations"]


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

    # absolute paths: each generation's dumped config.py names the previous generation's
    # config and checkpoint, and must resolve from any working directory
    work_dir = Path(work_dir).resolve()
    if data_root is not None:
        data_root = str(Path(data_root).resolve())
    if first_checkpoint is not None:
        first_checkpoint = Path(first_checkpoint).resolve()

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
    ids = [image_key(dataset.get_data_info(i)["img_path"], dataset.data_root or None) for i in range(len(dataset))]

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
