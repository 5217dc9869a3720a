"""Label Refinery training-step cost: with the online refinery vs without, against the ideal.

    python benchmarks/refinery_speed.py --batch-size 64 --iters 20

For each (student, refinery) pair, on random 64x64 images through mmpretrain's
``ImageClassifier.train_step`` (data preprocessor, forward, backward, AdamW step):

* ``student step``: a training step with ``RefineryDataPreprocessor(refinery=dict())``
  (ground truth, no refinery);
* ``teacher fwd``: one refinery forward on the same batch (inference mode);
* ``refinery step``: a training step with the refinery on;
* ``ratio``: refinery step / student step; ``ideal``: (student step + teacher fwd) / student
  step -- what the step costs if the refinery adds exactly one forward pass and nothing else.

Times are medians over ``--iters`` rounds after ``--warmup`` rounds; each round times the
three once, one after the other, so machine load affects them alike. Models are the built-in
configs' (derived from ``configs/refinery/digits_single.py``); ``--width`` sets the student's
``base_channels`` for the "small student" rows.
"""
import argparse
import copy
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch


def build(cfg_model, data_preprocessor):
    from mmpretrain.registry import MODELS

    model_cfg = copy.deepcopy(cfg_model)
    model_cfg["data_preprocessor"] = data_preprocessor
    return MODELS.build(model_cfg)


def batch(n, size, generator):
    from mmpretrain.structures import DataSample

    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, 10, (n,), generator=generator)
    return {"inputs": list(images), "data_samples": [DataSample().set_gt_label(int(y)) for y in labels]}


def measure(cfg, student_width, teacher_width, teacher_ckpt, args, generator):
    """Median seconds of the three timings, measured interleaved (one of each per round), so a
    shared machine's load drifts into all three alike."""
    from mmengine.optim import build_optim_wrapper

    student_model = _with_width(cfg.model.to_dict(), student_width)
    pre = {k: v for k, v in cfg.data_preprocessor.to_dict().items() if k != "refinery"}
    teacher_spec = dict(model=_with_width(cfg.model.to_dict(), teacher_width), checkpoint=str(teacher_ckpt))
    data = batch(args.batch_size, args.size, generator)
    steps = {}
    for name, refinery in (("student step", {}), ("refinery step", teacher_spec)):
        torch.manual_seed(0)
        model = build(student_model, {**pre, "refinery": refinery}).train()
        optim = build_optim_wrapper(model, dict(optimizer=dict(type="AdamW", lr=1e-3)))
        steps[name] = (lambda m, o: lambda: m.train_step(copy.deepcopy(data), o))(model, optim)
    refinery = model.data_preprocessor.refinery
    inputs = model.data_preprocessor(copy.deepcopy(data), False)["inputs"]
    steps["teacher fwd"] = lambda: refinery(inputs)
    times = {name: [] for name in steps}
    for round_ in range(args.warmup + args.iters):
        for name, fn in steps.items():
            start = time.perf_counter()
            fn()
            if round_ >= args.warmup:
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def _with_width(model_cfg, width):
    model_cfg = copy.deepcopy(model_cfg)
    model_cfg["backbone"]["base_channels"] = width
    model_cfg["head"]["in_channels"] = width * 8
    return model_cfg


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="refinery/digits_single")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--size", type=int, default=64, help="image side (default: 64)")
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--pairs", default="32:32,16:32",
                        help="student_width:teacher_width pairs (base_channels), default 32:32,16:32")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from mmengine.registry import init_default_scope

    from labelwise.adapters.mmpretrain.runner import load_config
    from labelwise.checkpoint import save_checkpoint

    init_default_scope("mmpretrain")
    cfg = load_config(args.config, work_dir=tempfile.mkdtemp())
    generator = torch.Generator().manual_seed(0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for pair in args.pairs.split(","):
            student_width, teacher_width = (int(v) for v in pair.split(":"))
            pre = {k: v for k, v in cfg.data_preprocessor.to_dict().items() if k not in ("refinery", "type")}
            torch.manual_seed(1)
            teacher = build(_with_width(cfg.model.to_dict(), teacher_width), dict(type="ClsDataPreprocessor", **pre))
            ckpt = Path(tmp) / f"teacher{teacher_width}.pth"
            save_checkpoint({"state_dict": teacher.state_dict()}, ckpt)
            r = measure(cfg, student_width, teacher_width, ckpt, args, generator)
            rows.append((student_width, teacher_width, r))

    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; batch {args.batch_size} x {args.size}px, "
          f"median of {args.iters} steps")
    print("| student (base_channels) | refinery (base_channels) | student step (ms) | teacher fwd (ms) "
          "| refinery step (ms) | ratio | ideal |")
    print("|---|---|---|---|---|---|---|")
    for s, t, r in rows:
        base = r["student step"]
        print(f"| {s} | {t} | {base * 1e3:.0f} | {r['teacher fwd'] * 1e3:.0f} | {r['refinery step'] * 1e3:.0f} | "
              f"{r['refinery step'] / base:.2f} | {(base + r['teacher fwd']) / base:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
