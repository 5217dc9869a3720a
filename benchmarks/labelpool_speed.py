"""Speed of ReLabel + LabelPooling: pooling, the label-map store, the training-step overhead.

    python benchmarks/labelpool_speed.py [--threads 1] [--quick]

Prints three tables:

1. pooling a batch of B=256 crops from top-5 maps of 15x15 locations, C=1000 (the paper's
   ImageNet setting): the dense reference (scatter into (B, C, h, w) + torchvision
   ``roi_align``), the sparse batched torch kernel, and the per-sample numpy kernel the
   mmpretrain transform and the torch dataset use;
2. the store: bytes per image, against the reference's per-image float32 ``.pt`` files, and
   random single-image reads per second (one process);
3. the training-step overhead: a step of the digit-scenes ResNet-18 (64 px, batch 64, plain
   soft-target cross-entropy) against the LabelPooling work for the same 64 samples (store
   read + pooling), done in the data-loading workers.
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _time(fn, *, repeat: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(repeat):
            fn()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def _maps(n, classes, h, w, k, seed=0):
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 4, size=(n, k, h, w)).astype(np.float16)
    ids = np.argsort(rng.random((n, h, w, classes)), axis=-1)[..., :k].transpose(0, 3, 1, 2)
    return scores, ids.astype(np.int16)


def _boxes(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    x1, y1 = torch.rand(n, generator=g) * 0.6, torch.rand(n, generator=g) * 0.6
    return torch.stack([x1, y1, x1 + 0.4, y1 + 0.4], 1)


def bench_pooling(quick: bool):
    from labelwise.plugins.labelpool.pooling import pool_label_map_numpy, pool_label_maps, pool_label_maps_dense

    b, c, h, w, k = 256, 1000, 15, 15, 5
    scores, ids = _maps(b, c, h, w, k)
    s, i, boxes = torch.from_numpy(scores), torch.from_numpy(ids), _boxes(b)
    nboxes = boxes.numpy()
    rows = []
    dense = _time(lambda: pool_label_maps_dense(s, i, boxes, num_classes=c), repeat=2 if quick else 5)
    rows.append(("dense: scatter + torchvision roi_align (torch)", dense))
    sparse = _time(lambda: pool_label_maps(s, i, boxes, num_classes=c), repeat=5 if quick else 20)
    rows.append(("sparse, batched (torch)", sparse))
    per_sample = _time(lambda: [pool_label_map_numpy(scores[j], ids[j], nboxes[j], num_classes=c)
                                for j in range(b)], repeat=1 if quick else 3)
    rows.append(("sparse, one sample at a time (numpy)", per_sample))
    print(f"\n### Pooling: B={b}, C={c}, {h}x{w} map, k={k} (torch threads: {torch.get_num_threads()})\n")
    print("| kernel | ms / batch | samples / s | vs dense |")
    print("|---|---:|---:|---:|")
    for name, t in rows:
        print(f"| {name} | {t * 1e3:.2f} | {b / t:,.0f} | {dense / t:.1f}x |")
    return per_sample / b


def bench_store(quick: bool):
    from labelwise.plugins.labelpool.store import LabelMapStore, LabelMapWriter

    n, c, h, w, k = (4000 if quick else 20000), 1000, 15, 15, 5
    n_pt = 500 if quick else 2000
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        keys = [f"train/n{j % 1000:08d}/img_{j:07d}.JPEG" for j in range(n)]
        writer = LabelMapWriter(Path(tmp) / "store", keys=keys, num_classes=c, k=k, height=h, width=w)
        block_scores, block_ids = _maps(64, c, h, w, k)
        for shard in writer.pending_shards():
            start, stop = writer.shard_range(shard)
            reps = -(-(stop - start) // 64)
            writer.write_shard(shard, np.tile(block_scores, (reps, 1, 1, 1))[: stop - start],
                               np.tile(block_ids, (reps, 1, 1, 1))[: stop - start])
        store = LabelMapStore(Path(tmp) / "store")
        order = rng.permutation(n)
        store.get(keys[0])
        t0 = time.perf_counter()
        for j in order:
            store.get(keys[j])
        by_key = n / (time.perf_counter() - t0)
        t0 = time.perf_counter()
        for j in order:
            store.get(int(j))
        by_index = n / (time.perf_counter() - t0)
        # the reference layout: one float32 [2, k, h, w] .pt per image, torch.load per sample
        ref = Path(tmp) / "ref"
        for j in range(n_pt):
            path = ref / f"{j % 50}" / f"{j}.pt"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(torch.stack([torch.from_numpy(block_scores[j % 64]).float(),
                                    torch.from_numpy(block_ids[j % 64]).float()]), path)
        pt_bytes = np.mean([p.stat().st_size for p in ref.rglob("*.pt")])
        files = sorted(ref.rglob("*.pt"))
        pick = rng.permutation(n_pt)
        t0 = time.perf_counter()
        for j in pick:
            torch.load(files[j], weights_only=True)
        pt_reads = n_pt / (time.perf_counter() - t0)
    print(f"\n### Label-map store: top-{k} of {h}x{w}, C={c}; random reads in one process "
          f"({n} images; page cache warm)\n")
    print("| layout | bytes / image | ImageNet (1.28M images) | random reads / s |")
    print("|---|---:|---:|---:|")
    print(f"| labelwise store (float16 + int16, memory-mapped), by path | {store.bytes_per_image:,} | "
          f"{store.bytes_per_image * 1.281e6 / 1e9:.1f} GB | {by_key:,.0f} |")
    print(f"| labelwise store, by sample index | {store.bytes_per_image:,} | | {by_index:,.0f} |")
    print(f"| reference: one float32 .pt per image, torch.load | {pt_bytes:,.0f} | "
          f"{pt_bytes * 1.281e6 / 1e9:.1f} GB | {pt_reads:,.0f} |")


def bench_step(per_sample_pool: float, quick: bool):
    from labelwise.adapters.timm import create_digits_model
    from labelwise.plugins.labelpool.pooling import pool_label_map_numpy
    from labelwise.plugins.labelpool.store import LabelMapStore, LabelMapWriter

    batch = 64
    torch.manual_seed(0)
    model = create_digits_model(num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 3, 64, 64)
    target = torch.softmax(torch.randn(batch, 10), 1)

    def step():
        loss = -(target * torch.log_softmax(model(x), 1)).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    train_step = _time(step, repeat=2 if quick else 5, warmup=1)
    with tempfile.TemporaryDirectory() as tmp:
        keys = [f"images/train/{j:06d}.png" for j in range(batch)]
        writer = LabelMapWriter(Path(tmp) / "s", keys=keys, num_classes=10, k=5, height=4, width=4)
        s, i = _maps(batch, 10, 4, 4, 5)
        writer.write_shard(0, s, i)
        store = LabelMapStore(Path(tmp) / "s")
        boxes = _boxes(batch).numpy()
        digits = _time(lambda: [pool_label_map_numpy(*store.get(store.find_path(f"/data/{key}")), boxes[j],
                                                     num_classes=10) for j, key in enumerate(keys)], repeat=5)
    print(f"\n### Training-step overhead: digit-scenes ResNet-18 (64 px), batch {batch}, "
          f"torch threads {torch.get_num_threads()}\n")
    print("| work per batch | ms | vs the training step |")
    print("|---|---:|---:|")
    print(f"| training step, soft-target CE (forward + backward + AdamW) | {train_step * 1e3:.1f} | 100% |")
    print(f"| LabelPooling, 4x4 maps, C=10 (store read + pool, {batch} samples) | {digits * 1e3:.2f} | "
          f"{100 * digits / train_step:.2f}% |")
    print(f"| LabelPooling at ImageNet size (15x15, C=1000; pool only, {batch} samples) | "
          f"{per_sample_pool * batch * 1e3:.2f} | {100 * per_sample_pool * batch / train_step:.2f}% |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default: 1, as one data-loading worker)")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and a smaller store")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"torch {torch.__version__}; {time.strftime('%Y-%m-%d')}")
    per_sample = bench_pooling(args.quick)
    bench_store(args.quick)
    bench_step(per_sample, args.quick)


if __name__ == "__main__":
    main()
