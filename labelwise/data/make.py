"""Build the digit-scene benchmark on disk, and read it back.

:func:`make_dataset` writes the images, the scene annotations and every label regime in the
formats of mmpretrain, timm and plain numpy (layout in ``docs/data.md``);
:func:`load_manifest`, :func:`load_regime` and :func:`load_scenes` read them.

From the shell: ``labelwise data make ROOT`` (see ``labelwise data make --help``).
"""

from __future__ import annotations

import json
import shutil
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labelwise.data.regimes import (
    NOISE_KINDS,
    REGIME_KINDS,
    Regime,
    expand_regimes,
    make_regime_labels,
    presence_matrix,
)
from labelwise.data.scenes import (
    CLASS_NAMES,
    SPLITS,
    SceneConfig,
    check_seed,
    check_split,
    iter_scenes,
)
from labelwise.data.writers import (
    image_id,
    read_labels,
    read_scenes,
    scene_record,
    write_class_list,
    write_png,
    write_regime_split,
    write_scenes,
)
from labelwise.errors import ConfigError, DataError
from labelwise.labels import check_probability
from labelwise.utils.fileio import write_json

GENERATOR_VERSION = "1"
MANIFEST = "labelwise-data.json"
_BUILDING = ".labelwise-data.building.json"  # parameters of a build in progress (for resume)
_WRITERS = 2  # image-writing threads
_FIXED_DIRS = ("images", "scenes", "imagefolder")  # removed on overwrite, with the regime dirs


@dataclass(frozen=True, eq=False)
class RegimeSplit:
    """The labels of one regime on one split, as read by :func:`load_regime`.

    Attributes:
        regime: the :class:`~labelwise.data.regimes.Regime`.
        split: ``'train'``, ``'val'`` or ``'test'``.
        ids: ``N`` sample ids (image paths relative to the dataset root).
        labels: ``(N, C)`` int8 of 1/0/-1 (multi-label regimes) or ``(N,)`` int64 class ids.
        truth: clean labels, same shape and dtype as ``labels``.
        verified: ``(N,)`` int8 flags (1 = label correct, 0 = wrong, -1 = not verified) for
            noisy regimes, else ``None``.
    """

    regime: Regime
    split: str
    ids: list
    labels: np.ndarray
    truth: np.ndarray
    verified: np.ndarray | None


def make_dataset(
    root,
    *,
    config: SceneConfig = SceneConfig(),
    seed: int = 0,
    p=(0.1, 0.3, 0.5),
    r=(0.2, 0.4),
    noise=NOISE_KINDS,
    verified_fraction: float = 0.05,
    regimes=REGIME_KINDS,
    progress: bool = True,
    overwrite: bool = False,
) -> Path:
    """Generate the digit scenes and write every label regime under ``root``.

    Args:
        root: output directory; created if missing.
        config: the scene generator settings (sizes, clutter, image counts per split).
        seed: dataset seed; the same arguments give byte-identical files.
        p: keep-probabilities of the ``partial`` regimes (one directory each).
        r: noise rates of the ``noisy`` regimes (one directory per rate and noise kind).
        noise: noise kinds, each ``'symmetric'``, ``'pairflip'`` or ``'scene'``.
        verified_fraction: share of train and of val verified in the noisy regimes.
        regimes: regime kinds to write, from ``('multilabel', 'partial', 'single', 'noisy')``.
        progress: show a tqdm progress bar and say when the dataset is already complete.
        overwrite: rebuild in a non-empty ``root``. The previous dataset's directories (from
            its manifest) are removed first; other files are left alone.

    Returns:
        ``root`` as a :class:`~pathlib.Path`.

    Raises:
        ConfigError: an invalid option (the message names it and the valid choices).
        DataError: ``root`` is a file, or is non-empty and ``overwrite`` is False -- unless it
            holds a complete dataset made with the same parameters (then this returns at
            once) or a build with the same parameters that was interrupted (then it resumes,
            keeping the images already written).
    """
    if not isinstance(config, SceneConfig):
        raise ConfigError(f"config must be a SceneConfig, got {type(config).__name__}")
    seed = check_seed(seed)
    regime_list = expand_regimes(regimes, p=p, r=r, noise=noise)
    verified_fraction = check_probability(verified_fraction, name="verified_fraction")
    params = {
        "config": config.to_dict(),
        "seed": seed,
        "verified_fraction": verified_fraction,
        "regimes": [g.name for g in regime_list],
    }
    root = Path(root)
    state = _prepare_root(root, params, overwrite=overwrite)
    if state == "complete":
        if progress:
            print(f"labelwise: {root} already holds this dataset, complete", file=sys.stderr)
        return root
    write_json(root / _BUILDING, {"generator_version": GENERATOR_VERSION, "parameters": params})

    from tqdm import tqdm

    counts = {s: config.num_images(s) for s in SPLITS}
    total = sum(counts.values())
    with tqdm(total=total, desc="digit scenes", unit="img", disable=not progress) as bar:
        for split in SPLITS:
            _write_split(root, split, config, seed, regime_list, verified_fraction, bar,
                         resume=state == "resume")
    write_class_list(root / "classes.txt", CLASS_NAMES)
    write_json(root / MANIFEST, _manifest(params, counts, regime_list))
    (root / _BUILDING).unlink()
    return root


def load_manifest(root) -> dict:
    """Read ``<root>/labelwise-data.json``.

    Raises:
        DataError: the root or its manifest is missing or unreadable (the message names the
            path and how to build the dataset).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"dataset root {root} does not exist (build it with `labelwise data make` or make_dataset)")
    path = root / MANIFEST
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        hint = "an unfinished build: run make_dataset again to resume it"
        if not (root / _BUILDING).exists():
            hint = "build it with make_dataset"
        msg = f"{path}: manifest not found; {root} is not a complete dataset ({hint})"
        raise DataError(msg) from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(manifest, dict) or "regime_dirs" not in manifest:
        raise DataError(f"{path}: not a labelwise dataset manifest")
    return manifest


def load_regime(root, regime_dir: str, split: str) -> RegimeSplit:
    """Read the labels of one regime on one split.

    Args:
        root: dataset root made by :func:`make_dataset`.
        regime_dir: a regime directory listed in the manifest, e.g. ``'partial-p0.3'``.
        split: ``'train'``, ``'val'`` or ``'test'``.

    Returns:
        :class:`RegimeSplit` with ids, labels, truth and verification flags.

    Raises:
        DataError: the dataset or the label file is missing or malformed.
        ConfigError: ``regime_dir`` is not in this dataset, or ``split`` is unknown.
    """
    manifest = load_manifest(root)
    check_split(split)
    if regime_dir not in manifest["regime_dirs"]:
        raise ConfigError(
            f"regime {regime_dir!r} is not in {root}; "
            f"available: {', '.join(manifest['regime_dirs'])}"
        )
    ids, labels = read_labels(Path(root) / regime_dir / f"{split}.labels.json")
    regime = Regime.from_name(regime_dir)
    return RegimeSplit(regime, split, ids, labels.labels, labels.truth, labels.verified)


def load_scenes(root, split: str) -> list[dict]:
    """Per-image records of a split: ``{"id", "main", "objects": [{"class", "box", "source"}]}``."""
    load_manifest(root)
    return read_scenes(Path(root) / "scenes" / f"{check_split(split)}.json")["images"]


# ----------------------------------------------------------------------------- helpers


def _write_split(root: Path, split, config, seed, regime_list, verified_fraction, bar, *, resume):
    """Generate one split's images, then write its scene file and every regime's labels."""
    (root / "images" / split).mkdir(parents=True, exist_ok=True)
    (root / "scenes").mkdir(exist_ok=True)
    ids, records, objects, mains = [], [], [], []
    # PNG encoding and fsync release the GIL: two writer threads overlap them with generation.
    with ThreadPoolExecutor(max_workers=_WRITERS) as pool:
        pending = deque()
        for index, scene in enumerate(iter_scenes(config, seed=seed, split=split)):
            sample_id = image_id(split, index)
            if resume and (root / sample_id).is_file():
                bar.update(1)  # written by the interrupted build
            else:
                pending.append(pool.submit(write_png, root / sample_id, scene.image))
            ids.append(sample_id)
            records.append(scene_record(scene, sample_id))
            objects.append(scene.classes)
            mains.append(scene.main_class)
            while len(pending) > 4 * _WRITERS or (pending and pending[0].done()):
                pending.popleft().result()  # re-raises a failed write here
                bar.update(1)
        while pending:
            pending.popleft().result()
            bar.update(1)
    scenes_file = root / "scenes" / f"{split}.json"
    write_scenes(scenes_file, records, split=split, classes=CLASS_NAMES,
                 canvas_size=config.canvas_size)
    multi = presence_matrix(objects, num_classes=len(CLASS_NAMES))
    main = np.asarray(mains, dtype=np.int64)
    for regime in regime_list:
        labels = make_regime_labels(
            regime, multilabel_truth=multi, main_truth=main, split=split, seed=seed,
            verified_fraction=verified_fraction,
        )
        write_regime_split(root, regime, split, ids, labels, classes=CLASS_NAMES)


def _manifest(params, counts, regime_list) -> dict:
    regimes = []
    for g in regime_list:
        single = g.is_single_label
        regimes.append({
            "name": g.name, "kind": g.kind, "p": g.p, "r": g.rate, "noise": g.noise,
            "single_label": single,
            "mmpretrain_dataset": "CustomDataset" if single else "MultiLabelDataset",
            "ann_files": {s: f"{g.name}/{s}.{'txt' if single else 'json'}" for s in SPLITS},
            "label_files": {s: f"{g.name}/{s}.labels.json" for s in SPLITS},
            "imagefolder": {s: f"imagefolder/{g.name}/{s}" for s in SPLITS} if single else None,
        })
    return {
        "format": "labelwise-digit-scenes",
        "generator_version": GENERATOR_VERSION,
        "parameters": params,
        "classes": list(CLASS_NAMES),
        "splits": list(SPLITS),
        "counts": counts,
        "label_convention": {"1": "positive", "0": "negative", "-1": "unknown"},
        "images": {s: f"images/{s}" for s in SPLITS},
        "scenes": {s: f"scenes/{s}.json" for s in SPLITS},
        "class_list": "classes.txt",
        "regime_dirs": [g.name for g in regime_list],
        "regimes": regimes,
    }


def _prepare_root(root: Path, params: dict, *, overwrite: bool) -> str:
    """Decide what to do with ``root``: ``'new'``, ``'resume'`` or ``'complete'``."""
    if root.exists() and not root.is_dir():
        raise DataError(f"dataset root {root} exists and is not a directory")
    if not root.exists() or not any(root.iterdir()):
        root.mkdir(parents=True, exist_ok=True)
        return "new"
    manifest, building = _read_state(root / MANIFEST), _read_state(root / _BUILDING)
    if overwrite:
        _remove_previous(root, [manifest, building])
        return "new"
    same = {"generator_version": GENERATOR_VERSION, "parameters": params}
    if manifest is not None and {k: manifest.get(k) for k in same} == same:
        return "complete"
    if manifest is None and building == same:
        return "resume"
    previous = manifest if manifest is not None else building
    if previous is not None:
        old = previous.get("parameters") or {}
        diff = sorted(k for k in set(old) | set(params) if old.get(k) != params.get(k))
        what = "dataset" if manifest is not None else "unfinished build"
        reason = f"holds a {what} with different parameters ({', '.join(diff) or 'version'})"
    else:
        reason = "is not empty and holds no labelwise dataset"
    raise DataError(f"dataset root {root} {reason}; pass --overwrite (overwrite=True) to rebuild it there")


def _read_state(path: Path) -> dict | None:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _remove_previous(root: Path, states: list) -> None:
    """Delete the directories a previous build made (fixed names + its valid regime names)."""
    names = set()
    for state in states:
        if state is None:
            continue
        names.update(_FIXED_DIRS)
        regime_names = (state.get("parameters") or {}).get("regimes") or []
        for name in regime_names if isinstance(regime_names, list) else []:
            try:
                names.add(Regime.from_name(str(name)).name)  # only names this module makes
            except ConfigError:
                pass
    (root / MANIFEST).unlink(missing_ok=True)
    for name in sorted(names):
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
    (root / _BUILDING).unlink(missing_ok=True)
