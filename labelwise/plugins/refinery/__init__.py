"""Built-in plugin: Label Refinery (Bagherinezhad et al., 2018).

Hook implementations only; the method is in :mod:`.loss`, :mod:`.teacher`, :mod:`.store` and
:mod:`.chain` (plain torch / numpy) and the framework glue in
:mod:`labelwise.adapters.mmpretrain.refinery` and :mod:`labelwise.adapters.timm.refinery`.
"""
from __future__ import annotations

from labelwise.hookspecs import hookimpl
from labelwise.plugin_manager import MethodInfo, register_table, table_types

PAPER = ("Bagherinezhad, Horton, Rastegari, Farhadi: Label Refinery: Improving ImageNet "
         "Classification through Label Progression, arXiv:1805.02641, 2018")
#: What the plugin registers ({registry: class names of labelwise.adapters.mmpretrain.refinery}).
MM_TYPES = {"MODELS": ("RefineryDataPreprocessor",), "TRANSFORMS": ("LoadRefinedLabels",)}


@hookimpl
def labelwise_methods():
    return [
        MethodInfo(
            name="refinery",
            summary="train on soft targets a frozen refinery computes on each augmented batch; "
                    "chain generations",
            kind="module",
            paper=PAPER,
            types=table_types(MM_TYPES),
        ),
    ]


@hookimpl
def labelwise_register_mm_modules(registries):
    from labelwise.adapters.mmpretrain import refinery

    register_table(registries, refinery, MM_TYPES)


@hookimpl
def labelwise_add_commands(subparsers):
    refine = subparsers.add_parser(
        "refine", help="Label Refinery: chain generations, each refined by the previous one",
        description="Train generation 1 of an mmpretrain config on the ground truth, then each "
        "generation t+1 from scratch with generation t's final checkpoint as its frozen refinery "
        "(online soft targets on every augmented batch). Each generation keeps its checkpoint, "
        "config and test metrics in WORK_DIR/gen{t}/; WORK_DIR/generations.json lists them. "
        "Finished generations are reused, so an interrupted run resumes.",
    )
    refine.add_argument("--config", default="refinery/digits_single",
                        help="config file or built-in name whose data_preprocessor is "
                        "labelwise.RefineryDataPreprocessor (default: refinery/digits_single)")
    refine.add_argument("--generations", type=int, default=3, help="number of generations (default: 3)")
    refine.add_argument("--work-dir", required=True, help="output folder")
    refine.add_argument("--data-root", default=None,
                        help="dataset root (default: the config's, i.e. $LABELWISE_DATA_ROOT or data/digits)")
    refine.add_argument("--seed", type=int, default=None, help="default: the config's")
    refine.add_argument("--epochs", type=int, default=None, help="epochs per generation (default: the config's)")
    refine.add_argument("--first-checkpoint", default=None,
                        help="weights of an existing generation 1 (same model as the config) to start from")
    refine.add_argument("--cfg-options", nargs="+", default=None, metavar="KEY=VALUE",
                        help="config overrides applied to every generation, as tools/train.py takes them")
    refine.set_defaults(func=_run_refine)

    store = subparsers.add_parser(
        "refine-store", help="Label Refinery offline mode: precompute top-k soft labels per image",
        description="Run a trained model (the refinery) once over every training image of its "
        "mmpretrain config, through the config's test pipeline (no random crop), and store the "
        "top-k probabilities per image in OUT (memory-mapped .npy files). Serve them in training "
        "with dict(type='labelwise.LoadRefinedLabels', store=OUT). An approximation of the online "
        "method: one label per image instead of one per crop. Resumes an interrupted build; a store "
        "in OUT made from another checkpoint, config or settings is refused (--overwrite rebuilds it).",
    )
    store.add_argument("--config", required=True, help="the refinery's config (file or built-in name)")
    store.add_argument("--checkpoint", required=True, help="the refinery's weights")
    store.add_argument("--out", required=True, help="store directory")
    store.add_argument("--data-root", default=None, help="dataset root (default: the config's)")
    store.add_argument("--ann-file", default=None,
                       help="annotation file of the images to label (default: the config's training set)")
    store.add_argument("--topk", type=int, default=5, help="probabilities kept per image (default: 5)")
    store.add_argument("--batch-size", type=int, default=64, help="default: 64")
    store.add_argument("--bn-mode", choices=("eval", "train"), default="eval", help="default: eval")
    store.add_argument("--overwrite", action="store_true",
                       help="rebuild a store (or unfinished build) in OUT made from another checkpoint, config or "
                       "settings, which is otherwise refused")
    store.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    store.set_defaults(func=_run_store)


def _run_refine(args) -> int:
    from labelwise.workflows.refinery import train_generations

    records = train_generations(
        args.config, work_dir=args.work_dir, generations=args.generations, data_root=args.data_root,
        seed=args.seed, epochs=args.epochs, cfg_options=_parse_options(args.cfg_options),
        first_checkpoint=args.first_checkpoint,
    )
    for r in records:
        metrics = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r.get("metrics", {}).items()))
        print(f"generation {r['generation']}: {metrics or '(given)'}  [{r['checkpoint']}]")
    return 0


def _run_store(args) -> int:
    from labelwise.workflows.refinery import build_refined_label_store

    out = build_refined_label_store(
        args.config, args.checkpoint, args.out, data_root=args.data_root, ann_file=args.ann_file,
        k=args.topk, batch_size=args.batch_size, bn_mode=args.bn_mode, overwrite=args.overwrite,
        progress=not args.no_progress,
    )
    print(f"refined labels: {out}")
    return 0


def _parse_options(items) -> dict | None:
    if not items:
        return None
    from mmengine.config import DictAction

    import argparse

    namespace = argparse.Namespace()
    DictAction(option_strings=["--cfg-options"], dest="cfg_options")(None, namespace, items)
    return namespace.cfg_options
