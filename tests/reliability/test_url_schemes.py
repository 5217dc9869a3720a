"""Every checkpoint scheme mmengine resolves goes through labelwise's safe loader.

Each test serves a crafted checkpoint through one scheme without any network: the torch hub
cache is pre-filled with the file the URL names (``<TORCH_HOME>/hub/checkpoints/<name>``), as
after an earlier download; ``s3://`` gets a file backend that returns the bytes, ``pavi://`` a
``pavi`` module that copies the file. The crafted file's unpickling writes a marker file; every
test checks the marker was never written. A control test shows the same file runs its code
through mmengine's own loader, so the tests can fail.
"""
from __future__ import annotations

import copyreg
import os
import pickle
import sys
import types
import uuid
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from conftest import run_python
from labelwise.errors import CheckpointError

pytestmark = pytest.mark.reliability
mmengine = pytest.importorskip("mmengine")

from mmengine.runner import checkpoint as mm_checkpoint  # noqa: E402


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _evil(path: Path, marker: Path) -> Path:
    """A real torch.save file whose unpickling would write ``marker`` (through ``exec``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": {"fc.weight": torch.zeros(1, 2)},
                "meta": _Reduce(exec, f"open({str(marker)!r}, 'w').write('ran')")}, path)
    return path


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache of this test's own; returns its checkpoints folder."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    return tmp_path / "torch-home" / "hub" / "checkpoints"


def _url_name(url: str) -> str:
    return url.rsplit("/", 1)[1]


def _scheme_cases():
    tv = mm_checkpoint.get_torchvision_models()
    om = mm_checkpoint.get_external_models()
    mc = mm_checkpoint.get_mmcls_models()
    return {
        "https": ("https://models.invalid/zoo/evil-0123abcd.pth", "evil-0123abcd.pth"),
        "http": ("http://models.invalid/evil.pth", "evil.pth"),
        "torchvision": ("torchvision://resnet18", _url_name(tv["resnet18"])),
        "modelzoo": ("modelzoo://resnet50", _url_name(tv["resnet50"])),
        "open-mmlab": ("open-mmlab://resnet50_v1c", _url_name(om["resnet50_v1c"])),
        "openmmlab-deprecated": ("openmmlab://resnet50_caffe",
                                 _url_name(om[mm_checkpoint.get_deprecated_model_names()["resnet50_caffe"]])),
        "mmcls": ("mmcls://resnet50", _url_name(mc["resnet50"])),
    }


SCHEMES = ["https", "http", "torchvision", "modelzoo", "open-mmlab", "openmmlab-deprecated", "mmcls"]


class Toy(mmengine.model.BaseModel):
    def __init__(self, init_cfg=None):
        super().__init__(init_cfg=init_cfg)
        self.fc = nn.Linear(2, 1)

    def forward(self, x, y, mode="tensor"):
        out = self.fc(x).squeeze(-1)
        return {"loss": ((out - y) ** 2).mean()} if mode == "loss" else out


class _Data(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return {"x": torch.full((2,), float(i)), "y": torch.tensor(float(i))}


def _runner(work_dir, model=None, **kwargs):
    from mmengine.runner import Runner

    return Runner(
        model=model or Toy(), work_dir=str(work_dir), experiment_name=f"lw_{uuid.uuid4().hex}",
        train_dataloader=dict(dataset=_Data(), batch_size=2, collate_fn=dict(type="default_collate"),
                              sampler=dict(type="DefaultSampler", shuffle=False)),
        optim_wrapper=dict(optimizer=dict(type="SGD", lr=0.01)),
        train_cfg=dict(by_epoch=True, max_epochs=1), default_scope="mmengine", log_level="WARNING",
        default_hooks=dict(checkpoint=dict(type="CheckpointHook", interval=1)), **kwargs)


def test_every_mmengine_scheme_is_replaced():
    import labelwise.registry  # noqa: F401  (installs the loaders, as mmengine does for a labelwise. type)
    from mmengine.runner.checkpoint import CheckpointLoader

    from labelwise.adapters.mmengine_checkpoint import SAFE_SCHEMES

    assert set(CheckpointLoader._schemes) == set(SAFE_SCHEMES)
    for prefix, loader in CheckpointLoader._schemes.items():
        assert loader.__module__ == "labelwise.adapters.mmengine_checkpoint", prefix
        # mmengine logs "Loads checkpoint by <name[10:]> backend": keep its loaders' names
        assert loader.__name__.startswith("load_from_")


@pytest.mark.parametrize("scheme", SCHEMES)
def test_crafted_checkpoint_is_refused_through_load_checkpoint(scheme, hub, tmp_path):
    import labelwise.registry  # noqa: F401  (installs the loaders)
    from mmengine.runner import load_checkpoint

    url, name = _scheme_cases()[scheme]
    marker = tmp_path / "ran"
    _evil(hub / name, marker)
    with pytest.raises(CheckpointError, match=r"references the global builtins\.exec") as info:
        load_checkpoint(Toy(), url, map_location="cpu")
    assert name in str(info.value)
    assert not marker.exists()


def test_control_mmengine_alone_runs_the_code(tmp_path):
    """Without labelwise, mmengine's https loader unpickles the same file with weights-only loading switched off."""
    hub_dir = tmp_path / "torch-home" / "hub" / "checkpoints"
    marker = tmp_path / "ran"
    _evil(hub_dir / "evil.pth", marker)
    code = ("from mmengine.runner.checkpoint import CheckpointLoader\n"
            "CheckpointLoader.load_checkpoint('https://models.invalid/evil.pth', 'cpu')\n")
    run_python("-c", code, env={"TORCH_HOME": str(tmp_path / "torch-home")})
    assert marker.read_text() == "ran"


def test_genuine_checkpoint_loads_from_the_cache_with_every_url_scheme(hub, tmp_path):
    import labelwise.registry  # noqa: F401  (installs the loaders)
    from mmengine.runner import load_checkpoint

    source = Toy()
    hub.mkdir(parents=True)
    for scheme in ("https", "torchvision", "open-mmlab"):
        url, name = _scheme_cases()[scheme]
        torch.save({"state_dict": source.state_dict(), "meta": {"epoch": 3}}, hub / name)
        target = Toy()
        checkpoint = load_checkpoint(target, url, map_location="cpu")
        assert checkpoint["meta"] == {"epoch": 3}
        assert torch.equal(target.fc.weight, source.fc.weight)
    # mmcls:// keeps mmengine's conversion: only 'backbone.*' weights, prefix dropped
    url, name = _scheme_cases()["mmcls"]
    torch.save({"state_dict": {f"backbone.{k}": v for k, v in source.state_dict().items()}}, hub / name)
    target = Toy()
    load_checkpoint(target, url, map_location="cpu")
    assert torch.equal(target.fc.weight, source.fc.weight)


def test_legacy_zip_from_a_url_is_unpacked_and_still_checked(hub, tmp_path):
    import zipfile

    import labelwise.registry  # noqa: F401  (installs the loaders)
    from mmengine.runner import load_checkpoint

    marker = tmp_path / "ran"
    inner = _evil(tmp_path / "evil_inner.pth", marker)
    hub.mkdir(parents=True)
    with zipfile.ZipFile(hub / "legacy.pth", "w") as z:
        z.write(inner, arcname="../../evil_inner.pth")  # a hostile member name stays in the cache
    with pytest.raises(CheckpointError, match="builtins.exec"):
        load_checkpoint(Toy(), "https://models.invalid/legacy.pth")
    assert (hub / "evil_inner.pth").is_file() and not (hub.parent / "evil_inner.pth").exists()
    assert not marker.exists()


def test_missing_download_is_one_clear_error(hub, monkeypatch):
    import labelwise.registry  # noqa: F401  (installs the loaders)
    from mmengine.runner import load_checkpoint

    def offline(url, dst, *args, **kwargs):
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(CheckpointError, match=r"cannot download checkpoint https://models\.invalid/x\.pth "
                                              r"to .*x\.pth: .*put the file there first"):
        load_checkpoint(Toy(), "https://models.invalid/x.pth")
    with pytest.raises(CheckpointError, match=r"unknown model name 'no_such_net' in checkpoint "
                                              r"torchvision://no_such_net"):
        load_checkpoint(Toy(), "torchvision://no_such_net")


def test_s3_and_pavi_are_read_weights_only(tmp_path, monkeypatch):
    import labelwise.registry  # noqa: F401  (installs the loaders)
    from mmengine import fileio
    from mmengine.runner import load_checkpoint

    marker = tmp_path / "ran"
    evil = _evil(tmp_path / "evil.pth", marker)

    class Backend:
        def get(self, filename):
            assert filename == "s3://bucket/evil.pth"
            return evil.read_bytes()

    monkeypatch.setattr(fileio, "get_file_backend", lambda *a, **k: Backend())
    with pytest.raises(CheckpointError, match=r"checkpoint s3://bucket/evil\.pth: it references "
                                              r"the global builtins\.exec"):
        load_checkpoint(Toy(), "s3://bucket/evil.pth")

    class Model:
        name = "evil.pth"

        def download(self, dst):
            Path(dst).write_bytes(evil.read_bytes())

    pavi = types.ModuleType("pavi")
    pavi.modelcloud = types.SimpleNamespace(get=lambda path: Model())
    monkeypatch.setitem(sys.modules, "pavi", pavi)
    with pytest.raises(CheckpointError, match=r"references the global builtins\.exec"):
        load_checkpoint(Toy(), "pavi://project/evil.pth")
    assert not marker.exists()


def test_runner_load_from_url_is_refused(hub, tmp_path):
    import labelwise.registry  # noqa: F401  (installs the loaders)

    marker = tmp_path / "ran"
    _evil(hub / "evil.pth", marker)
    runner = _runner(tmp_path / "work", load_from="https://models.invalid/evil.pth")
    with pytest.raises(CheckpointError, match=r"evil\.pth: it references the global builtins\.exec"):
        runner.train()
    assert not marker.exists()


def test_runner_resume_from_last_checkpoint_naming_a_url(hub, tmp_path):
    import labelwise.registry  # noqa: F401  (installs the loaders)

    # a genuine Runner checkpoint (HistoryBuffers, numpy) through https:// resumes ...
    first = _runner(tmp_path / "first")
    first.train()
    hub.mkdir(parents=True)
    (hub / "good.pth").write_bytes((tmp_path / "first" / "epoch_1.pth").read_bytes())
    work = tmp_path / "work"
    work.mkdir()
    (work / "last_checkpoint").write_text("https://models.invalid/good.pth")
    again = _runner(work, resume=True)
    again._train_loop = dict(by_epoch=True, max_epochs=2)
    again.train()
    assert again.epoch == 2 and (work / "epoch_2.pth").is_file()

    # ... and a crafted one is refused before it runs anything
    marker = tmp_path / "ran"
    _evil(hub / "evil.pth", marker)
    evil_work = tmp_path / "evil-work"
    evil_work.mkdir()
    (evil_work / "last_checkpoint").write_text("https://models.invalid/evil.pth")
    with pytest.raises(CheckpointError, match="builtins.exec"):
        _runner(evil_work, resume=True).train()
    assert not marker.exists()


def test_init_cfg_pretrained_url_is_refused(hub, tmp_path):
    import labelwise.registry  # noqa: F401  (installs the loaders)

    marker = tmp_path / "ran"
    _evil(hub / "evil.pth", marker)
    model = Toy(init_cfg=dict(type="Pretrained", checkpoint="https://models.invalid/evil.pth"))
    with pytest.raises(CheckpointError, match="builtins.exec"):
        model.init_weights()
    model = Toy(init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet18", prefix="fc."))
    _evil(hub / _scheme_cases()["torchvision"][1], marker)
    with pytest.raises(CheckpointError, match="builtins.exec"):
        model.init_weights()
    assert not marker.exists()


def test_timm_pretrained_url_and_file_are_weights_only(hub, tmp_path):
    """timm's own download and file paths already load weights-only: a crafted file is refused."""
    timm = pytest.importorskip("timm")

    marker = tmp_path / "ran"
    _evil(hub / "evil-timm.pth", marker)
    with pytest.raises(pickle.UnpicklingError, match="GLOBAL exec was not an allowed global"):
        timm.create_model("resnet18", pretrained=True, num_classes=2, pretrained_cfg_overlay=dict(
            url="https://models.invalid/evil-timm.pth", hf_hub_id=None))
    with pytest.raises(RuntimeError, match="weights_only=True blocked .* Unsupported globals: builtins.exec"):
        timm.create_model("resnet18", pretrained=True, num_classes=2, pretrained_cfg_overlay=dict(
            file=str(hub / "evil-timm.pth")))
    assert not marker.exists()
    assert os.listdir(hub) == ["evil-timm.pth"]  # nothing downloaded


def test_history_buffer_with_its_own_statistics_registry_is_refused(tmp_path):
    """The class registry guard is not enough: an instance attribute would shadow it."""
    import codecs

    from mmengine.logging import HistoryBuffer

    from labelwise.checkpoint import load_checkpoint, safe_globals

    import numpy as np

    crafted = HistoryBuffer([1.0], [1])
    state = {"_log_history": np.array([1.0]), "_count_history": np.array([1]), "max_length": 10,
             "_statistics_methods": {"mean": codecs.encode}}  # an instance attribute
    # pickled as HistoryBuffer.__new__ + __setstate__(state), like a genuine buffer
    crafted.__reduce_ex__ = lambda protocol: (copyreg.__newobj__, (HistoryBuffer,), state)
    path = tmp_path / "instance.pth"
    torch.save({"message_hub": {"log_scalars": {"loss": crafted}}}, path)
    with torch.serialization.safe_globals(safe_globals()):  # what the class-level guard let through
        loaded = torch.load(path, weights_only=True)["message_hub"]["log_scalars"]["loss"]
    assert loaded._statistics_methods["mean"] is codecs.encode
    registry = dict(HistoryBuffer._statistics_methods)
    with pytest.raises(CheckpointError, match=r"HistoryBuffer at checkpoint\['message_hub'\]\['log_scalars'\]"
                                              r"\['loss'\] holds unexpected attributes \['_statistics_methods'\]"):
        load_checkpoint(path)
    assert HistoryBuffer._statistics_methods == registry

    buffer = HistoryBuffer([1.0], [1])
    buffer.max_length = "1000"
    torch.save({"b": buffer}, path)
    with pytest.raises(CheckpointError, match=r"attributes of the wrong type \['max_length'\]"):
        load_checkpoint(path)
