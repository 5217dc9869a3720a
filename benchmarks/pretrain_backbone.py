"""A "pretrained" digits backbone: the single-label model trained on a second, disjoint set of scenes.

    python benchmarks/pretrain_backbone.py --out outputs/pretrain

The methods' papers all start from an ImageNet-pretrained backbone. The digit-scenes analogue
is a backbone trained on *other* images of the same domain: this script generates a second
digit-scenes set with a different seed (seed 1; the benchmark data uses seed 0, so no image,
and no label, is shared), trains the baseline single-label model on it (20 epochs, the
single-label protocol of docs/benchmarks.md: crops of 8-100 % of the area) and prints the checkpoint path and its test top-1 on its own
test split. Runs resume: existing data and a finished run are reused.

Use the checkpoint as the starting point of a benchmark run with
``--cfg-options model.backbone.init_cfg.type=Pretrained
model.backbone.init_cfg.checkpoint=CKPT model.backbone.init_cfg.prefix=backbone.`` or the
``--pretrained CKPT`` option of the quality scripts.
"""
import argparse
import json
from pathlib import Path

from labelwise.data import make_dataset
from labelwise.train import METRICS_FILE, train_baseline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/pretrain")
    parser.add_argument("--data-seed", type=int, default=1, help="seed of the pretraining scenes (default 1; "
                        "the benchmark data uses 0)")
    parser.add_argument("--epochs", type=int, default=20, help="default: 20, the single-label protocol")
    args = parser.parse_args()
    if args.data_seed == 0:
        parser.error("--data-seed 0 would pretrain on the benchmark's own images")
    data_root = make_dataset(Path(args.out) / f"data-seed{args.data_seed}", seed=args.data_seed,
                             regimes=("single",), progress=True)
    work_dir = Path(args.out) / "single-seed0"
    if (work_dir / METRICS_FILE).exists():
        result = json.loads((work_dir / METRICS_FILE).read_text())
        if result.get("epochs") != args.epochs:
            parser.error(f"{work_dir} holds a backbone trained for {result.get('epochs')} epochs, not {args.epochs}; "
                         "use another --out")
    else:
        result = train_baseline("mmpretrain", data_root=data_root, regime="single", work_dir=work_dir, seed=0,
                                epochs=args.epochs, progress=False)
    checkpoint = work_dir / "mmpretrain" / f"epoch_{result['epochs']}.pth"
    print(f"pretraining data: {data_root} (seed {args.data_seed})")
    print(f"test top-1 on its own test split: {result['value']:.2f} % ({result['seconds']:.0f} s)")
    print(f"checkpoint: {checkpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
