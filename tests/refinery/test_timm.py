"""Label Refinery for timm / plain PyTorch: RefineryTask, RefineryLoss, offline dataset, loop.fit."""
import copy

import pytest
import torch
from torch import nn

from labelwise.errors import ConfigError


def _tiny(seed, width=8):
    from labelwise.adapters.timm import create_digits_model

    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return create_digits_model(num_classes=10, width=width)


def _loader(n=16, batch=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)


def test_task_loss_is_soft_ce_on_the_students_tensor():
    from labelwise.adapters.timm.refinery import RefineryTask

    teacher = _tiny(1)
    task = RefineryTask(_tiny(0), teacher)
    task.train()
    seen = []
    teacher.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    task.trainable_module.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    x = torch.randn(4, 3, 32, 32)
    out = task(x, torch.zeros(4, dtype=torch.long))
    assert torch.equal(seen[0], x) and torch.equal(seen[1], x)  # same tensor (same normalisation)
    with torch.no_grad():
        p = torch.softmax(copy.deepcopy(teacher).eval()(x), -1)
    expected = -(p * torch.log_softmax(out["output"], -1)).sum(-1).mean()
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    kl = torch.nn.functional.kl_div(torch.log_softmax(out["output"], -1), p, reduction="batchmean")
    assert torch.allclose(out["kd_loss"], kl, atol=1e-5)
    # ground truth is unused: another target gives the same loss
    assert torch.allclose(task(x, torch.full((4,), 9))["loss"], out["loss"].detach(), atol=1e-6)


def test_fit_leaves_teacher_untouched_and_without_grads():
    from labelwise.adapters.loop import fit
    from labelwise.adapters.timm.refinery import RefineryTask

    teacher = _tiny(1)
    before = copy.deepcopy(teacher.state_dict())
    student = _tiny(0)
    start = copy.deepcopy(student.state_dict())
    task = RefineryTask(student, teacher)
    fit(task, _loader(), epochs=1, progress=False)
    after = teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert not teacher.training
    assert any(not torch.equal(start[k], v) for k, v in student.state_dict().items())  # the student learnt


def test_bn_train_mode_keeps_buffers_and_uses_batch_stats():
    from labelwise.adapters.timm.refinery import RefineryTask

    teacher = _tiny(1)
    with torch.no_grad():  # make running stats differ from any batch's
        for m in teacher.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.fill_(0.5)
                m.running_var.fill_(3.0)
    before = copy.deepcopy(teacher.state_dict())
    x = torch.randn(8, 3, 32, 32)
    eval_logits = RefineryTask(_tiny(0), teacher).teacher_logits(x)
    train_logits = RefineryTask(_tiny(0), teacher, bn_mode="train").teacher_logits(x)
    reference = copy.deepcopy(teacher).train()(x)  # the reference: BN with batch statistics
    assert torch.allclose(train_logits, reference, atol=1e-4)
    assert not torch.allclose(eval_logits, train_logits, atol=1e-3)
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


def test_task_state_dict_leaves_the_refinery_out(tmp_path):
    """The task's state (what a checkpoint of it holds) is the student's; loading one leaves
    the teacher as it is, with strict=True, and ignores teacher entries of older files."""
    from labelwise.adapters.timm.refinery import RefineryTask
    from labelwise.checkpoint import load_checkpoint, save_checkpoint

    student, teacher = _tiny(0), _tiny(1)
    task = RefineryTask(student, teacher)
    state = task.state_dict()
    assert set(state) == {f"trainable_module.{k}" for k in student.state_dict()}
    assert not any(k == "teacher" or k.startswith("teacher.") for k in state._metadata)
    nested = nn.ModuleDict({"task": task}).state_dict()  # under a prefix, too
    assert set(nested) == {f"task.{k}" for k in state}
    save_checkpoint({"state_dict": state}, tmp_path / "task.pth")

    other_teacher = _tiny(2)
    teacher_before = copy.deepcopy(other_teacher.state_dict())
    other = RefineryTask(_tiny(3), other_teacher)
    assert other.load_state_dict(load_checkpoint(tmp_path / "task.pth")["state_dict"], strict=True) is not None
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in other.trainable_module.state_dict().items())
    assert all(torch.equal(v, teacher_before[k]) for k, v in other_teacher.state_dict().items())
    # a state that still holds a teacher (another one): the teacher is not replaced
    old_format = {**state, **{f"teacher.model.{k}": v for k, v in teacher.state_dict().items()}}
    other.load_state_dict(old_format, strict=True)
    assert all(torch.equal(v, teacher_before[k]) for k, v in other_teacher.state_dict().items())
    with pytest.raises(RuntimeError, match="Missing key.*trainable_module"):  # the student is still checked
        other.load_state_dict({k: v for k, v in state.items() if "fc" not in k}, strict=True)


def test_plain_pytorch_models_and_bad_input():
    from labelwise.adapters.timm.refinery import RefineryLoss, RefineryTask

    student = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    task = RefineryTask(student, teacher)
    x = torch.randn(5, 3, 2, 2)
    out = task(x, None)
    p = torch.softmax(teacher(x), -1).detach()
    assert torch.allclose(out["loss"], RefineryLoss()(student(x), p), atol=1e-6)
    out["loss"].backward()
    assert student[1].weight.grad is not None and teacher[1].weight.grad is None
    with pytest.raises(ConfigError, match="bn_mode must be one of eval, train, got 'x'"):
        RefineryTask(student, teacher, bn_mode="x")
    with pytest.raises(ConfigError, match="teacher_model must be an nn.Module or a DistillationTeacher, got str"):
        RefineryTask(student, "resnet50")


def test_offline_dataset_trains_with_classification_task(tiny_digits, tmp_path):
    from timm.task import ClassificationTask

    from labelwise.adapters.loop import fit
    from labelwise.adapters.timm.refinery import RefinedLabelsDataset, RefineryLoss
    from labelwise.adapters.torch_data import DigitScenesDataset, digits_transform
    from labelwise.plugins.refinery.store import write_refined_labels

    train = DigitScenesDataset(tiny_digits, "single", "train", transform=digits_transform(train=True, size=32))
    train = torch.utils.data.Subset(train, range(16))
    ids = [train.dataset.ids[i] for i in train.indices]
    probs = torch.softmax(torch.randn(16, 10, generator=torch.Generator().manual_seed(0)), -1)
    store = write_refined_labels(tmp_path / "s", ids, lambda rows: probs[rows], num_classes=10, k=10, progress=False)
    data = RefinedLabelsDataset(train, store, ids=ids)
    image, label = data[3]
    assert image.shape == (3, 32, 32) and torch.allclose(label, probs[3], atol=1e-3)
    task = ClassificationTask(_tiny(0), RefineryLoss(), verbose=False)
    history = fit(task, torch.utils.data.DataLoader(data, batch_size=8), epochs=1, progress=False)
    assert len(history) == 1 and history[0] > 0
    with pytest.raises(ConfigError, match="ids has 0 entries for a dataset of 16"):
        RefinedLabelsDataset(train, store)
