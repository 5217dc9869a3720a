"""The fast CFT paths against plain per-category references, bit for bit.

The references are written the straightforward way (one ``searchsorted`` per row, the GA
operators composed one by one as the paper's code does, one category at a time), so any
shortcut taken for speed (worker threads, in-place operators, skipped counts) must give the
same rows, scores and reports exactly.
"""

import numpy as np
import pytest
import torch

from labelwise.plugins.cft.calibrate import fit_calibrated_head
from labelwise.plugins.cft.engine import CategoryRows, category_seed
from labelwise.plugins.cft.genetic import next_generation
from labelwise.plugins.cft.options import CFTOptions
from labelwise.plugins.cft.ranking import batched_score
from labelwise.plugins.cft.synthetic import make_synthetic_problem
from labelwise.plugins.cft.workers import Stopped, run_categories

QUICK = dict(epochs=40, early_stopping=12, population=12, mutation_range=1e-2)


@pytest.fixture(scope="module")
def problem():
    return make_synthetic_problem(n_train=300, n_val=200, n_test=10, dim=12, num_classes=4, head_steps=30,
                                  prevalence=(0.15, 0.4), seed=1)


def _reference_score(scores, positive, metric):
    """AP / AUROC of each row, one row at a time, with the formulas of the ranking module."""
    scores, positive = np.asarray(scores), np.asarray(positive, dtype=bool)
    n, n_pos = float(scores.shape[1]), float(positive.sum())
    out = []
    for row in scores:
        ranked, q = np.sort(row), np.sort(row[positive])
        lt_all = np.searchsorted(ranked, q, side="left").astype(np.float64)
        le_all = np.searchsorted(ranked, q, side="right").astype(np.float64)
        lt_pos = np.searchsorted(q, q, side="left").astype(np.float64)
        le_pos = np.searchsorted(q, q, side="right").astype(np.float64)
        if metric == "ap":
            out.append(((n_pos - lt_pos) / (n - lt_all))[None].mean(axis=1)[0])
        else:
            neg_lt = lt_all - lt_pos
            total = neg_lt + 0.5 * ((le_all - le_pos) - neg_lt)
            out.append(total[None].sum(axis=1)[0] / (n_pos * (n - n_pos)))
    return np.array(out)


def _reference_generation(population, fitness, options, generator):
    """Selection, crossover, mutation, elitism, each written out as in the paper's code."""
    p, g = population.shape
    weights = fitness.to(torch.float64)
    if float(weights.sum()) <= 0:
        weights = torch.ones_like(weights)
    parents_1 = population[torch.multinomial(weights, p, replacement=True, generator=generator)]
    parents_2 = population[torch.multinomial(weights, p, replacement=True, generator=generator)]
    take_first = torch.rand(parents_1.shape, generator=generator) < options.crossover_rate
    children = torch.where(take_first, parents_1, parents_2)
    chosen = torch.rand(p, generator=generator) < options.mutation_prob
    noise = (torch.rand((p, g), generator=generator) * 2 - 1) * options.mutation_range
    children = children + noise * chosen[:, None].to(children.dtype)
    if options.elitism:
        order = torch.sort(fitness, descending=True, stable=True).indices[:options.elitism]
        children = children.clone()
        children[:options.elitism] = population[order]
    return children


def _reference_ga(p, options, c):
    """One category's GA, the plain way: ``(row, score, epochs_run, best_at, score_before)``."""
    def rows(split):
        known = p[f"{split}_labels"][:, c] >= 0
        index = torch.from_numpy(np.flatnonzero(known))
        cache = options.cache_bytes > 0
        return CategoryRows(torch.from_numpy(p[f"{split}_features"]), index, p[f"{split}_labels"][known, c] == 1,
                            cache=cache, chunk_rows=options.chunk_rows)

    train, val = rows("train"), rows("val")

    def validate(row):
        return float(_reference_score(val.scores(row[None]).numpy(), val.positive, options.metric)[0])

    row = torch.cat([torch.from_numpy(p["weight"][c]), torch.from_numpy(p["bias"][c:c + 1])])
    best, best_score, best_at = row.clone(), validate(row), -1
    start = best_score
    population = row.repeat(options.population, 1)
    generator = torch.Generator().manual_seed(category_seed(options.seed, c))
    epoch = 0
    while True:
        fitness = torch.as_tensor(_reference_score(train.scores(population).numpy(), train.positive, options.metric))
        candidate = population[int(torch.argmax(fitness))]
        score = validate(candidate)
        if score > best_score:
            best, best_score, best_at = candidate.clone(), score, epoch
        epoch += 1
        if epoch >= options.epochs or (options.early_stopping and epoch - 1 - best_at >= options.early_stopping):
            return best, best_score, epoch, best_at, start
        population = _reference_generation(population, fitness, options, generator)


def _fit(p, options, **kw):
    return fit_calibrated_head(p["train_features"], p["train_labels"], p["val_features"], p["val_labels"],
                               p["weight"], p["bias"], options=options, progress=False, **kw)


def test_batched_score_equals_the_per_row_reference():
    rng = np.random.default_rng(3)
    for trial in range(60):
        r, n = int(rng.integers(1, 20)), int(rng.integers(2, 200))
        dtype = (np.float32, np.float64)[trial % 2]
        scores = rng.integers(-4, 4, (r, n)) if trial % 3 == 0 else rng.standard_normal((r, n))  # ties or not
        scores = scores.astype(dtype)
        scores[:, :2] = -0.0 if trial % 5 == 0 else scores[:, :2]
        positive = rng.random(n) < rng.uniform(0.1, 0.9)
        if positive.all() or not positive.any():
            continue
        for metric in ("ap", "auroc"):
            fast = batched_score(scores, positive, metric=metric)
            assert np.array_equal(fast, _reference_score(scores, positive, metric)), (trial, metric)


@pytest.mark.parametrize("elitism", [0, 1, 3])
def test_next_generation_equals_the_operators_written_out(elitism):
    options = CFTOptions(population=15, elitism=elitism, mutation_range=1e-2, crossover_rate=0.3)
    for seed in range(10):
        population = torch.randn(15, 9, generator=torch.Generator().manual_seed(seed))
        population[0, 0] = -0.0
        fitness = torch.rand(15, dtype=torch.float64, generator=torch.Generator().manual_seed(seed + 50))
        if seed == 0:
            fitness.zero_()
        fast = next_generation(population, fitness, crossover_rate=0.3, mutation_prob=0.5, mutation_range=1e-2,
                               elitism=elitism, generator=torch.Generator().manual_seed(seed))
        plain = _reference_generation(population, fitness, options, torch.Generator().manual_seed(seed))
        assert torch.equal(fast.view(torch.int32), plain.view(torch.int32))


@pytest.mark.parametrize("metric,threads,cache_bytes", [("ap", 1, 1 << 30), ("ap", 3, 1 << 30), ("auroc", 2, 1 << 30),
                                                        ("ap", 2, 0)])
def test_ga_equals_the_per_category_reference(problem, metric, threads, cache_bytes):
    options = CFTOptions(**QUICK, metric=metric, threads=threads, cache_bytes=cache_bytes, chunk_rows=64)
    result = _fit(problem, options)
    improved = 0
    for c, report in enumerate(result.categories):
        row, score, epochs_run, best_at, start = _reference_ga(problem, options, c)
        assert report["score_before"] == start
        assert report["ga"] == {"score": score, "epochs_run": epochs_run, "best_at": best_at}
        assert report["score_after"] == max(score, start)
        if score > start:
            improved += 1
            assert torch.equal(result.weight[c], row[:-1]) and float(result.bias[c]) == float(row[-1])
        else:
            assert torch.equal(result.weight[c], torch.from_numpy(problem["weight"][c]))
    assert improved >= 2  # the comparison covers changed rows, not only untouched ones


@pytest.mark.parametrize("optimizer", ["bp", "best"])
def test_results_do_not_depend_on_the_number_of_threads(problem, optimizer):
    runs = [_fit(problem, CFTOptions(**QUICK, optimizer=optimizer, lr=1e-2, threads=t)) for t in (1, 3)]
    assert torch.equal(runs[0].weight, runs[1].weight) and torch.equal(runs[0].bias, runs[1].bias)
    assert runs[0].categories == runs[1].categories


def test_a_failing_category_stops_the_others_and_raises():
    class Job:
        def __init__(self, category):
            self.category = category

    finished = []

    def run_one(job, stop):
        if job.category == 1:
            raise RuntimeError("category 1 failed")
        while not stop.wait(0.01):
            pass
        finished.append(job.category)
        raise Stopped

    done = []
    with pytest.raises(RuntimeError, match="category 1 failed"):
        run_categories([Job(0), Job(1), Job(2)], run_one, workers=2, cpu=True, on_done=lambda c, r: done.append(c))
    assert done == [] and finished and 1 not in finished
    before = torch.get_num_threads()
    assert run_categories([Job(5)], lambda job, stop: job.category * 2, workers=4, cpu=True) == {5: 10}
    assert torch.get_num_threads() == before  # intra-op threads are restored


def test_idle_workers_run_pieces_elsewhere_only_when_categories_run_out():
    import threading

    from labelwise.plugins.cft.workers import IdleWorkers

    idle = IdleWorkers(2)
    try:
        where = lambda item: (item, threading.get_ident())  # noqa: E731
        assert not idle.idle  # every worker has a category: pieces run in the calling thread
        assert {t for _, t in idle.map(where, [0, 1, 2])} == {threading.get_ident()}
        idle.running = 1  # one category left: the other worker is lent to it
        out = idle.map(where, [0, 1, 2])
        assert [i for i, _ in out] == [0, 1, 2] and out[0][1] == threading.get_ident()
        assert {t for _, t in out[1:]} != {threading.get_ident()}
    finally:
        idle.close()
    assert IdleWorkers(1).map(lambda i: i * 2, [1, 2]) == [2, 4]  # one worker: nothing to lend


def test_ga_with_a_long_last_category_gives_the_same_rows_on_one_and_two_workers(problem, monkeypatch):
    """The tail of a run (fewer categories than workers) splits a generation's fitness across
    idle workers; the rows must not change."""
    from labelwise.plugins.cft import engine, workers

    monkeypatch.setattr(engine, "LEND_MIN_PRODUCT", 0)  # lend even on this small input
    lent = []
    real_map = workers.IdleWorkers.map
    monkeypatch.setattr(workers.IdleWorkers, "map",
                        lambda self, fn, items: (lent.append(self.idle), real_map(self, fn, items))[1])
    options = dict(QUICK, epochs=80, early_stopping=None)
    runs = [_fit(problem, CFTOptions(**options, threads=t)) for t in (1, 2, 5)]
    assert any(lent)  # the idle workers were used
    for other in runs[1:]:
        assert torch.equal(runs[0].weight, other.weight) and torch.equal(runs[0].bias, other.bias)
        assert runs[0].categories == other.categories
