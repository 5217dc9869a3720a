"""Methods that do not compose: a config that combines them fails on its first batch with a
ConfigError that names both components and why."""
import pytest

from labelwise.errors import ConfigError

LABELPOOL_PIPELINE = [
    dict(type="LoadImageFromFile"),
    dict(type="labelwise.RandomResizedCropWithBox", scale=64, crop_ratio_range=(0.5, 1.0), backend="pillow"),
    dict(type="labelwise.LabelPooling", label_maps="MAPS", num_classes=10),
    dict(type="PackInputs"),
]
CLEANNET_PIPELINE = [
    dict(type="LoadImageFromFile"),
    dict(type="labelwise.CleanNetWeights", score_file="SCORES"),
    dict(type="PackInputs", algorithm_keys=["sample_weight"]),
]
PUMLC_HEAD = dict(type="MultiLabelLinearClsHead", num_classes=10, in_channels=64, loss=dict(type="labelwise.PUMLCLoss"))
PARTIAL_HEAD = dict(PUMLC_HEAD, type="labelwise.PartialMultiLabelLinearClsHead")
REFINERY = dict(type="labelwise.RefineryDataPreprocessor", refinery="TEACHER")

#: (id, base config, changes, regex the message must match: both components and the reason)
CASES = [
    ("labelpool+refinery", "labelpool/digits_single", {"data_preprocessor": REFINERY},
     r"RefineryDataPreprocessor \(Label Refinery\) and the train pipeline both produce the training target.*"
     r"labelwise\.LabelPooling.*which one wins is undefined"),
    ("labelpool+partial-regime", "pumlc/digits_partial_pumlc", {"pipeline": LABELPOOL_PIPELINE},
     r"labelwise\.LabelPooling gives single-label soft targets.*multi-label: it has partial_labels.*PU-MLC"),
    ("labelpool+pumlc-loss", "labelpool/digits_single", {"head": PUMLC_HEAD},
     r"labelwise\.PUMLCLoss needs partial multi-label targets 1 / 0 / -1, got 0\.\d+: a soft target.*LabelPooling"),
    ("refinery+partial-regime", "pumlc/digits_partial_pumlc", {"data_preprocessor": REFINERY},
     r"RefineryDataPreprocessor \(Label Refinery\) gives single-label soft targets.*multi-label.*"
     r"labelwise\.PUMLCLoss"),
    ("refinery+partial-head", "refinery/digits_single", {"data_preprocessor": REFINERY, "head": PARTIAL_HEAD},
     r"labelwise\.PartialMultiLabelLinearClsHead \(which trains on partial_labels and would ignore gt_score\) "
     r"needs partial multi-label targets.*Label Refinery"),
    ("cleannet+partial-regime", "pumlc/digits_partial_pumlc", {"pipeline": CLEANNET_PIPELINE},
     r"labelwise\.CleanNetWeights cannot weight sample .*partial_labels.*multi-label / partial-label regime"),
    ("cleannet-head+multilabel", "baseline/digits_multilabel",
     {"head": dict(type="labelwise.WeightedLinearClsHead", num_classes=10, in_channels=64, missing_weight=1.0)},
     r"labelwise\.WeightedLinearClsHead \(CleanNet weights\) is a single-label softmax head.*gt_label holds"),
]


@pytest.mark.parametrize("base, changes, message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_incompatible_methods_are_refused(base, changes, message, tiny_cfg, teacher, noisy_scores, noisy_maps,
                                          monkeypatch, tmp_path):
    from mmengine.runner import Runner

    monkeypatch.setenv("LABELWISE_LABEL_MAPS", str(noisy_maps[0]))  # the labelpool configs' maps
    cfg = tiny_cfg(base, tmp_path, **{"train_dataloader.dataset.indices": 16})
    fill = {"MAPS": str(noisy_maps[0]), "SCORES": str(noisy_scores[0]), "TEACHER": teacher}
    if "pipeline" in changes:
        cfg.train_dataloader.dataset.pipeline = [{k: fill.get(v, v) if isinstance(v, str) else v
                                                  for k, v in step.items()} for step in changes["pipeline"]]
    if "data_preprocessor" in changes:
        cfg.data_preprocessor = dict(cfg.data_preprocessor, **{k: fill.get(v, v) if isinstance(v, str) else v
                                                               for k, v in changes["data_preprocessor"].items()})
    if "head" in changes:
        cfg.model.head = changes["head"]
    runner = Runner.from_cfg(cfg)
    with pytest.raises(ConfigError, match=message):
        runner.train()


def test_multi_label_evidence():
    import numpy as np
    import torch
    from mmpretrain.structures import DataSample

    from labelwise.adapters.mmpretrain.targets import multi_label_evidence

    assert multi_label_evidence({"gt_label": 3}) is None
    assert multi_label_evidence({"gt_label": np.int64(3)}) is None
    assert multi_label_evidence(DataSample().set_gt_label(3)) is None
    assert "a multi-label dataset" in multi_label_evidence({"gt_label": [3]})  # MultiLabelDataset lists
    assert "partial_labels" in multi_label_evidence({"gt_label": [3], "partial_labels": np.zeros(10)})
    assert "holds 2 labels" in multi_label_evidence(DataSample().set_gt_label([1, 2]))
    assert "holds 2 labels" in multi_label_evidence({"gt_label": torch.tensor([1, 2])})


def test_pumlc_loss_takes_partial_targets_and_refuses_soft_ones():
    import torch

    from labelwise.adapters.mmpretrain.pumlc import PUMLCLoss
    from labelwise.plugins.pumlc.loss import pu_loss

    logits = torch.randn(3, 4, generator=torch.Generator().manual_seed(0))
    partial = torch.tensor([[1.0, 0, -1, float("nan")], [0, 1, 1, -1], [-1, -1, 0, 1]])
    assert torch.equal(PUMLCLoss()(logits, partial), pu_loss(logits, partial))
    with pytest.raises(ConfigError, match=r"PUMLCLoss needs partial multi-label targets 1 / 0 / -1, got 0\.25"):
        PUMLCLoss()(logits, torch.full((3, 4), 0.25))
