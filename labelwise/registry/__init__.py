"""labelwise's mmengine registries (scope ``labelwise``), children of mmpretrain's.

With ``custom_imports=dict(imports=['labelwise'])`` in an mmpretrain config (or with nothing at
all), ``type='labelwise.Name'`` builds: mmengine imports this module when it first meets the
``labelwise`` scope, finds the child registry below, and the registry's ``locations`` import
:mod:`labelwise.registry.populate`, which asks every plugin to register its classes through
the ``labelwise_register_mm_modules`` hook.

This module imports mmengine and mmpretrain, so nothing in :mod:`labelwise` imports it at
package import time: the pluggy core lives in :mod:`labelwise.hookspecs` and
:mod:`labelwise.plugin_manager`. Keep ``default_scope='mmpretrain'`` in configs; unprefixed
names are looked up in mmpretrain's registries, which do not search their children.
"""
import types

from mmengine.registry import Registry
from mmpretrain import registry as _mmpretrain

from labelwise.adapters.mmengine_checkpoint import install_safe_checkpoint_loader

install_safe_checkpoint_loader()

_LOCATIONS = ["labelwise.registry.populate"]


def _child(parent: Registry) -> Registry:
    return Registry(parent.name, parent=parent, scope="labelwise", locations=_LOCATIONS)


MODELS = _child(_mmpretrain.MODELS)
MODEL_WRAPPERS = _child(_mmpretrain.MODEL_WRAPPERS)
DATASETS = _child(_mmpretrain.DATASETS)
DATA_SAMPLERS = _child(_mmpretrain.DATA_SAMPLERS)
TRANSFORMS = _child(_mmpretrain.TRANSFORMS)
HOOKS = _child(_mmpretrain.HOOKS)
METRICS = _child(_mmpretrain.METRICS)

#: What ``labelwise_register_mm_modules(registries=...)`` receives.
REGISTRIES = types.SimpleNamespace(
    MODELS=MODELS,
    MODEL_WRAPPERS=MODEL_WRAPPERS,
    DATASETS=DATASETS,
    DATA_SAMPLERS=DATA_SAMPLERS,
    TRANSFORMS=TRANSFORMS,
    HOOKS=HOOKS,
    METRICS=METRICS,
)


def register_plugin_modules(pm=None) -> None:
    """Ask every plugin of ``pm`` to register its classes into :data:`REGISTRIES`.

    Safe to call more than once: a class already registered under its name is skipped; a
    *different* class under a taken name raises ``KeyError`` naming it (mmengine's rule).

    Args:
        pm: a plugin manager; a fresh :func:`labelwise.get_plugin_manager` if ``None``.
    """
    from labelwise.plugin_manager import call_each, get_plugin_manager

    pm = get_plugin_manager() if pm is None else pm
    for _ in call_each(pm, "labelwise_register_mm_modules", registries=_IdempotentRegistries()):
        pass


class _IdempotentRegistry:
    """Wraps a Registry so registering the same class twice is a no-op."""

    def __init__(self, registry: Registry):
        self._registry = registry

    def register_module(self, name=None, force=False, module=None):
        if module is None:
            return lambda cls: self.register_module(name=name, force=force, module=cls) or cls
        key = name or module.__name__
        if not force and self._registry._module_dict.get(key) is module:
            return module
        return self._registry.register_module(name=name, force=force, module=module)

    def __getattr__(self, item):
        return getattr(self._registry, item)


class _IdempotentRegistries(types.SimpleNamespace):
    def __init__(self):
        super().__init__(**{k: _IdempotentRegistry(v) for k, v in vars(REGISTRIES).items()})
