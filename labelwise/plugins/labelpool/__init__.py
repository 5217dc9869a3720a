"""Built-in plugin: ReLabel + LabelPooling (Yun et al., CVPR 2021).

Hook implementations only; the method lives in the framework-free modules of this package
(:mod:`.pooling`, :mod:`.store`, :mod:`.reference`, :mod:`.annotator`, :mod:`.relabel`) and in
the adapters ``labelwise.adapters.mmpretrain.labelpool``, ``labelwise.adapters.timm.labelpool``
and ``labelwise.adapters.torch_labelpool``. See ``docs/methods/labelpool.md``.
"""
from __future__ import annotations

from labelwise.hookspecs import hookimpl
from labelwise.plugin_manager import MethodInfo, register_table, table_types

PAPER = ("Yun et al., Re-labeling ImageNet: from Single to Multi-Labels, from Global to "
         "Localized Labels, CVPR 2021")
#: What the plugin registers ({registry: class names of labelwise.adapters.mmpretrain.labelpool}).
MM_TYPES = {"TRANSFORMS": ("RandomResizedCropWithBox", "LabelPooling")}


@hookimpl
def labelwise_methods():
    return [
        MethodInfo(
            name="labelpool",
            summary="ReLabel: dense top-k label maps from a machine annotator; LabelPooling: "
                    "the soft target of each random crop pooled from its map",
            kind="transform",
            paper=PAPER,
            types=table_types(MM_TYPES),
        ),
    ]


@hookimpl
def labelwise_register_mm_modules(registries):
    from labelwise.adapters.mmpretrain import labelpool

    register_table(registries, labelpool, MM_TYPES)


@hookimpl
def labelwise_add_commands(subparsers):
    from labelwise.plugins.labelpool import cli

    cli.add_commands(subparsers)
