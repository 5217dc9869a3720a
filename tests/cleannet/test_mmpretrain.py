"""CleanNet weights in mmpretrain: transform, weighted head, Mixup-aware preprocessor, subset,
and the example config through mmpretrain's own tools/train.py."""
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, run_python
from labelwise.errors import ConfigError, DataError

REGIME = "noisy-symmetric-r0.2"


def _build(registry_name, cfg):
    from mmengine.registry import init_default_scope
    from mmpretrain import registry

    init_default_scope("mmpretrain")
    return getattr(registry, registry_name).build(cfg)


def test_weight_transform_attaches_weights(scores_csv, tiny_digits):
    path, train, scores = scores_csv
    t = _build("TRANSFORMS", dict(type="labelwise.CleanNetWeights", score_file=str(path), mode="soft"))
    out = t({"img_path": f"{tiny_digits}/{train.ids[-1]}", "gt_label": int(train.labels[-1])})
    assert out["sample_weight"] == pytest.approx(0.9)
    hard = _build("TRANSFORMS", dict(type="labelwise.CleanNetWeights", score_file=str(path), mode="hard",
                                     threshold=0.0))
    assert hard({"img_path": train.ids[0]})["sample_weight"] == 0.0
    assert "mode='hard', threshold=0.0" in repr(hard)
    ds = _build("DATASETS", dict(type="CustomDataset", data_root=str(tiny_digits), ann_file=f"{REGIME}/train.txt",
                                 data_prefix="", pipeline=[
                                     dict(type="LoadImageFromFile"),
                                     dict(type="labelwise.CleanNetWeights", score_file=str(path)),
                                     dict(type="PackInputs", algorithm_keys=["sample_weight"])]))
    assert ds[5]["data_samples"].sample_weight == float(scores[5] >= 0.2)


def test_weight_transform_errors(scores_csv, tmp_path):
    path, train, scores = scores_csv
    build = lambda file, **kw: _build("TRANSFORMS", dict(type="labelwise.CleanNetWeights", score_file=str(file), **kw))  # noqa: E731
    t = build(path)
    with pytest.raises(DataError, match=r"scores\.csv has no row for sample 'images/other/1\.png'"):
        t({"img_path": "images/other/1.png"})
    with pytest.raises(DataError, match="has label 9 in the dataset but"):
        t({"img_path": train.ids[0], "gt_label": 9 if train.labels[0] != 9 else 8}) if train.labels[0] != 9 else \
            t({"img_path": train.ids[0], "gt_label": 9})
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label,score,weight\nimages/train/000000.png,1,NaN,1\n")
    with pytest.raises(DataError, match=r"bad\.csv, line 2: score is 'NaN'"):
        build(bad)
    bad.write_text("id,score,weight\nimages/train/000000.png,0.5,1\n")
    with pytest.raises(DataError, match=r"bad\.csv: header is 'id,score,weight'.*missing: label"):
        build(bad)
    with pytest.raises(ConfigError, match="'hard' needs threshold"):
        build(path, mode="hard")


def _samples(labels, weights=None, scores=None):
    from mmpretrain.structures import DataSample

    out = []
    for i, label in enumerate(labels):
        s = DataSample().set_gt_label(label)
        if scores is not None:
            s.set_gt_score(scores[i])
        if weights is not None:
            s.set_field(float(weights[i]), "sample_weight")
        out.append(s)
    return out


def test_weighted_head_loss_uses_weights():
    head = _build("MODELS", dict(type="labelwise.WeightedLinearClsHead", num_classes=3, in_channels=4))
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 3.0]])
    labels = torch.tensor([0, 2, 2])
    ce = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    w = torch.tensor([1.0, 0.0, 0.5])
    loss = head._get_loss(logits, _samples([0, 2, 2], w))["loss"]
    assert torch.allclose(loss, (w * ce).sum() / 1.5)
    batch = _build("MODELS", dict(type="labelwise.WeightedLinearClsHead", num_classes=3, in_channels=4,
                                  normalize="batch"))
    assert torch.allclose(batch._get_loss(logits, _samples([0, 2, 2], w))["loss"], (w * ce).sum() / 3)
    # soft targets: the weight multiplies the per-sample soft-target loss
    soft = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0], [0.2, 0.0, 0.8]])
    soft_ce = -(soft * logits.log_softmax(-1)).sum(-1)
    assert torch.allclose(head._get_loss(logits, _samples([0, 2, 2], w, soft))["loss"], (w * soft_ce).sum() / 1.5)
    assert float(head._get_loss(logits, _samples([0, 2, 2], [0, 0, 0]))["loss"]) == 0.0
    with pytest.raises(DataError, match="has no 'sample_weight' field; add dict\\(type='labelwise.CleanNetWeights'"):
        head._get_loss(logits, _samples([0, 2, 2]))
    with pytest.raises(ConfigError, match="normalize must be one of weight_sum, batch"):
        _build("MODELS", dict(type="labelwise.WeightedLinearClsHead", num_classes=3, in_channels=4, normalize="x"))


@pytest.mark.parametrize("augment", [dict(type="Mixup", alpha=1.0), dict(type="CutMix", alpha=1.0)])
def test_preprocessor_mixes_weights_with_the_samples(augment):
    """The mixed sample's loss is lam * w_i * CE(y_i) + (1 - lam) * w_j * CE(y_j)."""
    from mmpretrain.registry import BATCH_AUGMENTS

    n, c = 6, 4
    labels = [0, 1, 2, 3, 0, 1]
    weights = torch.tensor([1.0, 0.0, 0.5, 0.25, 0.0, 1.0])
    pre = _build("MODELS", dict(type="labelwise.WeightedClsDataPreprocessor", num_classes=c,
                                batch_augments=dict(augments=[augment])))
    # recover the ratio and permutation the augment draws, from the same seeds
    np.random.seed(0), torch.manual_seed(0)
    _, probe = BATCH_AUGMENTS.build(augment)(torch.zeros(n, 3, 8, 8), torch.eye(n))
    lam = float(probe.diagonal().min()) if augment["type"] == "Mixup" else None
    np.random.seed(0), torch.manual_seed(0)
    data = {"inputs": [torch.zeros(3, 8, 8) for _ in range(n)], "data_samples": _samples(labels, weights)}
    out = pre(data, training=True)["data_samples"]
    onehot = torch.eye(c)[labels]
    mixed_w = torch.tensor([s.sample_weight for s in out])
    mixed_t = torch.stack([s.gt_score for s in out])
    expected = probe @ (weights[:, None] * onehot)  # sum_j probe[i, j] * w_j * y_j
    assert torch.allclose(mixed_w[:, None] * mixed_t, expected, atol=1e-6)
    assert torch.allclose(mixed_w, probe @ weights, atol=1e-6)
    assert float(mixed_w.sum()) == pytest.approx(float(weights.sum()))
    if lam is not None:
        assert 0 < lam <= 1
    # evaluation mode: untouched
    plain = pre({"inputs": [torch.zeros(3, 8, 8)] * 2, "data_samples": _samples([0, 1], [0.3, 0.7])}, training=False)
    assert [s.sample_weight for s in plain["data_samples"]] == [0.3, 0.7]


def test_subset_drops_low_scores(scores_csv, tiny_digits):
    path, train, scores = scores_csv
    base = dict(type="CustomDataset", data_root=str(tiny_digits), ann_file=f"{REGIME}/train.txt", data_prefix="",
                pipeline=[])
    ds = _build("DATASETS", dict(type="labelwise.CleanNetSubset", dataset=base, score_file=str(path), threshold=0.5))
    keep = np.flatnonzero(scores >= 0.5)
    assert len(ds) == len(keep)
    assert Path(ds.get_data_info(0)["img_path"]).as_posix().endswith(train.ids[keep[0]])
    by_weight = _build("DATASETS", dict(type="labelwise.CleanNetSubset", dataset=base, score_file=str(path)))
    assert len(by_weight) == int((scores >= 0.2).sum())
    assert by_weight.metainfo == ds.dataset.metainfo


def test_example_config_through_mmpretrain_tools_train(scores_csv, tiny_digits, tmp_path):
    import mmpretrain

    path, _, _ = scores_csv
    tools_train = Path(mmpretrain.__file__).parent / ".mim" / "tools" / "train.py"
    work = tmp_path / "work"
    proc = run_python(
        str(tools_train), str(ROOT / "configs" / "cleannet" / "digits_noisy_weighted_mixup.py"), "--work-dir", str(work),
        "--cfg-options", "train_cfg.max_epochs=1", "train_dataloader.batch_size=32", "train_dataloader.num_workers=0",
        "train_dataloader.persistent_workers=False", "model.backbone.base_channels=8", "model.head.in_channels=64",
        "default_hooks.logger.interval=1",
        env={"LABELWISE_DATA_ROOT": str(tiny_digits), "LABELWISE_CLEANNET_SCORES": str(path), "OMP_NUM_THREADS": "1"},
        timeout=900,
    )
    log = proc.stdout + proc.stderr
    assert "Epoch(train) [1][5/5]" in log
    losses = [float(x.split("loss: ")[1].split()[0]) for x in log.splitlines() if "Epoch(train)" in x and "loss: " in x]
    assert len(losses) == 5 and all(np.isfinite(losses))
    dumped = next(work.glob("digits_noisy_weighted_mixup.py")).read_text()
    assert "labelwise.WeightedLinearClsHead" in dumped and "labelwise.CleanNetWeights" in dumped
