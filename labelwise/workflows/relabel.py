"""ReLabel a dataset split: a machine annotator's top-k label maps of every image, in a store."""
from __future__ import annotations

from labelwise.errors import ConfigError

__all__ = ["relabel_split"]


def relabel_split(out, *, data_root, checkpoint, config=None, timm_model=None, ann_file=None, model_kwargs=None,
                  input_size: int | None = None, mean=None, std=None, topk: int = 5, batch_size: int = 64,
                  shard_size: int | None = None, num_workers: int = 0, device: str = "cpu",
                  overwrite: bool = False, progress: bool = True) -> dict:
    """Write the label maps of the images of ``ann_file`` (or every image under ``data_root``) to ``out``.

    What ``labelwise relabel`` runs. The annotator is an mmpretrain classifier (``config`` +
    ``checkpoint``) or a timm one (``timm_model`` + ``checkpoint``); each image is resized whole
    to ``input_size`` and the final linear layer is applied to every location of the last
    feature map. Under ``torchrun`` the ranks share the images. An interrupted run resumes.

    Args:
        out: the store folder.
        data_root: dataset root; store keys are image paths relative to it.
        checkpoint: the annotator's weights (read with the safe loader).
        config / timm_model: exactly one: the mmpretrain config (file or built-in name) or the
            timm model name of the annotator.
        ann_file: annotation file relative to ``data_root`` (default: every image).
        model_kwargs: timm only: extra ``timm.create_model`` arguments.
        input_size: side of the square input (required for mmpretrain; timm default: the
            model's pretrained input size).
        mean, std: per-channel normalisation in 0..255, in the annotator's channel order
            (default: the config's data preprocessor / the timm model's pretrained config).
        topk, batch_size, shard_size, num_workers, device, overwrite, progress: as ``labelwise relabel``.

    Returns:
        :func:`labelwise.plugins.labelpool.relabel.relabel`'s summary (``store``, ``images``,
        ``num_classes``, ``k``, ``map_size``, ``complete``, ...) plus ``input_size`` and ``rank``.

    Raises:
        ConfigError: neither or both of ``config`` and ``timm_model``; no ``input_size`` for
            an mmpretrain annotator.
    """
    from labelwise.adapters import require
    from labelwise.plugins.labelpool.relabel import WholeImageLoader, annotator_meta, read_image_list, relabel
    from labelwise.utils.distributed import join_process_group

    if (config is None) == (timm_model is None):
        raise ConfigError("give exactly one annotator: an mmpretrain config or a timm model name")
    keys = read_image_list(data_root, ann_file)
    if config is not None:
        require("mmpretrain", "mm")
        from labelwise.adapters.mmpretrain.labelpool import build_annotator

        if input_size is None:
            raise ConfigError("--input-size is required for an mmpretrain annotator "
                              "(e.g. 224 for ImageNet models; the training crop size of the config)")
        annotator, info = build_annotator(config, checkpoint, device=device)
        source = {"framework": "mmpretrain", "config": str(config)}
    else:
        require("timm", "timm")
        from labelwise.adapters.timm.labelpool import build_annotator

        annotator, info = build_annotator(timm_model, checkpoint, model_kwargs=model_kwargs, device=device)
        source = {"framework": "timm", "model": timm_model, "model_kwargs": model_kwargs}
        input_size = input_size or int(annotator.features.model.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
    mean, std = mean or info["mean"], std or info["std"]
    loader = WholeImageLoader(data_root, size=input_size, mean=mean, std=std, bgr=info["bgr"])
    meta = annotator_meta(source, checkpoint, mean=mean, std=std, bgr=info["bgr"])
    group = join_process_group(device)
    try:
        result = relabel(annotator, keys, loader, out, input_size=input_size, k=topk, batch_size=batch_size,
                         shard_size=shard_size, meta=meta, overwrite=overwrite, num_workers=num_workers,
                         device=device, rank=group.rank, world_size=group.world_size, barrier=group.barrier,
                         progress=progress)
    finally:
        group.close()
    return {**result, "input_size": int(input_size), "rank": group.rank}
