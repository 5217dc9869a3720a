"""The machine annotator of ReLabel: a classifier made fully convolutional.

A classifier ``logits = fc(mean_{i,j} F[:, i, j])`` becomes a dense one by applying ``fc`` as a
1x1 convolution to every location of the last feature map ``F (D, h, w)``:
``map[:, i, j] = fc(F[:, i, j])``. Since ``fc`` is affine, the mean of the dense map over all
locations equals the classifier's own logits -- but only when nothing but the average pool
(and dropout, identity in eval mode) sits between ``F`` and ``fc``. Models with layers after
the pool (ConvNeXt's LayerNorm, MobileNetV3's ``conv_head``, a ViT's token pooling) have no
such exact dense form; :func:`check_linear_head` detects them numerically and refuses them.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from labelwise.errors import ConfigError

_SUPPORTED = ("ReLabel supports heads that are only pooling (+ dropout) and a linear layer, e.g. "
              "ResNet, RegNet, EfficientNet; not ConvNeXt (LayerNorm after the pool) or "
              "MobileNetV3 (conv_head after the pool)")


class DenseClassifier(nn.Module):
    """``features -> 1x1 conv with the classifier's weights``: images to dense logit maps.

    Args:
        features: module mapping a normalised image batch ``(B, 3, S, S)`` to the last
            feature map ``(B, D, h, w)`` (before global pooling).
        classifier: the final ``nn.Linear(D, C)`` (or a 1x1 ``nn.Conv2d``).

    ``forward(images)`` returns float32 logits ``(B, C, h, w)``.
    """

    def __init__(self, features: nn.Module, classifier: nn.Module):
        super().__init__()
        self.features = features
        weight, bias = classifier_weights(classifier)
        self.register_buffer("weight", weight.detach().clone()[:, :, None, None])
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @property
    def num_classes(self) -> int:
        return self.weight.shape[0]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        fmap = self.features(images)
        if not isinstance(fmap, torch.Tensor) or fmap.dim() != 4:
            shape = tuple(fmap.shape) if isinstance(fmap, torch.Tensor) else type(fmap).__name__
            raise ConfigError(f"annotator features must be a (B, D, h, w) map, got {shape}")
        return nn.functional.conv2d(fmap.float(), self.weight.float(),
                                    None if self.bias is None else self.bias.float())


def classifier_weights(classifier: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(weight (C, D), bias (C,) or None)`` of a linear or 1x1-conv classifier."""
    if isinstance(classifier, nn.Linear):
        return classifier.weight, classifier.bias
    if isinstance(classifier, nn.Conv2d) and classifier.kernel_size == (1, 1) and classifier.groups == 1:
        return classifier.weight.flatten(1), classifier.bias
    raise ConfigError(
        f"the annotator's final layer is a {type(classifier).__name__}; ReLabel needs an "
        "nn.Linear (or 1x1 nn.Conv2d) classifier to apply as a 1x1 convolution")


def check_linear_head(
    pooled_head: Callable[[torch.Tensor], torch.Tensor],
    classifier: nn.Module,
    *,
    channels: int,
    name: str = "model",
    generator: torch.Generator | None = None,
    tol: float = 1e-4,
) -> None:
    """Refuse a model whose head is not "global average pool, then the classifier".

    Feeds a random feature map through the model's own head and through
    ``classifier(mean over locations)``; if they differ, dense maps would not be the model's
    predictions.

    Args:
        pooled_head: the model's head on a feature map ``(B, D, h, w) -> (B, C)`` (in eval
            mode), e.g. timm's ``model.forward_head``.
        classifier: the final linear layer.
        channels: ``D``, the channels of the last feature map (a classifier taking another
            width means layers follow the pool).
        name: the model's name for the message.
        generator: randomness of the probe features (default: a fixed seed).
        tol: allowed max abs difference relative to the logits' scale.

    Raises:
        ConfigError: the head does more than average pooling before the classifier (the
            message says by how much the two differ).
    """
    weight, bias = classifier_weights(classifier)
    if channels != weight.shape[1]:
        raise ConfigError(
            f"{name}: layers follow the global pool (the feature map has {channels} channels, "
            f"the classifier takes {weight.shape[1]}), so a 1x1-conv dense map cannot be made. "
            + _SUPPORTED)
    if generator is None:
        generator = torch.Generator().manual_seed(0)
    probe = torch.randn(2, channels, 3, 4, generator=generator).to(weight)
    with torch.no_grad():
        try:
            expected = pooled_head(probe)
        except Exception as exc:  # a head that cannot take a plain feature map
            raise ConfigError(f"{name}: its head does not accept a (B, {channels}, h, w) feature "
                              f"map ({type(exc).__name__}: {exc}); ReLabel cannot use it") from exc
        dense = nn.functional.linear(probe.mean((2, 3)), weight, bias)
    if not isinstance(expected, torch.Tensor) or expected.shape != dense.shape:
        raise ConfigError(f"{name}: its head returned {getattr(expected, 'shape', type(expected))}, "
                          f"expected logits of shape {tuple(dense.shape)}")
    gap = (expected - dense).abs().max().item()
    if gap > tol * max(1.0, dense.abs().max().item()):
        raise ConfigError(
            f"{name}: layers follow the global pool (its head differs from 'average pool + final "
            f"linear layer' by up to {gap:.3g} on a probe), so a 1x1-conv dense map would not be "
            "the model's prediction. " + _SUPPORTED)


def topk_maps(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k per location of dense logits ``(B, C, h, w)``.

    Returns:
        ``(scores (B, k, h, w) float32, ids (B, k, h, w) int64)``, scores in descending order.
    """
    if not 1 <= k <= logits.shape[1]:
        raise ConfigError(f"k must be in [1, {logits.shape[1]}] (the number of classes), got {k}")
    scores, ids = logits.float().topk(k, dim=1)
    return scores, ids
