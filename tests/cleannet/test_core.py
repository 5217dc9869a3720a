"""CleanNet's framework-free core against the spec, on hand-checkable cases."""
import math

import numpy as np
import pytest
import torch

from labelwise.errors import ConfigError, DataError
from labelwise.plugins.cleannet import loss as L
from labelwise.plugins.cleannet.fit import CleanNetConfig, fit_cleannet, restrict_verification
from labelwise.plugins.cleannet.model import CleanNet, normalize_features
from labelwise.plugins.cleannet.references import build_reference_sets
from labelwise.plugins.cleannet.sampling import ClassBalancedBatches, EpochBatches
from labelwise.plugins.cleannet.scoring import (
    choose_threshold,
    detection_accuracy,
    sample_weights,
    score_samples,
)


# ---------------------------------------------------------------- loss terms
def test_verified_loss_hand_cases():
    s = torch.tensor([0.5, 0.5, 0.05, -0.3, 1.0])
    l = torch.tensor([1, 0, 0, 1, 0])
    # correct: 1 - s; wrong: 5 * max(0, s - 0.1)
    expected = torch.tensor([0.5, 5 * 0.4, 0.0, 1.3, 5 * 0.9])
    assert torch.allclose(L.verified_loss(s, l), expected)
    assert torch.allclose(L.verified_loss(s, l, neg_weight=1.0, margin=0.0),
                          torch.tensor([0.5, 0.5, 0.05, 1.3, 1.0]))


def test_unverified_loss_uses_pseudo_label_without_gradient():
    s = torch.tensor([0.5, 0.05, 0.1, -0.5], requires_grad=True)
    loss = L.unverified_loss(s)
    # pseudo-label 1[s >= 0.1]: 1, 0, 1, 0 -> (1 - s) or 5 * max(0, s - 0.1) = 0
    assert torch.allclose(loss, torch.tensor([0.5, 0.0, 0.9, 0.0]))
    loss.sum().backward()
    assert torch.equal(s.grad, torch.tensor([-1.0, 0.0, -1.0, 0.0]))


def test_reconstruction_and_l2():
    v = torch.tensor([[1.0, 2.0], [0.5, 0.5]])
    v_hat = torch.tensor([[0.0, 0.0], [0.5, 0.0]])
    assert torch.allclose(L.reconstruction_loss(v, v_hat), torch.tensor([5.0, 0.25]))
    w = [torch.tensor([[1.0, 2.0]]), torch.tensor([3.0])]
    assert math.isclose(float(L.l2_penalty(w, 0.1)), 0.1 * 0.5 * (1 + 4 + 9), rel_tol=1e-6)


def test_cleannet_loss_combines_terms_as_the_reference_code():
    scores = torch.tensor([0.5, 0.5, 0.5, 0.05])
    is_verified = torch.tensor([True, True, False, False])
    verification = torch.tensor([1.0, 0.0, -1.0, -1.0])
    v = torch.tensor([[1.0], [0.0], [0.0], [2.0]])
    v_hat = torch.zeros(4, 1)
    terms = L.cleannet_loss(scores, v, v_hat, is_verified, verification)
    # verified: (0.5 + 5 * 0.4) / 4 ; unverified: (0.5 + 0) / 4 ; reconstruction: (1 + 4) / 4
    assert math.isclose(float(terms["verified"]), 2.5 / 4, rel_tol=1e-6)
    assert math.isclose(float(terms["unverified"]), 0.5 / 4, rel_tol=1e-6)
    assert math.isclose(float(terms["reconstruction"]), 5 / 4, rel_tol=1e-6)
    assert math.isclose(float(terms["loss"]), 2.5 / 4 + 0.1 * 0.5 / 4 + 0.1 * 5 / 4, rel_tol=1e-6)


# ---------------------------------------------------------------- the network
def _model(d=6, **kw):
    return CleanNet(d, generator=torch.Generator().manual_seed(0), **kw)


def test_log_normalisation_and_l2_covers_weights_only():
    x = torch.tensor([[0.0, 1.0, math.e - 1]])
    assert torch.allclose(normalize_features(x, "log"), torch.tensor([[0.0, math.log(2.0), 1.0]]))
    model = _model()
    weights = model.fc_weights()
    assert len(weights) == 8  # 4 reference-encoder + 4 autoencoder layers; no bias, no context
    assert all(w.ndim == 2 for w in weights)
    assert all(torch.count_nonzero(m.bias) == 0 for m in model.modules() if isinstance(m, torch.nn.Linear))
    assert [w.shape for w in weights] == [(512, 6), (256, 512), (256, 256), (128, 256),
                                          (256, 6), (128, 256), (256, 128), (6, 256)]


def test_attention_weights_sum_to_one_and_follow_the_formula():
    model = _model()
    refs = torch.rand(3, 5, 6)
    enc = model.reference_encoder
    a, h = enc.attention(normalize_features(refs, "log"))
    assert a.shape == (3, 5)
    assert torch.allclose(a.sum(dim=1), torch.ones(3))
    u = torch.tanh(enc.fc_u(h))
    logits = (u * enc.context).sum(-1)
    assert torch.allclose(a, torch.exp(logits) / torch.exp(logits).sum(1, keepdim=True), atol=1e-6)
    phi_s = model.encode_classes(refs)
    assert torch.allclose(phi_s, torch.tanh(enc.fc_out((a[..., None] * h).sum(1))), atol=1e-6)


def test_forward_encodes_each_class_once_and_scores_by_cosine():
    model = _model().eval()
    refs = torch.rand(4, 5, 6)
    queries = torch.rand(7, 6)
    labels = torch.tensor([2, 0, 2, 2, 0, 2, 2])
    seen = []
    model.reference_encoder.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    out = model(queries, labels, refs)
    assert seen == [(2, 5, 6)]  # one call, the two classes present
    phi_s = model.encode_classes(refs)
    _, phi_q, v_hat = model.encode_queries(queries)
    manual = torch.nn.functional.cosine_similarity(phi_q, phi_s[labels], dim=-1)
    assert torch.allclose(out["score"], manual, atol=1e-6)
    assert out["v_hat"].shape == (7, 6) and out["phi_q"].shape == (7, 128)


def test_scoring_is_order_and_batch_size_independent():
    rng = np.random.default_rng(0)
    model = _model()
    refs = rng.random((3, 4, 6), dtype=np.float32)
    feats = rng.random((53, 6), dtype=np.float32)
    labels = rng.integers(0, 3, 53)
    base = score_samples(model, feats, labels, refs, batch_size=1024)
    assert base.shape == (53,) and np.all(np.abs(base) <= 1)
    for bs in (1, 7, 53):
        np.testing.assert_allclose(score_samples(model, feats, labels, refs, batch_size=bs), base, atol=1e-6)
    perm = rng.permutation(53)
    np.testing.assert_allclose(score_samples(model, feats[perm], labels[perm], refs, batch_size=5), base[perm],
                               atol=1e-6)


def test_scoring_rejects_bad_features():
    model = _model()
    refs = np.ones((2, 3, 6), dtype=np.float32)
    with pytest.raises(DataError, match="needs features > -1"):
        score_samples(model, -2 * np.ones((2, 6)), np.array([0, 1]), refs)
    with pytest.raises(DataError, match="feature row 1 holds NaN"):
        score_samples(model, np.array([[0.0] * 6, [np.nan] * 6]), np.array([0, 1]), refs)
    with pytest.raises(DataError, match="label 2 is out of range for 2 classes"):
        score_samples(model, np.zeros((2, 6)), np.array([0, 2]), refs)


# ---------------------------------------------------------------- threshold and weights
def test_choose_threshold_and_weights():
    scores = np.array([0.9, 0.5, 0.2, -0.1])
    ver = np.array([1, 1, 0, 0])
    t = choose_threshold(scores, ver)
    assert math.isclose(t, 0.35)
    assert detection_accuracy(scores, ver, t) == 1.0
    assert detection_accuracy(scores, ver, 0.1) == 0.75
    assert choose_threshold(np.array([]), np.array([])) == 0.1
    # a flat optimum keeps the default 0.1
    assert choose_threshold(np.array([0.9, -0.9]), np.array([1, 0])) == 0.1
    np.testing.assert_array_equal(sample_weights(scores, mode="hard", threshold=0.35), [1, 1, 0, 0])
    np.testing.assert_allclose(sample_weights(scores, mode="soft"), [0.9, 0.5, 0.2, 0.0])
    with pytest.raises(ConfigError, match="'hard' needs a threshold"):
        sample_weights(scores, mode="hard")
    with pytest.raises(ConfigError, match="one of hard, soft, got 'medium'"):
        sample_weights(scores, mode="medium")


# ---------------------------------------------------------------- reference sets
def test_reference_sets_are_seeded_kmeans_centres():
    rng = np.random.default_rng(0)
    blob = lambda c, n: c + 0.01 * rng.standard_normal((n, 2))  # noqa: E731
    feats = np.concatenate([blob([0, 0], 20), blob([10, 10], 20), blob([5, 0], 30), blob([0, 5], 10)])
    labels = np.array([0] * 40 + [1] * 40)
    refs = build_reference_sets(feats, labels, num_classes=2, k=2, seed=3)
    assert refs.shape == (2, 2, 2) and refs.dtype == np.float32
    np.testing.assert_allclose(sorted(map(tuple, refs[0].round(1))), [(0, 0), (10, 10)], atol=0.05)
    np.testing.assert_allclose(sorted(map(tuple, refs[1].round(1))), [(0, 5), (5, 0)], atol=0.05)
    np.testing.assert_array_equal(refs, build_reference_sets(feats, labels, num_classes=2, k=2, seed=3))


def test_reference_sets_small_and_empty_classes():
    feats = np.arange(6, dtype=np.float32).reshape(3, 2)
    with pytest.warns(UserWarning, match="class 0 has 3 samples, fewer than k=4"):
        refs = build_reference_sets(feats, np.array([0, 0, 0]), num_classes=1, k=4)
    np.testing.assert_array_equal(refs[0], feats[[0, 1, 2, 0]])
    with pytest.raises(DataError, match="class 1 has no sample"):
        build_reference_sets(feats, np.array([0, 0, 0]), num_classes=2, k=2)


# ---------------------------------------------------------------- sampling
def test_class_balanced_sampling():
    labels = torch.tensor([0] * 90 + [1] * 10)
    batches = ClassBalancedBatches(labels, 32, generator=torch.Generator().manual_seed(0))
    draws = torch.cat([batches.next() for _ in range(300)])
    share = float((labels[draws] == 1).float().mean())
    assert 0.46 < share < 0.54  # 10 % of the pool, half of the draws
    assert set(draws[labels[draws] == 1].tolist()) == set(range(90, 100))


def test_epoch_batches_cover_every_sample_once_per_pass():
    batches = EpochBatches(10, 4, generator=torch.Generator().manual_seed(0))
    first = torch.cat([batches.next() for _ in range(5)])  # 20 draws = 2 passes
    assert sorted(first[:10].tolist()) == list(range(10)) and sorted(first[10:].tolist()) == list(range(10))


# ---------------------------------------------------------------- training
def _synthetic(seed=0, n=400, classes=4, d=16, noise=0.3):
    """Clusters per class; a share ``noise`` of labels flipped to another class."""
    rng = np.random.default_rng(seed)
    protos = np.kron(np.eye(classes), np.ones(d // classes)) * 2.0  # class c lights up block c
    truth = rng.integers(0, classes, n)
    feats = np.abs(protos[truth] + 0.3 * rng.standard_normal((n, d))).astype(np.float32)
    flip = rng.random(n) < noise
    labels = np.where(flip, (truth + rng.integers(1, classes, n)) % classes, truth)
    return feats, labels, truth


def test_fit_learns_noise_detection(tmp_path):
    feats, labels, truth = _synthetic()
    vfeats, vlabels, vtruth = _synthetic(seed=1, n=200)
    correct = (labels == truth).astype(np.int8)
    verification = np.where(np.arange(len(labels)) < 120, correct, -1).astype(np.int8)  # 30 % verified
    refs = build_reference_sets(feats, labels, num_classes=4, k=4, seed=0)
    cfg = CleanNetConfig(steps=500, lr=0.05, lr_step=400, val_interval=100, seed=0)
    result = fit_cleannet(feats, labels, verification, refs, val_features=vfeats, val_labels=vlabels,
                          val_verification=(vlabels == vtruth).astype(np.int8), config=cfg, progress=False)
    assert [r["step"] for r in result.history] == [100, 200, 300, 400, 500]
    assert [r["lr"] for r in result.history] == pytest.approx([0.05] * 4 + [0.005])
    assert result.val_accuracy == max(r["val_accuracy"] for r in result.history)
    assert result.best_step == 100 * (1 + [r["val_accuracy"] for r in result.history].index(result.val_accuracy))
    scores = score_samples(result.model, feats, labels, refs)
    # the threshold is chosen on the verified validation samples' scores of the returned model
    val_scores = score_samples(result.model, vfeats, vlabels, refs)
    assert result.threshold == choose_threshold(val_scores, (vlabels == vtruth).astype(np.int8), default=cfg.val_threshold)
    assert result.threshold != cfg.val_threshold
    unverified = verification < 0
    assert detection_accuracy(scores[unverified], correct[unverified], result.threshold) > 0.9
    assert detection_accuracy(scores[unverified], correct[unverified], result.threshold) > (
        detection_accuracy(scores[unverified], correct[unverified], -2.0) + 0.15)  # vs "every label is clean"


def test_transfer_setting_scores_classes_without_verification(monkeypatch):
    feats, labels, truth = _synthetic(n=200)
    verification = np.where(np.arange(200) < 100, (labels == truth).astype(np.int8), -1)
    verification = restrict_verification(verification, labels, [0, 1])
    assert set(labels[verification >= 0]) == {0, 1} and (verification[np.isin(labels, [2, 3])] == -1).all()
    refs = build_reference_sets(feats, labels, num_classes=4, k=3, seed=0)
    seen, drawn = [], []

    class Spy(ClassBalancedBatches):  # what fit's unverified sampler actually draws
        def __init__(self, pool_labels, *a, **kw):
            super().__init__(pool_labels, *a, **kw)
            self.pool_labels = torch.as_tensor(pool_labels)

        def next(self):
            idx = super().next()
            drawn.append(self.pool_labels[idx])
            return idx

    monkeypatch.setattr("labelwise.plugins.cleannet.fit.ClassBalancedBatches", Spy)
    result = fit_cleannet(feats, labels, verification, refs, config=CleanNetConfig(steps=30, val_interval=30),
                          progress=False)
    hook = result.model.reference_encoder.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[0]))
    scores = score_samples(result.model, feats, labels, refs)
    hook.remove()
    assert seen == [4] and np.isfinite(scores).all() and scores.shape == (200,)
    # fit drew its unverified queries class-balanced from every class, held-out ones included
    assert len(drawn) == 30
    counts = torch.bincount(torch.cat(drawn), minlength=4)
    assert (counts > 0).all() and counts.min() > 0.5 * counts.max()


def test_fit_resumes_to_the_same_weights(tmp_path):
    feats, labels, truth = _synthetic(n=120)
    verification = np.where(np.arange(120) < 40, (labels == truth).astype(np.int8), -1)
    refs = build_reference_sets(feats, labels, num_classes=4, k=3, seed=0)
    kw = dict(val_features=feats[:40], val_labels=labels[:40], val_verification=verification[:40], progress=False)
    cfg = CleanNetConfig(steps=40, val_interval=20, dropout=0.2)
    whole = fit_cleannet(feats, labels, verification, refs, config=cfg, **kw)
    fit_cleannet(feats, labels, verification, refs, config=CleanNetConfig(steps=20, val_interval=20, dropout=0.2),
                 work_dir=tmp_path, **kw)
    resumed = fit_cleannet(feats, labels, verification, refs, config=cfg, work_dir=tmp_path, **kw)
    for k, v in whole.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    assert resumed.history == whole.history
    with pytest.raises(ConfigError, match="other options or data"):
        fit_cleannet(feats, labels, verification, refs, config=CleanNetConfig(steps=40, val_interval=20, lr=0.5),
                     work_dir=tmp_path, **kw)


def test_fit_bad_input():
    feats, labels, truth = _synthetic(n=50)
    refs = build_reference_sets(feats, labels, num_classes=4, k=2)
    with pytest.raises(DataError, match="no verified training sample"):
        fit_cleannet(feats, labels, np.full(50, -1), refs, progress=False)
    with pytest.raises(DataError, match="flag 3 is 2; expected 1"):
        fit_cleannet(feats, labels, np.array([1, 0, -1, 2] + [-1] * 46), refs, progress=False)
    with pytest.raises(ConfigError, match="steps must be >= 1"):
        CleanNetConfig(steps=0)
