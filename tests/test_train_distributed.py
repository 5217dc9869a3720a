"""`labelwise train --launcher pytorch` under torchrun on CPU (gloo): 2 ranks give one process's result."""
import json
import os
import sys

import numpy as np
import pytest

from conftest import ROOT, run_python

# deterministic training: no random crop, BatchNorm on its (initial) running statistics, so a
# step depends only on which samples it sees; 2 ranks x 16 then see what 1 process x 32 sees
DETERMINISTIC = """
_base_ = [{base!r}]
model = dict(backbone=dict(stem_channels=16, base_channels=8, norm_eval=True), head=dict(in_channels=64))
train_dataloader = dict(num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=[dict(type='LoadImageFromFile'), dict(type='PackInputs')]))
test_dataloader = dict(num_workers=0, persistent_workers=False)
"""


def _torchrun(*args, nproc=2, timeout=300):
    env = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "tests")}
    return run_python("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                      *args, env=env, timeout=timeout)


def _weights(run_dir):
    from labelwise.checkpoint import extract_state_dict, load_checkpoint

    return extract_state_dict(load_checkpoint(run_dir / "mmpretrain" / "epoch_1.pth"))


def test_two_cpu_ranks_train_like_one_process(tiny_digits, tmp_path):
    config = tmp_path / "deterministic.py"
    config.write_text(DETERMINISTIC.format(base=str(ROOT / "configs" / "baseline" / "digits_single.py")))
    common = ["train", "--data-root", str(tiny_digits), "--regime", "single", "--config", str(config),
              "--epochs", "1", "--seed", "0", "--no-progress"]
    one = run_python("-m", "labelwise", *common, "--work-dir", str(tmp_path / "one"), "--batch-size", "32",
                     env={"OMP_NUM_THREADS": "1"})
    two = _torchrun("-m", "labelwise", *common, "--work-dir", str(tmp_path / "two"), "--batch-size", "16",
                    "--launcher", "pytorch")
    assert two.stdout.count("mmpretrain single seed 0: test top1") == 1  # rank 0 prints, rank 1 does not
    a = json.loads((tmp_path / "one" / "metrics.json").read_text())
    b = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert b["world_size"] == 2 and "world_size" not in a
    log = next((tmp_path / "two" / "mmpretrain").glob("*/*.log")).read_text()
    assert "Distributed launcher: pytorch" in log and "Distributed training: True" in log
    assert "Epoch(train) [1][5/5]" in log  # 160 images, 2 x 16 per step
    wa, wb = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert sorted(wa) == sorted(wb)
    changed = [k for k in wa if not np.array_equal(wa[k].numpy(), _initial(config)[k].numpy())]
    assert changed, "training changed no weight: the comparison could not tell"
    for key in wa:  # the same steps; only the order of the float sums differs
        np.testing.assert_allclose(wb[key].numpy(), wa[key].numpy(), rtol=1e-4, atol=1e-5, err_msg=key)
    assert abs(a["value"] - b["value"]) <= 100 / 80  # at most one of the 80 test images differs


def _initial(config):
    import torch
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import set_random_seed
    from mmpretrain.registry import MODELS

    init_default_scope("mmpretrain")
    set_random_seed(0)
    model = MODELS.build(Config.fromfile(str(config)).model)
    model.init_weights()
    return {f"{k}": v for k, v in model.state_dict().items()} | {"_": torch.zeros(1)}


def test_launcher_pytorch_needs_torchrun_and_mmpretrain(tiny_digits, tmp_path):
    from labelwise.errors import ConfigError
    from labelwise.train import train_baseline

    env = {k: v for k, v in os.environ.items() if k != "WORLD_SIZE"}
    proc = run_python("-m", "labelwise", "train", "--data-root", str(tiny_digits), "--regime", "single",
                      "--work-dir", str(tmp_path / "w"), "--launcher", "pytorch", check=False, env=env)
    assert proc.returncode == 2
    assert ("labelwise train: error: --launcher pytorch needs torchrun's environment (WORLD_SIZE, RANK, "
            "MASTER_ADDR): run `torchrun --nproc_per_node N -m labelwise train --launcher pytorch ...`") in proc.stderr
    with pytest.raises(ConfigError, match=r"--launcher pytorch runs mmengine's Runner \(--framework mmpretrain\); "
                                          r"for timm, run `torchrun --nproc_per_node N -m labelwise.timm_train"):
        train_baseline("timm", data_root=tiny_digits, regime="single", work_dir=tmp_path / "t", launcher="pytorch")
    assert sys.executable  # the subprocesses above ran this interpreter
