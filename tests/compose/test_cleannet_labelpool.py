"""CleanNet weights x LabelPooling targets: configs/compose/digits_noisy_cleannet_labelpool.py."""
import math

import numpy as np
import pytest
import torch

from compose.helpers import NOISY, img_key, map_target, train_batch

CONFIG = "compose/digits_noisy_cleannet_labelpool"


@pytest.mark.parametrize("normalize, denominator", [("weight_sum", 1.75), ("batch", 3.0)])
def test_weighted_soft_target_loss_by_hand(tiny_cfg, noisy_scores, noisy_maps, monkeypatch, tmp_path,
                                           normalize, denominator):
    """The config's head on three samples whose logits, soft targets and weights give the loss
    by hand: sum_i w_i * softCE_i / Z, Z = sum w (weight_sum) or N (batch)."""
    from mmpretrain.registry import MODELS
    from mmpretrain.structures import DataSample

    monkeypatch.setenv("LABELWISE_CLEANNET_SCORES", str(noisy_scores[0]))
    monkeypatch.setenv("LABELWISE_LABEL_MAPS", str(noisy_maps[0]))
    cfg = tiny_cfg(CONFIG, tmp_path)
    head = MODELS.build({**cfg.model.head.to_dict(), "num_classes": 3, "in_channels": 3, "normalize": normalize})
    with torch.no_grad():
        head.fc.weight.copy_(torch.eye(3))
        head.fc.bias.zero_()
    logits = torch.tensor([[0.0, math.log(2), 0.0],   # p = (1/4, 1/2, 1/4)
                           [0.0, 0.0, 0.0],           # p = (1/3, 1/3, 1/3)
                           [math.log(3), 0.0, 0.0]])  # p = (3/5, 1/5, 1/5)
    targets = [[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [1.0, 0.0, 0.0]]
    weights = [1.0, 0.25, 0.5]
    samples = [DataSample(metainfo={}, sample_weight=w).set_gt_label(0).set_gt_score(torch.tensor(t))
               for t, w in zip(targets, weights)]
    # softCE_1 = 0.5 ln 4 + 0.5 ln 2 = 1.5 ln 2; softCE_2 = ln 3; softCE_3 = ln(5/3)
    expected = (1.0 * 1.5 * math.log(2) + 0.25 * math.log(3) + 0.5 * math.log(5 / 3)) / denominator
    loss = head.loss((logits,), samples)["loss"]
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_pipeline_targets_and_weights_reach_the_loss(tiny_cfg, noisy_scores, noisy_maps, monkeypatch, tmp_path):
    """The config's real pipeline and model: each sample's gt_score is its pooled map (known by
    hand), its weight the score file's, and the model's loss is sum w_i CE_i / sum w."""
    monkeypatch.setenv("LABELWISE_CLEANNET_SCORES", str(noisy_scores[0]))
    monkeypatch.setenv("LABELWISE_LABEL_MAPS", str(noisy_maps[0]))
    cfg = tiny_cfg(CONFIG, tmp_path)
    model, data = train_batch(cfg, range(5))
    samples = data["data_samples"]
    weights, index = noisy_scores[1], noisy_maps[1]
    keys = [img_key(s) for s in samples]
    w = torch.tensor([weights[k] for k in keys], dtype=torch.float32)
    t = torch.tensor(np.stack([map_target(index[k]) for k in keys]), dtype=torch.float32)
    assert torch.allclose(torch.tensor([s.sample_weight for s in samples]), w)
    assert torch.allclose(torch.stack([s.gt_score for s in samples]), t, atol=1e-6)
    logits = model.head(model.extract_feat(data["inputs"]))
    loss = model.head.loss(model.extract_feat(data["inputs"]), samples)["loss"]
    expected = (w * -(t * torch.log_softmax(logits, -1)).sum(-1)).sum() / w.sum()
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_config_trains_with_the_runner(tiny_cfg, noisy_scores, noisy_maps, monkeypatch, tmp_path):
    from mmengine.runner import Runner

    monkeypatch.setenv("LABELWISE_CLEANNET_SCORES", str(noisy_scores[0]))
    monkeypatch.setenv("LABELWISE_LABEL_MAPS", str(noisy_maps[0]))
    cfg = tiny_cfg(CONFIG, tmp_path / "work")
    assert cfg.train_dataloader.dataset.ann_file == f"{NOISY}/train.txt"
    runner = Runner.from_cfg(cfg)
    losses = []
    head_loss = runner.model.head.loss
    runner.model.head.loss = lambda feats, samples, **kw: losses.append(head_loss(feats, samples, **kw)) or losses[-1]
    runner.train()
    assert len(losses) == 2 and all(torch.isfinite(x["loss"]) for x in losses)
    assert (tmp_path / "work" / "epoch_1.pth").is_file()
