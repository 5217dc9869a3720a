"""PU-MLC in mmpretrain: registry types, heads that pass partial labels, the classifier, tools/train.py."""
import pytest
import torch

from conftest import ROOT, run_python
from labelwise.errors import ConfigError

mmpretrain = pytest.importorskip("mmpretrain")


@pytest.fixture(autouse=True)
def _scope():
    from mmengine.registry import init_default_scope

    init_default_scope("mmpretrain")


def _samples(partial):
    from mmpretrain.structures import DataSample

    samples = []
    for row in partial:
        s = DataSample().set_gt_label([i for i, v in enumerate(row) if v == 1])
        s.set_field(torch.tensor(row, dtype=torch.int8), "partial_labels")
        samples.append(s)
    return samples


def test_loss_builds_in_stock_multilabel_head_and_equals_core():
    from mmpretrain.registry import MODELS

    from labelwise.plugins.pumlc.loss import pu_loss

    head = MODELS.build(dict(type="MultiLabelLinearClsHead", num_classes=3, in_channels=4,
                             loss=dict(type="labelwise.PUMLCLoss", gamma=0.85, alpha=2.0, loss_weight=0.5)))
    feats = (torch.randn(4, 4, generator=torch.Generator().manual_seed(0)),)
    samples = _samples([[1, -1, 0], [0, 1, -1], [-1, -1, -1], [1, 1, 0]])
    loss = head.loss(feats, samples)["loss"]
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 1, 0]])  # one-hot known positives
    assert loss.item() == pytest.approx(0.5 * pu_loss(head(feats), targets, gamma=0.85, alpha=2.0).item())


def test_partial_head_passes_unknowns_to_the_loss():
    from mmpretrain.registry import MODELS

    from labelwise.plugins.pumlc.loss import partial_bce

    head = MODELS.build(dict(type="labelwise.PartialMultiLabelLinearClsHead", num_classes=3, in_channels=4,
                             loss=dict(type="labelwise.PartialBCELoss", unknown="ignore")))
    feats = (torch.randn(2, 4, generator=torch.Generator().manual_seed(1)),)
    partial = [[1, -1, 0], [-1, 0, -1]]
    loss = head.loss(feats, _samples(partial))["loss"]
    assert loss.item() == pytest.approx(partial_bce(head(feats), torch.tensor(partial)).item())
    # a stock head would have trained the unknowns as negatives
    negative = partial_bce(head(feats), torch.tensor(partial), unknown="negative")
    assert loss.item() != pytest.approx(negative.item())


def test_loss_options_are_validated():
    from mmpretrain.registry import MODELS

    with pytest.raises(ConfigError, match="unknown='maybe'"):
        MODELS.build(dict(type="labelwise.PartialBCELoss", unknown="maybe"))
    with pytest.raises(ConfigError, match="alpha=0"):
        MODELS.build(dict(type="labelwise.PUMLCLoss", alpha=0))
    loss = MODELS.build(dict(type="labelwise.PUMLCLoss"))
    with pytest.raises(ConfigError, match="weight"):
        loss(torch.zeros(2, 2), torch.zeros(2, 2), weight=torch.ones(2))
    with pytest.raises(ConfigError, match="unknown lgc option"):
        MODELS.build(dict(type="labelwise.PUMLCClassifier", backbone=dict(type="ResNet", depth=18),
                          lgc=dict(heads=8)))


def _classifier(**kwargs):
    from mmpretrain.registry import MODELS

    return MODELS.build(dict(
        type="labelwise.PUMLCClassifier",
        backbone=dict(type="ResNet", depth=18, base_channels=8, stem_channels=16, out_indices=(3,)),
        neck=dict(type="GlobalAveragePooling"),
        head=dict(type="labelwise.PartialMultiLabelLinearClsHead", num_classes=3, in_channels=64,
                  loss=dict(type="labelwise.PUMLCLoss")),
        **kwargs))


def test_classifier_with_lgc_and_mixup_trains_a_step():
    model = _classifier(lgc=dict(num_heads=4), mixup=dict(alpha=0.3, seed=0))
    model.init_weights()
    branches = [m for n, m in model.named_modules() if n.endswith("global_branch")]
    assert len(branches) == 16
    assert all(b.norm.weight.abs().max() < 1e-3 for b in branches)  # init_weights did not reset them to 1
    inputs = torch.randn(4, 3, 32, 32)
    losses = model.loss(inputs, _samples([[1, -1, 0], [0, 1, -1], [-1, -1, 1], [1, 1, 0]]))
    assert set(losses) == {"loss", "loss_mixup"}
    sum(losses.values()).backward()
    grads = [p.grad for n, p in model.named_parameters() if "global_branch" in n]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_classifier_freeze_regime():
    model = _classifier(lgc=dict(num_heads=4, freeze=True))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all("global_branch" in n or n.startswith(("backbone.layer4.", "head.")) for n in trainable)
    model.train()
    assert all(not m.training for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("config", ["digits_partial_pumlc_mixup.py", "digits_partial_ignore.py",
                                    "digits_partial_pumlc_full.py"])
def test_mmpretrain_tools_train_runs_pumlc_configs(tiny_digits, tmp_path, config):
    from pathlib import Path

    tools_train = Path(mmpretrain.__file__).parent / ".mim" / "tools" / "train.py"
    work_dir = tmp_path / "work"
    proc = run_python(
        str(tools_train), str(ROOT / "configs" / "pumlc" / config), "--work-dir", str(work_dir),
        "--cfg-options", "train_cfg.max_epochs=1", "train_dataloader.batch_size=32",
        "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
        "model.backbone.base_channels=8", "model.backbone.stem_channels=16", "model.head.in_channels=64",
        env={"LABELWISE_DATA_ROOT": str(tiny_digits)}, timeout=900,
    )
    log = proc.stdout + proc.stderr
    assert "Epoch(train) [1][5/5]" in log
    assert "nan" not in log.split("Epoch(train) [1][5/5]")[1].split("\n")[0].lower()
    assert (work_dir / "epoch_1.pth").is_file()
