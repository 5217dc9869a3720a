"""Contract test: every registry type a labelwise method declares builds and works on CPU.

For each ``(method, type)`` of :func:`labelwise.list_methods` the type is built from a config
dict (``type='labelwise.Name'``) through mmpretrain's registries, which hand the name to
labelwise's child registry, and is then exercised once on the built-in digit data (64 px
images, a ResNet-18 with 8 base channels, batches of 4):

* models (losses, heads, classifiers): a training forward gives a finite scalar loss whose
  backward reaches the trainable parameters (finite gradients, not all zero), and a predict
  step gives one score vector per image;
* data preprocessors: ``preprocessor(data, training=True)`` as mmengine calls it, then the
  loss they feed, backward through a tiny model;
* transforms: a real sample dict of mmpretrain's pipeline, checked keys and shapes;
* datasets: built on a small annotation file (the digit data's, or for the readers of published
  formats a copy of their miniature in ``tests/data/formats`` with digit images at the paths
  it names), its samples checked, one item loaded through a pipeline;
* metrics: ``process`` on a few data samples, then ``evaluate``;
* hooks: built with a real argument set; ``before_train`` (its check) and ``after_train``
  (its work, on the untrained weights) run against a minimal real mmengine ``Runner``.

A declared type without an entry in :data:`EXERCISES` fails, naming the type, so a new type
must bring its contract; an entry no method declares any more fails too.
"""
import copy
import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

import labelwise

NUM_CLASSES = 10
MEAN, STD = [127.5] * 3, [64.0] * 3
#: ResNet-18 at 8 base channels: 64-d features after layer4 (2x2 at 64 px).
BACKBONE = dict(type="ResNet", depth=18, stem_channels=16, base_channels=8, out_indices=(3,))
FEATURES = 64
NOISY = "noisy-symmetric-r0.2"

#: The format miniatures of the dataset readers (annotation files only; images are written here).
FORMATS = Path(__file__).resolve().parent / "data" / "formats"

CASES = [(m.name, t) for m in labelwise.list_methods() for t in m.types]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """The tiny models run fastest on one thread (and do not fight other jobs for cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def score_file(tiny_digits, tmp_path_factory):
    """A CleanNet score file of the noisy train split: scores -0.5 .. 0.9 in sample order, weight
    ``score >= 0.2``. Returns ``(path, split, scores)``."""
    from labelwise.data import load_regime
    from labelwise.plugins.cleannet.scorefile import write_scores

    train = load_regime(tiny_digits, NOISY, "train")
    scores = np.linspace(-0.5, 0.9, len(train.ids))
    path = tmp_path_factory.mktemp("cleannet") / "scores.csv"
    write_scores(path, train.ids, train.labels, scores, (scores >= 0.2).astype(float))
    return path, train, scores


@pytest.fixture(scope="module")
def label_maps(tiny_digits, tmp_path_factory):
    """A ReLabel store of random top-3 2x2 maps for the first 8 images of the single/train split."""
    from conftest import write_random_label_maps

    return write_random_label_maps(tiny_digits, tmp_path_factory.mktemp("labelmaps") / "single-train", limit=8,
                                   num_classes=NUM_CLASSES)


@pytest.fixture(scope="module")
def refined_store(tiny_digits, tmp_path_factory):
    """An offline refined-label store (top-3) for the first 8 single/train images.
    Returns ``(store directory, ids, (8, 10) probabilities)``."""
    from labelwise.data import load_regime
    from labelwise.plugins.refinery.store import write_refined_labels

    ids = list(load_regime(tiny_digits, "single", "train").ids)[:8]
    table = torch.softmax(torch.randn(len(ids), NUM_CLASSES, generator=torch.Generator().manual_seed(1)) * 3, -1)
    out = write_refined_labels(tmp_path_factory.mktemp("refined") / "store", ids, lambda rows: table[rows],
                               num_classes=NUM_CLASSES, k=3, batch_size=4, progress=False)
    return out, ids, table


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny seeded mmpretrain teacher: ``(config path, checkpoint path, model in eval mode)``."""
    from conftest import make_tiny_mm_model

    return make_tiny_mm_model(tmp_path_factory.mktemp("teacher"), seed=1)


@pytest.fixture(scope="module")
def partial_batch(tiny_digits):
    """4 packed samples of the partial-label train split (``partial_labels`` carried), pseudo-collated."""
    return _batch(tiny_digits, "partial-p0.3/train.json", [0, 1, 3, 4], dataset="labelwise.PartialMultiLabelDataset",
                  pack=dict(type="PackInputs", algorithm_keys=["partial_labels"]))


@pytest.fixture(scope="module")
def single_batch(tiny_digits):
    """4 packed samples of the single-label train split, pseudo-collated."""
    return _batch(tiny_digits, "single/train.txt", [0, 1, 2, 3])


@pytest.fixture(scope="module")
def weighted_batch(tiny_digits, score_file):
    """4 packed samples of the noisy train split with their CleanNet ``sample_weight`` (two 0, two 1)."""
    path, _, scores = score_file
    rows = [0, 40, 120, 159]
    assert sorted(scores[rows] >= 0.2) == [False, False, True, True]
    return _batch(tiny_digits, f"{NOISY}/train.txt", rows,
                  extra=[dict(type="labelwise.CleanNetWeights", score_file=str(path))],
                  pack=dict(type="PackInputs", algorithm_keys=["sample_weight"]))


# --------------------------------------------------------------------------- helpers


def _registry(name):
    from mmengine.registry import init_default_scope
    from mmpretrain import registry

    init_default_scope("mmpretrain")
    return getattr(registry, name)


def _build(registry_name, cfg):
    """Build ``cfg`` with mmpretrain's registry; a ``type='labelwise.Name'`` must come from labelwise's child."""
    import labelwise.registry as reg

    reg.register_plugin_modules()
    obj = _registry(registry_name).build(cfg)
    scope, _, short = cfg["type"].rpartition(".")
    if scope == "labelwise":
        assert type(obj) is getattr(reg, registry_name).get(short), f"{cfg['type']} built a {type(obj).__name__}"
    return obj


def _dataset(data_root, ann_file, pipeline, *, dataset="CustomDataset"):
    cfg = dict(type=dataset, data_root=str(data_root), ann_file=ann_file, data_prefix="", pipeline=pipeline)
    if dataset == "CustomDataset":
        cfg["classes"] = [str(i) for i in range(NUM_CLASSES)]
    return _registry("DATASETS").build(cfg)


def _batch(data_root, ann_file, rows, *, dataset="CustomDataset", extra=(), pack=None):
    from mmengine.dataset import pseudo_collate

    pipeline = [dict(type="LoadImageFromFile"), *extra, pack or dict(type="PackInputs")]
    ds = _dataset(data_root, ann_file, pipeline, dataset=dataset)
    return pseudo_collate([ds[i] for i in rows])


def _raw_sample(data_root, ann_file="single/train.txt", index=0):
    """What mmpretrain's pipeline holds after ``LoadImageFromFile`` for one digit image."""
    return _dataset(data_root, ann_file, [dict(type="LoadImageFromFile")])[index]


def _preprocessor(**kwargs):
    return dict(num_classes=NUM_CLASSES, mean=MEAN, std=STD, to_rgb=True, **kwargs)


def _classifier(head, *, neck=True, data_preprocessor=None, backbone=None, **kwargs):
    cfg = dict(type=kwargs.pop("type", "ImageClassifier"), backbone=dict(BACKBONE, **(backbone or {})), head=head,
               data_preprocessor=data_preprocessor or _preprocessor(), **kwargs)
    if neck:
        cfg["neck"] = dict(type="GlobalAveragePooling")
    return cfg


def _assert_gradients(model, groups):
    """Every trainable parameter got a finite gradient; each group (a name prefix) a non-zero one."""
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert trainable, "the model has no trainable parameter"
    missing = [n for n, p in trainable if p.grad is None]
    assert not missing, f"no gradient reached {missing[:5]} ({len(missing)} parameters)"
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    assert not bad, f"non-finite gradients in {bad[:5]}"
    for group in groups:
        norms = [float(p.grad.abs().sum()) for n, p in trainable if n.startswith(group)]
        assert norms, f"no trainable parameter under {group!r}"
        assert sum(norms) > 0, f"the gradients of {group!r} are all zero"


def _train_and_predict(model, data, *, groups=("backbone.", "head."), losses=("loss",)):
    """One training forward + backward (mmengine's train_step without the optimiser), one test_step.

    Returns the loss dict and the preprocessed training batch.
    """
    model.init_weights()
    model.train()
    batch = model.data_preprocessor(copy.deepcopy(data), True)
    out = model(**batch, mode="loss")
    assert set(losses) <= set(out), f"expected losses {losses}, got {sorted(out)}"
    loss = sum(v for k, v in out.items() if "loss" in k)
    assert loss.ndim == 0 and torch.isfinite(loss), f"loss {loss}"
    model.zero_grad()
    loss.backward()
    _assert_gradients(model, groups)
    model.eval()
    with torch.no_grad():
        preds = model.test_step(copy.deepcopy(data))
    assert len(preds) == len(data["inputs"])
    for pred in preds:
        assert pred.pred_score.shape == (NUM_CLASSES,) and torch.isfinite(pred.pred_score).all()
    return out, batch


# --------------------------------------------------------------------------- exercises


def exercise_partial_dataset(tiny_digits, tmp_path):
    records = json.loads((tiny_digits / "partial-p0.3" / "train.json").read_text())["data_list"][:4]
    records[1]["partial_labels"] = [None if v == -1 else v for v in records[1]["partial_labels"]]  # null: unknown
    ann = tmp_path / "tiny.json"
    ann.write_text(json.dumps({"metainfo": {"classes": [str(i) for i in range(NUM_CLASSES)]}, "data_list": records}))
    ds = _build("DATASETS", dict(type="labelwise.PartialMultiLabelDataset", data_root=str(tiny_digits),
                                 ann_file=str(ann), data_prefix="",
                                 pipeline=[dict(type="LoadImageFromFile"),
                                           dict(type="PackInputs", algorithm_keys=["partial_labels"])]))
    assert len(ds) == 4
    expected = np.array([[-1 if v is None else v for v in r["partial_labels"]] for r in records], dtype=np.int8)
    assert np.array_equal(ds.get_partial_labels(), expected)
    item = ds[1]
    assert item["inputs"].shape == (3, 64, 64) and item["inputs"].dtype == torch.uint8
    sample = item["data_samples"]
    assert np.array_equal(np.asarray(sample.partial_labels), expected[1])
    assert sample.gt_label.tolist() == np.flatnonzero(expected[1] == 1).tolist()


def exercise_sample_scores(tmp_path):
    from mmpretrain.structures import DataSample

    out_file = tmp_path / "test_scores.npz"
    metric = _build("METRICS", dict(type="labelwise.SampleScores", out_file=str(out_file)))
    scores = torch.softmax(torch.randn(3, NUM_CLASSES, generator=torch.Generator().manual_seed(0)), -1)
    order, labels = [2, 0, 1], [7, 3, 5]
    samples = [DataSample(metainfo={"sample_idx": i}).set_gt_label(y).set_pred_score(s)
               for i, y, s in zip(order, labels, scores)]
    metric.process({}, [s.to_dict() for s in samples[:2]])
    metric.process({}, [s.to_dict() for s in samples[2:]])
    assert metric.evaluate(3) == {}
    with np.load(out_file, allow_pickle=False) as saved:
        assert saved["sample_idx"].tolist() == [0, 1, 2]
        assert saved["labels"].tolist() == [3, 5, 7]
        np.testing.assert_allclose(saved["scores"], scores[[1, 2, 0]].numpy(), rtol=1e-6)


def exercise_pumlc_loss(partial_batch):
    loss = _build("MODELS", dict(type="labelwise.PUMLCLoss", gamma=0.85, alpha=2.0))
    logits = torch.randn(4, NUM_CLASSES, generator=torch.Generator().manual_seed(0), requires_grad=True)
    targets = torch.stack([torch.as_tensor(s.partial_labels, dtype=torch.float32)
                           for s in partial_batch["data_samples"]])
    value = loss(logits, targets)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert torch.isfinite(logits.grad).all() and bool((logits.grad[targets == 1] != 0).all())
    # as a stock multi-label head's loss (targets: the known positives)
    model = _build("MODELS", _classifier(dict(type="MultiLabelLinearClsHead", num_classes=NUM_CLASSES,
                                              in_channels=FEATURES, loss=dict(type="labelwise.PUMLCLoss"))))
    _train_and_predict(model, partial_batch)


def exercise_partial_bce_loss(partial_batch):
    loss = _build("MODELS", dict(type="labelwise.PartialBCELoss", unknown="ignore"))
    logits = torch.randn(4, NUM_CLASSES, generator=torch.Generator().manual_seed(0), requires_grad=True)
    targets = torch.stack([torch.as_tensor(s.partial_labels, dtype=torch.float32)
                           for s in partial_batch["data_samples"]])
    assert bool((targets == -1).any()) and bool((targets != -1).any())
    value = loss(logits, targets)
    assert value.ndim == 0 and torch.isfinite(value)
    value.backward()
    assert bool((logits.grad[targets == -1] == 0).all()), "an unknown label got a gradient"
    assert bool((logits.grad[targets != -1] != 0).all()), "a known label got no gradient"
    # as the loss of a partial-label head, in its other mode (unknowns trained as negatives)
    model = _build("MODELS", _classifier(dict(type="labelwise.PartialMultiLabelLinearClsHead",
                                              num_classes=NUM_CLASSES, in_channels=FEATURES,
                                              loss=dict(type="labelwise.PartialBCELoss", unknown="negative"))))
    _train_and_predict(model, partial_batch)


def exercise_partial_linear_head(partial_batch):
    model = _build("MODELS", _classifier(dict(type="labelwise.PartialMultiLabelLinearClsHead",
                                              num_classes=NUM_CLASSES, in_channels=FEATURES,
                                              loss=dict(type="labelwise.PartialBCELoss"))))
    _train_and_predict(model, partial_batch)


def exercise_partial_csra_head(partial_batch):
    model = _build("MODELS", _classifier(dict(type="labelwise.PartialCSRAClsHead", num_classes=NUM_CLASSES,
                                              in_channels=FEATURES, num_heads=1, lam=0.1,
                                              loss=dict(type="labelwise.PUMLCLoss")), neck=False))
    _train_and_predict(model, partial_batch)


def exercise_pumlc_classifier(partial_batch):
    model = _build("MODELS", _classifier(dict(type="labelwise.PartialMultiLabelLinearClsHead",
                                              num_classes=NUM_CLASSES, in_channels=FEATURES,
                                              loss=dict(type="labelwise.PUMLCLoss")),
                                         type="labelwise.PUMLCClassifier", lgc=dict(num_heads=4),
                                         mixup=dict(alpha=0.3, seed=0),
                                         # every branch sits in a residual block: with mmpretrain's
                                         # zero-initialised last BN no gradient would reach them
                                         backbone=dict(zero_init_residual=False)))
    names = [n for n, _ in model.named_parameters()]
    assert any("global_branch" in n for n in names), "lgc=... converted no convolution"
    _train_and_predict(model, partial_batch, losses=("loss", "loss_mixup"))
    branch_grads = [p.grad for n, p in model.named_parameters() if "global_branch" in n]
    assert sum(float(g.abs().sum()) for g in branch_grads) > 0, "no gradient reached the LGC global branches"


def exercise_crop_with_box(tiny_digits):
    import mmcv

    crop = _build("TRANSFORMS", dict(type="labelwise.RandomResizedCropWithBox", scale=32,
                                     crop_ratio_range=(0.2, 0.6), backend="pillow"))
    sample = _raw_sample(tiny_digits)
    original = sample["img"].copy()
    assert original.shape == (64, 64, 3) and tuple(sample["ori_shape"]) == (64, 64)
    np.random.seed(0)
    out = crop(sample)
    assert out["img"].shape == (32, 32, 3) and tuple(out["img_shape"][:2]) == (32, 32)
    box = out["crop_box"]
    assert box.dtype == np.float32 and box.shape == (4,)
    x1, y1, x2, y2 = box.astype(int).tolist()
    assert 0 <= x1 < x2 <= 64 and 0 <= y1 < y2 <= 64
    again = mmcv.imresize(original[y1:y2, x1:x2], (32, 32), interpolation="bilinear", backend="pillow")
    assert np.array_equal(again, out["img"]), "crop_box is not the region the image was cropped from"
    assert repr(crop).startswith("RandomResizedCropWithBox(")


def exercise_label_pooling(tiny_digits, label_maps):
    from labelwise.plugins.labelpool.pooling import pool_label_map_numpy
    from labelwise.plugins.labelpool.store import LabelMapStore

    crop = _build("TRANSFORMS", dict(type="labelwise.RandomResizedCropWithBox", scale=32, backend="pillow"))
    pooling = _build("TRANSFORMS", dict(type="labelwise.LabelPooling", label_maps=str(label_maps),
                                        num_classes=NUM_CLASSES))
    np.random.seed(0)
    out = pooling(crop(_raw_sample(tiny_digits, index=3)))
    score = out["gt_score"]
    assert score.shape == (NUM_CLASSES,) and score.dtype == np.float32
    assert abs(float(score.sum()) - 1) < 1e-5 and float(score.min()) >= 0
    scores, ids = LabelMapStore(label_maps).get(LabelMapStore(label_maps).keys[3])
    np.testing.assert_allclose(score, pool_label_map_numpy(scores, ids, out["crop_box"] / 64.0,
                                                           num_classes=NUM_CLASSES), atol=1e-6)
    packed = _registry("TRANSFORMS").build(dict(type="PackInputs"))(out)
    assert packed["data_samples"].gt_score.shape == (NUM_CLASSES,)
    assert "LabelPooling(label_maps=" in repr(pooling)


def exercise_cleannet_weights(tiny_digits, score_file):
    path, _, scores = score_file
    weights = _build("TRANSFORMS", dict(type="labelwise.CleanNetWeights", score_file=str(path)))
    pack = _registry("TRANSFORMS").build(dict(type="PackInputs", algorithm_keys=["sample_weight"]))
    for index in (0, 150):
        out = weights(_raw_sample(tiny_digits, f"{NOISY}/train.txt", index))
        assert out["sample_weight"] == float(scores[index] >= 0.2)
        assert pack(out)["data_samples"].sample_weight == out["sample_weight"]
    assert "CleanNetWeights(score_file=" in repr(weights)


def exercise_cleannet_subset(tiny_digits, score_file):
    path, train, scores = score_file
    base = dict(type="CustomDataset", data_root=str(tiny_digits), ann_file=f"{NOISY}/train.txt", data_prefix="",
                pipeline=[dict(type="LoadImageFromFile"), dict(type="PackInputs")])
    ds = _build("DATASETS", dict(type="labelwise.CleanNetSubset", dataset=base, score_file=str(path), threshold=0.5))
    keep = np.flatnonzero(scores >= 0.5)
    assert len(ds) == len(keep) and 0 < len(ds) < len(scores)
    item = ds[0]
    assert item["inputs"].shape == (3, 64, 64)
    assert item["data_samples"].img_path.endswith(train.ids[keep[0]])
    assert int(item["data_samples"].gt_label) == int(train.labels[keep[0]])


def exercise_weighted_head(weighted_batch):
    model = _build("MODELS", _classifier(dict(type="labelwise.WeightedLinearClsHead", num_classes=NUM_CLASSES,
                                              in_channels=FEATURES, loss=dict(type="CrossEntropyLoss"))))
    _train_and_predict(model, weighted_batch)


def exercise_weighted_preprocessor(weighted_batch):
    pre = _build("MODELS", dict(type="labelwise.WeightedClsDataPreprocessor", **_preprocessor(
        batch_augments=dict(augments=[dict(type="Mixup", alpha=1.0)]))))
    weights = [s.sample_weight for s in weighted_batch["data_samples"]]
    np.random.seed(0)
    torch.manual_seed(0)
    out = pre(copy.deepcopy(weighted_batch), training=True)
    plain = pre(copy.deepcopy(weighted_batch), training=False)
    assert out["inputs"].shape == plain["inputs"].shape == (4, 3, 64, 64) and out["inputs"].dtype == torch.float32
    assert not torch.equal(out["inputs"], plain["inputs"]), "Mixup did not mix the images"
    assert [s.sample_weight for s in plain["data_samples"]] == weights
    mixed = torch.tensor([s.sample_weight for s in out["data_samples"]])
    assert float(mixed.sum()) == pytest.approx(sum(weights)) and bool(((mixed >= 0) & (mixed <= 1)).all())
    scores = torch.stack([s.gt_score for s in out["data_samples"]])
    assert scores.shape == (4, NUM_CLASSES) and torch.isfinite(scores).all()
    kept = mixed > 0  # a mixed target divided by its mixed weight is a distribution again
    assert torch.allclose(scores[kept].sum(1), torch.ones(int(kept.sum())), atol=1e-5)
    # the loss it feeds: the weighted head on the mixed soft targets
    model = _build("MODELS", _classifier(
        dict(type="labelwise.WeightedLinearClsHead", num_classes=NUM_CLASSES, in_channels=FEATURES,
             loss=dict(type="CrossEntropyLoss", use_soft=True)),
        data_preprocessor=dict(type="labelwise.WeightedClsDataPreprocessor", **_preprocessor(
            batch_augments=dict(augments=[dict(type="Mixup", alpha=1.0)])))))
    assert type(model.data_preprocessor).__name__ == "WeightedClsDataPreprocessor"
    np.random.seed(0)
    torch.manual_seed(0)
    _train_and_predict(model, weighted_batch)


def exercise_refinery_preprocessor(single_batch, teacher):
    config, checkpoint, teacher_model = teacher
    refinery = dict(config=str(config), checkpoint=str(checkpoint))
    pre = _build("MODELS", dict(type="labelwise.RefineryDataPreprocessor", refinery=refinery, **_preprocessor()))
    out = pre(copy.deepcopy(single_batch), training=True)
    targets = torch.stack([s.gt_score for s in out["data_samples"]])
    with torch.no_grad():
        expected = torch.softmax(teacher_model(out["inputs"], mode="tensor"), -1)
    assert targets.shape == (4, NUM_CLASSES)
    assert torch.allclose(targets, expected, atol=1e-5), "gt_score is not the teacher's softmax on the batch"
    # the loss it feeds: a student trained on the refinery's soft targets; the teacher stays out of it
    model = _build("MODELS", _classifier(
        dict(type="LinearClsHead", num_classes=NUM_CLASSES, in_channels=FEATURES,
             loss=dict(type="CrossEntropyLoss", use_soft=True)),
        data_preprocessor=dict(type="labelwise.RefineryDataPreprocessor", refinery=refinery, **_preprocessor())))
    teacher_params = list(model.data_preprocessor.refinery.model.parameters())
    assert not {id(p) for p in teacher_params} & {id(p) for p in model.parameters()}
    _, batch = _train_and_predict(model, single_batch)
    assert not torch.equal(torch.stack([s.gt_score for s in batch["data_samples"]]),
                           torch.nn.functional.one_hot(torch.cat([s.gt_label for s in batch["data_samples"]]),
                                                       NUM_CLASSES).float())
    assert all(p.grad is None and not p.requires_grad for p in teacher_params)


def exercise_load_refined_labels(tiny_digits, refined_store):
    store, ids, table = refined_store
    load = _build("TRANSFORMS", dict(type="labelwise.LoadRefinedLabels", store=str(store)))
    out = load(_raw_sample(tiny_digits, index=5))
    score = out["gt_score"]
    assert score.shape == (NUM_CLASSES,) and abs(float(score.sum()) - 1) < 1e-5
    top = table[5].topk(3)
    np.testing.assert_allclose(score[top.indices.numpy()], top.values.numpy(), atol=2e-3)
    packed = _registry("TRANSFORMS").build(dict(type="PackInputs"))(out)
    assert torch.allclose(packed["data_samples"].gt_score, torch.as_tensor(score))
    assert repr(load).startswith("LoadRefinedLabels(store=")


def exercise_cft_hook(tiny_digits, tmp_path):
    from mmengine.runner import Runner

    from labelwise.adapters.mmpretrain.runner import load_config
    from labelwise.checkpoint import load_checkpoint
    from labelwise.errors import ConfigError

    hook_cfg = dict(type="labelwise.CFTHook", val_ann="partial-p0.3/val.json", out_dir=str(tmp_path / "cft"),
                    options=dict(epochs=30, early_stopping=10, population=8, optimizer="best", lr=1e-2),
                    onnx=False, plot=False, progress=False)
    hook = _build("HOOKS", hook_cfg)
    assert hook.options.population == 8 and hook.options.optimizer == "best"
    cfg = load_config("baseline/digits_partial", work_dir=tmp_path / "work", data_root=tiny_digits, cfg_options={
        "model.backbone.base_channels": 8, "model.backbone.stem_channels": 16, "model.head.in_channels": FEATURES})
    cfg.custom_hooks = [hook_cfg]
    runner = Runner.from_cfg(cfg)
    (built,) = [h for h in runner.hooks if type(h).__name__ == "CFTHook"]
    built.before_train(runner)  # a linear head and both splits: CFT will be able to run
    assert built._start_iter == 0 and built._loaded_checkpoint is None
    # after training (here: none, the initial weights; ~1 s at this size) it writes the calibrated model
    built.after_train(runner)
    state = load_checkpoint(tmp_path / "cft" / "calibrated.pth")["state_dict"]
    assert state["head.fc.weight"].shape == (NUM_CLASSES, FEATURES) and torch.isfinite(state["head.fc.weight"]).all()
    runner.model.load_state_dict(state, strict=True)
    report = json.loads((tmp_path / "cft" / "cft_report.json").read_text())
    assert report["class_names"] == [str(i) for i in range(NUM_CLASSES)] and len(report["categories"]) == NUM_CLASSES
    built.val_ann = None  # the config has no val_dataloader: the check must now refuse it
    with pytest.raises(ConfigError, match="CFT needs val_dataloader"):
        built.before_train(runner)


def exercise_partial_metric(tiny_digits):
    from mmpretrain.structures import DataSample

    records = json.loads((tiny_digits / "partial-p0.3" / "val.json").read_text())["data_list"]
    labels = np.array([r["partial_labels"] for r in records], dtype=np.int8)
    rng = np.random.default_rng(0)
    # known positives outscore known negatives in every class; unknowns get any score and must not count
    scores = np.where(labels == 1, 0.8, 0.2) + rng.uniform(-0.1, 0.1, labels.shape)
    scores = np.where(labels == -1, rng.uniform(0, 1, labels.shape), scores)
    metric = _build("METRICS", dict(type="labelwise.PartialMultiLabelMetric", per_class=True))
    metric.dataset_meta = {"classes": [str(i) for i in range(NUM_CLASSES)]}
    samples = []
    for i in range(len(labels)):
        sample = DataSample(metainfo={"sample_idx": i}).set_pred_score(torch.as_tensor(scores[i], dtype=torch.float32))
        sample.set_field(torch.as_tensor(labels[i]), "partial_labels")
        samples.append(sample.to_dict())
    for start in range(0, len(samples), 16):
        metric.process({}, samples[start:start + 16])
    out = metric.evaluate(len(samples))
    defined = int((((labels == 1).any(0)) & ((labels == 0).any(0))).sum())
    assert 0 < defined and out["partial/num_classes"] == defined
    assert out["partial/mAP"] == pytest.approx(100.0) and out["partial/mAUROC"] == pytest.approx(100.0)
    assert len(out["partial/AP_classwise"]) == NUM_CLASSES


def _write_digit_images(tiny_digits, root, paths):
    """A digit image of the built-in data (64x64 RGB) at every ``root / path``, in the format its extension names."""
    from PIL import Image

    for i, path in enumerate(paths):
        file = Path(root) / path
        file.parent.mkdir(parents=True, exist_ok=True)
        image = Image.open(tiny_digits / "images" / "train" / f"{i % 160:06d}.png").convert("RGB")
        image.save(file, format="JPEG" if file.suffix.lower() in (".jpg", ".jpeg") else "PNG")


def _reader_exercise(type_name, folder, *, root="", read, kwargs=None, multi_label=True, extra=(), images=None):
    """The contract of a reader dataset: on a copy of its format miniature (with digit images at the
    paths the files name) it builds, holds the framework-free reader's samples and classes, and loads
    an item through mmpretrain's pipeline."""

    def exercise(tiny_digits, tmp_path):
        data_root = tmp_path / folder / root
        shutil.copytree(FORMATS / folder, tmp_path / folder)
        if images is not None:  # a folder format: the miniature lists the files to make
            _write_digit_images(tiny_digits, data_root, (data_root / images).read_text().split())
        label_set = read(data_root)
        if images is None:
            _write_digit_images(tiny_digits, data_root, label_set.paths)
        keys = ["partial_labels"] if multi_label else list(extra)
        ds = _build("DATASETS", dict(type=type_name, data_root=str(data_root), **(kwargs or {}), pipeline=[
            dict(type="LoadImageFromFile"), dict(type="PackInputs", algorithm_keys=keys)]))
        assert len(ds) == len(label_set.paths) > 0
        assert tuple(ds.metainfo["classes"]) == tuple(label_set.classes)
        for i, path in enumerate(label_set.paths):
            info = ds.get_data_info(i)
            assert Path(info["img_path"]) == data_root / path
            if multi_label:
                assert np.array_equal(info["partial_labels"], label_set.labels[i])
                positives = np.flatnonzero(label_set.labels[i] == 1).tolist()
                assert sorted(np.atleast_1d(info["gt_label"]).tolist()) == positives
            else:
                assert int(info["gt_label"]) == int(label_set.labels[i])
            for key in extra:
                assert int(info[key]) == int(label_set.extra[key][i]), key
        last = len(ds) - 1
        item = ds[last]
        assert item["inputs"].shape == (3, 64, 64) and item["inputs"].dtype == torch.uint8
        sample = item["data_samples"]
        if multi_label:
            assert np.array_equal(np.asarray(sample.partial_labels), label_set.labels[last])
        else:
            assert sample.gt_label.tolist() == [int(label_set.labels[last])]
        for key in extra:
            assert int(sample.get(key)) == int(label_set.extra[key][last])

    exercise.__name__ = f"exercise_{type_name.split('.', 1)[1]}"
    return exercise


def _readers():
    from labelwise import datasets as d

    labels_csv = "annotations/train-annotations-human-imagelabels-boxable.csv"
    classes_csv = "annotations/class-descriptions-boxable.csv"
    return {
        "labelwise.COCOMultiLabel": _reader_exercise(
            "labelwise.COCOMultiLabel", "coco", read=lambda r: d.read_coco(r)),
        "labelwise.VOCPartial": _reader_exercise(
            "labelwise.VOCPartial", "voc", root="VOC2007", read=lambda r: d.read_voc(r)),
        "labelwise.OpenImagesVerified": _reader_exercise(
            "labelwise.OpenImagesVerified", "open_images", kwargs=dict(ann_file=labels_csv, classes_file=classes_csv),
            read=lambda r: d.read_open_images(r, labels_csv, classes_csv)),
        "labelwise.CheXpert": _reader_exercise(
            "labelwise.CheXpert", "chexpert", read=lambda r: d.read_chexpert(r)),
        "labelwise.Food101N": _reader_exercise(
            "labelwise.Food101N", "food101n", root="Food-101N_release", read=lambda r: d.read_food101n(r),
            multi_label=False, extra=("verified",)),
        "labelwise.Clothing1M": _reader_exercise(
            "labelwise.Clothing1M", "clothing1m", read=lambda r: d.read_clothing1m(r), multi_label=False,
            extra=("verified", "noisy_label", "clean_label")),
        "labelwise.ImageNetFolder": _reader_exercise(
            "labelwise.ImageNetFolder", "imagenet", kwargs=dict(synset_mapping="LOC_synset_mapping.txt"),
            read=lambda r: d.read_imagenet_folder(r, synset_mapping="LOC_synset_mapping.txt"), multi_label=False,
            images="fixture-images.txt"),
    }


EXERCISES = {
    "labelwise.PartialMultiLabelDataset": exercise_partial_dataset,
    "labelwise.SampleScores": exercise_sample_scores,
    "labelwise.PartialMultiLabelMetric": exercise_partial_metric,
    **_readers(),
    "labelwise.PUMLCLoss": exercise_pumlc_loss,
    "labelwise.PUMLCClassifier": exercise_pumlc_classifier,
    "labelwise.PartialBCELoss": exercise_partial_bce_loss,
    "labelwise.PartialMultiLabelLinearClsHead": exercise_partial_linear_head,
    "labelwise.PartialCSRAClsHead": exercise_partial_csra_head,
    "labelwise.RandomResizedCropWithBox": exercise_crop_with_box,
    "labelwise.LabelPooling": exercise_label_pooling,
    "labelwise.CleanNetWeights": exercise_cleannet_weights,
    "labelwise.CleanNetSubset": exercise_cleannet_subset,
    "labelwise.WeightedLinearClsHead": exercise_weighted_head,
    "labelwise.WeightedClsDataPreprocessor": exercise_weighted_preprocessor,
    "labelwise.RefineryDataPreprocessor": exercise_refinery_preprocessor,
    "labelwise.LoadRefinedLabels": exercise_load_refined_labels,
    "labelwise.CFTHook": exercise_cft_hook,
}


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize(("method", "type_name"), CASES, ids=[f"{m}:{t}" for m, t in CASES])
def test_declared_type_honours_its_contract(method, type_name, request):
    exercise = EXERCISES.get(type_name)
    if exercise is None:
        pytest.fail(f"{type_name} (declared by method {method!r}) has no contract exercise: add a function that "
                    "builds and exercises it on CPU to EXERCISES in tests/test_contract.py", pytrace=False)
    kwargs = {name: request.getfixturevalue(name) for name in inspect.signature(exercise).parameters}
    exercise(**kwargs)


def test_every_exercise_is_of_a_declared_type():
    declared = {type_name for _, type_name in CASES}
    stale = sorted(set(EXERCISES) - declared)
    assert not stale, f"EXERCISES has entries no method declares any more: {stale}; remove them"
    assert CASES, "labelwise.list_methods() declares no type"
