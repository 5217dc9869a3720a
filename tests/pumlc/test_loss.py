"""PU-MLC loss terms against the spec (shared/methods/pumlc.md) on hand-checkable cases."""
import math

import numpy as np
import pytest
import torch

from labelwise.plugins.pumlc.loss import (TAU_MIN, partial_bce, pu_loss, pu_mixup_loss, pu_mixup_pairs,
                                          pu_mixup_regularizer, pu_mixup_targets, pu_temperature)


def spec_pu_loss(z, t, gamma, alpha, eps=1e-10, tau_min=TAU_MIN):
    """The spec written out in float64 numpy, one class at a time."""
    z = np.asarray(z, dtype=np.float64)
    t = np.asarray(t)
    total = 0.0
    for c in range(z.shape[1]):
        tau = max(min(alpha * z[:, c].std(), 1.0), tau_min)
        s = 1 / (1 + np.exp(-z[:, c] / tau))
        pos = t[:, c] == 1
        lp = np.log(s[pos] + eps).sum() / pos.sum() if pos.any() else 0.0
        w = s.mean() ** gamma
        total += w * np.log(s.mean() + eps) - lp
    return total


def test_constant_logits_hand_value_and_finite_gradient():
    # z = 0 everywhere: std 0 -> tau = TAU_MIN (clamped), s = 0.5, w = 0.5 ** 0.55.
    z = torch.zeros(4, 3, requires_grad=True)
    t = torch.tensor([[1, 0, -1]] * 4)
    loss = pu_loss(z, t, gamma=0.55, alpha=1.0)
    w = 0.5 ** 0.55
    expected = 3 * w * math.log(0.5) - math.log(0.5)  # three unlabeled terms, one positive term
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.isfinite(z.grad).all()
    # d/dz_i of w log(mean s) = w / mean(s) * s (1 - s) / (B tau); positive term: -(1 - s) / (|P| tau)
    g_unlabeled = w / 0.5 * 0.25 / (4 * TAU_MIN)
    g_positive = 0.5 / (4 * TAU_MIN)
    assert z.grad[:, 1] == pytest.approx(torch.full((4,), g_unlabeled), rel=1e-5)
    assert z.grad[:, 0] == pytest.approx(torch.full((4,), g_unlabeled - g_positive), rel=1e-5)


def test_matches_spec_on_random_batch():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 5, generator=g) * 3
    t = torch.randint(-1, 2, (7, 5), generator=g)
    t[:, 4] = -1  # a class with no known positive: only its unlabeled term
    for gamma, alpha in [(0.55, 1.0), (0.85, 2.0), (0.0, 0.2)]:
        assert pu_loss(z, t, gamma=gamma, alpha=alpha).item() == pytest.approx(
            spec_pu_loss(z.numpy(), t.numpy(), gamma, alpha), rel=1e-5, abs=1e-5)


def test_known_negatives_are_unlabeled():
    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([[1, 0, 0, -1]] * 3 + [[0, 1, -1, 0]] * 3)
    assert pu_loss(z, t).item() == pytest.approx(pu_loss(z, torch.where(t == 0, -1, t)).item())


def test_temperature_is_capped_scaled_clamped_and_detached():
    z = torch.tensor([[0.0, 0.0, 10.0], [0.2, 0.0, -10.0]], requires_grad=True)
    tau = pu_temperature(z, alpha=2.0)
    assert not tau.requires_grad
    # population std: class 0 = 0.1 -> 2 * 0.1; class 1 = 0 -> clamp; class 2 = 10 -> cap at 1
    assert tau.tolist() == pytest.approx([0.2, TAU_MIN, 1.0])
    assert pu_temperature(z, alpha=2.0, tau_min=0.5).tolist() == pytest.approx([0.5, 0.5, 1.0])


def test_rebalance_weight_is_mean_probability_power_gamma_without_gradient():
    # one class, positives absent: L = w * log(mean s) with w = mean(s) ** gamma (a constant)
    z = torch.tensor([[2.0], [0.0]], requires_grad=True)  # std 1 -> tau 1
    t = torch.tensor([[0], [-1]])
    s = torch.sigmoid(torch.tensor([2.0, 0.0]))
    loss = pu_loss(z, t, gamma=2.0, alpha=1.0)
    m = s.mean().item()
    assert loss.item() == pytest.approx(m ** 2 * math.log(m), rel=1e-6)
    loss.backward()
    # gradient only through log(mean s): w * s_i (1 - s_i) / (B * mean s)
    expected = (m ** 2) * (s * (1 - s)) / (2 * m)
    assert z.grad[:, 0] == pytest.approx(expected, rel=1e-5)


def test_higher_gamma_down_weights_rare_classes():
    z = torch.full((8, 1), -3.0) + torch.linspace(0, 0.1, 8)[:, None]
    t = torch.full((8, 1), -1)
    assert abs(pu_loss(z, t, gamma=2.0).item()) < abs(pu_loss(z, t, gamma=0.0).item())


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        pu_loss(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match=r"\(B, C\)"):
        partial_bce(torch.zeros(3), torch.zeros(3))
    with pytest.raises(ValueError, match="unknown='x'"):
        partial_bce(torch.zeros(2, 2), torch.zeros(2, 2), unknown="x")


def test_mixup_pairs_halves_and_beta():
    first, second, lam = pu_mixup_pairs(5, alpha=0.3, generator=torch.Generator().manual_seed(0))
    assert sorted(first.tolist()) == [0, 1]  # a permutation of the first half
    assert second.tolist() == [3, 4]  # the last half; the odd middle sample is left out
    assert 0.0 < lam < 1.0
    again = pu_mixup_pairs(5, alpha=0.3, generator=torch.Generator().manual_seed(0))
    assert again[2] == lam and torch.equal(again[0], first)
    one = pu_mixup_pairs(1)
    assert one[0].tolist() == one[1].tolist() == [0]
    lams = [pu_mixup_pairs(4, alpha=0.3, generator=torch.Generator().manual_seed(s))[2] for s in range(400)]
    assert np.mean(lams) == pytest.approx(0.5, abs=0.05)  # Beta(a, a) is symmetric
    assert np.mean([x < 0.1 or x > 0.9 for x in lams]) > 0.4  # alpha 0.3: mass near 0 and 1


def test_mixup_targets_and_loss_hand_case():
    z = torch.tensor([[0.0, 2.0]])
    t = torch.tensor([[1, -1]])
    soft = pu_mixup_targets(z, t)
    assert soft.tolist()[0] == pytest.approx([1.0, torch.sigmoid(torch.tensor(2.0)).item()])
    # reg = sum_c mean_i (log(t) - log(sigmoid(z_mix)))^2 ; with z_mix = 0: log 0.5
    targets = torch.tensor([[1.0, 0.5], [0.25, 0.5]])
    value = pu_mixup_loss(torch.zeros(2, 2), targets, eps=0.0).item()
    expected = ((math.log(1) - math.log(0.5)) ** 2 + (math.log(0.25) - math.log(0.5)) ** 2) / 2 + 0.0
    assert value == pytest.approx(expected, rel=1e-6)


def test_mixup_regularizer_mixes_inputs_and_targets_with_one_pairing():
    x = torch.arange(4, dtype=torch.float32)[:, None] * torch.ones(4, 3)
    logits = torch.zeros(4, 3, requires_grad=True)
    t = torch.tensor([[1, -1, 0], [0, 1, -1], [-1, -1, 1], [1, 1, 1]])
    seen = {}

    def model(mixed):
        seen["x"] = mixed
        return torch.zeros(mixed.shape[0], 3)

    gen = torch.Generator().manual_seed(3)
    reg = pu_mixup_regularizer(model, x, logits, t, alpha=0.3, generator=gen)
    first, second, lam = pu_mixup_pairs(4, alpha=0.3, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(seen["x"], lam * x[first] + (1 - lam) * x[second])
    soft = pu_mixup_targets(logits.detach(), t)
    mixed = lam * soft[first] + (1 - lam) * soft[second]
    assert reg.item() == pytest.approx(pu_mixup_loss(torch.zeros(2, 3), mixed).item(), rel=1e-6)
    reg.backward()  # targets keep their graph by default, as the reference
    assert logits.grad is not None and logits.grad.abs().sum() > 0
    logits.grad = None
    detached = pu_mixup_regularizer(model, x, logits, t, detach_targets=True)
    assert not detached.requires_grad  # the stand-in model has no parameters: nothing left to train


def test_partial_bce_ignore_and_negative_hand_case():
    z = torch.tensor([[0.0, 0.0], [0.0, 0.0]])
    t = torch.tensor([[1, -1], [-1, -1]])
    ln2 = math.log(2)
    # ignore: one known entry -> its BCE (ln 2) times C = 2
    assert partial_bce(z, t, unknown="ignore").item() == pytest.approx(2 * ln2)
    # negative: every entry ln 2, sum over 2 classes, mean over samples
    assert partial_bce(z, t, unknown="negative").item() == pytest.approx(2 * ln2)
    z2 = torch.tensor([[3.0, -1.0], [0.5, 2.0]])
    t2 = torch.tensor([[1, 0], [-1, 1]])
    bce = lambda v, y: -math.log(1 / (1 + math.exp(-v))) if y else -math.log(1 - 1 / (1 + math.exp(-v)))
    known = [bce(3.0, 1), bce(-1.0, 0), bce(2.0, 1)]
    assert partial_bce(z2, t2).item() == pytest.approx(sum(known) / 3 * 2, rel=1e-6)
    assert partial_bce(z2, t2, unknown="negative").item() == pytest.approx(
        (bce(3.0, 1) + bce(-1.0, 0) + bce(0.5, 0) + bce(2.0, 1)) / 2, rel=1e-6)
    assert partial_bce(z2, torch.full((2, 2), -1)).item() == 0.0


def test_partial_bce_equals_mmpretrain_sigmoid_ce_when_all_known():
    pytest.importorskip("mmpretrain")
    from mmpretrain.models.losses import CrossEntropyLoss

    z = torch.randn(6, 4, generator=torch.Generator().manual_seed(2))
    t = torch.randint(0, 2, (6, 4), generator=torch.Generator().manual_seed(3))
    reference = CrossEntropyLoss(use_sigmoid=True)(z, t.float(), avg_factor=6)
    assert partial_bce(z, t).item() == pytest.approx(reference.item(), rel=1e-6)
