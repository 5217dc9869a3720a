"""CleanNet weights x Label Refinery targets: configs/compose/digits_noisy_cleannet_refinery.py."""
import torch

from compose.helpers import img_key, train_batch

CONFIG = "compose/digits_noisy_cleannet_refinery"


def _config(tiny_cfg, work_dir, noisy_scores, teacher, monkeypatch, **options):
    monkeypatch.setenv("LABELWISE_CLEANNET_SCORES", str(noisy_scores[0]))
    monkeypatch.setenv("LABELWISE_REFINERY_CHECKPOINT", teacher["checkpoint"])
    cfg = tiny_cfg(CONFIG, work_dir, **options)
    assert cfg.data_preprocessor.refinery.checkpoint == teacher["checkpoint"]
    cfg.data_preprocessor.refinery.config = teacher["config"]  # the tiny teacher's architecture
    return cfg


def test_one_preprocessor_gives_refinery_targets_and_weights(tiny_cfg, noisy_scores, teacher, monkeypatch, tmp_path):
    """Without batch augments each sample keeps its own file weight; its target is the
    refinery's softmax on the student's batch; the loss is sum w_i CE_i / sum w."""
    cfg = _config(tiny_cfg, tmp_path, noisy_scores, teacher, monkeypatch)
    model, data = train_batch(cfg, range(6))
    samples = data["data_samples"]
    w = torch.tensor([noisy_scores[1][img_key(s)] for s in samples], dtype=torch.float32)
    assert torch.allclose(torch.tensor([s.sample_weight for s in samples]), w)
    t = torch.softmax(model.data_preprocessor.refinery.model(data["inputs"], mode="tensor"), -1)
    assert torch.allclose(torch.stack([s.gt_score for s in samples]), t, atol=1e-6)
    feats = model.extract_feat(data["inputs"])
    loss = model.head.loss(feats, samples)["loss"]
    expected = (w * -(t * torch.log_softmax(model.head(feats), -1)).sum(-1)).sum() / w.sum()
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_runner_with_mixup_weights_reach_the_loss_and_teacher_sees_the_batch(tiny_cfg, noisy_scores, teacher,
                                                                              monkeypatch, tmp_path):
    """A real Runner with Mixup: the teacher's input is bit-identical to the student backbone's,
    the targets are its softmax, the mixed weights keep the batch's weight sum (they moved with
    the images) and the head's loss is sum w'_i CE_i / sum w'."""
    from mmengine.runner import Runner

    cfg = _config(tiny_cfg, tmp_path / "work", noisy_scores, teacher, monkeypatch,
                  **{"data_preprocessor.batch_augments": dict(augments=[dict(type="Mixup", alpha=0.8)])})
    runner = Runner.from_cfg(cfg)
    model = runner.model
    refinery = model.data_preprocessor.refinery.model
    seen = {"student": [], "teacher": [], "checks": []}
    model.backbone.register_forward_pre_hook(lambda m, a: seen["student"].append(a[0].detach().clone()))
    refinery.register_forward_pre_hook(lambda m, a: seen["teacher"].append(a[0].clone()))
    head_loss = model.head.loss

    def spy(feats, samples, **kw):
        losses = head_loss(feats, samples, **kw)
        w = torch.tensor([s.sample_weight for s in samples])
        file_w = torch.tensor([noisy_scores[1][img_key(s)] for s in samples], dtype=torch.float32)
        t = torch.stack([s.gt_score for s in samples])
        logits = model.head(feats).detach()
        expected = (w * -(t * torch.log_softmax(logits, -1)).sum(-1)).sum() / w.sum()
        seen["checks"].append((losses["loss"].detach(), expected, w, file_w, t))
        return losses

    model.head.loss = spy
    runner.train()
    assert len(seen["teacher"]) == len(seen["checks"]) == 2
    for x_student, x_teacher, (loss, expected, w, file_w, t) in zip(seen["student"], seen["teacher"],
                                                                    seen["checks"]):
        assert torch.equal(x_student, x_teacher)
        assert torch.allclose(t, torch.softmax(refinery(x_teacher, mode="tensor"), -1), atol=1e-6)
        assert torch.allclose(loss, expected, rtol=1e-5)
        assert torch.isclose(w.sum(), file_w.sum(), rtol=1e-5)  # weights mixed, not dropped or duplicated
        assert (w - file_w).abs().max() > 1e-4  # ... and mixed: not left on their slots
    assert (tmp_path / "work" / "epoch_1.pth").is_file()
