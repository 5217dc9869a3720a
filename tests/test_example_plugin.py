"""The third-party plugin example under examples/: installable, listed, usable from a config."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, run_python

EXAMPLE = ROOT / "examples" / "labelwise-focal"


@pytest.fixture(scope="module")
def focal_site(tmp_path_factory):
    import shutil

    build = tmp_path_factory.mktemp("focal-src")
    shutil.copytree(EXAMPLE, build, dirs_exist_ok=True)
    target = tmp_path_factory.mktemp("focal-site")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--disable-pip-version-check", "--no-index", "--target", str(target), str(build)],
                   check=True, capture_output=True, text=True)
    return target


def test_example_plugin_is_listed_and_adds_a_command(focal_site):
    env = {"PYTHONPATH": str(focal_site), "LABELWISE_DISABLE_PLUGIN_AUTOLOAD": ""}
    listed = json.loads(run_python("-m", "labelwise", "plugins", "--json", env=env).stdout)
    method = [m for m in listed["methods"] if m["name"] == "partial-focal"]
    assert method and method[0]["plugin"] == "focal" and method[0]["types"] == ["labelwise.PartialFocalLoss"]
    out = run_python("-m", "labelwise", "focal-check", "--gamma", "0", env=env).stdout
    # gamma 0: plain BCE over the two known entries, times C=3
    import math

    bce = -math.log(1 / (1 + math.exp(-2.0))) - math.log(1 - 1 / (1 + math.exp(1.0)))
    assert f"{bce / 2 * 3:.4f}" in out


def test_example_config_trains_with_the_plugin_loss(focal_site, tiny_digits, tmp_path):
    import mmpretrain

    tools_train = Path(mmpretrain.__file__).parent / ".mim" / "tools" / "train.py"
    proc = run_python(
        str(tools_train), str(EXAMPLE / "example_config.py"), "--work-dir", str(tmp_path / "work"),
        "--cfg-options", "train_cfg.max_epochs=1", "train_dataloader.batch_size=40",
        "train_dataloader.num_workers=0", "train_dataloader.persistent_workers=False",
        "model.backbone.base_channels=8", "model.backbone.stem_channels=16", "model.head.in_channels=64",
        env={"PYTHONPATH": str(focal_site), "LABELWISE_DATA_ROOT": str(tiny_digits),
             "LABELWISE_DISABLE_PLUGIN_AUTOLOAD": ""}, timeout=900)
    log = proc.stdout + proc.stderr
    assert "Epoch(train) [1][4/4]" in log
    dumped = (tmp_path / "work" / "example_config.py").read_text()
    assert "labelwise.PartialFocalLoss" in dumped
