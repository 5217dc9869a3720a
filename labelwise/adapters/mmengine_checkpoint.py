"""Make mmengine read its own checkpoints safely under torch >= 2.6 (``resume`` / ``load_from``).

mmengine 0.10.7's local checkpoint loader calls ``torch.load(filename)`` without
``weights_only``; under torch >= 2.6 that means weights-only unpickling *without* the globals a
Runner checkpoint needs (``HistoryBuffer``, numpy scalars and dtypes, a ``getattr`` lookup), so
``Runner(resume=True)``, ``tools/train.py --resume`` and ``load_from=...`` fail with "Weights
only load failed". :func:`install_safe_checkpoint_loader` re-registers mmengine's local-file
scheme with :func:`labelwise.checkpoint.load_checkpoint`: the same weights-only load, through
labelwise's allow-list (weights-only loading is never switched off, no environment switch, no raw
``builtins.getattr``).

Importing :mod:`labelwise` installs it: at once if ``mmengine.runner.checkpoint`` is already
imported (the case of ``custom_imports=dict(imports=['labelwise'])`` in a config run by
mmengine's Runner or mmpretrain's ``tools/train.py``), otherwise right after mmengine imports
that module (:func:`install_when_mmengine_loads`, a one-shot import hook; importing labelwise
does not import mmengine). Importing :mod:`labelwise.registry` or
:mod:`labelwise.adapters.mmpretrain` installs it too. Other schemes (``http://``, ``s3://``,
...) are left to mmengine.
"""
from __future__ import annotations

import importlib.abc
import os.path as osp
import sys

#: Marker attribute on the installed loader, so installing twice is a no-op.
_MARKER = "__labelwise_safe_loader__"


def load_from_local(filename, map_location):
    """mmengine's local-file loader, reading through :func:`labelwise.checkpoint.load_checkpoint`.

    Same contract as ``mmengine.runner.checkpoint.load_from_local``: ``FileNotFoundError`` for a
    missing file; otherwise the checkpoint dict, or :class:`labelwise.errors.CheckpointError`
    naming the file and the reason (e.g. a global outside the allow-list).
    """
    from labelwise.checkpoint import load_checkpoint

    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f"{filename} can not be found.")
    return load_checkpoint(filename, map_location=map_location)


setattr(load_from_local, _MARKER, True)


def install_safe_checkpoint_loader() -> bool:
    """Register :func:`load_from_local` for mmengine's local paths (idempotent).

    Returns:
        True if it was installed by this call, False if it already was.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    if getattr(CheckpointLoader._schemes.get(""), _MARKER, False):
        return False
    CheckpointLoader.register_scheme(prefixes="", loader=load_from_local, force=True)
    return True


_CHECKPOINT_MODULE = "mmengine.runner.checkpoint"


class _InstallAfterImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; wraps the loader of mmengine's checkpoint module so that the safe
    loader is installed as soon as that module has run."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _CHECKPOINT_MODULE:
            return None
        sys.meta_path.remove(self)  # one shot; also avoids finding ourselves below
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None and spec.loader is not None and hasattr(spec.loader, "exec_module"):
                original = spec.loader.exec_module

                def exec_module(module, _original=original):
                    _original(module)
                    install_safe_checkpoint_loader()

                spec.loader.exec_module = exec_module
                return spec
        return None


def install_when_mmengine_loads() -> None:
    """Install the safe loader now if mmengine's checkpoint module is loaded, else when it is."""
    if _CHECKPOINT_MODULE in sys.modules:
        install_safe_checkpoint_loader()
    elif not any(isinstance(f, _InstallAfterImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _InstallAfterImport())
