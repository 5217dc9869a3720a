"""OpenMMLab package config names (``mmpretrain::...``) wherever labelwise takes a config."""
import pytest
import torch

from labelwise.errors import ConfigError

STOCK = "mmpretrain::resnet/resnet18_8xb32_in1k.py"


@pytest.fixture(scope="module")
def stock_checkpoint(tmp_path_factory):
    """Random weights of mmpretrain's shipped ResNet-18 ImageNet config (1,000 classes)."""
    from mmengine.config import Config

    from labelwise.adapters.mmpretrain.runner import build_model, resolve_config
    from labelwise.checkpoint import save_checkpoint

    torch.manual_seed(0)
    model = build_model(Config.fromfile(str(resolve_config(STOCK))))
    path = tmp_path_factory.mktemp("stock") / "resnet18.pth"
    save_checkpoint({"state_dict": model.state_dict(), "meta": {"epoch": 1}}, path)
    return path


def test_package_names_resolve_to_the_installed_configs():
    import mmpretrain

    from labelwise.adapters.mmpretrain.runner import load_config, resolve_config

    path = resolve_config(STOCK)
    assert path.is_file() and path.parts[-4:] == (".mim", "configs", "resnet", "resnet18_8xb32_in1k.py")
    assert str(path).startswith(str(mmpretrain.__path__[0]))
    assert resolve_config(STOCK[:-3]) == path  # ".py" may be left out
    cfg = load_config(STOCK, work_dir="unused")  # its _base_ files resolve
    assert cfg.model.head.num_classes == 1000 and cfg.model.backbone.depth == 18


@pytest.mark.parametrize("name, message", [
    ("mmpretrain::resnet/no_such.py", "config 'mmpretrain::resnet/no_such.py': no file resnet/no_such.py in "),
    ("no_such_package::a/b.py", "config 'no_such_package::a/b.py': 'no_such_package' is not an installed package"),
    ("::a.py", "config '::a.py': expected PACKAGE::PATH, e.g. 'mmpretrain::resnet/resnet50_8xb32_in1k.py'"),
])
def test_bad_package_names_say_what_was_looked_for(name, message):
    from labelwise.adapters.mmpretrain.runner import resolve_config

    with pytest.raises(ConfigError) as err:
        resolve_config(name)
    assert str(err.value).startswith(message)
    if "no_such.py" in name:
        assert "its config folders: " in str(err.value) and "resnet" in str(err.value)


def test_stock_config_as_refinery_annotator_and_trained_model(stock_checkpoint, tmp_path):
    from labelwise.adapters.mmpretrain.labelpool import build_annotator
    from labelwise.adapters.mmpretrain.refinery import build_refinery
    from labelwise.adapters.mmpretrain.runner import build_trained_model

    images = torch.rand(2, 3, 64, 64)
    # Label Refinery's teacher from the stock config
    refinery = build_refinery({"config": STOCK, "checkpoint": str(stock_checkpoint)})
    soft = refinery(images)
    assert soft.shape == (2, 1000)
    # ReLabel's dense annotator from it: its pooled map is the model's own prediction
    annotator, info = build_annotator(STOCK, stock_checkpoint)
    assert info["num_classes"] == 1000 and info["bgr"] is False  # the stock preprocessor sets to_rgb
    dense = annotator(images)
    assert dense.shape == (2, 1000, 2, 2)
    # the trained-model path CFT and CleanNet features take
    model, cfg = build_trained_model(STOCK, stock_checkpoint, work_dir=tmp_path)
    model.eval()
    with torch.no_grad():
        logits = model(images, mode="tensor")
        torch.testing.assert_close(dense.mean((2, 3)), logits, rtol=1e-4, atol=1e-4)
    assert cfg.filename.endswith("resnet18_8xb32_in1k.py")
