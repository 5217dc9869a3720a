"""Determinism: every command that writes outputs, run twice as separate processes with the same
inputs and seed, writes the same bytes (arrays for ``.npz`` files, whose zip entries carry the
time of writing; JSON minus the wall-time fields of :data:`reliability.harness.TIME_FIELDS`);
the commands that run under ``torchrun`` write the same on 2 gloo processes as on 1.

Every run is also watched for partial files under final names (:class:`reliability.harness.Watch`).
"""
from __future__ import annotations

import sys

import pytest

from reliability.conftest import CFT_OPTIONS, features_argv, fit_argv, relabel_argv, score_argv
from reliability.harness import Watch, output_differences, run_watched

pytestmark = [pytest.mark.reliability, pytest.mark.slow]

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m"]


@pytest.fixture(scope="module")
def mm_refinery(tmp_path_factory):
    """A tiny mmpretrain ResNet config and a checkpoint of its (seeded random) weights."""
    from conftest import make_tiny_mm_model

    config, checkpoint, _ = make_tiny_mm_model(tmp_path_factory.mktemp("rel-mm"))
    return config, checkpoint


#: name -> (fixtures, argv(inputs, out), runs under torchrun)
COMMANDS = {
    "data-make": ((), lambda i, out: ["data", "make", out, "--num-train", "24", "--num-val", "8", "--num-test", "8",
                                      "--p", "0.3", "--r", "0.2", "--seed", "3", "--no-progress"], False),
    "cft": (("cft_npz",), lambda i, out: ["cft", "--npz", i["cft_npz"], "--out", out, "--optimizer", "best",
                                          "--lr", "0.01", *CFT_OPTIONS], True),
    "relabel": (("tiny_digits", "annotator_ckpt"),
                lambda i, out: relabel_argv(i["tiny_digits"], i["annotator_ckpt"], out), True),
    "cleannet-features": (("tiny_digits", "features_ckpt"),
                          lambda i, out: features_argv(i["tiny_digits"], i["features_ckpt"], out / "f.npz"), True),
    "cleannet-fit": (("tiny_digits", "cleannet_inputs"),
                     lambda i, out: fit_argv(i["tiny_digits"], i["cleannet_inputs"][0], out), False),
    "cleannet-score": (("cleannet_inputs",),
                       lambda i, out: score_argv(i["cleannet_inputs"][1], i["cleannet_inputs"][0], out / "s.csv",
                                                 "--weights", "soft", "--histogram", out / "hist.png"), False),
    "refine-store": (("tiny_digits", "mm_refinery"),
                     lambda i, out: ["refine-store", "--config", i["mm_refinery"][0], "--checkpoint",
                                     i["mm_refinery"][1], "--out", out, "--data-root", i["tiny_digits"],
                                     "--ann-file", "single/train.txt", "--topk", "3", "--batch-size", "16",
                                     "--no-progress"], False),
    "train-timm": (("tiny_digits",), lambda i, out: ["train", "--framework", "timm", "--data-root", i["tiny_digits"],
                                                     "--regime", "single", "--work-dir", out, "--epochs", "1",
                                                     "--batch-size", "64", "--seed", "1", "--no-progress"], False),
}
_CREATES_OUT = {"data-make", "relabel", "refine-store", "cft", "train-timm", "cleannet-fit"}


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """``runs(name, key, processes=1)``: the output folder of a watched run (cached per key)."""
    done = {}

    def get(name, key, processes=1):
        if (name, key) not in done:
            fixtures, argv, _ = COMMANDS[name]
            base = tmp_path_factory.mktemp(f"det-{name}-{key}")
            out = base / "out"
            if name not in _CREATES_OUT:
                out.mkdir()
            inputs = {f: request.getfixturevalue(f) for f in fixtures}
            watch = Watch(out)
            launcher = TORCHRUN if processes == 2 else None
            extra = ["--launcher", "pytorch"] if processes == 2 and name == "cft" else []
            rc, _, log = run_watched([*argv(inputs, out), *extra], watch=watch, log=base / "log.txt",
                                     launcher=launcher, timeout=600)
            assert rc == 0, log[-3000:]
            assert not watch.problems, f"partial files under a final name: {watch.problems}"
            done[(name, key)] = out
        return done[(name, key)]

    return get


@pytest.mark.parametrize("name", list(COMMANDS))
def test_same_inputs_and_seed_same_outputs(runs, name):
    differences = output_differences(runs(name, "a"), runs(name, "b"))
    assert not differences, f"two runs of {name} with the same inputs and seed differ: {differences}"


@pytest.mark.parametrize("name", [n for n, c in COMMANDS.items() if c[2]])
def test_two_gloo_processes_write_what_one_writes(runs, name):
    differences = output_differences(runs(name, "a"), runs(name, "torchrun", processes=2))
    assert not differences, f"{name} on 2 gloo processes differs from 1 process: {differences}"


def test_a_different_seed_changes_the_outputs(tmp_path, cft_npz):
    """The comparison can fail: CFT's GA with another seed writes other rows."""
    import numpy as np

    from reliability.harness import run_inprocess

    for seed in (0, 5):
        assert run_inprocess(["cft", "--npz", cft_npz, "--out", tmp_path / f"s{seed}", *CFT_OPTIONS,
                              "--seed", str(seed), "--no-onnx", "--no-plot"]) == 0
    with np.load(tmp_path / "s0" / "cft_head.npz") as a, np.load(tmp_path / "s5" / "cft_head.npz") as b:
        assert not np.array_equal(a["weight"], b["weight"])
    assert "cft_head.npz:weight" in output_differences(tmp_path / "s0", tmp_path / "s5")


def test_mmpretrain_training_is_repeatable(tiny_digits, tmp_path):
    """`labelwise train` (mmpretrain Runner, 1 epoch) twice: the same weights, optimiser and
    scheduler state and metric. The Runner's own files carry times (the timestamped log folder,
    ``meta.time``, ``meta.experiment_name``, the timing scalars of ``message_hub``) and the work
    folder's path (``work_dir`` of the dumped config, ``last_checkpoint``): those are not compared.
    (The Runner's files are mmengine's, written by it, so the output folder is not watched here.)"""
    import torch

    from labelwise.checkpoint import load_checkpoint

    outs = []
    for run in ("a", "b"):
        out = tmp_path / run
        rc, _, log = run_watched(["train", "--data-root", tiny_digits, "--regime", "single", "--work-dir", out,
                                  "--epochs", "1", "--batch-size", "64", "--seed", "1", "--no-progress"],
                                 watch=Watch(), log=tmp_path / f"{run}.log", timeout=600)
        assert rc == 0, log[-3000:]
        outs.append(out)
    a, b = (json_without_seconds(o / "metrics.json") for o in outs)
    assert a == b
    ca, cb = (load_checkpoint(o / "mmpretrain" / "epoch_1.pth") for o in outs)
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for key in ca["state_dict"]:
        assert torch.equal(ca["state_dict"][key], cb["state_dict"][key]), key
    assert _tensors_equal(ca["optimizer"], cb["optimizer"]) and ca["param_schedulers"] == cb["param_schedulers"]
    for c, out in zip((ca, cb), outs):
        for key in ("time", "experiment_name"):
            c["meta"].pop(key)
        c["meta"]["cfg"] = c["meta"]["cfg"].replace(str(out), "WORK")
    assert ca["meta"] == cb["meta"]


def json_without_seconds(path):
    import json

    data = json.loads(path.read_text())
    data.pop("seconds")
    return data


def _tensors_equal(x, y) -> bool:
    import torch

    if isinstance(x, torch.Tensor):
        return isinstance(y, torch.Tensor) and torch.equal(x, y)
    if isinstance(x, dict):
        return isinstance(y, dict) and x.keys() == y.keys() and all(_tensors_equal(x[k], y[k]) for k in x)
    if isinstance(x, (list, tuple)):
        return type(x) is type(y) and len(x) == len(y) and all(_tensors_equal(p, q) for p, q in zip(x, y))
    return x == y
