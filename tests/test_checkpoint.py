"""Tests for labelwise.checkpoint: safe loading, error messages, layouts, atomic saving."""
import argparse
import codecs
import copy
import os
import pickle
import shlex
import uuid
from collections import OrderedDict

import pytest
import torch
import torch.nn as nn

from conftest import run_python
from labelwise.checkpoint import extract_state_dict, load_checkpoint, safe_globals, save_checkpoint
from labelwise.errors import CheckpointError


class _Reduce:
    """Pickles as ``func(*args)``: how a crafted checkpoint makes the unpickler call things."""

    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.fixture(scope="module")
def runner_checkpoint(tmp_path_factory):
    """A checkpoint written by a real mmengine Runner (1 epoch of 2 iterations on CPU)."""
    pytest.importorskip("mmengine")
    from mmengine.model import BaseModel
    from mmengine.runner import Runner

    class ToyModel(BaseModel):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(2, 1)

        def forward(self, x, y, mode="tensor"):
            out = self.fc(x).squeeze(-1)
            if mode == "loss":
                return {"loss": ((out - y) ** 2).mean()}
            return out

    class ToyDataset(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return {"x": torch.full((2,), float(i)), "y": torch.tensor(float(i))}

    work_dir = tmp_path_factory.mktemp("runner")
    runner = Runner(
        model=ToyModel(),
        work_dir=str(work_dir),
        experiment_name=f"labelwise_test_checkpoint_{uuid.uuid4().hex}",
        train_dataloader=dict(
            dataset=ToyDataset(), batch_size=2, collate_fn=dict(type="default_collate"),
            sampler=dict(type="DefaultSampler", shuffle=False)),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=1),
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1)),
        default_scope="mmengine",
        log_level="WARNING",
    )
    runner.train()
    path = work_dir / "epoch_1.pth"
    assert path.is_file()
    return path


# --- (1) genuine mmengine Runner checkpoints -------------------------------------------------


def test_runner_checkpoint_loads_with_history_buffers(runner_checkpoint):
    from mmengine.logging import HistoryBuffer

    ckpt = load_checkpoint(runner_checkpoint)
    assert {"meta", "state_dict", "message_hub", "optimizer"} <= set(ckpt)
    scalars = ckpt["message_hub"]["log_scalars"]
    assert "train/loss" in scalars
    assert all(isinstance(v, HistoryBuffer) for v in scalars.values())
    loss = scalars["train/loss"]
    assert len(loss.data[0]) == 2  # two iterations logged
    assert float(loss.mean()) == pytest.approx(float(loss.data[0].mean()))
    assert set(ckpt["state_dict"]) == {"fc.weight", "fc.bias"}


def test_plain_weights_only_load_refuses_runner_checkpoint(runner_checkpoint):
    # torch's weights-only default (passed explicitly so TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD in
    # the environment cannot change it): without the allow-list the same file is refused.
    with pytest.raises(pickle.UnpicklingError, match="HistoryBuffer"):
        torch.load(runner_checkpoint, weights_only=True)


def test_loaded_message_hub_deep_copies_and_resumes(runner_checkpoint):
    from mmengine.logging import MessageHub

    state = load_checkpoint(runner_checkpoint)["message_hub"]
    copied = copy.deepcopy(state)
    for key, buffer in state["log_scalars"].items():
        assert float(copied["log_scalars"][key].current()) == float(buffer.current())
    hub = MessageHub(name=f"labelwise_test_{uuid.uuid4().hex}")
    hub.load_state_dict(state)  # deep-copies every entry, as Runner.resume does
    assert float(hub.get_scalar("train/loss").mean()) == pytest.approx(
        float(state["log_scalars"]["train/loss"].mean()))
    assert hub.get_info("epoch") == state["runtime_info"]["epoch"]


def test_runner_checkpoint_loads_into_a_fresh_statistics_registry(runner_checkpoint, monkeypatch):
    # In a fresh process HistoryBuffer._statistics_methods is empty until a buffer exists;
    # loading registers exactly the four defaults, which must be accepted.
    from mmengine.logging import HistoryBuffer

    monkeypatch.setattr(HistoryBuffer, "_statistics_methods", {})
    load_checkpoint(runner_checkpoint)
    assert HistoryBuffer._statistics_methods == {
        name: getattr(HistoryBuffer, name) for name in ("min", "max", "current", "mean")}


def test_allow_list_binds_getattr_to_a_stand_in_never_the_builtin():
    entries = safe_globals()
    named = {name: obj for obj, name in (e for e in entries if isinstance(e, tuple))}
    assert "builtins.getattr" in named
    assert named["builtins.getattr"] is not getattr
    assert all(e is not getattr for e in entries if not isinstance(e, tuple))
    assert {"numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct",
            "numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar",
            "numpy.ndarray", "numpy.dtype"} <= set(named)


# --- (2) pickles that would run code ---------------------------------------------------------


@pytest.mark.parametrize("func_name", ["os.system", "builtins.exec"])
def test_code_executing_pickle_is_refused_and_never_runs(tmp_path, func_name):
    marker = tmp_path / "pwned"
    if func_name == "os.system":
        payload = _Reduce(os.system, f"echo pwned > {shlex.quote(str(marker))}")
        refused = "posix.system" if os.name == "posix" else "nt.system"
    else:
        payload = _Reduce(exec, f"open({str(marker)!r}, 'w').write('pwned')")
        refused = "builtins.exec"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {}, "meta": payload}, path)

    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert f"references the global {refused}," in str(info.value)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)
    assert not marker.exists()


# --- (3) getattr abuse -------------------------------------------------------------------------


def _getattr_payloads():
    hb = pytest.importorskip("mmengine.logging").HistoryBuffer
    return {
        "HistoryBuffer.__init__": _Reduce(getattr, hb, "__init__"),
        "HistoryBuffer.register_statistics": _Reduce(getattr, hb, "register_statistics"),
        "chained __globals__": _Reduce(getattr, _Reduce(getattr, hb, "__init__"), "__globals__"),
        "with a default": _Reduce(getattr, hb, "mean", None),
        "OrderedDict.__class__": _Reduce(getattr, OrderedDict, "__class__"),
    }


@pytest.mark.parametrize(
    "case", ["HistoryBuffer.__init__", "HistoryBuffer.register_statistics",
             "chained __globals__", "with a default", "OrderedDict.__class__"])
def test_getattr_beyond_history_buffer_statistics_is_refused(tmp_path, case):
    path = tmp_path / "getattr.pth"
    torch.save({"x": _getattr_payloads()[case]}, path)
    with pytest.raises(CheckpointError, match="refused getattr") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, pickle.UnpicklingError)


def test_builtin_getattr_would_hand_out_module_globals(tmp_path):
    # Why the real getattr is never allowed: with it, a file reaches any module's globals.
    HistoryBuffer = pytest.importorskip("mmengine.logging").HistoryBuffer

    path = tmp_path / "globals.pth"
    torch.save({"x": _Reduce(getattr, _Reduce(getattr, HistoryBuffer, "__init__"),
                             "__globals__")}, path)
    with torch.serialization.safe_globals([getattr, HistoryBuffer]):
        leaked = torch.load(path, weights_only=True)["x"]
    assert leaked is HistoryBuffer.__init__.__globals__
    with pytest.raises(CheckpointError, match="__init__"):
        load_checkpoint(path)


def test_checkpoint_registering_foreign_statistics_method_is_refused(tmp_path, monkeypatch):
    HistoryBuffer = pytest.importorskip("mmengine.logging").HistoryBuffer

    registry = dict(HistoryBuffer._statistics_methods)
    monkeypatch.setattr(HistoryBuffer, "_statistics_methods", registry)
    buffer = HistoryBuffer([1.0], [1])
    registry["evil"] = codecs.encode  # pickled by HistoryBuffer.__getstate__
    path = tmp_path / "poisoned.pth"
    torch.save({"message_hub": {"log_scalars": {"loss": buffer}}}, path)
    del registry["evil"]
    before = dict(registry)

    with pytest.raises(CheckpointError, match="evil") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert HistoryBuffer._statistics_methods == before


# --- (4) files that are not checkpoints -------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(CheckpointError, match="cannot read") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value.__cause__, FileNotFoundError)


def test_truncated_file(tmp_path):
    path = tmp_path / "truncated.pth"
    torch.save({"state_dict": {"w": torch.randn(64, 64)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("name, content", [
    ("notes.txt", b"config = dict(lr=0.1)\nnot a checkpoint\n"),
    ("image.png", b"\x89PNG\r\n\x1a\n" + bytes(64)),
])
def test_non_checkpoint_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    assert info.value.__cause__ is not None


def test_empty_file(tmp_path):
    path = tmp_path / "empty.pth"
    path.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


def test_checkpoint_that_is_not_a_dict(tmp_path):
    path = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), path)
    with pytest.raises(CheckpointError, match="holds a Tensor, expected a dict"):
        load_checkpoint(path)


# --- (5) timm and other formats ---------------------------------------------------------------


def test_timm_state_dict_round_trips(tmp_path):
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    path = tmp_path / "resnet10t.pth"
    torch.save(model.state_dict(), path)

    state_dict = extract_state_dict(load_checkpoint(path))
    other = timm.create_model("resnet10t", pretrained=False, num_classes=3)
    other.load_state_dict(state_dict, strict=True)
    for name, tensor in model.state_dict().items():
        assert torch.equal(other.state_dict()[name], tensor), name


def test_timm_train_script_checkpoint_with_args_namespace(tmp_path):
    # timm's train.py (CheckpointSaver) stores its argparse.Namespace as 'args'.
    weights = {"fc.weight": torch.randn(3, 4)}
    args = argparse.Namespace(model="resnet10t", lr=0.1, epochs=3)
    path = tmp_path / "checkpoint-0.pth.tar"
    torch.save({"epoch": 0, "arch": "resnet10t", "state_dict": weights, "args": args,
                "state_dict_ema": {"fc.weight": torch.zeros(3, 4)}, "version": 2,
                "metric": 0.5}, path)
    ckpt = load_checkpoint(path)
    assert ckpt["args"] == args
    assert torch.equal(extract_state_dict(ckpt)["fc.weight"], weights["fc.weight"])
    assert torch.equal(extract_state_dict(ckpt, key="state_dict_ema")["fc.weight"],
                       torch.zeros(3, 4))


def test_legacy_torch_save_format_loads(tmp_path):
    path = tmp_path / "legacy.pth"
    torch.save({"w": torch.arange(4.0)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(4.0))


def test_safetensors_round_trip(tmp_path):
    pytest.importorskip("safetensors")
    weights = {"fc.weight": torch.randn(3, 4), "fc.bias": torch.zeros(3)}
    path = tmp_path / "model.safetensors"
    save_checkpoint(weights, path)
    loaded = load_checkpoint(path)
    assert loaded.keys() == weights.keys()
    assert all(torch.equal(loaded[k], weights[k]) for k in weights)


def test_truncated_safetensors(tmp_path):
    pytest.importorskip("safetensors")
    path = tmp_path / "model.safetensors"
    save_checkpoint({"w": torch.randn(32, 32)}, path)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="safetensors") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)


# --- (6) extract_state_dict -------------------------------------------------------------------


_W = {"fc.weight": torch.ones(2, 2), "fc.bias": torch.zeros(2)}


@pytest.mark.parametrize("checkpoint, key", [
    ({"state_dict": _W, "meta": {"epoch": 1}}, None),       # mmengine, timm train.py
    ({"model": _W, "optimizer": {}, "epoch": 3}, None),     # DeiT / torchvision references
    (dict(_W), None),                                       # raw state dict
    ({"state_dict": {"x": torch.ones(1)}, "state_dict_ema": _W}, "state_dict_ema"),
    ({"ema_state_dict": _W, "meta": {}}, "ema_state_dict"),
])
def test_extract_state_dict_layouts(checkpoint, key):
    out = extract_state_dict(checkpoint, key=key)
    assert list(out) == list(_W)
    assert all(out[k] is _W[k] for k in _W)


def test_extract_state_dict_strips_ddp_prefix_and_metadata():
    state = OrderedDict((f"module.{k}", v) for k, v in _W.items())
    state._metadata = OrderedDict([("", {"version": 1}), ("module", {"version": 2}),
                                   ("module.fc", {"version": 3})])
    out = extract_state_dict({"state_dict": state})
    assert list(out) == ["fc.weight", "fc.bias"]
    assert out._metadata == {"": {"version": 2}, "fc": {"version": 3}}
    model = nn.Sequential(OrderedDict(fc=nn.Linear(2, 2)))
    model.load_state_dict(out)  # strict: the stripped names fit the unwrapped model
    assert torch.equal(model.fc.weight, torch.ones(2, 2))


def test_extract_state_dict_keeps_prefix_unless_every_key_has_it():
    state = {"module.fc.weight": torch.ones(1), "head.weight": torch.ones(1)}
    assert list(extract_state_dict(state)) == list(state)


def test_extract_state_dict_ignores_ema_unless_asked():
    with pytest.raises(CheckpointError, match="'state_dict_ema'") as info:
        extract_state_dict({"state_dict_ema": _W, "epoch": 1})
    assert "top-level keys" in str(info.value)


@pytest.mark.parametrize("checkpoint, key, match", [
    ({"meta": {"epoch": 1}, "optimizer": {}}, None, r"top-level keys: \['meta', 'optimizer'\]"),
    ({"state_dict": _W}, "model", r"no 'model' entry; top-level keys: \['state_dict'\]"),
    ({"state_dict": {"w": 1.0}}, "state_dict", "not a non-empty dict of tensors"),
    ([torch.ones(1)], None, "expected a checkpoint dict"),
])
def test_extract_state_dict_errors(checkpoint, key, match):
    with pytest.raises(CheckpointError, match=match):
        extract_state_dict(checkpoint, key=key)


# --- (7) atomic saving ------------------------------------------------------------------------


def test_save_checkpoint_round_trips_and_creates_parents(tmp_path):
    path = tmp_path / "sub" / "dir" / "ckpt.pth"
    save_checkpoint({"state_dict": _W, "meta": {"epoch": 2}}, path)
    loaded = load_checkpoint(path)
    assert loaded["meta"] == {"epoch": 2}
    assert torch.equal(extract_state_dict(loaded)["fc.weight"], _W["fc.weight"])


def test_save_checkpoint_is_atomic(tmp_path):
    path = tmp_path / "ckpt.pth"
    with pytest.raises(Exception):
        save_checkpoint({"state_dict": _W, "hook": lambda: None}, path)  # lambdas don't pickle
    assert list(tmp_path.iterdir()) == []

    save_checkpoint({"epoch": 1}, path)
    with pytest.raises(Exception):
        save_checkpoint({"epoch": 2, "hook": lambda: None}, path)
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pth"]
    assert load_checkpoint(path) == {"epoch": 1}  # the previous file is untouched


def test_import_is_cheap():
    code = ("import sys, labelwise.checkpoint\n"
            "print(sorted(m for m in ('mmengine', 'mmpretrain', 'timm', 'safetensors')"
            " if m in sys.modules))")
    assert run_python("-c", code).stdout.strip().splitlines()[-1] == "[]"
