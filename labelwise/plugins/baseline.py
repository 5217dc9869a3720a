"""Built-in plugin: partial-label datasets for mmpretrain and the ``labelwise train`` command."""
from __future__ import annotations

from labelwise.hookspecs import hookimpl
from labelwise.plugin_manager import MethodInfo


@hookimpl
def labelwise_methods():
    return [
        MethodInfo(
            name="partial-labels",
            summary="multi-label dataset keeping unknown labels (1/0/-1) through the pipeline",
            kind="dataset",
            paper="",
            types=("labelwise.PartialMultiLabelDataset",),
        ),
    ]


@hookimpl
def labelwise_register_mm_modules(registries):
    from labelwise.adapters.mmpretrain.datasets import PartialMultiLabelDataset

    registries.DATASETS.register_module(module=PartialMultiLabelDataset)
