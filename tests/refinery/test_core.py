"""Label Refinery core: the loss against hand-computed values, the frozen refinery, top-k."""
import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from labelwise.errors import ConfigError
from labelwise.plugins.refinery.loss import refinery_targets, soft_target_cross_entropy
from labelwise.plugins.refinery.store import expand_topk, topk_soft_labels
from labelwise.plugins.refinery.teacher import Refinery, batch_statistics, renormalize


def test_loss_hand_case():
    # p = (0.5, 0.5, 0), z = (0, 0, 0): q = 1/3 each, loss = -(0.5 ln 1/3 + 0.5 ln 1/3) = ln 3
    z = torch.zeros(1, 3)
    p = torch.tensor([[0.5, 0.5, 0.0]])
    assert soft_target_cross_entropy(z, p).item() == pytest.approx(math.log(3), abs=1e-6)
    # z = (ln 1, ln 2, ln 1): q = (0.25, 0.5, 0.25); p = (0, 1, 0) -> -ln 0.5 = ln 2
    z = torch.log(torch.tensor([[1.0, 2.0, 1.0]]))
    assert soft_target_cross_entropy(z, torch.tensor([[0.0, 1.0, 0.0]])).item() == pytest.approx(math.log(2), abs=1e-6)


def test_loss_equals_kl_plus_teacher_entropy():
    # q = (0.25, 0.5, 0.25), p = (0.5, 0.25, 0.25):
    # KL(p||q) = 0.5 ln 2 + 0.25 ln 0.5 + 0 = 0.25 ln 2; H(p) = 0.5 ln 2 + 0.25 ln 4 * 2 = 1.5 ln 2
    # CE = 1.75 ln 2
    z = torch.log(torch.tensor([[1.0, 2.0, 1.0]]))
    p = torch.tensor([[0.5, 0.25, 0.25]])
    ce = soft_target_cross_entropy(z, p).item()
    assert ce == pytest.approx(1.75 * math.log(2), abs=1e-6)
    kl = torch.nn.functional.kl_div(torch.log_softmax(z, -1), p, reduction="batchmean").item()
    assert kl == pytest.approx(0.25 * math.log(2), abs=1e-6)
    assert ce == pytest.approx(kl + 1.5 * math.log(2), abs=1e-6)


def test_loss_random_batch_identity_and_gradient_of_kl():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(6, 5, generator=g, requires_grad=True)
    p = torch.softmax(torch.randn(6, 5, generator=g), -1)
    ce = soft_target_cross_entropy(z, p)
    kl = torch.nn.functional.kl_div(torch.log_softmax(z, -1), p, reduction="batchmean")
    entropy = -(p * p.log()).sum(-1).mean()
    assert torch.allclose(ce, kl + entropy, atol=1e-6)
    (grad_ce,) = torch.autograd.grad(ce, z)
    assert torch.allclose(grad_ce, (torch.softmax(z, -1) - p) / 6, atol=1e-6)  # the KL gradient


def test_loss_one_hot_is_cross_entropy_and_weights():
    z = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 2])
    one_hot = torch.nn.functional.one_hot(y, 3).float()
    assert torch.allclose(soft_target_cross_entropy(z, one_hot), torch.nn.functional.cross_entropy(z, y))
    per = soft_target_cross_entropy(z, one_hot, reduction="none")
    w = torch.tensor([1.0, 0.0])
    # 'mean' divides by N = 2, not by sum(w) = 1
    assert soft_target_cross_entropy(z, one_hot, weight=w).item() == pytest.approx(per[0].item() / 2)
    assert soft_target_cross_entropy(z, one_hot, weight=w, reduction="sum").item() == pytest.approx(per[0].item())


def test_loss_bad_input():
    with pytest.raises(ConfigError, match="reduction must be one of mean, sum, none, got 'avg'"):
        soft_target_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 3), reduction="avg")
    with pytest.raises(ConfigError, match=r"logits \(2, 3\) and target_probs \(2, 4\)"):
        soft_target_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ConfigError, match=r"weight must be \(N,\) = \(2,\), got \(3,\)"):
        soft_target_cross_entropy(torch.zeros(2, 3), torch.zeros(2, 3), weight=torch.ones(3))
    with pytest.raises(ConfigError, match="temperature must be > 0"):
        refinery_targets(torch.zeros(1, 2), temperature=0)


@pytest.mark.parametrize("targets, weight, message", [
    ([[20.0, 0.0, 0.0], [1.0, 0.0, 0.0]], None, "soft target row 0 sums to 20; expected 1"),
    ([[1.5, -0.5, 0.0], [1.0, 0.0, 0.0]], None, "soft target value -0.5; expected probabilities >= 0"),
    ([[float("nan"), 0.5, 0.5], [1.0, 0.0, 0.0]], None, "soft targets hold NaN"),
    ([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [1.0, -2.0], "sample weight -2.0; expected finite weights >= 0"),
])
def test_loss_refuses_targets_that_are_not_distributions(targets, weight, message):
    from labelwise.errors import DataError

    with pytest.raises(DataError, match=f"soft_target_cross_entropy: {message}"):
        soft_target_cross_entropy(torch.zeros(2, 3), torch.tensor(targets),
                                  weight=None if weight is None else torch.tensor(weight))


def _bn_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Dropout(0.5), nn.Linear(4, 3))
    net[1].running_mean.fill_(0.3)
    net[1].running_var.fill_(2.0)
    return net


def test_refinery_is_frozen_and_outside_the_module_tree():
    net = _bn_net()
    refinery = Refinery(net)
    assert all(not p.requires_grad for p in net.parameters())
    assert not net.training

    class Student(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 2)
            self.refinery = refinery

    s = Student()
    assert [n for n, _ in s.named_parameters()] == ["fc.weight", "fc.bias"]
    assert list(s.state_dict()) == ["fc.weight", "fc.bias"]
    s.train()
    assert not net.training  # .train() of the owner does not reach the refinery
    assert copy.deepcopy(s).refinery is refinery  # EMA-style copies share it


def test_refinery_targets_no_grad_and_usable_in_autograd():
    net = _bn_net()
    refinery = Refinery(net)
    x = torch.randn(4, 3, 8, 8)
    probs = refinery(x)
    assert probs.dtype == torch.float32 and not probs.requires_grad and not probs.is_inference()
    assert torch.allclose(probs.sum(-1), torch.ones(4))
    assert torch.allclose(probs, torch.softmax(net(x), -1))  # eval mode: running statistics
    z = torch.zeros(4, 3, requires_grad=True)
    soft_target_cross_entropy(z, probs).backward()  # targets enter the graph as constants
    assert z.grad is not None and all(p.grad is None for p in net.parameters())


def test_bn_train_mode_uses_batch_statistics_and_keeps_buffers():
    net = _bn_net()
    bn = net[1]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    x = torch.randn(5, 3, 8, 8)
    out = Refinery(net, bn_mode="train").logits(x)
    # reference: the same layers with BN normalising by the batch mean / biased variance
    h = net[0](x)
    mean, var = h.mean((0, 2, 3), keepdim=True), h.var((0, 2, 3), unbiased=False, keepdim=True)
    h = (h - mean) / torch.sqrt(var + bn.eps) * bn.weight.view(1, -1, 1, 1) + bn.bias.view(1, -1, 1, 1)
    expected = net[6](net[4](net[3](torch.relu(h))))  # dropout stays in eval mode
    assert torch.allclose(out, expected, atol=1e-5)
    assert not torch.allclose(out, net(x), atol=1e-3)  # differs from eval-mode BN
    after = net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # running stats + count intact
    assert not bn.training and bn.track_running_stats  # restored


def test_batch_statistics_restores_on_error():
    net = _bn_net().eval()
    with pytest.raises(RuntimeError):
        with batch_statistics(net):
            raise RuntimeError("boom")
    assert not net[1].training and net[1].track_running_stats


def test_renormalization_and_bad_options():
    x = torch.randn(2, 3, 4, 4)
    pixels = x * 64 + 127.5
    y = renormalize(x, from_mean=[127.5] * 3, from_std=[64] * 3, to_mean=[100, 110, 120], to_std=[50, 60, 70])
    expected = (pixels - torch.tensor([100., 110, 120]).view(1, 3, 1, 1)) / torch.tensor([50., 60, 70]).view(1, 3, 1, 1)
    assert torch.allclose(y, expected, atol=1e-4)
    seen = []
    net = nn.Sequential(nn.Flatten(), nn.LazyLinear(2))
    net(x)
    net.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    Refinery(net, student_mean=[127.5] * 3, student_std=[64] * 3,
             teacher_mean=[100, 110, 120], teacher_std=[50, 60, 70])(x)
    assert torch.allclose(seen[-1], expected, atol=1e-4)
    Refinery(net, student_mean=[1, 2, 3], student_std=[1, 1, 1], teacher_mean=[1, 2, 3], teacher_std=[1, 1, 1])(x)
    assert torch.equal(seen[-1], x)  # identical normalisation: the very same tensor
    with pytest.raises(ConfigError, match="bn_mode must be one of eval, train, got 'frozen'"):
        Refinery(net, bn_mode="frozen")
    with pytest.raises(ConfigError, match="needs all of .*got None for student_mean, student_std"):
        Refinery(net, teacher_mean=[0, 0, 0], teacher_std=[1, 1, 1])


def test_topk_round_trip():
    probs = torch.tensor([[0.6, 0.3, 0.05, 0.05], [0.1, 0.2, 0.3, 0.4]])
    values, indices = topk_soft_labels(probs, 2)
    assert values.dtype == np.float16 and indices.dtype == np.int16
    assert indices.tolist() == [[0, 1], [3, 2]]
    dense = expand_topk(values, indices, 4)
    # uniform rest: row 0 leftover 0.1 over 2 classes -> 0.05 each (exact here)
    assert np.allclose(dense[0], [0.6, 0.3, 0.05, 0.05], atol=1e-3)
    assert np.allclose(dense[1], [0.15, 0.15, 0.3, 0.4], atol=1e-3)
    renorm = expand_topk(values, indices, 4, rest="renormalize")
    assert np.allclose(renorm[0], [2 / 3, 1 / 3, 0, 0], atol=1e-3)
    assert np.allclose(dense.sum(1), 1) and np.allclose(renorm.sum(1), 1)
    full = expand_topk(*topk_soft_labels(probs, 4), 4)
    assert np.allclose(full, probs.numpy(), atol=1e-3)
    with pytest.raises(ConfigError, match=r"k must be in \[1, 4\]"):
        topk_soft_labels(probs, 5)
