"""The demo's shipped models: fingerprints, the safe loader, and refusals of changed files or data."""
import json
import shutil

import pytest

from labelwise.demo import MODES
from labelwise.demo.models import MANIFEST, NAMES, SHIPPED, prepare_models, read_manifest
from labelwise.errors import DataError
from labelwise.utils.fingerprint import file_sha256

QUICK = SHIPPED / "quick"


def test_every_shipped_model_matches_its_fingerprint():
    manifest = json.loads((QUICK / MANIFEST).read_text())
    assert sorted(manifest["models"]) == sorted(NAMES)
    assert manifest["sizes"]["num_train"] == MODES["quick"].num_train
    for name, entry in manifest["models"].items():
        path = QUICK / entry["file"]
        assert path.suffix == ".safetensors"  # tensors only: nothing to unpickle
        assert file_sha256(path) == entry["sha256"] and path.stat().st_size == entry["bytes"]
    assert read_manifest(QUICK)["models"].keys() == manifest["models"].keys()


def test_shipped_models_load_through_the_safe_loader_into_their_configs(tmp_path):
    pytest.importorskip("mmpretrain")
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    from labelwise.adapters.mmpretrain.runner import load_config
    from labelwise.checkpoint import load_checkpoint

    manifest = read_manifest(QUICK)
    init_default_scope("mmpretrain")
    for name, entry in manifest["models"].items():
        state = load_checkpoint(QUICK / entry["file"])
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in entry["cfg_options"].items()}
        cfg = load_config(entry["config"], work_dir=tmp_path, cfg_options=options)
        model = MODELS.build(cfg.model)
        assert set(model.state_dict()) == set(state), name
        model.load_state_dict(state, strict=True)  # shapes fit: the width and strides of the manifest
        assert sum(v.numel() for k, v in state.items() if "num_batches_tracked" not in k) == entry["parameters"]


def test_a_changed_or_missing_model_file_is_refused(tmp_path):
    folder = tmp_path / "models"
    shutil.copytree(QUICK, folder)
    path = folder / "refinery.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"refinery\.safetensors: SHA-256 [0-9a-f]{64} differs from [0-9a-f]{64}"):
        read_manifest(folder)
    path.unlink()
    with pytest.raises(DataError, match=r"refinery\.safetensors: missing .*python -m labelwise\.demo\.models"):
        read_manifest(folder)
    (folder / MANIFEST).write_text("{}")
    with pytest.raises(DataError, match="format None"):
        read_manifest(folder)
    (folder / MANIFEST).unlink()
    with pytest.raises(DataError, match="no model manifest"):
        read_manifest(folder)


def test_models_trained_on_other_data_or_sizes_are_refused(tmp_path):
    data = tmp_path / "data"
    (data / "single").mkdir(parents=True)
    (data / "scenes").mkdir()
    (data / "single" / "train.txt").write_text("images/train/0.png 3\n")
    (data / "scenes" / "train.json").write_text("[]")
    with pytest.raises(DataError, match=r"single/train\.txt: differs from the data the shipped annotator"):
        prepare_models(QUICK, MODES["quick"], data_root=data, work=tmp_path / "configs")
    with pytest.raises(DataError, match="built for sizes"):
        prepare_models(QUICK, MODES["tiny"], data_root=data, work=tmp_path / "configs")


def test_the_quick_demo_data_is_what_the_shipped_models_were_trained_on(tmp_path):
    """A change of the scene generator would make the quick demo refuse its models: caught here first."""
    from labelwise.demo.methods import make_data
    from labelwise.demo.models import data_fingerprint

    make_data(tmp_path / "data", MODES["quick"])
    assert data_fingerprint(tmp_path / "data") == read_manifest(QUICK)["demo_data"]
