"""mmengine resume / load_from work under torch >= 2.6 once a config imports labelwise."""
from pathlib import Path

import pytest
import torch

from conftest import ROOT, run_python

mmpretrain = pytest.importorskip("mmpretrain")

TINY = ["train_dataloader.batch_size=40", "train_dataloader.num_workers=0",
        "train_dataloader.persistent_workers=False", "model.backbone.base_channels=8",
        "model.backbone.stem_channels=16", "model.head.in_channels=64"]


def _tools_train():
    return Path(mmpretrain.__file__).parent / ".mim" / "tools" / "train.py"


def test_tools_train_resume_continues_to_the_next_epoch(tiny_digits, tmp_path):
    work_dir = tmp_path / "work"
    config = str(ROOT / "configs" / "baseline" / "digits_single.py")
    env = {"LABELWISE_DATA_ROOT": str(tiny_digits)}
    run_python(str(_tools_train()), config, "--work-dir", str(work_dir), "--cfg-options",
               "train_cfg.max_epochs=1", *TINY, env=env, timeout=900)
    assert (work_dir / "epoch_1.pth").is_file()

    # control: mmengine alone cannot read its own checkpoint under torch's weights-only default
    control = run_python("-c", (
        "import sys; from mmengine.runner.checkpoint import _load_checkpoint\n"
        f"_load_checkpoint({str(work_dir / 'epoch_1.pth')!r}, map_location='cpu')"), check=False)
    assert control.returncode != 0 and "Weights only load failed" in control.stderr

    proc = run_python(str(_tools_train()), config, "--work-dir", str(work_dir), "--resume", "--cfg-options",
                      "train_cfg.max_epochs=2", *TINY, env=env, timeout=900)
    log = proc.stdout + proc.stderr
    assert "resumed epoch: 1" in log
    assert "Epoch(train) [2][4/4]" in log and "Epoch(train) [1][" not in log
    assert (work_dir / "epoch_2.pth").is_file()


def test_load_from_through_the_runner_and_refusal_of_code(tiny_digits, tmp_path):
    work_dir = tmp_path / "work"
    config = str(ROOT / "configs" / "baseline" / "digits_single.py")
    env = {"LABELWISE_DATA_ROOT": str(tiny_digits)}
    run_python(str(_tools_train()), config, "--work-dir", str(work_dir), "--cfg-options",
               "train_cfg.max_epochs=1", *TINY, env=env, timeout=900)
    proc = run_python(str(_tools_train()), config, "--work-dir", str(tmp_path / "again"), "--cfg-options",
                      "train_cfg.max_epochs=1", f"load_from={work_dir / 'epoch_1.pth'}", *TINY, env=env, timeout=900)
    assert "Load checkpoint from" in proc.stdout + proc.stderr

    class Evil:
        def __reduce__(self):
            return (print, ("CODE RAN",))

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": Evil()}, evil)  # a real torch checkpoint whose unpickling calls print
    proc = run_python(str(_tools_train()), config, "--work-dir", str(tmp_path / "evil"), "--cfg-options",
                      "train_cfg.max_epochs=1", f"load_from={evil}", *TINY, env=env, timeout=900, check=False)
    assert proc.returncode != 0
    assert "CODE RAN" not in proc.stdout
    assert "evil.pth" in proc.stderr and "builtins.print" in proc.stderr


def test_installing_twice_is_a_no_op():
    from mmengine.runner.checkpoint import CheckpointLoader

    from labelwise.adapters.mmengine_checkpoint import install_safe_checkpoint_loader, load_from_local

    install_safe_checkpoint_loader()
    assert install_safe_checkpoint_loader() is False
    assert CheckpointLoader._schemes[""] is load_from_local


def test_installed_by_the_entry_points_without_an_import_hook():
    early = ("import sys\n"
             "before = list(sys.meta_path)\n"
             "import labelwise\n"
             "assert 'mmengine' not in sys.modules  # importing labelwise stays cheap\n"
             "assert sys.meta_path == before  # and adds no import hook\n"
             "from mmengine.runner.checkpoint import CheckpointLoader\n"
             "print(CheckpointLoader._schemes[''].__module__)\n"
             "import labelwise.registry  # what mmengine imports for a 'labelwise.' type\n"
             "print(CheckpointLoader._schemes[''].__module__)\n")
    assert run_python("-c", early).stdout.split() == ["mmengine.runner.checkpoint",
                                                      "labelwise.adapters.mmengine_checkpoint"]
    # custom_imports=['labelwise'] in a config run by mmengine: mmengine is loaded first
    late = ("from mmengine.runner.checkpoint import CheckpointLoader\n"
            "import labelwise\n"
            "print(CheckpointLoader._schemes[''].__module__)\n")
    assert run_python("-c", late).stdout.strip() == "labelwise.adapters.mmengine_checkpoint"
    adapters = ("import labelwise.adapters.mmpretrain\n"
                "from mmengine.runner.checkpoint import CheckpointLoader\n"
                "print(CheckpointLoader._schemes[''].__module__)\n")
    assert run_python("-c", adapters).stdout.strip() == "labelwise.adapters.mmengine_checkpoint"
