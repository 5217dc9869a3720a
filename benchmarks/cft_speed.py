"""CFT speed on a synthetic input like the reference measurement; prints a markdown table.

    python benchmarks/cft_speed.py                       # GA, BP, best at the reference schedule
    python benchmarks/cft_speed.py --coco                # + C 80, D 2048, 40k/10k/10k rows
    python benchmarks/cft_speed.py --device cuda --coco  # on a GPU

Input (`labelwise.plugins.cft.synthetic.make_synthetic_problem`): N_train 5000, N_val 2000,
N_test 2000, D 512, C 20, prevalence 2-30 %, 50 % of train/val labels unknown, head trained
with assume-negative + asymmetric loss. Schedule: population 50, epochs 5000, early stopping
300. Test mAP is on the fully labelled test rows.

The "reference fitness loop" row evaluates fitness as the reference code's `batch_fitness`
does: one `F.linear` of the population, then a Python loop of one metric call per individual
(torchmetrics' binary_average_precision, the reference's metric, when torchmetrics is
installed; else scikit-learn's average_precision_score), for --reference-generations
generations; its total is EXTRAPOLATED to the category-generations the batched GA actually
ran. It leaves out the reference's GA operators and validation, so it is a lower bound.

Wall time depends on what else the machine runs, so each row also gives the CPU seconds of
the process (all threads) and the 1-minute load average before and after the run.

Each GA row also gives the generations its categories ran (min / median / max): at the
reference schedule every category runs at least early-stopping (300) generations.

`--profile` times, on one thread and one category of the input (the one with the median
number of known training rows), where a generation's time goes: the population's matrix
product, its ranking (AP), the GA operators and the validation of the fittest individual, next
to the reference loop's product and 50 scikit-learn calls on the same logits.

`--check-threads 1,2` runs the GA once per thread count and checks that the rows and reports
are identical.

Results are cached in --out (one JSON per run), so an interrupted benchmark resumes.
"""
import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from labelwise.metrics import mean_average_precision
from labelwise.plugins.cft.calibrate import fit_calibrated_head
from labelwise.plugins.cft.engine import FITNESS_PIECES, CategoryRows, category_seed
from labelwise.plugins.cft.genetic import next_generation
from labelwise.plugins.cft.options import CFTOptions
from labelwise.plugins.cft.ranking import batched_score
from labelwise.plugins.cft.workers import single_threaded_ops
from labelwise.plugins.cft.synthetic import make_synthetic_problem
from labelwise.utils.fileio import write_json

KEYS = ("train_features", "train_labels", "val_features", "val_labels", "test_features", "test_labels", "weight", "bias")


def problem(out: Path, name: str, **kw) -> dict:
    path = out / f"{name}.npz"
    if not path.exists():
        p = make_synthetic_problem(**kw)
        tmp = out / f".{name}.tmp.npz"
        np.savez(tmp, **p)
        tmp.replace(path)
    with np.load(path) as f:
        return {k: f[k] for k in KEYS}


def test_map(p, weight, bias) -> float:
    return mean_average_precision(p["test_features"] @ np.asarray(weight).T + np.asarray(bias), p["test_labels"])


def run_mode(out, name, p, mode, args, threads=None) -> dict:
    threads = threads or args.threads
    path = out / f"{name}-{mode}-{args.device}{f'-t{threads}' if threads else ''}.json"
    if path.exists():
        return json.loads(path.read_text())
    options = CFTOptions(optimizer=mode, epochs=args.epochs, early_stopping=args.early_stopping or None,
                         population=args.population, threads=threads)
    load_before, cpu_before = os.getloadavg()[0], time.process_time()
    result = fit_calibrated_head(p["train_features"], p["train_labels"], p["val_features"], p["val_labels"],
                                 p["weight"], p["bias"], options=options, device=args.device, progress=not args.quiet)
    cpu_seconds, load_after = time.process_time() - cpu_before, os.getloadavg()[0]
    gens = {opt: sum(r[opt]["epochs_run"] for r in result.categories if opt in r) for opt in options.optimizers}
    per_category = {opt: [r[opt]["epochs_run"] for r in result.categories if opt in r] for opt in options.optimizers}
    row = {"mode": mode, "seconds": result.seconds, "cpu_seconds": cpu_seconds, "load": [load_before, load_after],
           "threads": threads or torch.get_num_threads(), "category_epochs": gens, "per_category_epochs": per_category,
           "weight_sha": _digest(result.weight, result.bias), "categories": result.categories,
           "test_map_before": test_map(p, p["weight"], p["bias"]), "test_map_after": test_map(p, result.weight, result.bias),
           "val_before": result.summary()["mean_score_before"], "val_after": result.summary()["mean_score_after"],
           "chosen": result.summary()["chosen"]}
    write_json(path, row)
    return row


def _digest(weight, bias) -> str:
    import hashlib

    h = hashlib.sha256(np.ascontiguousarray(np.asarray(weight, dtype=np.float32)).tobytes())
    h.update(np.ascontiguousarray(np.asarray(bias, dtype=np.float32)).tobytes())
    return h.hexdigest()


def profile(p, population: int, generations: int = 100) -> dict:
    """Milliseconds per generation of each part, one thread, the category with the median known rows."""
    with single_threaded_ops():
        return _profile(p, population, generations)


def _profile(p, population, generations):
    known = p["train_labels"] >= 0
    c = int(np.argsort(known.sum(0))[known.shape[1] // 2])
    x, xv = torch.from_numpy(p["train_features"]), torch.from_numpy(p["val_features"])
    vk = p["val_labels"][:, c] >= 0
    train = CategoryRows(x, torch.from_numpy(np.flatnonzero(known[:, c])), p["train_labels"][known[:, c], c] == 1,
                         cache=True, chunk_rows=1 << 20)
    val = CategoryRows(xv, torch.from_numpy(np.flatnonzero(vk)), p["val_labels"][vk, c] == 1, cache=True,
                       chunk_rows=1 << 20)
    row = torch.cat([torch.from_numpy(p["weight"][c]), torch.from_numpy(p["bias"][c:c + 1])])
    pop = row.repeat(population, 1)
    g = torch.Generator().manual_seed(category_seed(0, c))
    metric, _ = reference_metric()
    parts = dict.fromkeys(("product", "ranking", "GA operators", "validation", "reference: 50 metric calls"), 0.0)
    clock = time.perf_counter
    for _ in range(generations):
        t0 = clock()
        logits = train.scores(pop).numpy()
        t1 = clock()
        fit = torch.from_numpy(np.concatenate([batched_score(piece, train.positive, metric="ap")
                                               for piece in np.array_split(logits, FITNESS_PIECES)]))
        t2 = clock()
        best = pop[int(torch.argmax(fit))]
        val.score(best[None], "ap")
        t3 = clock()
        new = next_generation(pop, fit, crossover_rate=0.2, mutation_prob=0.5, mutation_range=1e-3, elitism=1,
                              generator=g)
        t4 = clock()
        y = torch.from_numpy(train.positive.astype(np.int64))
        for row_scores in torch.from_numpy(logits):
            metric(row_scores, y)
        t5 = clock()
        pop = new
        for key, dt in zip(parts, (t1 - t0, t2 - t1, t4 - t3, t3 - t2, t5 - t4)):
            parts[key] += dt * 1e3 / generations
    return {"category": c, "known_train": len(train), "known_val": len(val), "ms": parts,
            "reference_metric": reference_metric()[1]}


def reference_metric():
    """``(metric(scores, y), name)``: the reference's AP (torchmetrics), else scikit-learn's."""
    try:
        from torchmetrics.functional.classification import binary_average_precision

        return binary_average_precision, "torchmetrics binary_average_precision (the reference's)"
    except ImportError:
        from sklearn.metrics import average_precision_score

        return (lambda scores, y: average_precision_score(y.numpy(), scores.numpy()),
                "scikit-learn average_precision_score (torchmetrics not installed)")


def reference_style(p, generations, population) -> tuple[float, str]:
    """Seconds per category-generation of the reference's fitness loop, and the metric it used.

    As the reference's ``batch_fitness``: one ``F.linear`` of the population over the category's
    known rows, then one metric call per individual in a Python loop, with the reference's
    metric (torchmetrics' ``binary_average_precision``) when torchmetrics is installed, else
    scikit-learn's ``average_precision_score``. The GA operators and the validation are not
    counted, so this is a lower bound of the reference's cost.
    """
    metric, metric_name = reference_metric()
    x = torch.from_numpy(p["train_features"])
    rows = torch.cat([torch.from_numpy(p["weight"]), torch.from_numpy(p["bias"])[:, None]], 1)
    cats = []
    for c in range(rows.shape[0]):
        known = p["train_labels"][:, c] >= 0
        cats.append((x[torch.from_numpy(np.flatnonzero(known))], torch.from_numpy(p["train_labels"][known, c] == 1).long()))
    g = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        for _ in range(generations):
            for c, (xc, y) in enumerate(cats):
                pop = rows[c].repeat(population, 1) + (torch.rand(population, rows.shape[1], generator=g) - 0.5) * 2e-3
                preds = torch.nn.functional.linear(xc, pop[:, :-1], bias=pop[:, -1]).transpose(0, 1)
                _ = [metric(preds[i], y) for i in range(population)]
    return (time.perf_counter() - start) / (generations * len(cats)), metric_name


def sort_timings() -> dict:
    a = np.random.default_rng(0).standard_normal((1000, 2500)).astype(np.float32)
    t = torch.from_numpy(a)
    out = {}
    for name, fn in (("numpy np.sort", lambda: np.sort(a, axis=1)), ("torch.sort", lambda: torch.sort(t, dim=1))):
        fn()
        times = []
        for _ in range(5):
            s = time.perf_counter()
            fn()
            times.append(time.perf_counter() - s)
        out[name] = min(times) * 1e3
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="outputs/bench-cft-speed")
    parser.add_argument("--modes", default="ga,bp,best")
    parser.add_argument("--epochs", type=int, default=5000)
    parser.add_argument("--early-stopping", type=int, default=300, help="0: none")
    parser.add_argument("--population", type=int, default=50)
    parser.add_argument("--reference-generations", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="CFT worker threads (default: torch.get_num_threads())")
    parser.add_argument("--coco", action="store_true", help="also C 80, D 2048, N 40000/10000/10000 (GA only)")
    parser.add_argument("--small", action="store_true", help="a smoke run on a tiny input (numbers meaningless)")
    parser.add_argument("--profile", action="store_true", help="where a generation's time goes (one thread)")
    parser.add_argument("--check-threads", default="", help="e.g. 1,2: GA once per thread count, rows compared")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    size = dict(n_train=400, n_val=200, n_test=200, dim=32, num_classes=4) if args.small else {}
    inputs = [("synthetic-c20" + ("-small" if args.small else ""), size, args.modes.split(","))]
    if args.coco:
        inputs.append(("synthetic-c80-d2048", dict(n_train=40000, n_val=10000, n_test=10000, dim=2048, num_classes=80,
                                                   prevalence=(0.005, 0.2), head_steps=100), ["ga"]))
    print(f"machine: {platform.processor() or platform.machine()}, {args.device}, torch {torch.__version__}, "
          f"{args.threads or torch.get_num_threads()} threads; schedule: population {args.population}, epochs "
          f"{args.epochs}, early stopping {args.early_stopping}")
    print("sort of (1000, 2500) float32 rows: " + ", ".join(f"{k} {v:.1f} ms" for k, v in sort_timings().items()))
    print("\n| input | optimiser | wall s | CPU s (all threads) | load avg before/after | category-generations | "
          "ms / category-generation | test mAP before -> after |")
    print("|---|---|---|---|---|---|---|---|")
    problems = {}
    for name, kw, modes in inputs:
        p = problems[name] = problem(out, name, **kw)
        for mode in modes:
            r = run_mode(out, name, p, mode, args)
            gens = sum(r["category_epochs"].values())
            cpu = f"{r['cpu_seconds']:.1f}" if "cpu_seconds" in r else "-"
            load = "/".join(f"{v:.1f}" for v in r["load"]) if "load" in r else "-"
            print(f"| {name} | {mode} | {r['seconds']:.1f} | {cpu} | {load} | {gens} | {1e3 * r['seconds'] / gens:.2f} | "
                  f"{r['test_map_before']:.2f} -> {r['test_map_after']:.2f} |")
            if "ga" in r.get("per_category_epochs", {}):
                e = r["per_category_epochs"]["ga"]
                print(f"| {name} | (GA generations per category: min {min(e)}, median {int(np.median(e))}, "
                      f"max {max(e)}) | | | | | | |")
            if mode == "ga" and args.reference_generations and args.device == "cpu":
                per, metric_name = reference_style(p, args.reference_generations, args.population)
                ga_gens = r["category_epochs"]["ga"]
                print(f"| {name} | reference fitness loop ({metric_name}), EXTRAPOLATED from "
                      f"{args.reference_generations} generations | {per * ga_gens:.1f} (extrapolated) | - | - | {ga_gens} | "
                      f"{1e3 * per:.2f} | - |")
    if args.check_threads:
        name = inputs[0][0]
        runs = [run_mode(out, name, problems[name], "ga", args, threads=int(t)) for t in args.check_threads.split(",")]
        same = all(r["weight_sha"] == runs[0]["weight_sha"] and r["categories"] == runs[0]["categories"] for r in runs)
        print(f"\nthreads {args.check_threads} on {name}: wall " + " / ".join(f"{r['seconds']:.1f}" for r in runs)
              + f" s; rows and reports identical: {same}")
        if not same:
            return 1
    if args.profile:
        for name, _, _ in inputs:
            prof = profile(problems[name], args.population, generations=20 if "c80" in name else 100)
            ms = prof["ms"]
            ours = sum(v for k, v in ms.items() if not k.startswith("reference"))
            print(f"\nprofile, {name}, category {prof['category']} ({prof['known_train']} known training rows, "
                  f"{prof['known_val']} validation), one thread, ms per generation:\n")
            print("| part | ms | share |\n|---|---:|---:|")
            for key, value in ms.items():
                if not key.startswith("reference"):
                    print(f"| {key} | {value:.3f} | {100 * value / ours:.0f} % |")
            print(f"| total | {ours:.3f} | 100 % |")
            print(f"| reference: the same product + 50 calls of {prof['reference_metric']} | {ms['product'] + ms['reference: 50 metric calls']:.3f}"
                  f" | {(ms['product'] + ms['reference: 50 metric calls']) / ours:.1f}x ours |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
