"""ReLabel with timm: a timm classifier (name + checkpoint) as a dense annotator.

Training with LabelPooling in timm / plain PyTorch needs no timm-specific code: wrap the
dataset with :class:`labelwise.adapters.torch_labelpool.LabelPoolingDataset` to get
``(image, soft_target)`` pairs and train with ``timm.task.ClassificationTask(model,
timm.loss.SoftTargetCrossEntropy())``.
"""
from __future__ import annotations

from labelwise.errors import ConfigError


def build_annotator(name: str, checkpoint=None, *, num_classes: int | None = None,
                    model_kwargs: dict | None = None, device="cpu"):
    """``timm.create_model(name)`` with weights from ``checkpoint`` as a dense annotator.

    ``forward_features`` gives the last feature map, ``get_classifier()`` the final linear
    layer; :func:`~labelwise.plugins.labelpool.annotator.check_linear_head` refuses models
    whose ``forward_head`` does more than pool, drop out and apply it (ConvNeXt, MobileNetV3,
    vision transformers).

    Args:
        name: a timm model name, e.g. ``'resnet50'``. Never downloads (``pretrained=False``).
        checkpoint: weights read with :func:`labelwise.checkpoint.load_checkpoint`
            (``None``: the random initialisation, for tests).
        num_classes: classes of the classifier; default: read from the checkpoint's
            classifier weight.
        model_kwargs: extra ``timm.create_model`` arguments (e.g. ``{"channels": [32, 64, 128,
            256]}`` for labelwise's narrow digit-scenes ResNet).
        device: where to put the model.

    Returns:
        ``(DenseClassifier, info)``; ``info`` has ``mean``, ``std`` (0..255 units, from the
        model's pretrained config), ``bgr`` (False) and ``num_classes``.
    """
    import timm
    import torch

    from labelwise.checkpoint import extract_state_dict, load_checkpoint
    from labelwise.checkpoint import load_weights
    from labelwise.plugins.labelpool.annotator import DenseClassifier, check_linear_head

    state = None
    if checkpoint is not None:
        state = extract_state_dict(load_checkpoint(checkpoint))
    kwargs = dict(model_kwargs or {})
    if num_classes is None and state is not None:
        num_classes = _classifier_rows(name, state, kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"timm cannot create model {name!r} with {kwargs}: {exc}") from exc
    if state is not None:
        load_weights(model, state, checkpoint=checkpoint, target=f"timm model {name!r} with {kwargs}")
    model.to(device).eval()
    classifier = model.get_classifier()
    if not isinstance(classifier, (torch.nn.Linear, torch.nn.Conv2d)):
        raise ConfigError(f"timm model {name!r} has a {type(classifier).__name__} classifier; "
                          "ReLabel needs a linear final layer (num_classes > 0)")
    check_linear_head(model.forward_head, classifier, channels=model.num_features,
                      name=f"timm model {name!r}")

    class _Features(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model.forward_features(x)

    cfg = model.pretrained_cfg or {}
    info = {"mean": [255.0 * m for m in cfg.get("mean", (0.485, 0.456, 0.406))],
            "std": [255.0 * s for s in cfg.get("std", (0.229, 0.224, 0.225))],
            "bgr": False, "num_classes": model.num_classes}
    return DenseClassifier(_Features(model), classifier).eval(), info


def _classifier_rows(name, state, kwargs) -> int:
    import timm

    probe = timm.create_model(name, pretrained=False, **{**kwargs, "num_classes": 1})
    weight_name = _classifier_weight_name(probe)
    if weight_name not in state:
        raise ConfigError(f"checkpoint has no {weight_name!r}: is it a {name!r} model? "
                          "(pass num_classes to skip reading it)")
    return int(state[weight_name].shape[0])


def _classifier_weight_name(model) -> str:
    classifier = model.get_classifier()
    for module_name, module in model.named_modules():
        if module is classifier:
            return f"{module_name}.weight"
    raise ConfigError(f"cannot locate the classifier of {type(model).__name__}")
