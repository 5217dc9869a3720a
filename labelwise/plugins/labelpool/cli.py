"""The ``labelwise relabel`` and ``labelwise labelmaps`` commands (argument parsing and dispatch)."""
from __future__ import annotations

import json

RELABEL_DESCRIPTION = """\
ReLabel: run a machine annotator over a dataset split and store its top-k label maps.

The annotator is an mmpretrain classifier (--config + --checkpoint) or a timm one
(--timm-model + --checkpoint). Its final linear layer is applied as a 1x1 convolution to the
last feature map (no global pooling); models with layers after the pool (ConvNeXt,
MobileNetV3) are refused. Each image is resized whole to --input-size (a stride-32 ResNet
gives a 7x7 map at 224 px, 2x2 at 64 px). Writes a memory-mapped store to OUT; an interrupted
run resumes when started again with the same arguments. Under torchrun, ranks share the work
(gloo or nccl process group)."""


def add_commands(subparsers) -> None:
    relabel = subparsers.add_parser(
        "relabel", help="ReLabel: write an annotator's top-k label maps of a dataset split",
        description=RELABEL_DESCRIPTION, formatter_class=_raw_formatter())
    relabel.add_argument("out", help="output store directory")
    relabel.add_argument("--data-root", required=True, help="dataset root; store keys are image paths relative to it")
    relabel.add_argument("--ann-file", default=None,
                         help="mmpretrain annotation file (.txt '<path> <label>' lines or OpenMMLab .json), "
                         "relative to --data-root (default: every image under --data-root)")
    source = relabel.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", help="mmpretrain config file or built-in name of the annotator")
    source.add_argument("--timm-model", help="timm model name of the annotator (never downloads weights)")
    relabel.add_argument("--checkpoint", required=True, help="the annotator's weights")
    relabel.add_argument("--model-kwargs", type=_json_object, default=None,
                         help="timm only: JSON of extra timm.create_model arguments, e.g. "
                         "'{\"channels\": [32, 64, 128, 256]}'")
    relabel.add_argument("--input-size", type=int, default=None,
                         help="side of the square the whole image is resized to (default for timm: the "
                         "model's pretrained input size; required for mmpretrain)")
    relabel.add_argument("--mean", type=_floats, default=None,
                         help="per-channel mean in 0..255 units, in the order of the channels the annotator "
                         "receives: RGB, or BGR for an mmpretrain config with to_rgb=False, as its "
                         "data_preprocessor applies it (default: the config's data_preprocessor / the timm "
                         "model's pretrained config)")
    relabel.add_argument("--std", type=_floats, default=None, help="per-channel std, as --mean")
    relabel.add_argument("--topk", type=int, default=5, help="classes kept per map location (default: 5)")
    relabel.add_argument("--batch-size", type=int, default=64, help="default: 64")
    relabel.add_argument("--shard-size", type=int, default=None,
                         help="images per shard file, the unit of resuming (default: 4096)")
    relabel.add_argument("--num-workers", type=int, default=0, help="image-loading workers (default: 0)")
    relabel.add_argument("--device", default="cpu", help="default: cpu")
    relabel.add_argument("--overwrite", action="store_true", help="replace an existing store in OUT")
    relabel.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    relabel.set_defaults(func=_run_relabel)

    maps = subparsers.add_parser("labelmaps", help="inspect or import label-map stores (ReLabel)",
                                 description="Inspect a label-map store, or import per-image .pt "
                                 "maps of naver-ai/relabel_imagenet into one.")
    maps_sub = maps.add_subparsers(dest="labelmaps_command", metavar="SUBCOMMAND", required=True)
    info = maps_sub.add_parser("info", help="print a store's size, map shape and bytes per image")
    info.add_argument("store")
    info.add_argument("--allow-incomplete", action="store_true",
                      help="report on a store that is still being written (or was interrupted): how many "
                           "images are written so far, instead of refusing it")
    info.set_defaults(func=_run_info)
    convert = maps_sub.add_parser(
        "convert", help="copy per-image reference .pt maps into a store",
        description="Copy label maps in the reference layout (LABEL_ROOT/<class_dir>/<name>.pt, "
        "each a [2, k, h, w] tensor of scores and ids) into a compact store.")
    convert.add_argument("src", help="reference label-map root")
    convert.add_argument("out", help="output store directory")
    convert.add_argument("--data-root", required=True, help="dataset root the keys are relative to")
    convert.add_argument("--ann-file", default=None, help="annotation file listing the images (as relabel)")
    convert.add_argument("--num-classes", type=int, required=True, help="C of the maps (e.g. 1000)")
    convert.add_argument("--key-depth", type=int, default=2,
                         help="trailing path components of an image naming its .pt file (default: 2)")
    convert.add_argument("--shard-size", type=int, default=None, help="images per shard (default: 4096)")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing store in OUT")
    convert.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    convert.set_defaults(func=_run_convert)


def _raw_formatter():
    import argparse

    return argparse.RawDescriptionHelpFormatter


def _floats(text: str) -> list[float]:
    """argparse type of --mean / --std (argparse prints the message after the argument's name)."""
    import argparse

    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        values = []
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"expected three comma-separated numbers, got {text!r}")
    return values


def _json_object(text: str) -> dict:
    """argparse type of --model-kwargs: a JSON object."""
    import argparse

    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(
            f"expected a JSON object such as '{{\"channels\": [32, 64, 128, 256]}}', got {text!r}")
    return value


def _run_relabel(args) -> int:
    from labelwise.workflows.relabel import relabel_split

    result = relabel_split(args.out, data_root=args.data_root, checkpoint=args.checkpoint, config=args.config,
                           timm_model=args.timm_model, ann_file=args.ann_file, model_kwargs=args.model_kwargs,
                           input_size=args.input_size, mean=args.mean, std=args.std, topk=args.topk,
                           batch_size=args.batch_size, shard_size=args.shard_size, num_workers=args.num_workers,
                           device=args.device, overwrite=args.overwrite, progress=not args.no_progress)
    if result["rank"] == 0:
        h, w = result["map_size"]
        print(f"label maps of {result['images']} images ({result['num_classes']} classes, top-"
              f"{result['k']}, {h}x{w} at {result['input_size']} px) in {result['store']}"
              + ("" if result["complete"] else " (incomplete)"))
    return 0


def _run_info(args) -> int:
    from labelwise.plugins.labelpool.store import LabelMapStore

    store = LabelMapStore(args.store, allow_incomplete=args.allow_incomplete)
    written = len(store.written_records()) if args.allow_incomplete else len(store)
    print(json.dumps({
        "store": str(store.path), "images": len(store), "written": written, "complete": written == len(store),
        "num_classes": store.num_classes,
        "k": store.k, "map_size": [store.height, store.width],
        "bytes_per_image": store.bytes_per_image, "shards": len(store.index["shards"]),
        "meta": store.meta}, indent=1))
    return 0


def _run_convert(args) -> int:
    from labelwise.plugins.labelpool.reference import convert_reference_maps
    from labelwise.plugins.labelpool.relabel import read_image_list

    keys = read_image_list(args.data_root, args.ann_file)
    store = convert_reference_maps(args.src, args.out, keys, num_classes=args.num_classes,
                                   key_depth=args.key_depth, shard_size=args.shard_size,
                                   overwrite=args.overwrite, progress=not args.no_progress)
    print(f"converted {len(store)} label maps into {store.path} ({store.bytes_per_image} bytes per image)")
    return 0
