"""CleanNet weights for timm / plain PyTorch: the weighted criterion on hand cases, the dataset
wrapper's weight modes and drop, a timm ClassificationTask step, and the two example configs
that no other test loads."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import ROOT
from labelwise.errors import ConfigError, DataError
from labelwise.plugins.cleannet.scorefile import write_scores
from labelwise.plugins.cleannet.weighting import WeightedCrossEntropy, WeightedDataset, weighted_cross_entropy

# two samples, two classes: CE(sample 0, class 0) = ln(1 + e^-2), CE(sample 1, class 1) = ln 2
LOGITS = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
TARGET = torch.tensor([0, 1])
CE0, CE1 = math.log(1 + math.exp(-2)), math.log(2)


@pytest.mark.parametrize("weight, normalize, expected", [
    ((1.0, 1.0), "weight_sum", (CE0 + CE1) / 2),
    ((1.0, 0.0), "weight_sum", CE0),                     # a hard weight of 0 removes the sample
    ((2.0, 1.0), "weight_sum", (2 * CE0 + CE1) / 3),
    ((2.0, 1.0), "batch", (2 * CE0 + CE1) / 2),
    ((0.0, 0.0), "weight_sum", 0.0),                     # an all-dropped batch: 0, not NaN
])
def test_weighted_cross_entropy_hand_cases(weight, normalize, expected):
    loss = weighted_cross_entropy(LOGITS, TARGET, torch.tensor(weight), normalize=normalize)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_weighted_cross_entropy_multiplies_the_soft_target_loss():
    soft = torch.tensor([[0.5, 0.5], [0.0, 1.0]])
    per_sample = [0.5 * math.log(1 + math.exp(-2)) + 0.5 * math.log(1 + math.exp(2)), math.log(2)]
    loss = weighted_cross_entropy(LOGITS, soft, torch.tensor([0.25, 1.0]))
    assert loss.item() == pytest.approx((0.25 * per_sample[0] + per_sample[1]) / 1.25, rel=1e-6)


def test_weighted_criterion_targets_and_errors():
    criterion = WeightedCrossEntropy()
    plain = criterion(LOGITS, TARGET)  # a tensor target: every weight 1, i.e. plain cross-entropy
    assert torch.allclose(plain, F.cross_entropy(LOGITS, TARGET))
    weighted = criterion(LOGITS, {"target": TARGET, "weight": torch.tensor([1.0, 0.0])})
    assert weighted.item() == pytest.approx(CE0, rel=1e-6)
    with pytest.raises(ConfigError, match="normalize must be one of weight_sum, batch, got 'mean'"):
        WeightedCrossEntropy(normalize="mean")
    with pytest.raises(ConfigError, match="got 'sum'"):
        weighted_cross_entropy(LOGITS, TARGET, torch.ones(2), normalize="sum")


@pytest.fixture()
def toy(tmp_path):
    """6 items with ids a..f, labels 0..5 % 2 and CleanNet scores -0.4 .. 0.6."""
    ids = list("abcdef")
    labels = [i % 2 for i in range(6)]
    scores = np.array([-0.4, -0.2, 0.0, 0.2, 0.4, 0.6])
    path = tmp_path / "scores.csv"
    write_scores(path, ids, labels, scores, (scores >= 0.3).astype(float))  # the file's weights: hard at 0.3
    dataset = [(torch.full((3,), float(i)), labels[i]) for i in range(6)]
    return dataset, ids, path, scores


def test_weighted_dataset_modes(toy):
    dataset, ids, path, scores = toy
    weights = lambda ds: [ds[i][1]["weight"].item() for i in range(len(ds))]  # noqa: E731
    assert weights(WeightedDataset(dataset, ids=ids, score_file=path)) == [0, 0, 0, 0, 1, 1]
    assert weights(WeightedDataset(dataset, ids=ids, score_file=path, mode="hard", threshold=0.0)) == [0, 0, 1, 1, 1, 1]
    assert weights(WeightedDataset(dataset, ids=ids, score_file=path, mode="soft")) == pytest.approx(
        [0, 0, 0, 0.2, 0.4, 0.6])
    x, target = WeightedDataset(dataset, ids=ids, score_file=path)[3]
    assert torch.equal(x, dataset[3][0]) and target["target"].item() == 1


def test_weighted_dataset_drop_keeps_only_positive_weights_in_order(toy):
    dataset, ids, path, _ = toy
    kept = WeightedDataset(dataset, ids=ids, score_file=path, mode="hard", threshold=0.1, drop=True)
    assert len(kept) == 3
    assert [kept[i][0][0].item() for i in range(3)] == [3.0, 4.0, 5.0]
    assert all(kept[i][1]["weight"].item() == 1.0 for i in range(3))
    assert len(WeightedDataset(dataset, ids=ids, score_file=path, mode="soft", drop=True)) == 3  # max(0, s) > 0


def test_weighted_dataset_errors(toy):
    dataset, ids, path, _ = toy
    with pytest.raises(DataError, match="5 ids for a dataset of 6 items"):
        WeightedDataset(dataset, ids=ids[:5], score_file=path)
    with pytest.raises(DataError, match=r"scores\.csv has no row for 1 samples, e\.g\. 'zz'"):
        WeightedDataset(dataset, ids=[*ids[:5], "zz"], score_file=path)
    with pytest.raises(ConfigError, match="mode must be one of file, hard, soft, got 'both'"):
        WeightedDataset(dataset, ids=ids, score_file=path, mode="both")


def test_timm_task_step_uses_the_weights(toy):
    timm_task = pytest.importorskip("timm.task")
    dataset, ids, path, _ = toy
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    task = timm_task.ClassificationTask(model, WeightedCrossEntropy(), verbose=False)
    loader = torch.utils.data.DataLoader(WeightedDataset(dataset, ids=ids, score_file=path, mode="soft"), batch_size=6)
    x, target = next(iter(loader))
    assert set(target) == {"target", "weight"}  # the default collate keeps the dict
    out = task(x, target)
    per_sample = F.cross_entropy(model(x), target["target"], reduction="none")
    expected = (target["weight"] * per_sample).sum() / target["weight"].sum()
    assert torch.allclose(out["loss"], expected)
    out["loss"].backward()  # samples with weight 0 give no gradient: rows 3-5 alone give the same one
    w = target["weight"]
    kept = (w[3:] * F.cross_entropy(model(x[3:]), target["target"][3:], reduction="none")).sum() / w.sum()
    assert torch.allclose(model.weight.grad, torch.autograd.grad(kept, model.weight)[0], atol=1e-7)


@pytest.mark.parametrize("name", ["digits_noisy_weighted", "digits_noisy_drop"])
def test_example_configs_build_their_training_set(name, scores_csv, tiny_digits, monkeypatch):
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    import labelwise  # noqa: F401  (registers the labelwise.* types)

    path, train, scores = scores_csv
    monkeypatch.setenv("LABELWISE_DATA_ROOT", str(tiny_digits))
    monkeypatch.setenv("LABELWISE_CLEANNET_SCORES", str(path))
    cfg = Config.fromfile(str(ROOT / "configs" / "cleannet" / f"{name}.py"))
    init_default_scope("mmpretrain")
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    if name == "digits_noisy_drop":  # only the rows with weight > 0
        assert len(dataset) == int((scores >= 0.2).sum()) < len(train.ids)
    else:
        assert len(dataset) == len(train.ids)
        sample = dataset[len(train.ids) - 1]["data_samples"]
        assert sample.sample_weight == 1.0
        assert dataset[0]["data_samples"].sample_weight == 0.0


def test_histogram_splits_verified_clean_noisy_and_unverified(tmp_path, monkeypatch):
    from labelwise.plugins.cleannet import plot

    captured = {}

    def keep(path, fig, *, overwrite=False):
        captured["fig"] = fig
        (tmp_path / "hist.png").write_bytes(b"")

    monkeypatch.setattr(plot, "write_figure", keep)
    scores = np.array([0.9, 0.8, 0.7, -0.5, -0.6, 0.1, 0.2, 0.3, 0.4])
    verification = np.array([1, 1, 1, 0, 0, -1, -1, -1, -1])
    plot.plot_score_histogram(tmp_path / "hist.png", scores, verification, threshold=0.25, bins=4)
    ax = captured["fig"].axes[0]
    assert sorted(ax.get_legend_handles_labels()[1]) == [
        "threshold 0.250", "unverified (n=4)", "verified clean (n=3)", "verified noisy (n=2)"]
    # each group is its own density histogram over [-1, 1] (4 bins of width 0.5): the three clean
    # scores fall in [0.5, 1], density 3 / (3 * 0.5) = 2; the two noisy ones, one in [-1, -0.5) and
    # one in [-0.5, 0), density 1 each
    drawn = {p.get_label(): p.get_path().vertices for p in ax.patches if not p.get_label().startswith("_")}
    clean, noisy = drawn["verified clean (n=3)"], drawn["verified noisy (n=2)"]
    assert clean[:, 1].max() == pytest.approx(2.0) and clean[clean[:, 1] > 0, 0].min() == pytest.approx(0.5)
    assert noisy[:, 1].max() == pytest.approx(1.0) and noisy[noisy[:, 1] > 0, 0].max() == pytest.approx(0.0)
