"""Built-in plugin: CFT (category-wise fine-tuning of the final layer on known labels).

Only the pluggy hooks live here; the framework-free core is in this package's modules
(:mod:`~labelwise.plugins.cft.calibrate` is the entry point), the mmengine hook in
:mod:`labelwise.adapters.mmpretrain.cft` and the timm path in :mod:`labelwise.adapters.timm.cft`.
"""
from __future__ import annotations

from labelwise.hookspecs import hookimpl
from labelwise.plugin_manager import MethodInfo, register_table, table_types

PAPER = ("Category-wise Fine-Tuning: Resisting Incorrect Pseudo-Labels in Multi-Label Image Classification with "
         "Partial Labels (ICONIP 2023), arXiv:2401.16991")
#: What the plugin registers ({registry: class names of labelwise.adapters.mmpretrain.cft}).
MM_TYPES = {"HOOKS": ("CFTHook",)}


@hookimpl
def labelwise_methods():
    return [
        MethodInfo(
            name="cft",
            summary="re-fit each category's final-layer row on known labels only (GA / BP), export a calibrated ONNX head",
            kind="hook",
            paper=PAPER,
            types=table_types(MM_TYPES),
        ),
    ]


@hookimpl
def labelwise_register_mm_modules(registries):
    from labelwise.adapters.mmpretrain import cft

    register_table(registries, cft, MM_TYPES)


@hookimpl
def labelwise_add_commands(subparsers):
    from labelwise.plugins.cft.cli import add_arguments, run

    parser = subparsers.add_parser(
        "cft", help="category-wise fine-tuning of a trained head on known labels (writes a calibrated ONNX head)",
        description="CFT re-fits each category's row of the final linear layer on the known labels only "
        "(genetic algorithm and/or Adam on the asymmetric loss), keeping a row only when its validation score "
        "strictly improves. Input: a .npz of features, labels and the head, or an mmpretrain config and "
        "checkpoint. Output in --out: cft_head.npz, cft_report.json, cft_scores.png, cft_reliability.png, "
        "cft_head.onnx (and cft_model.onnx, backbone + calibrated head, with --config ... --full-onnx). "
        "An interrupted run resumes from --out/cft_state.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)
