"""mmpretrain / mmengine integration.

Importing this package imports mmpretrain and installs the safe checkpoint loader into mmengine. Classes here are registered into the ``labelwise``
mmengine registries by the built-in plugins (``labelwise_register_mm_modules``), so configs
refer to them as ``type='labelwise.<ClassName>'``.
"""
from labelwise.adapters import require

require("mmpretrain", "mm")

from labelwise.adapters.mmengine_checkpoint import install_safe_checkpoint_loader  # noqa: E402

install_safe_checkpoint_loader()  # every labelwise path that runs mmengine imports this package

from labelwise.adapters.mmpretrain.datasets import PartialMultiLabelDataset  # noqa: E402

__all__ = ["PartialMultiLabelDataset"]
