"""GA operators on tiny hand-checkable populations, and the asymmetric loss by hand."""
import math

import pytest
import torch

from labelwise.plugins.cft.genetic import keep_elite, mutate, next_generation, roulette_select, uniform_crossover
from labelwise.plugins.cft.gradient import asymmetric_loss


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_roulette_frequencies_follow_fitness():
    fitness = torch.tensor([0.0, 1.0, 3.0], dtype=torch.float64)
    picks = roulette_select(fitness, 40000, generator=_gen())
    counts = torch.bincount(picks, minlength=3).double() / 40000
    assert counts[0] == 0.0  # zero fitness is never drawn
    assert abs(counts[1] - 0.25) < 0.01 and abs(counts[2] - 0.75) < 0.01


def test_roulette_all_zero_is_uniform_and_negative_refused():
    picks = roulette_select(torch.zeros(4), 8000, generator=_gen())
    assert set(picks.tolist()) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="fitness >= 0"):
        roulette_select(torch.tensor([0.5, -0.1]), 2, generator=_gen())


def test_uniform_crossover_takes_each_gene_from_one_parent():
    p1 = torch.zeros(200, 50)
    p2 = torch.ones(200, 50)
    assert torch.equal(uniform_crossover(p1, p2, rate=1.0, generator=_gen()), p1)
    assert torch.equal(uniform_crossover(p1, p2, rate=0.0, generator=_gen()), p2)
    child = uniform_crossover(p1, p2, rate=0.2, generator=_gen())
    assert set(child.unique().tolist()) == {0.0, 1.0}
    assert abs(float((child == 0).double().mean()) - 0.2) < 0.01  # 20 % of genes from parent 1


def test_mutation_touches_whole_rows_within_range():
    population = torch.full((400, 30), 2.0)
    out = mutate(population, prob=0.5, value_range=0.001, generator=_gen())
    changed = (out != population).any(dim=1)
    assert abs(float(changed.double().mean()) - 0.5) < 0.08
    assert (out[changed] != 2.0).all()  # a mutated individual is changed on every gene
    assert torch.equal(out[~changed], population[~changed])
    assert float((out - population).abs().max()) <= 0.001
    assert torch.equal(mutate(population, prob=0.0, value_range=1.0, generator=_gen()), population)


def test_elitism_puts_the_best_first():
    population = torch.tensor([[1.0], [2.0], [3.0], [4.0]])
    children = torch.zeros(4, 1)
    fitness = torch.tensor([0.2, 0.9, 0.5, 0.9])  # tie: the lower index wins slot 0
    out = keep_elite(children, population, fitness, elitism=2)
    assert out[:, 0].tolist() == [2.0, 4.0, 0.0, 0.0]
    assert torch.equal(keep_elite(children, population, fitness, elitism=0), children)


def test_next_generation_of_identical_copies():
    row = torch.arange(6, dtype=torch.float32)
    population = row.repeat(10, 1)
    out = next_generation(population, torch.ones(10), crossover_rate=0.2, mutation_prob=0.5, mutation_range=1e-3,
                          elitism=1, generator=_gen(3))
    assert torch.equal(out[0], row)  # the elite is unchanged
    unchanged = (out == row).all(dim=1)
    assert 1 <= int(unchanged.sum()) < 10  # crossover of copies is a copy; only mutation moves
    assert float((out - row).abs().max()) <= 1e-3
    again = next_generation(population, torch.ones(10), crossover_rate=0.2, mutation_prob=0.5, mutation_range=1e-3,
                            elitism=1, generator=_gen(3))
    assert torch.equal(out, again)


def test_asymmetric_loss_by_hand():
    logits = torch.tensor([0.0, 2.0, -1.0])
    targets = torch.tensor([1.0, 0.0, 0.0])
    sig = lambda x: 1 / (1 + math.exp(-x))
    # positive, gamma_pos 0: -log p
    expected = -math.log(sig(0.0))
    for x in (2.0, -1.0):  # negatives: p_neg = min(1 - p + 0.05, 1); weight (1 - p_neg)^4
        p_neg = min(1 - sig(x) + 0.05, 1.0)
        expected += -((1 - p_neg) ** 4) * math.log(p_neg)
    loss = asymmetric_loss(logits, targets)
    assert float(loss) == pytest.approx(expected, rel=1e-6)
    # the focusing weight is a constant in the gradient: d/dx of -w log(1 - p + clip)
    x = torch.tensor([2.0], requires_grad=True)
    asymmetric_loss(x, torch.tensor([0.0])).backward()
    p = sig(2.0)
    w = (p - 0.05) ** 4
    assert float(x.grad) == pytest.approx(w * p * (1 - p) / (1 - p + 0.05), rel=1e-5)
