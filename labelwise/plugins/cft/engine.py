"""The optimisation loops of CFT, run for many categories in lock step.

Every active category advances one GA generation (or one BP step) per round; a category that
reaches ``epochs`` or its early-stopping patience leaves the round, so it stops costing time.
Each category's computation depends only on its own data, options and seed: the same shapes
go through the same operations whichever other categories run beside it, so results do not
depend on category order, on which categories are run together, or on how categories are
split across processes.

Cost, per GA generation and category: one ``(P, D) x (D, N_c)`` matrix product over the
category's ``N_c`` known training rows, and one batched ranking of ``P`` rows of ``N_c``
scores (:mod:`labelwise.plugins.cft.ranking`). On CPU the rankings of different categories run
in a thread pool (numpy's sort releases the GIL) while the main thread computes the next
category's product.
"""
from __future__ import annotations

import collections
import dataclasses
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from labelwise.plugins.cft.genetic import next_generation
from labelwise.plugins.cft.gradient import asymmetric_loss
from labelwise.plugins.cft.options import CFTOptions
from labelwise.plugins.cft.ranking import batched_score

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
        return torch.cat([torch.addmm(bias, weight, x.T) for _, x in self._chunks()], dim=1)

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
    state: object = None  # GA: (population, generator); BP: (parameter, Adam)

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
    """Run the genetic algorithm on every job in lock step (see the module docstring).

    Generation ``e`` of a category: compute the training fitness of its population, validate
    the fittest individual (first on ties), keep it on strict improvement, stop or breed the
    next population (:func:`labelwise.plugins.cft.genetic.next_generation`). The population
    starts as ``population`` identical copies of the original row.

    Args:
        jobs: one per category (built by :func:`make_job`).
        on_done: called as ``on_done(category, OptimizerResult)`` when a category finishes.
        on_round: called as ``on_round(number_active)`` after every round.

    Returns:
        ``{category: OptimizerResult}``.
    """
    for job in jobs:
        device = job.row.device
        generator = torch.Generator(device=device).manual_seed(category_seed(options.seed, job.category))
        job.state = (job.row.repeat(options.population, 1), generator)
    results = {}
    threads = options.threads or torch.get_num_threads()
    with ThreadPoolExecutor(max_workers=threads) as pool:
        active = list(jobs)
        while active:
            fitness = _fitness(active, options, pool, threads)
            still = []
            for job, fit in zip(active, fitness):
                population, generator = job.state
                fit = torch.as_tensor(fit, device=population.device)
                candidate = population[int(torch.argmax(fit))]
                if job.record(candidate, options):
                    results[job.category] = job.result()
                    job.state = None
                    if on_done is not None:
                        on_done(job.category, results[job.category])
                    continue
                population = next_generation(
                    population, fit, crossover_rate=options.crossover_rate, mutation_prob=options.mutation_prob,
                    mutation_range=options.mutation_range, elitism=options.elitism, generator=generator)
                job.state = (population, generator)
                still.append(job)
            active = still
            if on_round is not None:
                on_round(len(active))
    return results


def _fitness(jobs: list[_Job], options: CFTOptions, pool: ThreadPoolExecutor, threads: int) -> list:
    """Training fitness ``(P,)`` of every job's population, in job order."""
    if jobs[0].row.device.type != "cpu":
        return [job.train.score(job.state[0], options.metric) for job in jobs]
    pending: collections.deque = collections.deque()
    out: list = [None] * len(jobs)
    for i, job in enumerate(jobs):
        scores = job.train.scores(job.state[0]).numpy()
        pending.append((i, pool.submit(batched_score, scores, job.train.positive, metric=options.metric)))
        while len(pending) > 2 * threads:  # bound the memory held by queued score matrices
            j, future = pending.popleft()
            out[j] = future.result()
    for j, future in pending:
        out[j] = future.result()
    return out


def run_bp(jobs: list[_Job], options: CFTOptions, *, on_done=None, on_round=None) -> dict[int, OptimizerResult]:
    """Run the gradient variant on every job in lock step.

    Epoch ``e`` of a category: one full-batch Adam step (``options.lr``) on the asymmetric loss
    of its known training rows, then validate the updated row and keep it on strict
    improvement. Arguments and return value as :func:`run_ga`.
    """
    for job in jobs:
        parameter = job.row.clone().requires_grad_(True)
        job.state = (parameter, torch.optim.Adam([parameter], lr=options.lr))
    results = {}
    active = list(jobs)
    while active:
        still = []
        for job in active:
            parameter, adam = job.state
            adam.zero_grad(set_to_none=True)
            job.train.loss_backward(parameter, options)
            adam.step()
            with torch.no_grad():
                done = job.record(parameter.detach(), options)
            if done:
                results[job.category] = job.result()
                job.state = None
                if on_done is not None:
                    on_done(job.category, results[job.category])
            else:
                still.append(job)
        active = still
        if on_round is not None:
            on_round(len(active))
    return results


def make_job(category: int, train: CategoryRows, val: CategoryRows, row: torch.Tensor, options: CFTOptions) -> _Job:
    """A job for one category, starting from the original ``row (D + 1,)``."""
    start = float(val.score(row[None], options.metric)[0])
    return _Job(category, train, val, row, start)
