"""Label Refinery in mmpretrain: the real Runner, mmpretrain's tools/train.py, chaining, offline."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import ROOT, run_python
from labelwise.errors import CheckpointError, ConfigError


def _student_keys(cfg):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    init_default_scope("mmpretrain")
    model_cfg = cfg.model.to_dict()
    model_cfg["data_preprocessor"] = dict(type="ClsDataPreprocessor")
    return set(MODELS.build(model_cfg).state_dict())


def _teacher_checkpoint(cfg, path, seed=1):
    """An (untrained) teacher with cfg's model, saved as an mmengine-style checkpoint."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from labelwise.checkpoint import save_checkpoint

    init_default_scope("mmpretrain")
    model_cfg = cfg.model.to_dict()
    model_cfg["data_preprocessor"] = dict(type="ClsDataPreprocessor")
    torch.manual_seed(seed)
    model = MODELS.build(model_cfg)
    model.init_weights()
    save_checkpoint({"state_dict": model.state_dict(), "meta": {}}, path)
    return path


@pytest.mark.parametrize("augment", [dict(type="Mixup", alpha=0.8), dict(type="CutMix", alpha=1.0)],
                         ids=["mixup", "cutmix"])
def test_runner_step_teacher_frozen_same_input_excluded_everywhere(augment, tiny_config, tmp_path):
    """One real Runner (EMA hook, Mixup or CutMix): the teacher gets the student's exact batch, no grads,
    unchanged params/buffers, and is absent from the optimizer, EMA and the checkpoints."""
    from mmengine.runner import Runner

    base = tiny_config(tmp_path / "t")
    base.dump(str(tmp_path / "teacher.py"))
    ckpt = _teacher_checkpoint(base, tmp_path / "teacher.pth")
    cfg = tiny_config(tmp_path / "work", **{
        "data_preprocessor.batch_augments": dict(augments=[augment]),
        "custom_hooks": [dict(type="EMAHook", momentum=0.1)],
    })
    cfg.data_preprocessor.refinery = dict(config=str(tmp_path / "teacher.py"), checkpoint=str(ckpt))
    runner = Runner.from_cfg(cfg)
    pre = runner.model.data_preprocessor
    teacher = pre.refinery.model
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    seen = {"student": [], "teacher": [], "scores": []}
    runner.model.backbone.register_forward_pre_hook(lambda m, a: seen["student"].append(a[0].detach().clone()))
    teacher.register_forward_pre_hook(lambda m, a: seen["teacher"].append(a[0].clone()))
    head_loss = runner.model.head.loss

    def spy(feats, data_samples, **kw):
        seen["scores"].append(torch.stack([s.gt_score for s in data_samples]))
        return head_loss(feats, data_samples, **kw)

    runner.model.head.loss = spy
    runner.train()

    assert len(seen["teacher"]) == 2  # 64 images / 32: training batches only, not the test
    for x_student, x_teacher, scores in zip(seen["student"], seen["teacher"], seen["scores"]):
        assert torch.equal(x_student, x_teacher)  # the mixed, normalised batch itself
        assert torch.allclose(scores, torch.softmax(teacher(x_teacher, mode="tensor"), -1), atol=1e-6)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())

    teacher_ids = {id(p) for p in teacher.parameters()}
    optimised = [p for g in runner.optim_wrapper.optimizer.param_groups for p in g["params"]]
    assert optimised and not teacher_ids & {id(p) for p in optimised}
    assert not teacher_ids & {id(p) for p in runner.model.parameters()}
    ema = next(h for h in runner.hooks if type(h).__name__ == "EMAHook").ema_model
    assert ema.module.data_preprocessor.refinery is pre.refinery  # shared, not copied
    assert not teacher_ids & {id(p) for p in ema.parameters()}

    from labelwise.checkpoint import load_checkpoint

    saved = load_checkpoint(tmp_path / "work" / "epoch_1.pth")
    student_keys = _student_keys(cfg)
    assert set(saved["state_dict"]) == student_keys
    assert set(saved["ema_state_dict"]) == {f"module.{k}" for k in student_keys} | {"steps"}


def test_refinery_is_outside_ddp(tiny_config, tmp_path):
    """A real (1-process, gloo) MMDistributedDataParallel: it syncs only the student."""
    import torch.distributed as dist
    from mmengine.model import MMDistributedDataParallel
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    cfg = tiny_config(tmp_path)
    ckpt = _teacher_checkpoint(cfg, tmp_path / "teacher.pth")
    cfg.dump(str(tmp_path / "teacher.py"))
    init_default_scope("mmpretrain")
    model_cfg = cfg.model.to_dict()
    model_cfg["data_preprocessor"] = {**cfg.data_preprocessor.to_dict(),
                                      "refinery": dict(config=str(tmp_path / "teacher.py"), checkpoint=str(ckpt))}
    model = MODELS.build(model_cfg)
    import socket

    with socket.socket() as s:  # a free port: other test runs may share the machine
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
    try:
        ddp = MMDistributedDataParallel(module=model)
        teacher = model.data_preprocessor.refinery.model
        synced = {id(p) for p in ddp.parameters()} | {id(b) for b in ddp.buffers()}
        assert not synced & ({id(p) for p in teacher.parameters()} | {id(b) for b in teacher.buffers()})
    finally:
        dist.destroy_process_group()


def test_mmpretrain_tools_train_cross_architecture(tiny_digits, tiny_options, tmp_path):
    """mmpretrain's shipped tools/train.py on the example config: a half-width student refined
    online by a full-width refinery built from its config + checkpoint."""
    import mmpretrain
    from mmengine.config import Config

    teacher_cfg = Config.fromfile(str(ROOT / "configs" / "refinery" / "digits_single.py"))
    ckpt = _teacher_checkpoint(teacher_cfg, tmp_path / "teacher.pth")
    tools_train = Path(mmpretrain.__file__).parent / ".mim" / "tools" / "train.py"
    work_dir = tmp_path / "work"
    options = {k: v for k, v in tiny_options.items() if not k.startswith("model.")}
    options["train_cfg.max_epochs"] = 1
    proc = run_python(
        str(tools_train), str(ROOT / "configs" / "refinery" / "digits_single_small.py"), "--work-dir", str(work_dir),
        "--cfg-options", *[f"{k}={v}" for k, v in options.items()],
        env={"LABELWISE_DATA_ROOT": str(tiny_digits), "LABELWISE_REFINERY_CHECKPOINT": str(ckpt)}, timeout=900)
    log = proc.stdout + proc.stderr
    assert "Epoch(train) [1][2/2]" in log
    from labelwise.checkpoint import load_checkpoint

    state = load_checkpoint(work_dir / "epoch_1.pth")["state_dict"]
    student_cfg = Config.fromfile(str(ROOT / "configs" / "refinery" / "digits_single_small.py"))
    student_shapes = {k: tuple(v.shape) for k, v in _built(student_cfg).state_dict().items()}
    assert {k: tuple(v.shape) for k, v in state.items()} == student_shapes  # half width, no teacher
    assert state["head.fc.weight"].shape == (10, 128)


def _built(cfg):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    init_default_scope("mmpretrain")
    model_cfg = cfg.model.to_dict()
    model_cfg["data_preprocessor"] = dict(type="ClsDataPreprocessor")
    return MODELS.build(model_cfg)


def test_refine_cli_two_generations(refinery_chain, tiny_digits, tiny_options):
    from labelwise.checkpoint import load_checkpoint
    from labelwise.cli import main

    records = json.loads((refinery_chain / "generations.json").read_text())
    assert [r["generation"] for r in records] == [1, 2]
    assert records[0]["refinery_checkpoint"] is None
    assert records[1]["refinery_checkpoint"] == records[0]["checkpoint"]
    for r in records:
        assert Path(r["checkpoint"]).is_file() and 0 <= r["metrics"]["accuracy/top1"] <= 100
    gen2_config = (refinery_chain / "gen2" / "config.py").read_text()
    assert records[0]["checkpoint"] in gen2_config  # gen 2's refinery is gen 1
    assert "refinery=dict()" in (refinery_chain / "gen1" / "config.py").read_text()
    # generations are different models (gen 2 trained from scratch on other targets)
    w1 = load_checkpoint(records[0]["checkpoint"])["state_dict"]["head.fc.weight"]
    w2 = load_checkpoint(records[1]["checkpoint"])["state_dict"]["head.fc.weight"]
    assert not torch.equal(w1, w2)
    # resumable: finished generations are reused, nothing is retrained
    mtime = Path(records[1]["checkpoint"]).stat().st_mtime
    args = ["refine", "--generations", "2", "--work-dir", str(refinery_chain), "--data-root", str(tiny_digits),
            "--epochs", "1", "--cfg-options"] + [f"{k}={v}" for k, v in tiny_options.items()]
    assert main(args) == 0
    assert Path(records[1]["checkpoint"]).stat().st_mtime == mtime


def test_offline_store_serves_soft_labels(refinery_chain, tiny_digits, tiny_config, tmp_path):
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import DATASETS

    from labelwise.adapters.mmpretrain.refinery import build_refinery
    from labelwise.cli import main
    from labelwise.plugins.refinery.store import RefinedLabelStore

    gen1 = json.loads((refinery_chain / "gen1" / "generation.json").read_text())
    out = tmp_path / "store"
    assert main(["refine-store", "--config", gen1["config"], "--checkpoint", gen1["checkpoint"], "--out", str(out),
                 "--data-root", str(tiny_digits), "--topk", "3", "--no-progress"]) == 0
    store = RefinedLabelStore(out)
    assert len(store) == 64 and store.ids[0] == "images/train/000000.png"
    # the stored label is the refinery's prediction on the whole (un-augmented) image
    init_default_scope("mmpretrain")
    ds = DATASETS.build(dict(type="CustomDataset", data_root=str(tiny_digits), ann_file="single/train.txt",
                             data_prefix="", pipeline=[dict(type="LoadImageFromFile"), dict(type="PackInputs")]))
    from mmengine.dataset import pseudo_collate
    from mmpretrain.models import ClsDataPreprocessor

    pre = ClsDataPreprocessor(mean=[127.5] * 3, std=[64.0] * 3, to_rgb=True)
    refinery = build_refinery(dict(config=gen1["config"], checkpoint=gen1["checkpoint"]))
    probs = refinery(pre(pseudo_collate([ds[7]]), False)["inputs"])[0]
    top = probs.topk(3)
    label = store.soft_label(ds.get_data_info(7)["img_path"])
    assert np.allclose(label[top.indices.numpy()], top.values.numpy(), atol=2e-3)

    # served through the pipeline as gt_score, with the real Runner
    from mmengine.runner import Runner

    cfg = tiny_config(tmp_path / "work", config="refinery/digits_single_offline",
                      **{"train_dataloader.dataset.indices": 32})
    cfg.train_dataloader.dataset.pipeline[0]["store"] = str(out)
    runner = Runner.from_cfg(cfg)
    sample = runner.train_dataloader.dataset[7]["data_samples"]
    assert np.allclose(sample.gt_score.numpy(), label)
    runner.train()
    assert (tmp_path / "work" / "epoch_1.pth").is_file()


def test_offline_store_of_another_checkpoint_is_refused(refinery_chain, tiny_digits, tmp_path, capsys):
    """The same images, config and top-k from generation 2's checkpoint: the store generation 1
    made is not reused; --overwrite rebuilds it with generation 2's labels."""
    from labelwise.cli import main
    from labelwise.plugins.refinery.store import RefinedLabelStore, file_fingerprint

    gen1, gen2 = (json.loads((refinery_chain / f"gen{t}" / "generation.json").read_text()) for t in (1, 2))
    out = tmp_path / "store"
    args = ["refine-store", "--config", gen1["config"], "--out", str(out), "--data-root", str(tiny_digits),
            "--topk", "3", "--no-progress"]
    assert main(args + ["--checkpoint", gen1["checkpoint"]]) == 0
    first = RefinedLabelStore(out)
    assert first.meta["provenance"]["checkpoint"] == file_fingerprint(gen1["checkpoint"])
    values = np.array(first.values)
    capsys.readouterr()
    assert main(args + ["--checkpoint", gen2["checkpoint"]]) == 2
    err = capsys.readouterr().err
    assert f"{out} holds a different refined-label store (provenance 'checkpoint'" in err
    assert "--overwrite" in err and "Traceback" not in err
    assert np.array_equal(RefinedLabelStore(out).values, values)  # untouched
    assert main(args + ["--checkpoint", gen1["checkpoint"]]) == 0  # the same one is reused
    assert main(args + ["--checkpoint", gen2["checkpoint"], "--overwrite"]) == 0
    second = RefinedLabelStore(out)
    assert second.meta["provenance"]["checkpoint"] == file_fingerprint(gen2["checkpoint"])
    assert not np.array_equal(np.array(second.values), values)


def test_bad_refinery_specs(tmp_path):
    from labelwise.adapters.mmpretrain.refinery import RefineryDataPreprocessor, build_refinery

    with pytest.raises(ConfigError, match="unknown keys \\['chekpoint'\\]; valid keys: config, model, timm"):
        build_refinery(dict(config="x.py", chekpoint="y"))
    with pytest.raises(ConfigError, match="exactly one of config, model, timm .* got \\['config', 'timm'\\]"):
        build_refinery(dict(config="x.py", timm="resnet18", checkpoint="y"))
    with pytest.raises(ConfigError, match="refinery.checkpoint is required"):
        build_refinery(dict(timm="resnet18"))
    with pytest.raises(ConfigError, match="bn_mode must be one of eval, train, got 'fixed'"):
        build_refinery(dict(timm="resnet18", checkpoint="y", bn_mode="fixed"))
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*missing.pth"):
        build_refinery(dict(timm="resnet18", timm_kwargs=dict(num_classes=10), checkpoint=str(tmp_path / "missing.pth")))
    import timm

    from labelwise.checkpoint import save_checkpoint

    save_checkpoint({"state_dict": timm.create_model("resnet10t", num_classes=3).state_dict()}, tmp_path / "r.pth")
    with pytest.raises(CheckpointError, match="does not fit the refinery model ResNet"):
        build_refinery(dict(timm="resnet10t", timm_kwargs=dict(num_classes=10), checkpoint=str(tmp_path / "r.pth")))
    with pytest.raises(ConfigError, match="needs num_classes"):
        RefineryDataPreprocessor(mean=[0.0] * 3, std=[1.0] * 3)


def test_timm_refinery_for_an_mm_student_with_its_own_normalisation(tmp_path):
    """A timm model as the refinery of an mmpretrain preprocessor; it was trained on 0..1 inputs,
    so each batch is re-normalised for it."""
    import timm
    from mmpretrain.structures import DataSample

    from labelwise.adapters.mmpretrain.refinery import RefineryDataPreprocessor
    from labelwise.checkpoint import save_checkpoint

    torch.manual_seed(0)
    teacher = timm.create_model("resnet10t", pretrained=False, num_classes=10)
    save_checkpoint({"state_dict": teacher.state_dict()}, tmp_path / "t.pth")
    pre = RefineryDataPreprocessor(
        mean=[127.5] * 3, std=[64.0] * 3, to_rgb=True, num_classes=10,
        refinery=dict(timm="resnet10t", timm_kwargs=dict(num_classes=10), checkpoint=str(tmp_path / "t.pth"),
                      mean=[0.0] * 3, std=[255.0] * 3))
    built = pre.refinery.model
    seen = []
    built.register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    images = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    data = {"inputs": list(images), "data_samples": [DataSample().set_gt_label(i) for i in range(4)]}
    out = pre(data, True)
    expected_input = images.flip(1).float() / 255  # to_rgb, then the teacher's own normalisation
    assert torch.allclose(seen[0], expected_input, atol=1e-5)
    teacher.eval()
    scores = torch.stack([s.gt_score for s in out["data_samples"]])
    assert torch.allclose(scores, torch.softmax(teacher(expected_input), -1), atol=1e-5)
    assert [int(s.gt_label) for s in out["data_samples"]] == [0, 1, 2, 3]  # ground truth kept
    plain = pre({"inputs": list(images), "data_samples": [DataSample().set_gt_label(1) for _ in range(4)]}, False)
    assert len(seen) == 1 and torch.equal(plain["data_samples"][0].gt_score, torch.eye(10)[1])  # eval: no refinery


def test_refine_cli_refuses_a_config_without_the_refinery_preprocessor(tiny_digits, tmp_path, capsys):
    from labelwise.cli import main

    status = main(["refine", "--config", "baseline/digits_single", "--generations", "2",
                   "--work-dir", str(tmp_path), "--data-root", str(tiny_digits)])
    err = capsys.readouterr().err
    assert status == 2
    assert "data_preprocessor.type is None; generation chaining needs 'labelwise.RefineryDataPreprocessor'" in err
    assert not (tmp_path / "gen1" / "generation.json").exists()


def test_refined_student_tests_without_its_teacher_and_configs_resolve_anywhere(tiny_digits, tiny_options,
                                                                                tmp_path, monkeypatch):
    """`labelwise refine` from a relative work dir writes configs that work from any directory;
    testing the refined student never reads the refinery's files."""
    from mmengine.config import Config
    from mmengine.runner import Runner

    from labelwise.cli import main

    monkeypatch.chdir(tmp_path)
    args = ["refine", "--config", "refinery/digits_single", "--generations", "2", "--work-dir", "chain",
            "--data-root", str(tiny_digits), "--epochs", "1", "--seed", "0", "--cfg-options"]
    assert main(args + [f"{k}={v}" for k, v in tiny_options.items()]) == 0
    records = json.loads((tmp_path / "chain" / "generations.json").read_text())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = Config.fromfile(str(tmp_path / "chain" / "gen2" / "config.py"))
    refinery = (cfg.model.get("data_preprocessor") or cfg.data_preprocessor).refinery
    assert Path(refinery.config).is_absolute() and Path(refinery.config).is_file()
    assert Path(refinery.checkpoint).is_absolute() and refinery.checkpoint == records[0]["checkpoint"]

    # the teacher's files gone: the student still tests
    Path(refinery.checkpoint).rename(tmp_path / "teacher-moved.pth")
    cfg.work_dir = str(tmp_path / "test-run")
    cfg.load_from = records[1]["checkpoint"]
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert 0 <= metrics["accuracy/top1"] <= 100
    assert runner.model.data_preprocessor._refinery is None  # never read
    # training mode reads it, and a missing teacher fails before the first iteration
    from labelwise.errors import CheckpointError

    with pytest.raises(CheckpointError, match="teacher-moved|gen1"):
        runner.model.train()
