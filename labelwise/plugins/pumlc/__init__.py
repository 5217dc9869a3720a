"""Built-in plugin: PU-MLC (positive-unlabeled multi-label learning) and the partial-label baselines.

Yuan et al., "Positive Label Is All You Need for Multi-Label Classification", ICME 2024.
Core: :mod:`.loss` (the loss, the MixUp regulariser, partial-label BCE) and :mod:`.lgc` (the
Local-Global Convolution); mmpretrain glue in :mod:`labelwise.adapters.mmpretrain.pumlc`, timm
glue in :mod:`labelwise.adapters.timm.pumlc`.
"""
from __future__ import annotations

from labelwise.hookspecs import hookimpl
from labelwise.plugin_manager import MethodInfo, register_table, table_types

PAPER = "Yuan et al., Positive Label Is All You Need for Multi-Label Classification, ICME 2024"
#: What each method registers ({registry: class names of labelwise.adapters.mmpretrain.pumlc}).
PUMLC_TYPES = {"MODELS": ("PUMLCLoss", "PUMLCClassifier")}
LGC_TYPES = {"MODELS": ("PUMLCClassifier",)}
PARTIAL_BCE_TYPES = {"MODELS": ("PartialBCELoss", "PartialMultiLabelLinearClsHead", "PartialCSRAClsHead")}


@hookimpl
def labelwise_methods():
    return [
        MethodInfo(
            name="pu-mlc",
            summary="multi-label training from positive labels only: PU loss with adaptive temperature "
            "and re-balance, MixUp regulariser",
            kind="loss",
            paper=PAPER,
            types=table_types(PUMLC_TYPES),
        ),
        MethodInfo(
            name="pu-mlc-lgc",
            summary="local-global convolution: a global attention branch added to every 3x3 conv",
            kind="module",
            paper=PAPER,
            types=table_types(LGC_TYPES),
        ),
        MethodInfo(
            name="partial-bce",
            summary="BCE on partial labels (ignore unknowns / assume negative) and heads that pass "
            "1/0/-1 targets to the loss",
            kind="loss",
            paper="",
            types=table_types(PARTIAL_BCE_TYPES),
        ),
    ]


@hookimpl
def labelwise_register_mm_modules(registries):
    from labelwise.adapters.mmpretrain import pumlc

    register_table(registries, pumlc, PUMLC_TYPES, LGC_TYPES, PARTIAL_BCE_TYPES)
