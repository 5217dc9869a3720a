"""labelwise: learning from imperfect labels, as plugins for mmpretrain, timm and PyTorch.

The public API is small and cheap to import (no mmengine, mmpretrain or timm):

* :data:`hookimpl` marks a plugin's hook implementations;
* :func:`get_plugin_manager` returns a fresh :class:`pluggy.PluginManager` with the built-in
  and installed third-party plugins;
* :func:`list_methods` lists the methods those plugins declare.

mmpretrain users add ``custom_imports=dict(imports=['labelwise'])`` to a config and then
use ``type='labelwise.<Name>'``; the mmengine registries live in :mod:`labelwise.registry`
and are only imported when mmengine asks for the ``labelwise`` scope.
"""
from labelwise.errors import LabelwiseError
from labelwise.hookspecs import hookimpl
from labelwise.plugin_manager import MethodInfo, get_plugin_manager, list_methods

__version__ = "0.1.0"

__all__ = [
    "LabelwiseError",
    "MethodInfo",
    "__version__",
    "get_plugin_manager",
    "hookimpl",
    "list_methods",
]

# custom_imports=dict(imports=['labelwise']) in a config run by mmengine: mmengine then reads
# its checkpoints through labelwise's safe loader. Nothing happens if mmengine is not loaded
# (importing labelwise never imports it; see labelwise.adapters.mmengine_checkpoint).
from labelwise.adapters.mmengine_checkpoint import install_if_mmengine_loaded as _install  # noqa: E402

_install()
