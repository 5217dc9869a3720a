"""Reading and writing checkpoints without running code from the file.

:func:`load_checkpoint` is the one place labelwise reads a checkpoint: mmengine Runner
``.pth`` files, timm ``.pth`` / ``.pth.tar`` files, plain state dicts and (when the
``safetensors`` package is installed) ``.safetensors`` files. Pickled files are always read
with ``torch.load(..., weights_only=True)``; the few non-tensor types genuine mmengine and timm
checkpoints contain are allowed through :func:`safe_globals`, nothing else.

Why ``builtins.getattr`` is never on the allow-list
---------------------------------------------------
An mmengine Runner checkpoint pickles ``HistoryBuffer``'s statistics methods (``min``,
``max``, ``current``, ``mean``) by name, and pickle protocol 2 spells a method as the call
``getattr(HistoryBuffer, 'mean')``, so loading one needs *a* ``builtins.getattr``. Allowing
the real one would let a crafted checkpoint walk from any allowed object to any function in
the process (``getattr(HistoryBuffer, '__init__').__globals__`` and on), and store what it
finds where it gets called later, e.g. as an instance's ``__deepcopy__`` or
``__reduce_ex__``: deep-copying the loaded object, as mmengine's ``MessageHub`` does on
resume, then runs it. torch accepts ``(replacement, "builtins.getattr")`` pairs in its
allow-list, so the name is bound to :func:`_restricted_getattr`, which answers only the
lookups genuine checkpoints make and refuses everything else.

This module imports no framework at import time; mmengine (for ``HistoryBuffer``), numpy and
safetensors are imported when a checkpoint is read.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import pickle
import re
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from labelwise.errors import CheckpointError, ConfigError
from labelwise.utils.fileio import atomic_write, file_head

__all__ = ["extract_state_dict", "load_checkpoint", "load_checkpoint_bytes", "safe_globals",
           "save_checkpoint"]

# The HistoryBuffer attributes a genuine mmengine 0.10.7 checkpoint fetches through
# ``getattr`` (read off the pickle opcodes of a Runner checkpoint with ``pickletools``): the
# four statistics methods ``HistoryBuffer._set_default_statistics`` registers.
_HISTORY_BUFFER_STATISTICS = frozenset({"min", "max", "current", "mean"})

# numpy dtype codes whose dtype classes (numpy.dtypes.*DType) a genuine checkpoint builds.
# torch's unpickler only runs BUILD (dtype.__setstate__) on instances of allowed types.
_NUMPY_DTYPE_CODES = (
    "f8",  # HistoryBuffer._log_history; numpy float64 scalars such as runtime_info['eta']
    "i8",  # HistoryBuffer._count_history (numpy's default integer)
    "i4",  # the same array where numpy's default integer is 32-bit (Windows, numpy 1.x)
    "f4",  # float32 metric values CheckpointHook(save_best=...) keeps as 'best_score'
)

_SAFE_GLOBALS_MIN_TORCH = "2.6"  # (callable, name) pairs and the safe_globals context


def safe_globals() -> list:
    """Return the allow-list of non-tensor globals a genuine checkpoint may reference.

    The entries are in the form ``torch.serialization.safe_globals`` takes: a class, or a
    ``(object, "module.qualified.name")`` pair that binds a pickled name to an object. Use it
    as ``with torch.serialization.safe_globals(safe_globals()): torch.load(..., weights_only=
    True)`` to make another loader (mmengine's, when resuming) read the same files.

    Entries, and why each is there:

    - ``builtins.getattr`` bound to :func:`_restricted_getattr`: mmengine pickles
      ``HistoryBuffer.min/max/current/mean`` as ``getattr(HistoryBuffer, name)``; the stand-in
      answers only those four lookups (see the module docstring).
    - ``mmengine.logging.history_buffer.HistoryBuffer`` (only when mmengine is installed): the
      values of ``message_hub['log_scalars']``.
    - ``numpy._core.multiarray._reconstruct``, ``numpy.ndarray``, ``numpy.dtype`` and the
      float64 / int64 / int32 / float32 dtype classes: a ``HistoryBuffer`` holds its log and
      count history as numpy arrays.
    - ``numpy._core.multiarray.scalar``: numpy scalars in ``runtime_info`` (``eta``, metric
      values).
    - ``numpy.core.multiarray._reconstruct`` / ``.scalar``: the names numpy 1.x wrote for the
      same two functions.
    - ``argparse.Namespace``: timm's ``train.py`` saves its parsed arguments as ``args`` in
      every training checkpoint. It is an attribute bag: creating one runs only
      ``object.__new__`` and restoring it only fills ``__dict__`` (timm's own loader allows it
      for the same reason).

    Returns:
        A new list on every call.
    """
    import numpy as np

    try:  # numpy >= 2
        from numpy._core import multiarray
    except ImportError:  # numpy 1.x
        from numpy.core import multiarray

    entries: list = [
        (_restricted_getattr, "builtins.getattr"),
        (multiarray._reconstruct, "numpy._core.multiarray._reconstruct"),
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        (multiarray.scalar, "numpy._core.multiarray.scalar"),
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
        (np.ndarray, "numpy.ndarray"),
        (np.dtype, "numpy.dtype"),
        (argparse.Namespace, "argparse.Namespace"),
    ]
    # The classes are never named in a pickle; BUILD only checks that type(dtype) is allowed.
    entries += [type(np.dtype(code)) for code in _NUMPY_DTYPE_CODES]
    history_buffer = _history_buffer_class()
    if history_buffer is not None:
        entries.append((history_buffer, "mmengine.logging.history_buffer.HistoryBuffer"))
    return entries


def load_checkpoint(path, *, map_location="cpu") -> dict:
    """Read a checkpoint without executing code stored in it.

    Pickled checkpoints (mmengine Runner ``.pth``, timm ``.pth`` / ``.pth.tar``, anything
    ``torch.save`` wrote) are read with ``torch.load(weights_only=True)`` and the
    :func:`safe_globals` allow-list; ``.safetensors`` files with the ``safetensors`` package.

    Args:
        path: the checkpoint file.
        map_location: where tensors go, as in :func:`torch.load` (a device string,
            ``torch.device``, dict or callable). Defaults to ``'cpu'``. A ``.safetensors``
            file takes a device string or ``torch.device`` only.

    Returns:
        The checkpoint dict (for a ``.safetensors`` file: parameter name -> tensor).

    Raises:
        CheckpointError: the file is missing, truncated or corrupt, is not a checkpoint,
            references a global that is not allowed (the message names it), or does not hold a
            dict. The underlying exception is chained.
        ConfigError: ``map_location`` is not usable for a ``.safetensors`` file.
        ImportError: a ``.safetensors`` file and the ``safetensors`` package is missing.
    """
    path = Path(path)
    head = file_head(path, 16, error=CheckpointError, what="checkpoint")

    if path.suffix == ".safetensors":
        checkpoint = _load_safetensors(path, map_location)
    else:
        checkpoint = _load_pickled(path, path, head, map_location)
    return _checked_dict(checkpoint, path)


def load_checkpoint_bytes(data: bytes, *, source: str, map_location="cpu") -> dict:
    """Read a pickled checkpoint held in memory, as :func:`load_checkpoint` reads a file.

    For checkpoints fetched from object stores (mmengine's ``s3://`` / ``petrel://`` schemes):
    the same weights-only load with the same allow-list and the same checks.

    Args:
        data: the bytes ``torch.save`` wrote.
        source: where they came from (a URL or path), for messages.
        map_location: as in :func:`load_checkpoint`.

    Raises:
        CheckpointError: as :func:`load_checkpoint`, naming ``source``.
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CheckpointError(f"checkpoint {source}: expected bytes, got a {type(data).__name__}")
    data = bytes(data)
    with io.BytesIO(data) as buffer:
        checkpoint = _load_pickled(buffer, source, data[:16], map_location)
    return _checked_dict(checkpoint, source)


def _checked_dict(checkpoint, source):
    if not isinstance(checkpoint, dict):
        raise CheckpointError(
            f"checkpoint {source} holds a {type(checkpoint).__name__}, expected a dict "
            "(a state dict or a dict with a 'state_dict' entry)")
    return checkpoint


def save_checkpoint(obj: Any, path) -> None:
    """Write ``obj`` to ``path`` atomically: the file appears complete or not at all.

    A ``.safetensors`` path is written with ``safetensors.torch.save`` (``obj`` must then be a
    dict of tensors); any other path with :func:`torch.save`. Missing parent directories are
    created. If writing fails, ``path`` is left as it was and no temporary file remains.

    Args:
        obj: what to save, usually a dict with a ``'state_dict'`` entry.
        path: the destination file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        data = _safetensors_torch().save(obj)
        with atomic_write(path, "wb") as f:
            f.write(data)
        return
    with atomic_write(path, "wb") as f:
        torch.save(obj, f)


def load_weights(model: torch.nn.Module, state_dict: Mapping, *, checkpoint, target: str,
                 allow_unexpected: bool = False) -> None:
    """Load ``state_dict`` into ``model``, or raise one line that names the checkpoint.

    Args:
        model: the module to fill.
        state_dict: parameter name -> tensor (e.g. from :func:`extract_state_dict`).
        checkpoint: the file it came from (for the message).
        target: what the model is, for the message (``"config configs/x.py"``,
            ``"timm model 'resnet18' (num_classes=10)"``).
        allow_unexpected: accept keys the model does not have (e.g. a training-only module).

    Raises:
        CheckpointError: ``checkpoint X does not fit TARGET: ...`` -- the first shape mismatch
            (and how many more), or the missing / unexpected keys.
    """
    try:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # shape mismatches
        raise CheckpointError(f"checkpoint {checkpoint} does not fit {target}: {first_error_detail(exc)}") from exc
    if allow_unexpected:
        unexpected = []
    if missing or unexpected:
        raise CheckpointError(f"checkpoint {checkpoint} does not fit {target}: {len(missing)} missing keys "
                              f"{missing[:5]}, {len(unexpected)} unexpected keys {unexpected[:5]}")


def first_error_detail(exc: BaseException) -> str:
    """The first informative line of ``load_state_dict``'s multi-line error, for a one-line message."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else type(exc).__name__) + (
        f" (and {len(lines) - 2} more)" if len(lines) > 2 else "")


def extract_state_dict(checkpoint: Mapping, *, key: str | None = None) -> dict[str, torch.Tensor]:
    """Find the model weights in a loaded checkpoint.

    Without ``key`` the layouts tried, in order, are ``checkpoint['state_dict']`` (mmengine,
    timm ``train.py``), ``checkpoint['model']`` (DeiT / torchvision reference scripts) and the
    checkpoint itself when it is a dict of tensors. EMA weights (``'state_dict_ema'``,
    ``'ema_state_dict'``) are returned only when asked for by ``key``. When every key starts
    with ``'module.'`` (saved from a ``DistributedDataParallel`` wrapper) the prefix is
    stripped.

    Args:
        checkpoint: what :func:`load_checkpoint` returned.
        key: the entry holding the weights; ``None`` tries the layouts above.

    Returns:
        A new ``OrderedDict`` of parameter name -> tensor (with the source's ``_metadata``, so
        ``Module.load_state_dict`` still sees module versions).

    Raises:
        CheckpointError: ``key`` is missing or holds no tensors, or no layout matched; the
            message lists the top-level keys found.
    """
    if not isinstance(checkpoint, Mapping):
        raise CheckpointError(
            f"expected a checkpoint dict, got a {type(checkpoint).__name__}")
    if key is not None:
        if key not in checkpoint:
            raise CheckpointError(
                f"checkpoint has no {key!r} entry; top-level keys: {_key_list(checkpoint)}")
        if not _is_tensor_dict(checkpoint[key]):
            raise CheckpointError(
                f"checkpoint[{key!r}] is not a non-empty dict of tensors "
                f"(got {type(checkpoint[key]).__name__})")
        return _strip_prefix(checkpoint[key], "module.")
    for candidate in ("state_dict", "model"):
        if _is_tensor_dict(checkpoint.get(candidate)):
            return _strip_prefix(checkpoint[candidate], "module.")
    if _is_tensor_dict(checkpoint):
        return _strip_prefix(checkpoint, "module.")
    raise CheckpointError(
        "no state dict found in checkpoint: expected a 'state_dict' or 'model' entry holding "
        f"tensors, or a dict of tensors; top-level keys: {_key_list(checkpoint)} "
        "(pass key=... to pick one, e.g. key='state_dict_ema')")


def _restricted_getattr(obj, name, *default):
    """Stand-in for ``builtins.getattr`` while unpickling.

    Answers ``getattr(HistoryBuffer, name)`` for ``name`` in ``min``, ``max``, ``current``,
    ``mean`` (``obj`` must be mmengine's ``HistoryBuffer`` class itself, ``name`` an exact
    ``str``, and no default may be given); raises :class:`pickle.UnpicklingError` for any
    other lookup.
    """
    history_buffer = _history_buffer_class()
    if (not default and history_buffer is not None and obj is history_buffer
            and type(name) is str and name in _HISTORY_BUFFER_STATISTICS):
        return getattr(history_buffer, name)
    raise pickle.UnpicklingError(
        f"refused getattr({_describe(obj)}, {name!r}"
        f"{', <default>' if default else ''}): only getattr(HistoryBuffer, name) for name in "
        f"{sorted(_HISTORY_BUFFER_STATISTICS)} is allowed")


def _history_buffer_class():
    try:
        from mmengine.logging.history_buffer import HistoryBuffer
    except ImportError:
        return None
    return HistoryBuffer


def _describe(obj) -> str:
    cls = obj if isinstance(obj, type) else type(obj)
    name = f"{cls.__module__}.{cls.__qualname__}"
    return name if obj is cls else f"<{name} object>"


def _load_pickled(source, path, head: bytes, map_location):
    """``torch.load(source, weights_only=True)`` with the allow-list; ``path`` names it."""
    with _allow_listed(), _protect_statistics_registry(path):
        try:
            checkpoint = torch.load(source, map_location=map_location, weights_only=True)
        except Exception as e:  # UnpicklingError, RuntimeError, EOFError, ... for bad files
            raise CheckpointError(_load_error_message(path, head, e)) from e
    _check_instances(checkpoint, path)
    return checkpoint


# What a genuine HistoryBuffer instance holds after ``__setstate__`` (mmengine 0.10.7): its
# histories as numpy arrays and its maximum length. Nothing else may sit in the instance
# ``__dict__``: an instance attribute ``_statistics_methods`` would shadow the class registry
# that :func:`_protect_statistics_registry` guards, and ``statistics()`` would call from it.
_HISTORY_BUFFER_STATE = {"_log_history": "ndarray", "_count_history": "ndarray",
                         "max_length": "int"}


def _check_instances(checkpoint, path) -> None:
    """Refuse a loaded checkpoint whose allowed instances hold more than genuine ones do.

    The allow-list admits classes; this walks the containers of what was loaded (tensors are
    leaves, so the walk is cheap) and validates each ``HistoryBuffer`` instance's state and
    each ``argparse.Namespace``'s attributes (plain data only).
    """
    history_buffer = _history_buffer_class()
    import numpy as np

    stack, seen = [(checkpoint, "checkpoint")], set()
    while stack:
        obj, where = stack.pop()
        if isinstance(obj, (torch.Tensor, str, bytes, int, float, complex, bool, type(None),
                            np.ndarray, np.generic)):
            continue
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Mapping):
            stack.extend((v, f"{where}[{k!r}]") for k, v in obj.items())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(obj))
        elif history_buffer is not None and type(obj) is history_buffer:
            _check_history_buffer(obj, where, path)
        elif type(obj) is argparse.Namespace:
            stack.extend((v, f"{where}.{k}") for k, v in vars(obj).items())


def _check_history_buffer(buffer, where, path) -> None:
    import numpy as np

    state = vars(buffer)
    extra = sorted(set(state) - set(_HISTORY_BUFFER_STATE))
    missing = sorted(set(_HISTORY_BUFFER_STATE) - set(state))
    wrong = [k for k, kind in _HISTORY_BUFFER_STATE.items() if k in state and not (
        isinstance(state[k], np.ndarray) if kind == "ndarray"
        else type(state[k]) is int)]
    if extra or missing or wrong:
        raise CheckpointError(
            f"refused to load checkpoint {path}: the HistoryBuffer at {where} holds "
            + "; ".join(part for part in (
                f"unexpected attributes {extra}" if extra else "",
                f"no {missing}" if missing else "",
                f"attributes of the wrong type {wrong}" if wrong else "") if part)
            + f"; a genuine mmengine HistoryBuffer holds exactly {sorted(_HISTORY_BUFFER_STATE)}"
            " (numpy arrays and an int)")


def _allow_listed():
    if (hasattr(torch.serialization, "safe_globals")
            and torch.__version__ >= _SAFE_GLOBALS_MIN_TORCH):
        return torch.serialization.safe_globals(safe_globals())
    # Older torch: plain state dicts still load; anything else is refused by name.
    return contextlib.nullcontext()


@contextlib.contextmanager
def _protect_statistics_registry(path: Path):
    """Undo what a checkpoint registers in ``HistoryBuffer._statistics_methods``.

    ``HistoryBuffer.__setstate__`` merges the pickled ``statistics_methods`` into that
    class-level dict, which every buffer in the process shares. A genuine checkpoint can only
    (re)register the four defaults; anything else is rolled back and the load refused.
    """
    history_buffer = _history_buffer_class()
    if history_buffer is None:
        yield
        return
    registry = history_buffer._statistics_methods
    before = dict(registry)
    missing = object()
    loaded = False
    try:
        yield
        loaded = True
    finally:
        changed = sorted(k for k, v in registry.items() if before.get(k, missing) is not v)
        bad = [k for k in changed if not (k in _HISTORY_BUFFER_STATISTICS
                                         and registry[k] is getattr(history_buffer, k))]
        if bad:
            registry.clear()
            registry.update(before)
            if loaded:
                raise CheckpointError(
                    f"refused to load checkpoint {path}: it registers {bad} as HistoryBuffer "
                    "statistics methods; a genuine mmengine checkpoint registers only "
                    f"{sorted(_HISTORY_BUFFER_STATISTICS)}")


_REFUSED_GLOBAL = re.compile(r"GLOBAL (\S+?)\.? (?:was not an allowed global|whose module)")


def _load_error_message(path: Path, head: bytes, error: Exception) -> str:
    text = str(error)
    refused = _REFUSED_GLOBAL.search(text) if isinstance(error, pickle.UnpicklingError) else None
    # torch.save writes a zip archive; its legacy format starts with a protocol-2 pickle.
    looks_saved = head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"
    if not head:
        return f"checkpoint {path} is empty; expected a file written by torch.save"
    if not looks_saved:
        return (f"{path} is not a PyTorch checkpoint: expected a zip archive written by "
                f"torch.save or a .safetensors file, but the file starts with {head[:8]!r}"
                + (f" (read as a pickle it references {refused.group(1)}, which is refused)"
                   if refused else ""))
    if refused:
        name = refused.group(1)
        name = name if "." in name else f"builtins.{name}"  # torch drops the 'builtins.'
        return (f"refused to load checkpoint {path}: it references the global "
                f"{name}, which is not on the allow-list of checkpoint types "
                "(labelwise.checkpoint.safe_globals()); loading it could run code stored in "
                "the file")
    if isinstance(error, pickle.UnpicklingError):
        # Another refusal (a disallowed getattr, call or BUILD): torch's reason follows
        # 'WeightsUnpickler error:'.
        reason = text.split("WeightsUnpickler error:")[-1]
        reason = reason.split("Check the documentation of torch.load")[0].strip()
        return (f"refused to load checkpoint {path}: {reason}; expected only tensors, "
                "containers and the types in labelwise.checkpoint.safe_globals()")
    first_line = (text.strip().splitlines() or [type(error).__name__])[0]
    first_line = first_line.split(". This is an internal miniz error")[0]  # torch's advice follows
    return (f"checkpoint {path} is truncated or corrupt: expected a complete file written by "
            f"torch.save ({type(error).__name__}: {first_line})")


def _safetensors_torch():
    try:
        import safetensors.torch
    except ImportError as e:
        raise ImportError(
            "reading or writing .safetensors files needs the safetensors package: "
            "pip install safetensors") from e
    return safetensors.torch


def _load_safetensors(path: Path, map_location) -> dict:
    if map_location is None:  # torch.load's default; mmengine passes it
        map_location = "cpu"
    if isinstance(map_location, torch.device):
        map_location = str(map_location)
    if not isinstance(map_location, str):
        raise ConfigError(
            f"map_location={map_location!r} is not supported for .safetensors files; "
            "use a device string such as 'cpu' or 'cuda:0', or a torch.device")
    st = _safetensors_torch()
    try:
        return st.load_file(path, device=map_location)
    except Exception as e:  # safetensors raises SafetensorError, OSError, ...
        raise CheckpointError(
            f"checkpoint {path} is not a readable .safetensors file "
            f"({type(e).__name__}: {e})") from e


def _is_tensor_dict(value) -> bool:
    return (isinstance(value, Mapping) and len(value) > 0
            and all(isinstance(v, torch.Tensor) for v in value.values()))


def _strip_prefix(state_dict: Mapping, prefix: str) -> dict[str, torch.Tensor]:
    metadata = getattr(state_dict, "_metadata", None)
    strip = all(isinstance(k, str) and k.startswith(prefix) for k in state_dict)
    out = OrderedDict(
        (k[len(prefix):] if strip else k, v) for k, v in state_dict.items())
    if metadata is not None:
        module = prefix.rstrip(".")
        out._metadata = OrderedDict(
            (_strip_module_name(k, module) if strip else k, v) for k, v in metadata.items())
    return out


def _strip_module_name(name: str, module: str) -> str:
    # _metadata keys are module paths: '' (root), 'module' (the DDP wrapper's child), 'module.fc'
    if name == module:
        return ""
    return name[len(module) + 1:] if name.startswith(module + ".") else name


def _key_list(mapping: Mapping) -> str:
    keys = [repr(k) for k in list(mapping)[:20]]
    more = len(mapping) - len(keys)
    return "[" + ", ".join(keys) + (f", ... ({more} more)" if more > 0 else "") + "]"
