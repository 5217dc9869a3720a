"""Integrations with training frameworks; the only place that imports mmengine, mmpretrain or timm.

* :mod:`labelwise.adapters.mmpretrain` -- datasets, transforms and runner helpers for
  mmpretrain / mmengine (needs ``pip install 'labelwise[mm]' mmcv-lite``);
* :mod:`labelwise.adapters.timm` -- timm training tasks (needs ``pip install 'labelwise[timm]'``);
* :mod:`labelwise.adapters.torch` -- datasets and a small training loop for plain PyTorch.
"""
from __future__ import annotations

import importlib


def require(module: str, extra: str):
    """Import ``module`` or raise an ImportError that names the ``pip install`` to run."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"labelwise needs {module!r} for this feature: pip install 'labelwise[{extra}]'"
            + (" mmcv-lite" if extra == "mm" else "")
            + f" ({exc})"
        ) from exc
