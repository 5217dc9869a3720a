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
(D, M_c)`` product and ranking to validate the fittest individual.
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

__all__ = ["CategoryRows", "OptimizerResult", "category_seed", "run_bp", "run_ga"]


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
        cache: copy ``features[index]`` into a contiguous tensor now (faster products);
            otherwise gather ``chunk_rows`` rows at a time on every call.
        chunk_rows: rows per gathered chunk.
    """

    def __init__(self, features: torch.Tensor, index: torch.Tensor, positive: np.ndarray, *,
                 cache: bool, chunk_rows: int):
        self.positive = np.ascontiguousarray(positive, dtype=bool)
        self.targets = torch.as_tensor(self.positive, dtype=torch.float32, device=features.device)
        self._features = features
        self._index = index.to(features.device)
        self._cached = features[self._index].contiguous() if cache else None
        self._chunk_rows = chunk_rows

    def __len__(self) -> int:
        return int(self._index.shape[0])

    def _chunks(self):
        if self._cached is not None:
            yield slice(None), self._cached
            return
        for start in range(0, len(self), self._chunk_rows):
            part = slice(start, start + self._chunk_rows)
            yield part, self._features[self._index[part]]

    def scores(self, rows: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, N_c)`` of head rows ``(K, D + 1)`` (weights then bias)."""
        weight, bias = rows[:, :-1], rows[:, -1:]
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

    def __post_init__(self):
        self.best_row = self.row.clone()
        self.best_score = self.start_score

    def record(self, candidate: torch.Tensor, options: CFTOptions) -> bool:
        """Validate ``candidate``, keep it on strict improvement, advance; True when done."""
        score = float(self.val.score(candidate[None], options.metric)[0])
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
    return _run(jobs, options, _evolve, on_done, on_round)


def _evolve(job: _Job, options: CFTOptions, stop) -> OptimizerResult:
    """The genetic algorithm on one category (see :func:`run_ga`)."""
    device = job.row.device
    generator = torch.Generator(device=device).manual_seed(category_seed(options.seed, job.category))
    job.state = (job.row.repeat(options.population, 1), generator)
    while not stop.is_set():
        population = job.state[0]
        fit = torch.as_tensor(_fitness([job], options, None, None)[0], device=device)
        candidate = population[int(torch.argmax(fit))]
        if job.record(candidate, options):
            job.state = None
            return job.result()
        population = next_generation(
            population, fit, crossover_rate=options.crossover_rate, mutation_prob=options.mutation_prob,
            mutation_range=options.mutation_range, elitism=options.elitism, generator=generator)
        job.state = (population, generator)
    raise Stopped


def _fitness(jobs: list[_Job], options: CFTOptions, pool=None, threads=None) -> list:
    """Training fitness ``(P,)`` of each job's current population (``job.state[0]``), in job
    order; computed in ``pool`` (an executor) when one is given, else in this thread.
    ``threads`` is accepted for callers of the former lock-step signature and not used."""
    def score(job):
        return job.train.score(job.state[0], options.metric)

    return list(pool.map(score, jobs)) if pool is not None else [score(job) for job in jobs]


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


def _run(jobs: list[_Job], options: CFTOptions, run_one, on_done, on_round) -> dict[int, OptimizerResult]:
    cpu = bool(jobs) and jobs[0].row.device.type == "cpu"
    workers = options.threads or (torch.get_num_threads() if cpu else 1)
    return run_categories(jobs, lambda job, stop: run_one(job, options, stop), workers=workers, cpu=cpu,
                          on_done=on_done, on_round=on_round)


def make_job(category: int, train: CategoryRows, val: CategoryRows, row: torch.Tensor, options: CFTOptions) -> _Job:
    """A job for one category, starting from the original ``row (D + 1,)``."""
    start = float(val.score(row[None], options.metric)[0])
    return _Job(category, train, val, row, start)
