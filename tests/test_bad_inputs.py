"""The bad-input table (docs/reliability.md): every case is one bad input and the message it gets.

Each case builds its bad input in a temporary folder and drives a real entry point: the
``labelwise`` command line in-process (``labelwise.cli.main``), a few of them in a real
subprocess, or a config path (a transform or dataset built from a config dict, as mmengine
builds it). A command-line case must exit with status 2 and print one line
``labelwise CMD: error: ...`` without a traceback; a config or Python case must raise a
:class:`~labelwise.errors.LabelwiseError`. In both the message must match the case's pattern,
which names the file, key or value at fault and what was expected.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import re
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from conftest import ROOT, run_python
from labelwise.cli import main
from labelwise.errors import LabelwiseError

NUM_CLASSES = 10
TINY_MM_CONFIG = """
_base_ = [{base!r}]
model = dict(backbone=dict(stem_channels=16, base_channels=8), head=dict(in_channels=64, num_classes={classes}))
"""
FAST_CFT = ["--epochs", "3", "--early-stopping", "0", "--population", "4", "--no-onnx", "--no-plot", "--no-progress"]
NPZ_KEYS = ("train_features", "train_labels", "val_features", "val_labels", "weight", "bias")


@dataclasses.dataclass
class Expect:
    """What a case runs and what it must show.

    Exactly one of ``argv`` (a ``labelwise`` command line) and ``call`` (a Python or config
    entry point) is given. ``message`` is a regular expression searched in the error line (or
    in the exception's text); a case accepted with a visible note instead of refused has
    ``status=0`` and its pattern is searched in stdout.
    """

    message: str
    argv: list | None = None
    call: Callable | None = None
    subprocess: bool = False
    status: int = 2
    usage: bool = False  # an argparse error: the usage lines, then the one error line
    check: Callable | None = None  # extra assertion after the run (e.g. no file was written)


class Workspace:
    """Inputs shared by the cases, built on first use (module scope; cases copy what they modify)."""

    def __init__(self, digits: Path, root: Path):
        self.digits, self.root = digits, root

    @functools.cached_property
    def cft_arrays(self) -> dict:
        from labelwise.plugins.cft.synthetic import make_synthetic_problem

        p = make_synthetic_problem(n_train=60, n_val=40, n_test=10, dim=6, num_classes=3, head_steps=5,
                                   prevalence=(0.2, 0.4), seed=0)
        return {k: np.asarray(p[k]) for k in NPZ_KEYS}

    def npz(self, path: Path, **changes) -> Path:
        arrays = {**self.cft_arrays, **changes}
        np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
        return path

    @functools.cached_property
    def mm(self) -> dict:
        """A tiny mmpretrain config (10 classes), its checkpoint, and a checkpoint with a 5-class head."""
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        from mmpretrain.registry import MODELS

        from labelwise.checkpoint import save_checkpoint

        base = str(ROOT / "configs" / "baseline" / "digits_single.py")
        out = {}
        init_default_scope("mmpretrain")
        for classes in (NUM_CLASSES, 5):
            config = self.root / f"tiny{classes}.py"
            config.write_text(TINY_MM_CONFIG.format(base=base, classes=classes))
            torch.manual_seed(0)
            model = MODELS.build(Config.fromfile(str(config)).model)
            save_checkpoint({"state_dict": model.state_dict(), "meta": {}}, self.root / f"tiny{classes}.pth")
            out[classes] = (config, self.root / f"tiny{classes}.pth")
        return {"config": out[NUM_CLASSES][0], "checkpoint": out[NUM_CLASSES][1], "checkpoint5": out[5][1]}

    @functools.cached_property
    def real_checkpoint(self) -> Path:
        from labelwise.checkpoint import save_checkpoint

        path = self.root / "real.pth"
        save_checkpoint({"state_dict": torch.nn.Linear(64, 10).state_dict()}, path)
        return path

    @functools.cached_property
    def val_keys(self) -> list:
        from labelwise.data import load_regime

        return list(load_regime(self.digits, "single", "val").ids)

    @functools.cached_property
    def store(self) -> Path:
        """A label-map store (top-3, 2x2, 10 classes) of the single/val images, 4 shards."""
        from labelwise.plugins.labelpool.store import LabelMapWriter

        keys = self.val_keys
        rng = np.random.default_rng(0)
        scores = rng.normal(0, 3, size=(len(keys), 3, 2, 2)).astype(np.float32)
        ids = np.stack([rng.permutation(NUM_CLASSES)[:3] for _ in range(len(keys) * 4)])
        ids = ids.reshape(len(keys), 2, 2, 3).transpose(0, 3, 1, 2)
        path = self.root / "maps"
        writer = LabelMapWriter(path, keys=keys, num_classes=NUM_CLASSES, k=3, height=2, width=2, shard_size=10)
        for shard in writer.pending_shards():
            start, stop = writer.shard_range(shard)
            writer.write_shard(shard, scores[start:stop], ids[start:stop])
        return path

    def store_copy(self, dest: Path) -> Path:
        return Path(shutil.copytree(self.store, dest))

    @functools.cached_property
    def features(self) -> Path:
        """A CleanNet feature file of the single/val ids (random non-negative features)."""
        from labelwise.data import load_regime

        from labelwise.plugins.cleannet.features import save_features

        split = load_regime(self.digits, "noisy-symmetric-r0.2", "val")
        rng = np.random.default_rng(0)
        path = self.root / "features.npz"
        save_features(path, list(split.ids), rng.random((len(split.ids), 8)), np.asarray(split.labels))
        return path

    @functools.cached_property
    def score_rows(self) -> list:
        """``id,label,score,weight`` rows of a valid score file for noisy-symmetric-r0.2/val."""
        from labelwise.data import load_regime

        split = load_regime(self.digits, "noisy-symmetric-r0.2", "val")
        return [[i, str(int(y)), "0.5", "1"] for i, y in zip(split.ids, split.labels)]

    def score_file(self, path: Path, rows=None, header="id,label,score,weight") -> Path:
        rows = self.score_rows if rows is None else rows
        path.write_text("\n".join([header, *(",".join(r) for r in rows)]) + "\n")
        return path

    def data_copy(self, dest: Path) -> Path:
        return Path(shutil.copytree(self.digits, dest, symlinks=True))


def _build(registry: str, cfg: dict):
    from mmengine.registry import init_default_scope
    import mmpretrain.registry

    init_default_scope("mmpretrain")
    return getattr(mmpretrain.registry, registry).build(cfg)


def _q(value) -> str:
    """A value as it appears in a message, escaped for a regular expression."""
    return re.escape(str(value))


CASES: dict[str, Callable[[Workspace, Path], Expect]] = {}


def case(name: str):
    def register(build):
        assert name not in CASES, name
        CASES[name] = build
        return build

    return register


# --- checkpoints (read by labelwise.checkpoint.load_checkpoint) --------------------------------

def _score_argv(model, w, tmp):
    return ["cleannet", "score", "--model", str(model), "--features", str(w.features), "--out", str(tmp / "s.csv")]


@case("checkpoint-missing")
def _(w, tmp):
    return Expect(rf"cannot read checkpoint {_q(tmp / 'nope.pth')}: No such file",
                  _score_argv(tmp / "nope.pth", w, tmp))


@case("checkpoint-empty")
def _(w, tmp):
    (tmp / "empty.pth").write_bytes(b"")
    return Expect(rf"checkpoint {_q(tmp / 'empty.pth')} is empty; expected a file written by torch.save",
                  _score_argv(tmp / "empty.pth", w, tmp))


@case("checkpoint-truncated")
def _(w, tmp):
    data = w.real_checkpoint.read_bytes()
    (tmp / "cut.pth").write_bytes(data[: len(data) // 2])
    return Expect(rf"checkpoint {_q(tmp / 'cut.pth')} is truncated or corrupt: expected a complete file written by "
                  r"torch\.save \(RuntimeError: PytorchStreamReader failed reading zip archive: failed finding central "
                  r"directory\)$", _score_argv(tmp / "cut.pth", w, tmp))


@case("checkpoint-not-a-checkpoint")
def _(w, tmp):
    (tmp / "notes.pth").write_text("model weights are on the shared drive\n")
    return Expect(rf"{_q(tmp / 'notes.pth')} is not a PyTorch checkpoint: expected a zip archive written by "
                  r"torch.save or a \.safetensors file, but the file starts with b'model we'",
                  _score_argv(tmp / "notes.pth", w, tmp))


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def _code_executing(w, tmp, *, subprocess):
    marker = tmp / "pwned"
    torch.save({"state_dict": {}, "meta": _Reduce(os.system, f"touch {marker}")}, tmp / "evil.pth")

    def nothing_ran(_):
        assert not marker.exists()

    return Expect(rf"refused to load checkpoint {_q(tmp / 'evil.pth')}: it references the global "
                  r"(posix|nt)\.system, which is not on the allow-list of checkpoint types",
                  _score_argv(tmp / "evil.pth", w, tmp), subprocess=subprocess, check=nothing_ran)


@case("checkpoint-code-executing")
def _(w, tmp):
    return _code_executing(w, tmp, subprocess=False)


@case("checkpoint-code-executing-subprocess")
def _(w, tmp):
    return _code_executing(w, tmp, subprocess=True)


@case("checkpoint-wrong-kind")
def _(w, tmp):
    return Expect(rf"{_q(w.real_checkpoint)} is not a CleanNet model file \(format None, expected "
                  r"'labelwise-cleannet/1'; write one with `labelwise cleannet fit`\)",
                  _score_argv(w.real_checkpoint, w, tmp))


@case("checkpoint-head-mismatch-relabel")
def _(w, tmp):
    mm = w.mm
    return Expect(rf"checkpoint {_q(mm['checkpoint5'])} does not fit config {_q(mm['config'])}: size mismatch for "
                  r"head\.fc\.weight",
                  ["relabel", str(tmp / "maps"), "--data-root", str(w.digits), "--ann-file", "single/val.txt",
                   "--config", str(mm["config"]), "--checkpoint", str(mm["checkpoint5"]), "--input-size", "64",
                   "--no-progress"])


@case("checkpoint-head-mismatch-cft")
def _(w, tmp):
    mm = w.mm
    return Expect(rf"checkpoint {_q(mm['checkpoint5'])} does not fit the model of {_q(mm['config'])}: size mismatch "
                  r"for head\.fc\.weight",
                  ["cft", "--config", str(mm["config"]), "--checkpoint", str(mm["checkpoint5"]), "--data-root",
                   str(w.digits), "--out", str(tmp / "cft"), *FAST_CFT])


@case("checkpoint-head-mismatch-features")
def _(w, tmp):
    mm = w.mm
    return Expect(rf"checkpoint {_q(mm['checkpoint5'])} does not fit the model of {_q(mm['config'])}: size mismatch "
                  r"for head\.fc\.weight",
                  ["cleannet", "features", "--config", str(mm["config"]), "--checkpoint", str(mm["checkpoint5"]),
                   "--data-root", str(w.digits), "--ann-file", "noisy-symmetric-r0.2/val.txt",
                   "--out", str(tmp / "f.npz"), "--device", "cpu", "--no-progress"])


# --- CFT .npz: features, labels, weight and bias ----------------------------------------------

def _cft_argv(npz, tmp, *extra):
    return ["cft", "--npz", str(npz), "--out", str(tmp / "out"), *FAST_CFT, *extra]


@case("cft-features-nan")
def _(w, tmp):
    x = w.cft_arrays["train_features"].copy()
    x[3, 2] = np.nan
    return Expect(rf"{_q(tmp / 'h.npz')}: train_features: holds NaN or infinite values; expected finite numbers",
                  _cft_argv(w.npz(tmp / "h.npz", train_features=x), tmp))


@case("cft-features-inf-subprocess")
def _(w, tmp):
    x = w.cft_arrays["val_features"].copy()
    x[0, 0] = np.inf
    return Expect(rf"{_q(tmp / 'h.npz')}: val_features: holds NaN or infinite values; expected finite numbers",
                  _cft_argv(w.npz(tmp / "h.npz", val_features=x), tmp), subprocess=True)


@case("cft-label-outside-1-0-minus1-nan")
def _(w, tmp):
    y = w.cft_arrays["train_labels"].astype(np.float32)
    y[5, 1] = 2
    return Expect(rf"{_q(tmp / 'h.npz')}: train_labels: label at row 5, class 1 is 2\.0; expected 1 \(positive\), "
                  r"0 \(negative\), -1 or "
                  r"NaN \(unknown\)", _cft_argv(w.npz(tmp / "h.npz", train_labels=y), tmp))


@case("cft-labels-not-numbers")
def _(w, tmp):
    y = w.cft_arrays["train_labels"].astype(str)
    return Expect(rf"{_q(tmp / 'h.npz')}: train_labels: expected numbers 1 / 0 / -1 / NaN, got dtype <U",
                  _cft_argv(w.npz(tmp / "h.npz", train_labels=y), tmp))


@case("cft-category-without-known-labels")
def _(w, tmp):
    """Accepted: the category is skipped (kept as it was) and the summary and report say so."""
    y, v = w.cft_arrays["train_labels"].astype(np.float32), w.cft_arrays["val_labels"].astype(np.float32)
    y[:, 1], v[:, 1] = np.nan, -1

    def reported(_):
        report = json.loads((tmp / "out" / "cft_report.json").read_text())
        assert report["categories"][1]["skipped"] == "no known positive in the training labels"
        assert report["categories"][1]["changed"] is False

    return Expect(r"0 of 3 categories changed, 1 skipped", _cft_argv(w.npz(tmp / "h.npz", train_labels=y,
                                                                            val_labels=v), tmp),
                  status=0, check=reported)


@case("cft-weight-bias-shape")
def _(w, tmp):
    return Expect(rf"{_q(tmp / 'h.npz')}: bias: expected shape \(3,\) to match weight \(3, 6\), got \(4,\)",
                  _cft_argv(w.npz(tmp / "h.npz", bias=np.zeros(4, np.float32)), tmp))


@case("cft-features-weight-shape")
def _(w, tmp):
    x = w.cft_arrays["val_features"][:, :5]
    return Expect(rf"{_q(tmp / 'h.npz')}: val_features: expected 6 columns to match weight \(3, 6\), got 5",
                  _cft_argv(w.npz(tmp / "h.npz", val_features=x), tmp))


@case("cft-features-labels-rows")
def _(w, tmp):
    y = w.cft_arrays["train_labels"][:-1]
    return Expect(rf"{_q(tmp / 'h.npz')}: train_labels: 59 rows, but train_features has 60",
                  _cft_argv(w.npz(tmp / "h.npz", train_labels=y), tmp))


@case("cft-labels-weight-classes")
def _(w, tmp):
    y = w.cft_arrays["val_labels"][:, :2]
    return Expect(rf"{_q(tmp / 'h.npz')}: val_labels: expected 3 classes \(columns\), got 2",
                  _cft_argv(w.npz(tmp / "h.npz", val_labels=y), tmp))


@case("cft-npz-missing-key")
def _(w, tmp):
    return Expect(rf"{_q(tmp / 'h.npz')}: missing key\(s\) bias; expected train_features, train_labels, val_features, "
                  r"val_labels, weight, bias", _cft_argv(w.npz(tmp / "h.npz", bias=None), tmp))


@case("cft-npz-not-an-archive")
def _(w, tmp):
    (tmp / "h.npz").write_text("train_features,train_labels\n1,2\n")
    return Expect(rf"{_q(tmp / 'h.npz')}: not a \.npz archive \(numpy\.savez writes a zip file; this one starts with "
                  r"b'train_fe'\)", _cft_argv(tmp / "h.npz", tmp))


@case("cft-npz-object-array")
def _(w, tmp):
    path = w.npz(tmp / "h.npz")
    arrays = dict(np.load(path))
    np.savez(path, **arrays, class_names=np.array([{"a": 1}, 2, 3], dtype=object))
    return Expect(rf"{_q(path)}: holds an object array \(class_names\), which is not read \(it would be unpickled\); "
                  r"expected numeric and string arrays", _cft_argv(path, tmp))


@case("cft-out-holds-another-run-state")
def _(w, tmp):
    npz = w.npz(tmp / "h.npz")
    assert main(_cft_argv(npz, tmp)) == 0
    (tmp / "out" / "cft_report.json").unlink()  # as if that run was stopped before writing its results
    return Expect(rf"{_q(tmp / 'out' / 'cft_state' / 'state.json')}: holds the state of a different CFT run",
                  _cft_argv(npz, tmp, "--seed", "1"))


@case("cft-out-holds-another-run-results")
def _(w, tmp):
    npz = w.npz(tmp / "h.npz")
    assert main(_cft_argv(npz, tmp)) == 0
    shutil.rmtree(tmp / "out" / "cft_state")
    before = (tmp / "out" / "cft_report.json").read_bytes()

    def untouched(_):
        assert (tmp / "out" / "cft_report.json").read_bytes() == before

    return Expect(rf"{_q(tmp / 'out' / 'cft_report.json')} holds the results of another CFT run \(seed: 0, now 1\); "
                  r"use another --out or delete", _cft_argv(npz, tmp, "--seed", "1"), check=untouched)


@case("cft-option-out-of-range")
def _(w, tmp):
    return Expect(r"crossover_rate must be a number in \[0, 1\], got 2\.0",
                  _cft_argv(w.npz(tmp / "h.npz"), tmp, "--crossover-rate", "2"))


@case("cft-no-input")
def _(w, tmp):
    return Expect(r"give either --npz FILE or --config CONFIG --checkpoint CKPT", ["cft", "--out", str(tmp / "o")])


# --- datasets and label files ------------------------------------------------------------------

@case("labels-file-value-outside-1-0-minus1")
def _(w, tmp):
    root = w.data_copy(tmp / "data")
    path = root / "partial-p0.3" / "train.labels.json"
    data = json.loads(path.read_text())
    data["labels"][7][4] = 3
    path.write_text(json.dumps(data))
    return Expect(rf"{_q(path)}:labels: label at row 7, class 4 is 3; expected 1 \(positive\), 0 \(negative\), -1 or "
                  r"NaN \(unknown\)",
                  ["train", "--framework", "timm", "--data-root", str(root), "--regime", "partial-p0.3",
                   "--work-dir", str(tmp / "w"), "--epochs", "1", "--no-progress"])


@case("config-dataset-partial-label-outside")
def _(w, tmp):
    data = json.loads((w.digits / "partial-p0.3" / "train.json").read_text())
    data["data_list"][2]["partial_labels"][0] = 5
    ann = tmp / "train.json"
    ann.write_text(json.dumps(data))
    cfg = dict(type="labelwise.PartialMultiLabelDataset", data_root=str(w.digits), ann_file=str(ann),
               metainfo=dict(classes=[str(i) for i in range(NUM_CLASSES)]), pipeline=[])
    return Expect(r"partial_labels.*5", call=lambda: _build("DATASETS", cfg).full_init())


@case("dataset-empty-annotation-file")
def _(w, tmp):
    (tmp / "empty.txt").write_text("")
    mm = w.mm
    return Expect(rf"no images found in {_q(tmp / 'empty.txt')}",
                  ["relabel", str(tmp / "maps"), "--data-root", str(w.digits), "--ann-file", str(tmp / "empty.txt"),
                   "--config", str(mm["config"]), "--checkpoint", str(mm["checkpoint"]), "--input-size", "64",
                   "--no-progress"])


@case("dataset-empty-features")
def _(w, tmp):
    (tmp / "empty.txt").write_text("")
    return Expect(rf"annotation file {_q(tmp / 'empty.txt')} \(under {_q(w.digits)}\) lists no samples; expected one "
                  r"'<image path> <class id>' line per image",
                  ["cleannet", "features", "--framework", "timm", "--data-root", str(w.digits), "--ann-file",
                   str(tmp / "empty.txt"), "--out", str(tmp / "f.npz"), "--device", "cpu", "--no-progress"])


@case("dataset-annotation-file-missing")
def _(w, tmp):
    return Expect(rf"annotation file {_q(w.digits / 'single' / 'nothing.txt')} does not exist",
                  ["relabel", str(tmp / "maps"), "--data-root", str(w.digits), "--ann-file", "single/nothing.txt",
                   "--timm-model", "resnet18", "--checkpoint", str(w.real_checkpoint), "--no-progress"])


@case("dataset-root-missing")
def _(w, tmp):
    return Expect(rf"dataset root {_q(tmp / 'missing')} does not exist \(build it with `labelwise data make`",
                  ["train", "--data-root", str(tmp / "missing"), "--regime", "single", "--work-dir", str(tmp / "w")])


@case("dataset-unknown-regime")
def _(w, tmp):
    return Expect(rf"regime 'noisy-gaussian-r0\.2' is not in {_q(w.digits)}; available: ",
                  ["train", "--data-root", str(w.digits), "--regime", "noisy-gaussian-r0.2", "--work-dir", str(tmp)])


@case("data-make-p-outside-0-1")
def _(w, tmp):
    return Expect(r"p must be in \[0, 1\], got 1\.5", ["data", "make", str(tmp / "d"), "--p", "1.5"])


@case("data-make-r-outside-0-1")
def _(w, tmp):
    return Expect(r"r must be in \[0, 1\], got -0\.2", ["data", "make", str(tmp / "d"), "--r", "-0.2"])


@case("data-make-into-foreign-folder")
def _(w, tmp):
    (tmp / "d").mkdir()
    (tmp / "d" / "results.csv").write_text("run,score\n")
    return Expect(rf"dataset root {_q(tmp / 'd')} is not empty and holds no labelwise dataset; pass --overwrite "
                  r"\(overwrite=True\) to rebuild it there",
                  ["data", "make", str(tmp / "d"), "--num-train", "10", "--num-val", "5", "--num-test", "5",
                   "--no-progress"], check=lambda _: (tmp / "d" / "results.csv").is_file())


@case("train-existing-work-dir")
def _(w, tmp):
    (tmp / "metrics.json").write_text('{"top1": 0.9}')
    return Expect(rf"{_q(tmp / 'metrics.json')} exists: a finished run is there \(use another --work-dir, "
                  r"or --overwrite / overwrite=True to replace it\)",
                  ["train", "--framework", "timm", "--data-root", str(w.digits), "--regime", "single",
                   "--work-dir", str(tmp)], check=lambda _: (tmp / "metrics.json").read_text() == '{"top1": 0.9}')


@case("cleannet-score-existing-out")
def _(w, tmp):
    argv = _score_argv(tmp / "cleannet.pth", w, tmp)  # refused before the model is read
    (tmp / "s.csv").write_text("id,label,score,weight\n")
    return Expect(rf"{_q(tmp / 's.csv')} exists: another run's scores are there \(choose another --out, "
                  r"or --overwrite to replace it\)",
                  argv, check=lambda _: (tmp / "s.csv").read_text() == "id,label,score,weight\n")


# --- configs ------------------------------------------------------------------------------------

@case("config-unknown-labelwise-type")
def _(w, tmp):
    cfg = tmp / "bad.py"
    base = ROOT / "configs" / "baseline" / "digits_single.py"
    cfg.write_text(f"_base_ = ['{base}']\nmodel = dict(head=dict(loss=dict(type='labelwise.NoSuchLoss')))\n")
    return Expect(rf"{_q(cfg)}: labelwise\.NoSuchLoss is not in the mmpretrain::model registry",
                  ["train", "--data-root", str(w.digits), "--regime", "single", "--work-dir", str(tmp / "w"),
                   "--config", str(cfg), "--epochs", "1", "--no-progress"])


@case("config-name-unknown")
def _(w, tmp):
    return Expect(r"config 'refinery/no_such' is neither a file nor a built-in config; built-ins: .*refinery/",
                  ["refine", "--config", "refinery/no_such", "--work-dir", str(tmp / "w")])


# --- label-map stores (ReLabel + LabelPooling) -------------------------------------------------

def _pooling(store, *, num_classes=NUM_CLASSES):
    return _build("TRANSFORMS", dict(type="labelwise.LabelPooling", label_maps=str(store), num_classes=num_classes))


@case("store-missing-image")
def _(w, tmp):
    pooling = _pooling(w.store)
    results = {"img_path": str(w.digits / "images" / "train" / "000000.png"), "ori_shape": (64, 64)}
    return Expect(rf"label maps {_q(w.store)}: no label map for image '.*images/train/000000\.png' \(keys are image "
                  r"paths relative to the dataset root, e\.g\. 'images/val/000000\.png'\)",
                  call=lambda: pooling(results))


@case("store-corrupt-index")
def _(w, tmp):
    store = w.store_copy(tmp / "maps")
    (store / "labelmaps.json").write_text('{"format": "labelwise-labelmaps/1", "keys": [')
    return Expect(rf"{_q(store / 'labelmaps.json')} is corrupt: not valid JSON", ["labelmaps", "info", str(store)])


@case("store-index-missing-field")
def _(w, tmp):
    store = w.store_copy(tmp / "maps")
    index = json.loads((store / "labelmaps.json").read_text())
    del index["shards"]
    (store / "labelmaps.json").write_text(json.dumps(index))
    return Expect(rf"{_q(store / 'labelmaps.json')} is corrupt: missing field\(s\) shards",
                  ["labelmaps", "info", str(store)])


@case("store-truncated-shard")
def _(w, tmp):
    store = w.store_copy(tmp / "maps")
    shard = store / "shard-00002.bin"
    shard.write_bytes(shard.read_bytes()[:100])
    return Expect(rf"label maps {_q(store)}: incomplete store: shard file shard-00002\.bin is truncated or corrupt: "
                  r"100 "
                  r"bytes, expected 480 \(10 records of 48 bytes\); re-run `labelwise relabel`",
                  ["labelmaps", "info", str(store)])


@case("store-missing-shard")
def _(w, tmp):
    store = w.store_copy(tmp / "maps")
    (store / "shard-00001.bin").unlink()
    return Expect(rf"label maps {_q(store)}: incomplete store: shard file shard-00001\.bin \(records 10\.\.19\) is "
                  r"missing",
                  ["labelmaps", "info", str(store)])


@case("store-not-a-store")
def _(w, tmp):
    return Expect(rf"label maps {_q(w.digits)}: labelmaps\.json is missing; not a label-map store",
                  ["labelmaps", "info", str(w.digits)])


@case("store-classes-disagree-with-model")
def _(w, tmp):
    return Expect(rf"label maps {_q(w.store)}: made for 10 classes, but the model has num_classes=5",
                  call=lambda: _pooling(w.store, num_classes=5))


@case("store-k-disagrees")
def _(w, tmp):
    from labelwise.plugins.labelpool.store import LabelMapStore

    return Expect(rf"label maps {_q(w.store)}: store holds top-3 maps, expected top-5",
                  call=lambda: LabelMapStore(w.store, num_classes=NUM_CLASSES, k=5))


@case("store-relabel-other-settings")
def _(w, tmp):
    mm = w.mm
    argv = ["relabel", str(tmp / "maps"), "--data-root", str(w.digits), "--ann-file", "single/val.txt",
            "--config", str(mm["config"]), "--checkpoint", str(mm["checkpoint"]), "--input-size", "32",
            "--topk", "2", "--batch-size", "40", "--no-progress"]
    assert main(argv) == 0
    return Expect(r"describes another store", argv[:-3] + ["--topk", "3", "--no-progress"])


@case("crop-box-outside-image")
def _(w, tmp):
    pooling = _pooling(w.store)
    results = {"img_path": str(w.digits / w.val_keys[0]), "ori_shape": (64, 64),
               "crop_box": np.array([-16.0, 8.0, 48.0, 80.0], dtype=np.float32)}
    return Expect(r"crop box \[-0\.25, 0\.125, 0\.75, 1\.25\] \(normalised x1, y1, x2, y2\) is not inside the image; "
                  r"expected 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1", call=lambda: pooling(results))


@case("crop-box-empty-torch")
def _(w, tmp):
    from labelwise.plugins.labelpool.pooling import pool_label_maps

    scores, ids = torch.zeros(1, 3, 2, 2), torch.arange(3).view(1, 3, 1, 1).expand(1, 3, 2, 2)
    boxes = torch.tensor([[0.5, 0.2, 0.5, 0.9]])
    return Expect(r"crop box 0 \[0\.5, 0\.2, 0\.5, 0\.9\] \(normalised x1, y1, x2, y2\) is not inside the image",
                  call=lambda: pool_label_maps(scores, ids, boxes, num_classes=NUM_CLASSES))


# --- CleanNet: score files, verification files, feature files ---------------------------------

def _weights(score_file):
    return _build("TRANSFORMS", dict(type="labelwise.CleanNetWeights", score_file=str(score_file)))


def _weighted_dataset(w, score_file):
    from labelwise.adapters.torch_data import DigitScenesDataset
    from labelwise.plugins.cleannet.weighting import WeightedDataset

    dataset = DigitScenesDataset(w.digits, "noisy-symmetric-r0.2", "val")
    return lambda: WeightedDataset(dataset, ids=dataset.ids, score_file=score_file)


@case("scores-missing-id")
def _(w, tmp):
    path = w.score_file(tmp / "s.csv", w.score_rows[:-1])
    return Expect(rf"score file {_q(path)} has no row for 1 samples, e\.g\. 'images/val/000039\.png'",
                  call=_weighted_dataset(w, path))


@case("scores-unknown-ids")
def _(w, tmp):
    rows = [[r[0].replace("images/val/", "images/other/"), *r[1:]] for r in w.score_rows]
    path = w.score_file(tmp / "s.csv", rows)
    return Expect(rf"score file {_q(path)} has no row for 40 samples, e\.g\. 'images/val/000000\.png'",
                  call=_weighted_dataset(w, path))


@case("scores-duplicate-id")
def _(w, tmp):
    rows = [*w.score_rows, w.score_rows[3]]
    path = w.score_file(tmp / "s.csv", rows)
    return Expect(rf"score file {_q(path)}, line 42: id 'images/val/000003\.png' already appears on line 5",
                  call=lambda: _weights(path))


@case("scores-nan")
def _(w, tmp):
    rows = [list(r) for r in w.score_rows]
    rows[6][2] = "nan"
    path = w.score_file(tmp / "s.csv", rows)
    return Expect(rf"score file {_q(path)}, line 8: score is 'nan'; expected a finite number",
                  call=lambda: _weights(path))


@case("scores-wrong-columns")
def _(w, tmp):
    rows = [[r[0], r[1], r[2]] for r in w.score_rows]
    path = w.score_file(tmp / "s.csv", rows, header="id,label,score")
    return Expect(rf"score file {_q(path)}: header is 'id,label,score'; expected 'id,label,score,weight' "
                  r"\(missing: weight\)", call=lambda: _weights(path))


@case("scores-label-disagrees")
def _(w, tmp):
    rows = [list(r) for r in w.score_rows]
    rows[0][1] = str((int(rows[0][1]) + 1) % NUM_CLASSES)
    path = w.score_file(tmp / "s.csv", rows)
    weights = _weights(path)
    results = {"img_path": str(w.digits / "images" / "val" / "000000.png"),
               "gt_label": np.array([int(w.score_rows[0][1])])}
    return Expect(rf"score file {_q(path)}: sample '.*images/val/000000\.png' has label", call=lambda: weights(results))


@case("verification-unknown-ids")
def _(w, tmp):
    (tmp / "v.csv").write_text("id,verified\nimages/train/000000.png,1\nimages/train/000001.png,0\n")
    return Expect(rf"{_q(tmp / 'v.csv')}: none of its ids is in the feature file \(e\.g\. 'images/train/000000\.png'\)",
                  ["cleannet", "fit", "--features", str(w.features), "--verification", str(tmp / "v.csv"),
                   "--work-dir", str(tmp / "w"), "--steps", "1", "--no-progress"])


@case("verification-not-json")
def _(w, tmp):
    (tmp / "v.labels.json").write_text('{"ids": ["images/val/000000.png"], "verified": [1')
    return Expect(rf"{_q(tmp / 'v.labels.json')}: not valid JSON \(.*\); expected a digit-scenes labels file or a CSV "
                  r"with columns id,verified",
                  ["cleannet", "fit", "--features", str(w.features), "--verification", str(tmp / "v.labels.json"),
                   "--work-dir", str(tmp / "w"), "--steps", "1", "--no-progress"])


@case("features-nan-cleannet")
def _(w, tmp):
    from labelwise.plugins.cleannet.features import load_features, save_features

    fs = load_features(w.features)
    x = fs.features.copy()
    x[4, 1] = np.nan
    save_features(tmp / "f.npz", fs.ids, x, fs.labels)
    return Expect(rf"{_q(tmp / 'f.npz')}: feature row 4 holds NaN or infinity",
                  ["cleannet", "fit", "--features", str(tmp / "f.npz"), "--verification",
                   str(w.digits / "noisy-symmetric-r0.2" / "val.labels.json"), "--k", "2",
                   "--work-dir", str(tmp / "w"), "--steps", "1", "--no-progress"])


@case("features-not-a-feature-file")
def _(w, tmp):
    npz = w.npz(tmp / "h.npz")
    return Expect(rf"{_q(npz)} is not a labelwise feature file \(expected format 'labelwise-features/1'",
                  ["cleannet", "fit", "--features", str(npz), "--verification", str(tmp / "v.csv"),
                   "--work-dir", str(tmp / "w"), "--no-progress"])


# --- command-line arguments --------------------------------------------------------------------

@case("cli-mean-not-three-numbers")
def _(w, tmp):
    return Expect(r"argument --mean: expected three comma-separated numbers, got '0\.5,0\.5'",
                  ["relabel", str(tmp / "m"), "--data-root", str(w.digits), "--timm-model", "resnet18",
                   "--checkpoint", str(w.real_checkpoint), "--mean", "0.5,0.5"], usage=True)


@case("cli-model-kwargs-not-json")
def _(w, tmp):
    return Expect(r"argument --model-kwargs: expected a JSON object such as '\{\"channels\": \[32, 64, 128, 256\]\}', "
                  r"got 'channels=8'",
                  ["relabel", str(tmp / "m"), "--data-root", str(w.digits), "--timm-model", "resnet18",
                   "--checkpoint", str(w.real_checkpoint), "--model-kwargs", "channels=8"], usage=True)


# --- the test --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def workspace(tiny_digits, tmp_path_factory):
    return Workspace(Path(tiny_digits), tmp_path_factory.mktemp("bad-inputs"))


def test_at_least_thirty_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, workspace, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    expect = CASES[name](workspace, tmp_path)
    capsys.readouterr()
    if expect.call is not None:
        with pytest.raises(LabelwiseError) as info:
            expect.call()
        message = str(info.value)
        print(f"\n[{name}] {type(info.value).__name__}: {message}")
        assert re.search(expect.message, message), message
    else:
        argv = [str(a) for a in expect.argv]
        command = argv[0]
        if expect.subprocess:
            proc = run_python("-m", "labelwise", *argv, check=False, timeout=120)
            status, out, err = proc.returncode, proc.stdout, proc.stderr
        else:
            try:
                status = main(argv)
            except SystemExit as exc:  # argparse reports a bad argument value itself
                status = exc.code
            captured = capsys.readouterr()
            out, err = captured.out, captured.err
        print(f"\n[{name}] {err.strip() or out.strip()}")
        assert status == expect.status, (status, out, err)
        assert "Traceback" not in err
        if expect.status == 2:
            line = err.splitlines()[-1] if expect.usage else err
            assert line.startswith(f"labelwise {command}: error: "), err
            assert expect.usage or err.count("\n") == 1, err  # one line
            assert re.search(expect.message, line), err
        else:
            assert re.search(expect.message, out), out
    if expect.check is not None:
        expect.check(workspace)
