"""Genetic-algorithm operators of CFT, on a population of head rows ``(P, G)``.

A chromosome is one category's row of the final layer, ``[w (D), b]`` (``G = D + 1``).
One generation (:func:`next_generation`) follows the paper's reference implementation
("Category-wise Fine-Tuning", arXiv 2401.16991, ICONIP 2023):

1. roulette-wheel selection, drawn twice: ``P`` first parents and ``P`` second parents, each
   index drawn with probability proportional to its fitness (with replacement);
2. uniform crossover: every gene of child ``i`` comes from its first parent with probability
   ``crossover_rate``, else from its second parent;
3. mutation: every child, with probability ``mutation_prob``, gets uniform noise in
   ``[-mutation_range, mutation_range)`` added to every gene;
4. elitism: the ``elitism`` fittest individuals of the old population replace the first
   children (slot 0 holds the best).

All randomness comes from the ``generator`` argument, in the order listed above, so a
category's run is a function of its own seed only.
"""
from __future__ import annotations

import torch

__all__ = ["keep_elite", "mutate", "next_generation", "roulette_select", "uniform_crossover"]


def roulette_select(fitness: torch.Tensor, num: int, *, generator: torch.Generator) -> torch.Tensor:
    """Draw ``num`` indices with probability proportional to ``fitness (P,)``, with replacement.

    Fitness values must be >= 0; if all are 0 every index is equally likely.

    Returns:
        int64 ``(num,)`` on the fitness' device.
    """
    return torch.multinomial(_roulette_weights(fitness), num, replacement=True, generator=generator)


def _roulette_weights(fitness: torch.Tensor) -> torch.Tensor:
    weights = fitness.to(torch.float64)
    if bool((weights < 0).any()):
        raise ValueError("roulette selection needs fitness >= 0")
    if float(weights.sum()) <= 0.0:
        weights = torch.ones_like(weights)
    return weights


def uniform_crossover(parents_1: torch.Tensor, parents_2: torch.Tensor, *, rate: float,
                      generator: torch.Generator) -> torch.Tensor:
    """Children ``(P, G)``: each gene from ``parents_1`` with probability ``rate``, else ``parents_2``."""
    take_first = torch.rand(parents_1.shape, generator=generator, device=parents_1.device) < rate
    return torch.where(take_first, parents_1, parents_2)


def mutate(population: torch.Tensor, *, prob: float, value_range: float,
           generator: torch.Generator) -> torch.Tensor:
    """Add ``U[-value_range, value_range)`` noise to every gene of each row chosen with ``prob``.

    Returns a new tensor; rows not chosen are unchanged.
    """
    p, g = population.shape
    device = population.device
    chosen = torch.rand(p, generator=generator, device=device) < prob
    noise = torch.rand((p, g), generator=generator, device=device, dtype=population.dtype)
    noise.mul_(2).sub_(1).mul_(value_range)  # in place: the same float operations as (u * 2 - 1) * r
    return noise.mul_(chosen[:, None].to(population.dtype)).add_(population)


def keep_elite(children: torch.Tensor, population: torch.Tensor, fitness: torch.Tensor, *,
               elitism: int) -> torch.Tensor:
    """Put the ``elitism`` fittest rows of ``population`` (best first; ties: lowest index) into
    the first rows of ``children`` (a new tensor is returned)."""
    if elitism <= 0:
        return children
    return _place_elite(children.clone(), population, fitness, elitism)


def _place_elite(children, population, fitness, elitism):
    """:func:`keep_elite` writing into ``children`` itself."""
    if elitism > 0:
        order = torch.sort(fitness, descending=True, stable=True).indices[:elitism]
        children[:elitism] = population.index_select(0, order)
    return children


def next_generation(population: torch.Tensor, fitness: torch.Tensor, *, crossover_rate: float,
                    mutation_prob: float, mutation_range: float, elitism: int,
                    generator: torch.Generator) -> torch.Tensor:
    """One generation: selection, crossover, mutation, elitism (see the module docstring).

    Args:
        population: ``(P, G)`` chromosomes.
        fitness: ``(P,)`` fitness of each (>= 0, higher is better), on the same device.

    Returns:
        The next population ``(P, G)``.
    """
    # The operators above, composed without their repeated checks and copies (same draws,
    # same float operations, so the same population bit for bit).
    p = population.shape[0]
    weights = _roulette_weights(fitness)
    parents_1 = population.index_select(0, torch.multinomial(weights, p, replacement=True, generator=generator))
    parents_2 = population.index_select(0, torch.multinomial(weights, p, replacement=True, generator=generator))
    children = uniform_crossover(parents_1, parents_2, rate=crossover_rate, generator=generator)
    children = mutate(children, prob=mutation_prob, value_range=mutation_range, generator=generator)
    return _place_elite(children, population, fitness, elitism)
