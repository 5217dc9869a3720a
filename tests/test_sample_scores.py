"""labelwise.SampleScores: per-sample test scores written as .npz, in dataset order, without pickle."""
import numpy as np
import pytest
import torch

pytest.importorskip("mmpretrain")


def test_single_and_multi_label_scores_are_written_in_sample_order(tmp_path):
    from labelwise.adapters.mmpretrain.metrics import SampleScores
    from labelwise.utils.fileio import read_npz

    metric = SampleScores(out_file=str(tmp_path / "single.npz"))
    samples = [{"sample_idx": 1, "pred_score": torch.tensor([0.1, 0.9]), "gt_label": torch.tensor([1])},
               {"sample_idx": 0, "pred_score": torch.tensor([0.8, 0.2]), "gt_label": torch.tensor([0])}]
    metric.process({}, samples)
    assert metric.compute_metrics(metric.results) == {}
    f = read_npz(tmp_path / "single.npz")
    assert f["sample_idx"].tolist() == [0, 1] and f["labels"].tolist() == [0, 1]
    np.testing.assert_allclose(f["scores"], [[0.8, 0.2], [0.1, 0.9]], rtol=1e-6)

    multi = SampleScores(out_file=str(tmp_path / "multi.npz"), multi_label=True)
    multi.process({}, [{"sample_idx": 0, "pred_score": torch.tensor([0.1, 0.7, 0.4]), "gt_label": torch.tensor([0, 2])}])
    multi.compute_metrics(multi.results)
    assert read_npz(tmp_path / "multi.npz")["labels"].tolist() == [[1, 0, 1]]


def test_out_file_must_be_npz():
    from labelwise.adapters.mmpretrain.metrics import SampleScores

    with pytest.raises(ValueError, match="expected a .npz path"):
        SampleScores(out_file="scores.pkl")


def test_sample_scores_creates_the_parent_folders_of_out_file(tmp_path):
    import torch
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import METRICS
    from mmpretrain.structures import DataSample

    import labelwise  # noqa: F401

    init_default_scope("mmpretrain")
    out = tmp_path / "run" / "nested" / "test_scores.npz"
    metric = METRICS.build(dict(type="labelwise.SampleScores", out_file=str(out)))
    metric.process({}, [DataSample(metainfo={"sample_idx": 0}).set_gt_label(1).set_pred_score(torch.rand(3)).to_dict()])
    metric.evaluate(1)
    assert out.is_file()
