"""ReLabel: dense annotators, the `labelwise relabel` command, resuming and 2-rank sharding."""
import json
import os

import numpy as np
import pytest
import torch

from conftest import run_python
from labelwise.cli import main
from labelwise.errors import ConfigError
from labelwise.plugins.labelpool.annotator import DenseClassifier, check_linear_head, topk_maps
from labelwise.plugins.labelpool.store import LabelMapStore


@pytest.fixture(scope="module")
def mm_annotator(tmp_path_factory):
    """A tiny mmpretrain ResNet config and a checkpoint of its (random) weights."""
    from conftest import make_tiny_mm_model

    return make_tiny_mm_model(tmp_path_factory.mktemp("annotator"))


def _tiny_timm(name="resnet18", **kwargs):
    import timm

    torch.manual_seed(0)
    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs).eval()


def test_dense_map_mean_is_the_model_prediction():
    model = _tiny_timm(channels=(8, 16, 32, 64))
    dense = DenseClassifier(torch.nn.Module(), model.get_classifier())
    dense.features = _Features(model)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps = dense(x)
        logits = model(x)
    assert maps.shape == (2, 10, 2, 2)  # stride 32 at 64 px
    assert torch.allclose(maps.mean((2, 3)), logits, atol=1e-5)
    scores, ids = topk_maps(maps, 3)
    assert torch.equal(ids[:, 0], maps.argmax(1))
    assert (scores[:, :-1] >= scores[:, 1:]).all()
    with pytest.raises(ConfigError, match=r"k must be in \[1, 10\]"):
        topk_maps(maps, 11)


class _Features(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model.forward_features(x)


@pytest.mark.parametrize("name,kwargs", [("convnext_atto", {}), ("mobilenetv3_small_050", {})])
def test_models_with_layers_after_the_pool_are_refused(name, kwargs):
    from labelwise.adapters.timm.labelpool import build_annotator

    with pytest.raises(ConfigError, match="layers follow the global pool"):
        build_annotator(name, None, num_classes=10, model_kwargs=kwargs)


def test_exact_heads_pass_the_check():
    from labelwise.adapters.timm.labelpool import build_annotator

    for name in ("resnet18", "efficientnet_b0"):
        dense, info = build_annotator(name, None, num_classes=7)
        assert dense.num_classes == 7 and len(info["mean"]) == 3
    linear = torch.nn.Linear(4, 3)
    check_linear_head(lambda f: linear(f.mean((2, 3))), linear, channels=4)
    with pytest.raises(ConfigError, match="differs .* by up to"):
        check_linear_head(lambda f: linear(f.amax((2, 3))), linear, channels=4)


def test_mmpretrain_annotator_matches_the_model(mm_annotator):
    from labelwise.adapters.mmpretrain.labelpool import build_annotator

    config, checkpoint, model = mm_annotator
    dense, info = build_annotator(config, checkpoint)
    assert info["mean"] == [127.5] * 3 and info["std"] == [64.0] * 3 and info["bgr"] is False
    x = torch.randn(3, 3, 96, 96)
    with torch.no_grad():
        maps = dense(x)
        logits = model(x, mode="tensor")
    assert maps.shape == (3, 10, 3, 3)
    assert torch.allclose(maps.mean((2, 3)), logits, atol=1e-5)


@pytest.mark.parametrize("to_rgb", [True, False])
def test_loader_normalises_in_the_preprocessors_channel_order(mm_annotator, tmp_path, to_rgb):
    """The annotator's input equals ClsDataPreprocessor's output on the same image, with
    per-channel means and stds that differ, whether the config converts BGR to RGB or not."""
    from mmengine.dataset import pseudo_collate
    from mmengine.registry import init_default_scope
    from mmpretrain.models import ClsDataPreprocessor
    from mmpretrain.registry import TRANSFORMS
    from PIL import Image

    from labelwise.adapters.mmpretrain.labelpool import build_annotator
    from labelwise.plugins.labelpool.relabel import WholeImageLoader

    mean, std = [20.0, 110.0, 230.0], [30.0, 60.0, 90.0]
    config, checkpoint, _ = mm_annotator
    asymmetric = tmp_path / "asymmetric.py"
    asymmetric.write_text(f"_base_ = [{str(config)!r}]\n"
                          f"data_preprocessor = dict(mean={mean}, std={std}, to_rgb={to_rgb})\n")
    _, info = build_annotator(asymmetric, checkpoint)
    assert info["mean"] == mean and info["std"] == std and info["bgr"] is (not to_rgb)

    rgb = np.random.default_rng(3).integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    rgb[..., 0] = 255  # a red-ish picture: a channel swap shows
    Image.fromarray(rgb).save(tmp_path / "x.png")
    init_default_scope("mmpretrain")
    pipeline = [TRANSFORMS.build(dict(type="LoadImageFromFile")), TRANSFORMS.build(dict(type="PackInputs"))]
    sample = {"img_path": str(tmp_path / "x.png")}
    for transform in pipeline:
        sample = transform(sample)
    expected = ClsDataPreprocessor(mean=mean, std=std, to_rgb=to_rgb)(pseudo_collate([sample]), False)["inputs"][0]

    load = WholeImageLoader(tmp_path, size=24, mean=info["mean"], std=info["std"], bgr=info["bgr"])
    torch.testing.assert_close(load("x.png"), expected, rtol=0, atol=1e-5)


def _relabel(tiny_digits, out, config, checkpoint, *extra):
    return ["relabel", str(out), "--data-root", str(tiny_digits), "--ann-file", "single/val.txt",
            "--config", str(config), "--checkpoint", str(checkpoint), "--input-size", "96",
            "--topk", "3", "--batch-size", "8", "--shard-size", "16", "--no-progress", *extra]


def test_relabel_cli_writes_the_annotators_maps_and_resumes(mm_annotator, tiny_digits, tmp_path, capsys):
    from labelwise.adapters.mmpretrain.labelpool import build_annotator
    from labelwise.data import load_regime
    from labelwise.plugins.labelpool.relabel import WholeImageLoader

    config, checkpoint, _ = mm_annotator
    out = tmp_path / "maps"
    assert main(_relabel(tiny_digits, out, config, checkpoint)) == 0
    assert "label maps of 40 images (10 classes, top-3, 3x3 at 96 px)" in capsys.readouterr().out
    store = LabelMapStore(out, num_classes=10, k=3)
    keys = list(load_regime(tiny_digits, "single", "val").ids)
    assert store.keys == keys and len(store.index["shards"]) == 3
    assert store.meta["input_size"] == 96 and store.meta["framework"] == "mmpretrain"
    # the stored maps are the annotator's top-3 on the whole image resized to 96 px
    dense, info = build_annotator(config, checkpoint)
    load = WholeImageLoader(tiny_digits, size=96, mean=info["mean"], std=info["std"], bgr=info["bgr"])
    with torch.no_grad():
        scores, ids = topk_maps(dense(torch.stack([load(keys[i]) for i in (0, 37)])), 3)
    for row, i in enumerate((0, 37)):
        s, d = store.get(keys[i])
        assert np.array_equal(d, ids[row].numpy())
        np.testing.assert_allclose(s.astype(np.float32), scores[row].numpy(), rtol=1e-3, atol=1e-3)
    # resume: a lost shard is rewritten, finished ones are kept (their mtime does not change)
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("shard-*.bin")}
    lost = out / "shard-00001.bin"
    lost.unlink()
    assert main(_relabel(tiny_digits, out, config, checkpoint)) == 0
    after = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.glob("shard-*.bin")}
    assert after["shard-00000.bin"] == before["shard-00000.bin"]
    assert after["shard-00001.bin"][1] == before["shard-00001.bin"][1]
    # different settings are refused, one line, no traceback
    capsys.readouterr()
    assert main(_relabel(tiny_digits, out, config, checkpoint, "--input-size", "64")) == 2
    err = capsys.readouterr().err
    assert err.startswith("labelwise relabel: error: ") and "describes another store" in err
    assert "Traceback" not in err


def test_relabel_cli_timm_and_bad_input(tiny_digits, tmp_path, capsys):
    from labelwise.checkpoint import save_checkpoint

    model = _tiny_timm(channels=(8, 16, 32, 64))
    save_checkpoint({"state_dict": model.state_dict()}, tmp_path / "r18.pth")
    argv = ["relabel", str(tmp_path / "maps"), "--data-root", str(tiny_digits), "--ann-file",
            "single/val.txt", "--timm-model", "resnet18", "--checkpoint", str(tmp_path / "r18.pth"),
            "--model-kwargs", '{"channels": [8, 16, 32, 64]}', "--input-size", "64", "--no-progress"]
    assert main(argv) == 0
    store = LabelMapStore(tmp_path / "maps")
    assert (store.k, store.height, store.width, store.num_classes, len(store)) == (5, 2, 2, 10, 40)
    capsys.readouterr()
    no_kwargs = argv[:-5] + ["--input-size", "64", "--no-progress", "--overwrite"]
    assert main(no_kwargs) == 2  # timm's default widths do not fit the narrow checkpoint
    assert "does not fit timm model 'resnet18'" in capsys.readouterr().err
    for bad, message in (
        (["--ann-file", "single/nothing.txt"], "annotation file"),
        (["--config", "baseline/digits_single"], "--input-size is required for an mmpretrain annotator"),
    ):
        args = ["relabel", str(tmp_path / "m2"), "--data-root", str(tiny_digits), "--checkpoint",
                str(tmp_path / "r18.pth"), "--no-progress"]
        if "--config" not in bad:
            args += ["--timm-model", "resnet18"]
        assert main(args + bad) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err


def test_resume_with_another_annotator_of_the_same_name_and_size_is_refused(tiny_digits, tmp_path, capsys):
    """Shards of two models must never mix: the store records the checkpoint's content."""
    from labelwise.checkpoint import save_checkpoint

    first = tmp_path / "a" / "r18.pth"
    second = tmp_path / "b" / "r18.pth"
    for seed, path in ((0, first), (1, second)):
        torch.manual_seed(seed)
        import timm

        model = timm.create_model("resnet18", pretrained=False, num_classes=10, channels=(8, 16, 32, 64))
        save_checkpoint({"state_dict": model.state_dict()}, path)
    assert first.stat().st_size == second.stat().st_size and first.read_bytes() != second.read_bytes()

    def argv(checkpoint):
        return ["relabel", str(tmp_path / "maps"), "--data-root", str(tiny_digits), "--ann-file",
                "single/val.txt", "--timm-model", "resnet18", "--checkpoint", str(checkpoint),
                "--model-kwargs", '{"channels": [8, 16, 32, 64]}', "--input-size", "64", "--no-progress"]

    assert main(argv(first)) == 0
    assert LabelMapStore(tmp_path / "maps").meta["checkpoint_fingerprint"]["bytes"] == first.stat().st_size
    (tmp_path / "maps" / "shard-00000.bin").unlink()  # as if interrupted: resuming would rewrite it
    capsys.readouterr()
    assert main(argv(second)) == 2
    err = capsys.readouterr().err
    assert "describes another store" in err and "checkpoint_fingerprint" in err
    assert not (tmp_path / "maps" / "shard-00000.bin").exists()


def test_two_gloo_ranks_write_the_same_store_as_one(mm_annotator, tiny_digits, tmp_path):
    config, checkpoint, _ = mm_annotator
    one = tmp_path / "one"
    assert main(_relabel(tiny_digits, one, config, checkpoint)) == 0
    two = tmp_path / "two"
    proc = run_python("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                      "-m", "labelwise", *_relabel(tiny_digits, two, config, checkpoint),
                      env={"OMP_NUM_THREADS": "1"}, timeout=600)
    assert "label maps of 40 images" in proc.stdout
    assert proc.stdout.count("label maps of") == 1  # rank 0 reports
    files = sorted(p.name for p in one.iterdir())
    assert files == sorted(p.name for p in two.iterdir())
    for name in files:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
