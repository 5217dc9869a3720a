"""Built-in plugin: ReLabel + LabelPooling (Yun et al., CVPR 2021).

Hook implementations only; the method lives in the framework-free modules of this package
(:mod:`.pooling`, :mod:`.store`, :mod:`.reference`, :mod:`.annotator`, :mod:`.relabel`) and in
the adapters ``labelwise.adapters.mmpretrain.labelpool``, ``labelwise.adapters.timm.labelpool``
and ``labelwise.adapters.torch_labelpool``. See ``docs/methods/labelpool.md``.
"""
from __future__ import annotations

from labelwise.hookspecs import hookimpl
from labelwise.plugin_manager import MethodInfo

PAPER = ("Yun et al., Re-labeling ImageNet: from Single to Multi-Labels, from Global to "
         "Localized Labels, CVPR 2021")


@hookimpl
def labelwise_methods():
    return [
        MethodInfo(
            name="labelpool",
            summary="ReLabel: dense top-k label maps from a machine annotator; LabelPooling: "
                    "the soft target of each random crop pooled from its map",
            kind="transform",
            paper=PAPER,
            types=("labelwise.RandomResizedCropWithBox", "labelwise.LabelPooling"),
        ),
    ]


@hookimpl
def labelwise_register_mm_modules(registries):
    from labelwise.adapters.mmpretrain.labelpool import LabelPooling, RandomResizedCropWithBox

    registries.TRANSFORMS.register_module(module=RandomResizedCropWithBox)
    registries.TRANSFORMS.register_module(module=LabelPooling)


@hookimpl
def labelwise_add_commands(subparsers):
    from labelwise.plugins.labelpool import cli

    cli.add_commands(subparsers)
