"""Built-in plugin: CleanNet (Lee et al., CVPR 2018) -- learn label noise from a small verified
subset, score every sample, and weight the training data.

Only the pluggy hook implementations live here; nothing heavy is imported at module level.
The framework-free core: :mod:`.model` (the network), :mod:`.loss`, :mod:`.references`
(k-means reference sets), :mod:`.sampling`, :mod:`.fit` (training), :mod:`.scoring`,
:mod:`.store` (model files), :mod:`.scorefile` (per-sample score files), :mod:`.features`
(sharded feature extraction and feature files), :mod:`.weighting` (weighted cross-entropy and
dataset wrapper for plain PyTorch). mmpretrain glue: :mod:`labelwise.adapters.mmpretrain.cleannet`;
timm glue: :mod:`labelwise.adapters.timm.cleannet`.
"""
from __future__ import annotations

from labelwise.hookspecs import hookimpl
from labelwise.plugin_manager import MethodInfo, register_table, table_types

PAPER = ("Lee et al., CleanNet: Transfer Learning for Scalable Image Classifier Training with Label Noise, "
         "CVPR 2018")
MM_TYPES = {
    "TRANSFORMS": ("CleanNetWeights",),
    "DATASETS": ("CleanNetSubset",),
    "MODELS": ("WeightedLinearClsHead", "WeightedClsDataPreprocessor"),
}


@hookimpl
def labelwise_methods():
    return [
        MethodInfo(
            name="cleannet",
            summary="learn label noise from a small verified subset; score every sample and weight training",
            kind="transform",
            paper=PAPER,
            types=table_types(MM_TYPES),
        ),
    ]


@hookimpl
def labelwise_register_mm_modules(registries):
    from labelwise.adapters.mmpretrain import cleannet

    register_table(registries, cleannet, MM_TYPES)


@hookimpl
def labelwise_add_commands(subparsers):
    from labelwise.plugins.cleannet.cli import add_commands

    add_commands(subparsers)
