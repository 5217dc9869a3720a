"""Built-in plugin: PU-MLC (positive-unlabeled multi-label learning) and the partial-label baselines.

Yuan et al., "Positive Label Is All You Need for Multi-Label Classification", ICME 2024.
Core: :mod:`.loss` (the loss, the MixUp regulariser, partial-label BCE) and :mod:`.lgc` (the
Local-Global Convolution); mmpretrain glue in :mod:`labelwise.adapters.mmpretrain.pumlc`, timm
glue in :mod:`labelwise.adapters.timm.pumlc`.
"""
from __future__ import annotations

from labelwise.hookspecs import hookimpl
from labelwise.plugin_manager import MethodInfo

PAPER = "Yuan et al., Positive Label Is All You Need for Multi-Label Classification, ICME 2024"
MM_TYPES = ("PUMLCLoss", "PartialBCELoss", "PartialMultiLabelLinearClsHead", "PartialCSRAClsHead",
            "PUMLCClassifier")


@hookimpl
def labelwise_methods():
    return [
        MethodInfo(
            name="pu-mlc",
            summary="multi-label training from positive labels only: PU loss with adaptive temperature "
            "and re-balance, MixUp regulariser",
            kind="loss",
            paper=PAPER,
            types=("labelwise.PUMLCLoss", "labelwise.PUMLCClassifier"),
        ),
        MethodInfo(
            name="pu-mlc-lgc",
            summary="local-global convolution: a global attention branch added to every 3x3 conv",
            kind="module",
            paper=PAPER,
            types=("labelwise.PUMLCClassifier",),
        ),
        MethodInfo(
            name="partial-bce",
            summary="BCE on partial labels (ignore unknowns / assume negative) and heads that pass "
            "1/0/-1 targets to the loss",
            kind="loss",
            paper="",
            types=("labelwise.PartialBCELoss", "labelwise.PartialMultiLabelLinearClsHead",
                   "labelwise.PartialCSRAClsHead"),
        ),
    ]


@hookimpl
def labelwise_register_mm_modules(registries):
    from labelwise.adapters.mmpretrain import pumlc

    for name in MM_TYPES:
        registries.MODELS.register_module(module=getattr(pumlc, name))
