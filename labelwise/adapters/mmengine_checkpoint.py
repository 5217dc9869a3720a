"""Make mmengine read its own checkpoints safely under torch >= 2.6 (``resume`` / ``load_from``).

mmengine 0.10.7's local checkpoint loader calls ``torch.load(filename)`` without
``weights_only``; under torch >= 2.6 that means weights-only unpickling *without* the globals a
Runner checkpoint needs (``HistoryBuffer``, numpy scalars and dtypes, a ``getattr`` lookup), so
``Runner(resume=True)``, ``tools/train.py --resume`` and ``load_from=...`` fail with "Weights
only load failed". :func:`install_safe_checkpoint_loader` re-registers mmengine's local-file
scheme with :func:`labelwise.checkpoint.load_checkpoint`: the same weights-only load, through
labelwise's allow-list (no ``weights_only=False``, no environment switch, no raw
``builtins.getattr``).

It is installed whenever labelwise is imported into a process that already has
``mmengine.runner`` (the case of ``custom_imports=dict(imports=['labelwise'])`` in a config run
by mmengine's Runner or mmpretrain's ``tools/train.py``), and when :mod:`labelwise.registry` is
imported. Other schemes (``http://``, ``s3://``, ...) are left to mmengine.
"""
from __future__ import annotations

import os.path as osp

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
