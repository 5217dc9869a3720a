"""The optimisation loops of CFT: each category runs on its own, many categories at once.

Categories run whole on worker threads (:mod:`labelwise.plugins.cft.workers`); a category
that reaches ``epochs`` or its early-stopping patience ends, so it stops costing time.
Each category's computation depends only on its own data, options and seed: the same shapes
go through the same single-threaded operations whichever other categories run beside it, so
results do not depend on category order, on which categories are run together, on the
number of threads, or on how categories are split across processes.

Cost, per GA generation and category: one ``(P, D) x (D, N_c)`` matrix product over the
category's ``N_c`` known training rows, one batched ranking of ``P`` rows of ``N_c`` scores
(:mod:`labelwise.plugins.cft.ranking`), one generation of GA operators, and one ``(1, D) x
(D, M_c)`` product and ranking to validate the fittest individual (skipped when the fittest
individual is the row validated last time, whose score is known).

On CPU a generation's product is always computed in :data:`FITNESS_PIECES` fixed blocks of
known rows and its ranking in as many fixed pieces of the population. When fewer categories
remain than workers, the pieces run on the idle workers at once
(:class:`labelwise.plugins.cft.workers.IdleWorkers`); otherwise one after another. The pieces
are the same either way, so the results are too.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from labelwise.plugins.cft.genetic import next_generation
from labelwise.plugins.cft.gradient import asymmetric_loss
from labelwise.plugins.cft.options import CFTOptions
from labelwise.plugins.cft.ranking import batched_score
from labelwise.plugins.cft.workers import Stopped, run_categories

__all__ = ["FITNESS_PIECES", "CategoryRows", "OptimizerResult", "category_seed", "run_bp", "run_ga", "workers_for"]

#: Fixed pieces in which a CPU generation's fitness is computed (blocks of known rows for the
#: product, of individuals for the ranking).
FITNESS_PIECES = 2
#: Known rows x genes below which a generation's pieces are not handed to idle workers.
LEND_MIN_PRODUCT = 1 << 18


def category_seed(seed: int, category: int) -> int:
    """The seed of category ``category``'s generator: a function of ``(seed, category)`` only."""
    state = np.random.SeedSequence([int(seed), int(category)]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


class CategoryRows:
    """The known rows of one category in one split, and the scores of head rows on them.

    Args:
        features: ``(N, D)`` float32 tensor of the split (on the compute device).
        index: ``(N_c,)`` int64 indices of the rows whose label is known.
        positive: ``(N_c,)`` bool (numpy), the known labels.
        cache: hold ``features[index]`` as a contiguous tensor while the category is being
            optimised (faster products: no gather per generation), made on first use and
            dropped by :meth:`release`; otherwise gather ``chunk_rows`` rows at a time on
            every call.
        chunk_rows: rows per gathered chunk.
    """

    def __init__(self, features: torch.Tensor, index: torch.Tensor, positive: np.ndarray, *,
                 cache: bool, chunk_rows: int):
        self.positive = np.ascontiguousarray(positive, dtype=bool)
        self.targets = torch.as_tensor(self.positive, dtype=torch.float32, device=features.device)
        self._features = features
        self._index = index.to(features.device)
        self._cache = bool(cache)
        self._cached = None
        self._cached_t = None  # CPU: numpy (D, N_c), the layout of the fastest product
        self._chunk_rows = chunk_rows

    def __len__(self) -> int:
        return int(self._index.shape[0])

    def release(self) -> None:
        """Drop the contiguous copies of the rows (made again if the rows are used again)."""
        self._cached = self._cached_t = None

    def _chunks(self):
        if self._cache:
            if self._cached is None:
                self._cached = self._features[self._index].contiguous()
            yield slice(None), self._cached
            return
        for start in range(0, len(self), self._chunk_rows):
            part = slice(start, start + self._chunk_rows)
            yield part, self._features[self._index[part]]

    def scores(self, rows: torch.Tensor, run=None) -> torch.Tensor:
        """Logits ``(K, N_c)`` of head rows ``(K, D + 1)`` (weights then bias).

        ``run(fn, items)`` (a map, e.g. :meth:`IdleWorkers.map`) computes the pieces of the
        CPU product; default: one after another.
        """
        weight, bias = rows[:, :-1], rows[:, -1:]
        if self._cache and rows.device.type == "cpu" and not rows.requires_grad:
            # numpy's BLAS (OpenBLAS) on a (D, N_c) copy, in FITNESS_PIECES fixed blocks of
            # columns (each block of rows streamed once from memory): measured 1.4 ms against
            # 2.0-2.6 ms for torch.addmm (MKL) of (50, 512) x (512, 2495) on one core here
            if self._cached_t is None:
                transposed = self._features[self._index].numpy().T
                self._cached_t = [np.ascontiguousarray(block)
                                  for block in np.array_split(transposed, FITNESS_PIECES, axis=1)]
            w = weight.numpy()
            parts = (run or _map)(lambda block: np.matmul(w, block), self._cached_t)
            out = np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]
            out += bias.numpy()
            return torch.from_numpy(out)
        parts = [torch.addmm(bias, weight, x.T) for _, x in self._chunks()]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def loss_backward(self, row: torch.Tensor, options: CFTOptions) -> float:
        """Back-propagate BP's asymmetric loss of ``row (D + 1,)`` (a leaf), chunk by chunk."""
        total = 0.0
        for part, x in self._chunks():
            logits = torch.mv(x, row[:-1]) + row[-1]
            loss = asymmetric_loss(logits, self.targets[part], gamma_neg=options.gamma_neg,
                                   gamma_pos=options.gamma_pos, clip=options.clip)
            loss.backward()
            total += float(loss.detach())
        return total

    def score(self, rows: torch.Tensor, metric: str):
        """Metric of each head row on these rows: float64 ``(K,)`` (numpy on CPU, else torch)."""
        scores = self.scores(rows)
        if scores.device.type == "cpu":
            return batched_score(scores.numpy(), self.positive, metric=metric)
        return batched_score(scores, self.targets.bool(), metric=metric)

    def fitness(self, population: torch.Tensor, metric: str, idle=None) -> torch.Tensor:
        """:meth:`score` of every row of ``population``, as a float64 tensor on its device.

        On CPU the product runs in :data:`FITNESS_PIECES` fixed blocks of known rows and the
        ranking in as many fixed pieces of the population, on ``idle``
        (:class:`labelwise.plugins.cft.workers.IdleWorkers`) when given: the same pieces
        either way, so the same values.
        """
        if population.device.type != "cpu":
            return self.score(population, metric)
        # handing a piece to another thread costs tens of microseconds: only worth it for large products
        lend = idle is not None and len(self) * population.shape[1] >= LEND_MIN_PRODUCT
        run = idle.map if lend else _map
        logits = self.scores(population, run).numpy()
        pieces = np.array_split(np.arange(len(logits)), FITNESS_PIECES)
        parts = run(lambda rows: batched_score(logits[rows[0]:rows[-1] + 1], self.positive, metric=metric),
                    [rows for rows in pieces if len(rows)])
        return torch.from_numpy(np.concatenate(parts))


def _map(fn, items) -> list:
    return [fn(item) for item in items]


@dataclasses.dataclass
class OptimizerResult:
    """What one optimiser found for one category."""

    row: torch.Tensor  # (D + 1,) best head row on validation (the original if never improved)
    score: float  # its validation score
    epochs_run: int
    best_at: int  # epoch of the last strict improvement; -1: none


@dataclasses.dataclass
class _Job:
    category: int
    train: CategoryRows
    val: CategoryRows
    row: torch.Tensor  # (D + 1,) original
    start_score: float
    best_row: torch.Tensor = None
    best_score: float = 0.0
    best_at: int = -1
    epoch: int = 0
    state: object = None  # GA, while running: (population, generator)
    last: tuple = None  # (row, validation score) of the last validated row

    def __post_init__(self):
        self.best_row = self.row.clone()
        self.best_score = self.start_score

    def record(self, candidate: torch.Tensor, options: CFTOptions) -> bool:
        """Validate ``candidate``, keep it on strict improvement, advance; True when done."""
        if self.last is not None and torch.equal(self.last[0], candidate):
            score = self.last[1]  # the same row as last time: the same score, and no improvement
        else:
            score = float(self.val.score(candidate[None], options.metric)[0])
            self.last = (candidate.detach().clone(), score)
        if score > self.best_score:
            self.best_score, self.best_at, self.best_row = score, self.epoch, candidate.detach().clone()
        epoch, self.epoch = self.epoch, self.epoch + 1
        if self.epoch >= options.epochs:
            return True
        return options.early_stopping is not None and epoch - self.best_at >= options.early_stopping

    def result(self) -> OptimizerResult:
        return OptimizerResult(self.best_row.cpu(), self.best_score, self.epoch, self.best_at)


def run_ga(jobs: list[_Job], options: CFTOptions, *, on_done=None, on_round=None) -> dict[int, OptimizerResult]:
    """Run the genetic algorithm on every job, whole categories on worker threads.

    Generation ``e`` of a category: compute the training fitness of its population, validate
    the fittest individual (first on ties), keep it on strict improvement, stop or breed the
    next population (:func:`labelwise.plugins.cft.genetic.next_generation`). The population
    starts as ``population`` identical copies of the original row.

    Args:
        jobs: one per category (built by :func:`make_job`).
        on_done: called as ``on_done(category, OptimizerResult)`` when a category finishes.
        on_round: called as ``on_round(number_still_running)`` after each ``on_done``.

    Returns:
        ``{category: OptimizerResult}``.
    """
    return _run(jobs, options, _evolve, on_done, on_round, lend_idle=True)


def _evolve(job: _Job, options: CFTOptions, stop, idle=None) -> OptimizerResult:
    """The genetic algorithm on one category (see :func:`run_ga`)."""
    device = job.row.device
    generator = torch.Generator(device=device).manual_seed(category_seed(options.seed, job.category))
    job.state = (job.row.repeat(options.population, 1), generator)
    while not stop.is_set():
        population = job.state[0]
        fit = job.train.fitness(population, options.metric, idle)
        candidate = population[int(torch.argmax(fit))]
        if job.record(candidate, options):
            job.state = None
            return job.result()
        population = next_generation(
            population, fit, crossover_rate=options.crossover_rate, mutation_prob=options.mutation_prob,
            mutation_range=options.mutation_range, elitism=options.elitism, generator=generator)
        job.state = (population, generator)
    raise Stopped


def run_bp(jobs: list[_Job], options: CFTOptions, *, on_done=None, on_round=None) -> dict[int, OptimizerResult]:
    """Run the gradient variant on every job, whole categories on worker threads.

    Epoch ``e`` of a category: one full-batch Adam step (``options.lr``) on the asymmetric loss
    of its known training rows, then validate the updated row and keep it on strict
    improvement. Arguments and return value as :func:`run_ga`.
    """
    return _run(jobs, options, _descend, on_done, on_round)


def _descend(job: _Job, options: CFTOptions, stop) -> OptimizerResult:
    """The gradient variant on one category (see :func:`run_bp`)."""
    parameter = job.row.clone().requires_grad_(True)
    adam = torch.optim.Adam([parameter], lr=options.lr)
    while not stop.is_set():
        adam.zero_grad(set_to_none=True)
        job.train.loss_backward(parameter, options)
        adam.step()
        with torch.no_grad():
            if job.record(parameter.detach(), options):
                return job.result()
    raise Stopped


def workers_for(options: CFTOptions, device) -> int:
    """Categories run at once: ``options.threads``, else torch's intra-op threads on CPU, else 1."""
    return options.threads or (torch.get_num_threads() if torch.device(device).type == "cpu" else 1)


def _run(jobs: list[_Job], options: CFTOptions, run_one, on_done, on_round,
         lend_idle: bool = False) -> dict[int, OptimizerResult]:
    cpu = bool(jobs) and jobs[0].row.device.type == "cpu"

    def one(job, stop, *idle):
        try:
            return run_one(job, options, stop, *idle)
        finally:  # at most `workers` categories hold their rows' copies at once
            job.train.release()
            job.val.release()

    return run_categories(jobs, one, workers=workers_for(options, jobs[0].row.device if jobs else "cpu"), cpu=cpu,
                          on_done=on_done, on_round=on_round, lend_idle=lend_idle and cpu)


def make_job(category: int, train: CategoryRows, val: CategoryRows, row: torch.Tensor, options: CFTOptions) -> _Job:
    """A job for one category, starting from the original ``row (D + 1,)``."""
    start = float(val.score(row[None], options.metric)[0])
    val.release()  # made again when the category runs
    return _Job(category, train, val, row, start)
