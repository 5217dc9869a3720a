"""The models the demo needs before its methods run: trained once, shipped small, checked on load.

Four models, each a digit-scenes ResNet-18 trained through mmengine's Runner on built-in configs:

* ``backbone`` (P): the ``single`` labels of a second, disjoint set of scenes (data seed 1): the
  digit-scenes stand-in for ImageNet pretraining. Every demo run starts from it.
* ``backbone-small``: the same at half the width, the start of the Label Refinery student.
* ``annotator``: ReLabel's machine annotator, clearly stronger than the students, in the
  paper's spirit: output stride 16 (4x4 label maps at 64 px), first trained from P on the
  ``multilabel`` regime of the disjoint scenes (extra data the students never see; the analogue
  of JFT-300M's multi-labels), then fine-tuned on the demo's ``single`` train labels (as the
  paper's annotator is fine-tuned on ImageNet).
* ``refinery``: the larger model that refines the half-width student: P fine-tuned on the
  demo's ``single`` train labels for the full single-label schedule.

``python -m labelwise.demo.models`` trains them at the quick demo's sizes and writes them as
half-precision ``.safetensors`` files (no pickle) with ``manifest.json`` (SHA-256 of every file,
its config, what it was trained on and its test metric) into ``labelwise/demo/models/quick``.
The demo checks every file's SHA-256 and the fingerprint of its data against the manifest
before using them, and reads them with :func:`labelwise.checkpoint.load_checkpoint`. The tiny
and full demo modes train the same models at their own sizes into their output folder with
:func:`build_models`.
"""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from labelwise.errors import DataError
from labelwise.utils.fileio import write_json
from labelwise.utils.fingerprint import file_sha256

SHIPPED = Path(__file__).parent / "models"
MANIFEST = "manifest.json"
MANIFEST_FORMAT = "labelwise-demo-models/1"
NAMES = ("backbone", "backbone-small", "annotator", "refinery")
BUILD_COMMAND = "python -m labelwise.demo.models --work outputs/demo-models"
#: ReLabel's annotator: the last stage dilated instead of strided (output stride 16).
OUTPUT_STRIDE_16 = {"model.backbone.strides": (1, 2, 2, 1), "model.backbone.dilations": (1, 1, 1, 2)}
#: The demo data files whose content the annotator and the refinery were trained on.
DATA_FILES = ("single/train.txt", "scenes/train.json")


def width_options(width: int | None) -> dict:
    """``cfg_options`` of a ResNet-18 of base width ``width`` (``None``: the config's)."""
    if width is None:
        return {}
    return {"model.backbone.stem_channels": 2 * width, "model.backbone.base_channels": width,
            "model.head.in_channels": 8 * width}


def data_fingerprint(data_root) -> dict:
    """SHA-256 of the demo data files the shipped annotator and refinery were trained on."""
    root = Path(data_root)
    missing = [name for name in DATA_FILES if not (root / name).is_file()]
    if missing:
        raise DataError(f"{root}: no {missing[0]}; expected digit scenes made by the demo")
    return {name: file_sha256(root / name) for name in DATA_FILES}


def _spec_options(spec: dict) -> dict:
    return {**width_options(spec["width"]), **(OUTPUT_STRIDE_16 if spec.get("output_stride") == 16 else {})}


def specs(mode) -> dict:
    """What each model is: config, width, data, epochs and the model it starts from."""
    return {
        "backbone": {"config": "baseline/digits_single", "regime": "single", "data": "pretrain",
                     "width": mode.width, "epochs": mode.pretrain_epochs, "init": None},
        "backbone-small": {"config": "baseline/digits_single", "regime": "single", "data": "pretrain",
                           "width": mode.small_width, "epochs": mode.pretrain_epochs, "init": None},
        "annotator-extra": {"config": "baseline/digits_multilabel", "regime": "multilabel", "data": "pretrain",
                            "width": mode.width, "output_stride": 16, "epochs": mode.annotator_extra_epochs,
                            "init": "backbone"},
        "annotator": {"config": "baseline/digits_single", "regime": "single", "data": "demo", "width": mode.width,
                      "output_stride": 16, "epochs": mode.annotator_epochs, "init": "annotator-extra"},
        "refinery": {"config": "baseline/digits_single", "regime": "single", "data": "demo", "width": mode.width,
                     "epochs": mode.refinery_epochs, "init": "backbone"},
    }


def make_pretrain_data(root: Path, mode) -> Path:
    """The disjoint scenes (data seed 1): ``single`` and ``multilabel`` labels, no image shared with the demo's."""
    from labelwise.data import SceneConfig, make_dataset

    scenes = dataclasses.replace(SceneConfig(), num_train=mode.pretrain_train, num_val=max(20, mode.num_val // 4),
                                 num_test=mode.num_test)
    return make_dataset(root, config=scenes, seed=1, regimes=("single", "multilabel"), progress=True)


def build_models(out, mode, *, work, demo_data, steps=None, log=None) -> dict:
    """Train the demo's models at ``mode``'s sizes and write them with their manifest into ``out``.

    Args:
        out: folder of the ``.safetensors`` files and ``manifest.json``.
        mode: a :class:`labelwise.demo.DemoMode`.
        work: folder of the training runs (reused when the build runs again).
        demo_data: the demo's data (made by the demo with ``mode``'s sizes); the annotator and
            the refinery are fine-tuned on its ``single`` train labels.
        steps: a :class:`labelwise.demo.Steps` for progress lines and reuse (default: a new one).

    Returns:
        The manifest.
    """
    from labelwise.demo import Steps
    from labelwise.demo.methods import Run
    from labelwise.train import pretrained_backbone

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    out, work = Path(out), Path(work)
    steps = steps or Steps(1 + len(specs(mode)), log)
    pretrain_data = work / "data-seed1"
    steps.run(f"models: generating {mode.pretrain_train} disjoint scenes (data seed 1)",
              pretrain_data / "labelwise-data.json", lambda: make_pretrain_data(pretrain_data, mode))
    roots = {"pretrain": pretrain_data, "demo": Path(demo_data)}
    runs, results = {}, {}
    for name, spec in specs(mode).items():
        run = Run(work / name, spec["config"], spec["regime"])
        options = _spec_options(spec)
        if spec["init"] is not None:
            options.update(pretrained_backbone(_checkpoint(runs[spec["init"]])))
        run_mode = dataclasses.replace(mode, epochs=spec["epochs"], width=None)
        where = "the disjoint scenes" if spec["data"] == "pretrain" else "the demo's train split"
        start = f"from {spec['init']}" if spec["init"] else "from scratch"
        steps.run(f"models: {name} ({spec['regime']} labels of {where}, width {spec['width']}, {spec['epochs']} "
                  f"epochs, {start})", run.metrics_file,
                  lambda: run.train(roots[spec["data"]], run_mode, 0, cfg_options=options))
        runs[name], results[name] = run, run.result()
    return export_models(out, mode, runs, results, specs(mode), demo_data)


def _checkpoint(run) -> Path:
    return run.work / "mmpretrain" / f"epoch_{run.result()['epochs']}.pth"


def export_models(out: Path, mode, runs: dict, results: dict, model_specs: dict, demo_data) -> dict:
    """Write the shipped models as float16 ``.safetensors`` and the manifest (last, atomically)."""
    import torch

    from labelwise.checkpoint import extract_state_dict, load_checkpoint, save_checkpoint

    out.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name in NAMES:
        state = extract_state_dict(load_checkpoint(_checkpoint(runs[name])))
        state = {key: (value.half() if value.is_floating_point() else value).contiguous()
                 for key, value in state.items()}
        path = out / f"{name}.safetensors"
        save_checkpoint(state, path)
        spec = model_specs[name]
        result = results[name]
        entries[name] = {
            "file": path.name, "sha256": file_sha256(path), "bytes": path.stat().st_size,
            "parameters": int(sum(v.numel() for k, v in state.items() if "num_batches_tracked" not in k)),
            "config": spec["config"], "cfg_options": {k: list(v) if isinstance(v, tuple) else v
                                                      for k, v in _spec_options(spec).items()},
            "width": spec["width"], "output_stride": spec.get("output_stride", 32),
            "trained_on": {"data": spec["data"], "regime": spec["regime"], "epochs": spec["epochs"],
                           "init": spec["init"]},
            "test": {"metric": result["metric"], "value": result["value"],
                     "split": "the disjoint scenes' test split" if spec["data"] == "pretrain"
                     else "the demo's test split"},
        }
        if name == "annotator":
            extra = results["annotator-extra"]
            entries[name]["trained_on"]["extra"] = {"regime": "multilabel", "epochs": model_specs["annotator-extra"]
                                                    ["epochs"], "test_mAP": extra["value"]}
    manifest = {"format": MANIFEST_FORMAT, "mode": mode.name, "sizes": _mode_sizes(mode),
                "demo_data": data_fingerprint(demo_data), "models": entries, "command": BUILD_COMMAND,
                "torch": torch.__version__}
    write_json(out / MANIFEST, manifest)
    return manifest


def _mode_sizes(mode) -> dict:
    fields = ("num_train", "num_val", "num_test", "width", "small_width", "pretrain_train", "pretrain_epochs",
              "annotator_extra_epochs", "annotator_epochs", "refinery_epochs")
    return {field: getattr(mode, field) for field in fields}


def read_manifest(folder) -> dict:
    """The manifest of a model folder, checked: every file present with its SHA-256.

    Raises:
        DataError: no or unreadable manifest, a missing model, or a file whose SHA-256 differs.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no model manifest; rebuild the demo's models with `{BUILD_COMMAND}`") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable model manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise DataError(f"{path}: format {manifest.get('format') if isinstance(manifest, dict) else None!r}, "
                        f"expected {MANIFEST_FORMAT!r}")
    for name in NAMES:
        entry = manifest.get("models", {}).get(name)
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise DataError(f"{path}: no entry for the model {name!r}")
        file = folder / Path(entry["file"]).name
        if not file.is_file():
            raise DataError(f"{file}: missing (listed in {path}); rebuild with `{BUILD_COMMAND}`")
        digest = file_sha256(file)
        if digest != entry.get("sha256"):
            raise DataError(f"{file}: SHA-256 {digest} differs from {entry.get('sha256')} in {path}: the file was "
                            f"changed or damaged; reinstall labelwise or rebuild with `{BUILD_COMMAND}`")
    return manifest


def prepare_models(folder, mode, *, data_root, work) -> dict:
    """Check the models of ``folder`` for ``mode`` and the demo data; dump their configs into ``work``.

    Returns:
        ``{name: {"checkpoint": path, "config": dumped config file, **manifest entry}}``.

    Raises:
        DataError: see :func:`read_manifest`; or the models were built for other sizes, or the
            annotator and refinery for other data than ``data_root`` holds.
    """
    from labelwise.adapters.mmpretrain.runner import load_config

    folder, work = Path(folder), Path(work)
    manifest = read_manifest(folder)
    if manifest.get("sizes") != _mode_sizes(mode):
        raise DataError(f"{folder / MANIFEST}: built for sizes {manifest.get('sizes')}, the '{mode.name}' demo needs "
                        f"{_mode_sizes(mode)}; rebuild with `{BUILD_COMMAND}`")
    found = data_fingerprint(data_root)
    if found != manifest.get("demo_data"):
        differ = [n for n in DATA_FILES if found[n] != manifest.get("demo_data", {}).get(n)]
        raise DataError(f"{Path(data_root) / differ[0]}: differs from the data the shipped annotator and refinery "
                        f"were trained on ({folder / MANIFEST}); the scene generator or its settings changed: "
                        f"rebuild with `{BUILD_COMMAND}`")
    work.mkdir(parents=True, exist_ok=True)
    models = {}
    for name, entry in manifest["models"].items():
        options = {k: tuple(v) if isinstance(v, list) else v for k, v in entry["cfg_options"].items()}
        config = work / f"{name}_config.py"
        if not config.exists():
            load_config(entry["config"], work_dir=work, data_root=data_root, cfg_options=options).dump(str(config))
        models[name] = {**entry, "checkpoint": str(folder / entry["file"]), "config": str(config)}
    return models


def main(argv=None) -> int:
    import argparse

    from labelwise.demo import MODES, Steps
    from labelwise.demo.methods import make_data

    parser = argparse.ArgumentParser(
        prog="python -m labelwise.demo.models", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", default="outputs/demo-models", help="training runs (resumed when run again)")
    parser.add_argument("--out", default=str(SHIPPED / "quick"), help="where the models go (default: the package)")
    parser.add_argument("--mode", default="quick", choices=sorted(MODES), help="demo sizes (default: quick)")
    args = parser.parse_args(argv)
    mode = MODES[args.mode]
    work = Path(args.work)
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    steps = Steps(2 + len(specs(mode)), log, timings=work / "timings.json")
    work.mkdir(parents=True, exist_ok=True)
    data = work / "demo-data"
    steps.run("models: the demo's data", data / "labelwise-data.json", lambda: make_data(data, mode))
    manifest = build_models(args.out, mode, work=work, demo_data=data, steps=steps, log=log)
    for name, entry in manifest["models"].items():
        print(f"{name}: {entry['file']} ({entry['bytes']} bytes, {entry['parameters']} parameters), test "
              f"{entry['test']['metric']} {entry['test']['value']:.2f} on {entry['test']['split']}")
    print(f"manifest: {Path(args.out) / MANIFEST}; the steps took {steps.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
