"""timm integration: models for the digit scenes and (later) each method's task or criterion."""
from __future__ import annotations

from labelwise.adapters import require

require("timm", "timm")


def create_digits_model(name: str = "resnet18", *, num_classes: int = 10, width: int = 32, **kwargs):
    """``timm.create_model(name)`` narrowed to ``width`` base channels for 64 px digit scenes.

    For ``resnet18`` with ``width=32`` this is the same network as the mmpretrain configs'
    backbone (``ResNet(depth=18, stem_channels=64, base_channels=32)`` + a linear head, 2.8M
    parameters; timm's plain stem is always 64 channels wide). Always ``pretrained=False``:
    nothing is downloaded.
    """
    import timm

    if name.startswith("resnet"):
        kwargs.setdefault("channels", tuple(width * 2**i for i in range(4)))
    return timm.create_model(name, pretrained=False, num_classes=num_classes, **kwargs)
