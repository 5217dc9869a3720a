"""Built-in plugin: partial-label datasets, dataset readers and metrics for mmpretrain, and ``labelwise train``."""
from __future__ import annotations

from labelwise.hookspecs import hookimpl
from labelwise.plugin_manager import MethodInfo, register_table, table_types

#: What the plugin registers: {registry: class names} of labelwise.adapters.mmpretrain.datasets / .metrics / .readers.
DATASET_TYPES = {"DATASETS": ("PartialMultiLabelDataset",)}
METRIC_TYPES = {"METRICS": ("SampleScores",)}
PARTIAL_METRIC_TYPES = {"METRICS": ("PartialMultiLabelMetric",)}
READER_TYPES = {"DATASETS": ("COCOMultiLabel", "VOCPartial", "OpenImagesVerified", "CheXpert", "Food101N",
                             "Clothing1M", "ImageNetFolder")}


@hookimpl
def labelwise_methods():
    return [
        MethodInfo(
            name="partial-labels",
            summary="multi-label dataset keeping unknown labels (1/0/-1) through the pipeline",
            kind="dataset",
            paper="",
            types=table_types(DATASET_TYPES),
        ),
        MethodInfo(
            name="dataset-readers",
            summary="COCO, VOC, Open Images, CheXpert, Food-101N, Clothing1M and ImageNet folders read into "
            "1/0/-1 partial labels or class ids (+ verification flags)",
            kind="dataset",
            paper="",
            types=table_types(READER_TYPES),
        ),
        MethodInfo(
            name="partial-metrics",
            summary="mAP, per-class AP and mean AUROC of a partially labelled split, over known labels only",
            kind="metric",
            paper="",
            types=table_types(PARTIAL_METRIC_TYPES),
        ),
        MethodInfo(
            name="sample-scores",
            summary="test metric that writes every sample's class scores and labels to .npz (for paired statistics)",
            kind="metric",
            paper="",
            types=table_types(METRIC_TYPES),
        ),
    ]


@hookimpl
def labelwise_register_mm_modules(registries):
    from labelwise.adapters.mmpretrain import datasets, metrics, readers

    register_table(registries, datasets, DATASET_TYPES)
    register_table(registries, metrics, METRIC_TYPES, PARTIAL_METRIC_TYPES)
    register_table(registries, readers, READER_TYPES)


@hookimpl
def labelwise_add_commands(subparsers):
    train = subparsers.add_parser(
        "train", help="train a baseline on the digit scenes (mmpretrain Runner or timm)",
        description="Train a narrow ResNet-18 at 64 px on one label regime of the digit scenes "
        "and report the test metric (top-1 for single-label regimes, mAP for multi-label). "
        "Writes WORK_DIR/metrics.json.",
    )
    train.add_argument("--framework", choices=("mmpretrain", "timm"), default="mmpretrain",
                       help="mmpretrain: mmengine Runner with a config; timm: timm model + task + "
                       "labelwise.adapters.loop (default: mmpretrain)")
    train.add_argument("--data-root", required=True, help="dataset root from `labelwise data make`")
    train.add_argument("--regime", required=True,
                       help="regime directory: single, multilabel, partial-p0.3, noisy-symmetric-r0.2, ...")
    train.add_argument("--work-dir", required=True, help="output folder")
    train.add_argument("--config", default=None,
                       help="mmpretrain config file or built-in name (default: the regime's baseline config)")
    train.add_argument("--seed", type=int, default=0, help="default: 0")
    train.add_argument("--epochs", type=int, default=None,
                       help="default: the config's (20 for single-label regimes, 10 for multi-label ones)")
    train.add_argument("--batch-size", type=int, default=64, help="default: 64")
    train.add_argument("--lr", type=float, default=None,
                       help="peak learning rate (default: the config's; 0.002 for the baseline configs and timm)")
    train.add_argument("--overwrite", action="store_true", help="replace a finished run in WORK_DIR")
    train.add_argument("--launcher", choices=("none", "pytorch"), default="none",
                       help="pytorch: one process per rank under torchrun (gloo on CPU, NCCL on CUDA); each rank "
                       "takes --batch-size samples per step; rank 0 writes metrics.json (default: none)")
    train.add_argument("--no-progress", action="store_true", help="hide progress bars")
    train.set_defaults(func=_run_train)

    demo = subparsers.add_parser(
        "demo", help="run the five methods against their baselines on the digit scenes; print a results table",
        description="The end-to-end demo on the built-in digit scenes: per method a baseline and the method in "
        "the setting it was made for, each trained through mmengine's Runner from a trained backbone, a results "
        "table (method, regime, metric, baseline, method, delta, the 95 % interval of the delta and its "
        "verdict), the CFT calibrated ONNX head checked with onnxruntime, plots and OUT/summary.md. The quick "
        "mode uses the models shipped in the package (SHA-256 checked; `python -m labelwise.demo.models` "
        "rebuilds them); the other modes train them first. Resumes: every finished step under OUT is reused.",
    )
    demo.add_argument("--out", default="outputs/demo", help="output folder (default: outputs/demo)")
    size = demo.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="default: 1,200 training images, 4 epochs from the shipped backbones, 1 seed "
                      "(under 10 minutes on 2 CPU cores)")
    size.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="the benchmark sizes: 5,000 training images, 20 epochs, 5 seeds, its models trained "
                      "first (many hours)")
    size.add_argument("--tiny", dest="mode", action="store_const", const="tiny",
                      help="a smoke run: 160 training images, 1 epoch, tiny models trained on the spot (numbers "
                      "are meaningless)")
    demo.add_argument("--seeds", default=None, metavar="0,1,...",
                      help="seeds to run instead of the mode's (quick: 0; full: 0,1,2,3,4); seeds already run "
                      "under --out are reused, and with several seeds each row gets the paired 95 %% interval "
                      "over seeds")
    demo.set_defaults(mode="quick")
    demo.set_defaults(func=_run_demo)


def _run_train(args) -> int:
    from labelwise.train import train_baseline

    result = train_baseline(
        args.framework, data_root=args.data_root, regime=args.regime, work_dir=args.work_dir,
        seed=args.seed, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        config=args.config, overwrite=args.overwrite, progress=not args.no_progress, launcher=args.launcher,
    )
    from labelwise.utils.distributed import is_main_process

    if not is_main_process():
        return 0
    print(f"{result['framework']} {result['regime']} seed {result['seed']}: "
          f"test {result['metric']} {result['value']:.2f}% in {result['seconds']:.0f} s")
    return 0


def _run_demo(args) -> int:
    from labelwise.demo import run_demo

    run_demo(args.out, mode=args.mode, seeds=args.seeds)
    return 0
