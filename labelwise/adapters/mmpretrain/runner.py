"""Run mmpretrain configs through mmengine's Runner, from Python or ``labelwise train``."""
from __future__ import annotations

import copy
from pathlib import Path

from mmengine.config import Config

from labelwise.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def resolve_config(config: str | Path) -> Path:
    """Return the path of ``config``: a file, a built-in name like ``'baseline/digits_single'``,
    or a config shipped by an installed OpenMMLab package, ``'mmpretrain::resnet/resnet50_8xb32_in1k.py'``
    (the name mmengine's ``_base_`` takes; the ``.py`` may be left out).

    Raises:
        ConfigError: none exists; the message lists the built-in configs, or says where a
            ``package::`` name was looked for.
    """
    if "::" in str(config):
        return _package_config(str(config))
    path = Path(config)
    if path.is_file():
        return path
    builtin = CONFIG_DIR / (str(config) if str(config).endswith(".py") else f"{config}.py")
    if builtin.is_file():
        return builtin
    names = sorted(str(p.relative_to(CONFIG_DIR))[:-3] for p in CONFIG_DIR.glob("*/*.py") if p.parent.name != "_base_")
    raise ConfigError(f"config {str(config)!r} is neither a file nor a built-in config; built-ins: {', '.join(names)}")


def _package_config(name: str) -> Path:
    """The file of ``package::relative/path.py`` in the package's installed ``.mim/configs``."""
    import importlib.util

    package, _, relative = name.partition("::")
    if not package or not relative or "::" in relative:
        raise ConfigError(f"config {name!r}: expected PACKAGE::PATH, e.g. 'mmpretrain::resnet/resnet50_8xb32_in1k.py'")
    relative = relative if relative.endswith(".py") else f"{relative}.py"
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"config {name!r}: {package!r} is not an installed package")
    roots = [Path(p) / ".mim" / "configs" for p in spec.submodule_search_locations]
    for root in roots:
        if (root / relative).is_file():
            return root / relative
    shown = roots[0]
    folders = sorted(p.name for p in shown.iterdir() if p.is_dir() and p.name != "_base_") if shown.is_dir() else []
    hint = (f"; its config folders: {', '.join(folders[:12])}{', ...' if len(folders) > 12 else ''}" if folders
            else " (the package ships no configs there)")
    raise ConfigError(f"config {name!r}: no file {relative} in {shown}{hint}")


def load_config(
    config: str | Path,
    *,
    work_dir: str | Path,
    data_root: str | Path | None = None,
    seed: int | None = None,
    epochs: int | None = None,
    cfg_options: dict | None = None,
) -> Config:
    """Load an mmpretrain config and apply the usual overrides.

    Args:
        config: a config file or a built-in config name (see :func:`resolve_config`).
        work_dir: the Runner's work directory.
        data_root: if given, replaces every ``data_root`` of the train / val / test datasets
            (nested dataset wrappers included).
        seed: if given, ``randomness.seed``.
        epochs: if given, ``train_cfg.max_epochs``.
        cfg_options: extra ``{'dotted.key': value}`` overrides, as ``--cfg-options`` takes.

    Returns:
        The :class:`mmengine.config.Config`.
    """
    cfg = Config.fromfile(str(resolve_config(config)))
    cfg.work_dir = str(work_dir)
    if data_root is not None:
        for key in ("train_dataloader", "val_dataloader", "test_dataloader"):
            if cfg.get(key):
                _set_data_root(cfg[key]["dataset"], str(data_root))
    if seed is not None:
        cfg.randomness = dict(cfg.get("randomness") or {}, seed=int(seed))
    if epochs is not None:
        cfg.train_cfg.max_epochs = int(epochs)
    if cfg_options:
        cfg.merge_from_dict(copy.deepcopy(cfg_options))
    return cfg


def model_config(cfg, *, data_preprocessor: str | None = "config") -> dict:
    """The model part of a loaded config, ready for ``MODELS.build``.

    Args:
        cfg: a loaded :class:`mmengine.config.Config`.
        data_preprocessor: ``"config"``: the config's top-level ``data_preprocessor`` unless
            the model sets one (what mmengine's Runner builds); ``None``: no preprocessor (the
            caller feeds finished tensors).
    """
    model_cfg = copy.deepcopy(cfg.model)
    if data_preprocessor == "config":
        if cfg.get("data_preprocessor") is not None:
            model_cfg.setdefault("data_preprocessor", cfg.data_preprocessor)
    elif data_preprocessor is None:
        model_cfg.pop("data_preprocessor", None)
    else:
        raise ConfigError(f"data_preprocessor must be 'config' or None, got {data_preprocessor!r}")
    return model_cfg


def build_model(cfg, *, data_preprocessor: str | None = "config"):
    """The model of a loaded config (mmpretrain's registry, the config's default scope); see :func:`model_config`."""
    from mmengine.registry import init_default_scope
    from mmpretrain.registry import MODELS

    init_default_scope(cfg.get("default_scope", "mmpretrain"))
    return MODELS.build(model_config(cfg, data_preprocessor=data_preprocessor))


def load_trained_weights(model, checkpoint, *, target: str, allow_unexpected: bool = True,
                         drop_prefixes: tuple = ()) -> None:
    """Fill ``model`` with ``checkpoint``'s weights, read by the safe loader; one-line errors name both.

    Args:
        target: what the model is, for messages (``"the model of configs/x.py"``).
        allow_unexpected: accept keys the model lacks (training-only modules, an EMA copy).
        drop_prefixes: leave out keys starting with these (e.g. ``"data_preprocessor."``).

    Raises:
        CheckpointError: unreadable, unsafe, or not fitting the model.
    """
    from labelwise.checkpoint import extract_state_dict, load_checkpoint, load_weights

    state = extract_state_dict(load_checkpoint(checkpoint))
    if drop_prefixes:
        state = {k: v for k, v in state.items() if not k.startswith(tuple(drop_prefixes))}
    load_weights(model, state, checkpoint=checkpoint, target=target, allow_unexpected=allow_unexpected)


def build_trained_model(config, checkpoint, *, work_dir, data_root=None):
    """The model of ``config`` (with its data preprocessor, as mmengine's Runner builds it) holding
    the weights of ``checkpoint`` (read with :func:`labelwise.checkpoint.load_checkpoint`).

    Returns:
        ``(model, cfg)``: the model in train mode on the CPU, and the loaded config.
    """
    cfg = load_config(config, work_dir=work_dir, data_root=data_root)
    model = build_model(cfg)
    load_trained_weights(model, checkpoint, target=f"the model of {cfg.filename}")
    return model, cfg


def _set_data_root(dataset_cfg, data_root: str) -> None:
    if "data_root" in dataset_cfg:
        dataset_cfg["data_root"] = data_root
    for key in ("dataset", "datasets"):
        inner = dataset_cfg.get(key)
        for d in inner if isinstance(inner, (list, tuple)) else [inner] if inner else []:
            _set_data_root(d, data_root)


def train_and_test(cfg: Config) -> dict:
    """Train with ``Runner.from_cfg(cfg)`` and return the test metrics of the final model.

    Raises:
        ConfigError: the config names a type no registry knows (the message names the config
            file and the type), or a pipeline crops where ``labelwise.LabelPooling`` cannot see
            the box (:func:`~labelwise.adapters.mmpretrain.labelpool.check_pooling_pipeline`).
    """
    from mmengine.runner import Runner

    from labelwise.adapters.mmpretrain.labelpool import check_pooling_config

    check_pooling_config(cfg)
    try:
        runner = Runner.from_cfg(cfg)
        check_class_count(runner, name=cfg.filename)
        runner.train()
        return dict(runner.test())
    except KeyError as exc:
        message = str(exc.args[0]) if exc.args else ""
        if " registry" not in message:
            raise
        raise ConfigError(f"{cfg.filename}: {message.split('. Please check')[0]}") from exc


def check_class_count(runner, *, name) -> None:
    """Refuse a model whose head has another number of classes than the training data.

    A 12-class head on 10-class data trains and reports an accuracy or mAP without a complaint
    (the two extra outputs are never a target): caught here, before training, from the head's
    ``num_classes`` and the training dataset's ``metainfo['classes']``. Either side missing
    (a head without ``num_classes``, a dataset without class names) is not checked.

    Raises:
        ConfigError: naming the config, both counts and where they come from.
    """
    model = getattr(runner.model, "module", runner.model)
    head_classes = getattr(getattr(model, "head", None), "num_classes", None)
    dataset = runner.train_dataloader.dataset
    classes = (getattr(dataset, "metainfo", None) or {}).get("classes")
    if head_classes is None or not classes:
        return
    if int(head_classes) != len(classes):
        raise ConfigError(f"{name}: model.head.num_classes is {head_classes}, but the training data "
                          f"({type(dataset).__name__}) has {len(classes)} classes; set num_classes={len(classes)}")
