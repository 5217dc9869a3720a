"""Built-in plugin: the ``labelwise data`` commands (the digit-scenes benchmark data)."""
from __future__ import annotations

from labelwise.data.regimes import NOISE_KINDS
from labelwise.hookspecs import hookimpl


@hookimpl
def labelwise_add_commands(subparsers):
    data = subparsers.add_parser(
        "data", help="built-in benchmark data (digit scenes)",
        description="Generate and inspect the built-in digit-scenes benchmark data.",
    )
    data_sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    make = data_sub.add_parser(
        "make", help="generate the digit scenes and every label regime under ROOT",
        description="Generate digit scenes from scikit-learn's bundled handwritten digits and "
        "write every label regime (multilabel, partial, single, noisy) in mmpretrain and "
        "ImageFolder formats. See docs/data.md.",
    )
    make.add_argument("root", help="output folder (refused if it holds other data; see --overwrite)")
    make.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    make.add_argument("--p", type=_floats, default=(0.1, 0.3, 0.5),
                      help="comma-separated known-label proportions of the partial regimes (default: 0.1,0.3,0.5)")
    make.add_argument("--r", type=_floats, default=(0.2, 0.4),
                      help="comma-separated noise rates of the noisy regimes (default: 0.2,0.4)")
    make.add_argument("--noise", type=_strings, default=NOISE_KINDS,
                      help="comma-separated noise kinds (default: symmetric,pairflip,scene)")
    make.add_argument("--verified-fraction", type=float, default=0.05,
                      help="fraction of train samples with a verified label (default: 0.05)")
    make.add_argument("--regimes", type=_strings, default=("multilabel", "partial", "single", "noisy"),
                      help="comma-separated regimes to write (default: all)")
    make.add_argument("--num-train", type=int, default=None, help="train images (default: SceneConfig's)")
    make.add_argument("--num-val", type=int, default=None, help="val images (default: SceneConfig's)")
    make.add_argument("--num-test", type=int, default=None, help="test images (default: SceneConfig's)")
    make.add_argument("--overwrite", action="store_true", help="replace an existing dataset in ROOT")
    make.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    make.set_defaults(func=_run_make)


def _floats(text: str) -> tuple:
    return tuple(float(x) for x in text.split(",") if x.strip())


def _strings(text: str) -> tuple:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _run_make(args) -> int:
    import dataclasses

    from labelwise.data import SceneConfig, make_dataset

    sizes = {k: v for k, v in (("num_train", args.num_train), ("num_val", args.num_val),
                                ("num_test", args.num_test)) if v is not None}
    config = dataclasses.replace(SceneConfig(), **sizes)
    root = make_dataset(
        args.root, config=config, seed=args.seed, p=args.p, r=args.r, noise=args.noise,
        verified_fraction=args.verified_fraction, regimes=args.regimes,
        progress=not args.no_progress, overwrite=args.overwrite,
    )
    print(f"digit scenes written to {root}")
    return 0
