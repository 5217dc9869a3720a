"""Make every checkpoint mmengine reads go through labelwise's safe loader, whatever the scheme.

mmengine 0.10.7 reads checkpoints through ``CheckpointLoader``, one loader per path scheme, and
none of them is safe under torch >= 2.6:

- local files: ``torch.load(filename)`` without ``weights_only``, i.e. weights-only unpickling
  *without* the globals a Runner checkpoint needs (``HistoryBuffer``, numpy scalars and dtypes,
  a ``getattr`` lookup): ``Runner(resume=True)``, ``tools/train.py --resume`` and
  ``load_from=...`` fail with "Weights only load failed";
- ``http://`` / ``https://``, and the model-zoo names that resolve to URLs (``torchvision://``,
  ``modelzoo://``, ``open-mmlab://``, ``openmmlab://``, ``mmcls://``): through
  ``torch.hub.load_state_dict_from_url``, whose ``weights_only`` defaults to ``False``, so a
  crafted file at that URL (or already in the torch hub cache) runs code;
- ``s3://`` / ``petrel://`` and ``pavi://``: ``torch.load`` without the allow-list.

:func:`install_safe_checkpoint_loader` re-registers every one of these schemes with a loader of
the same name and contract that fetches what mmengine would fetch (into the same torch hub
cache, rank 0 first in a distributed run) and reads it with
:func:`labelwise.checkpoint.load_checkpoint`: weights-only, through labelwise's allow-list
(weights-only loading is never switched off, no environment switch, no raw
``builtins.getattr``). That covers ``load_checkpoint``, ``load_from``, ``resume`` (a
``last_checkpoint`` naming a URL included) and ``init_cfg=dict(type='Pretrained', ...)``,
which all go through ``CheckpointLoader``.

Where it is installed (idempotent; no import hook, nothing added to ``sys.meta_path``):

- importing :mod:`labelwise` when ``mmengine.runner.checkpoint`` is already imported: the case
  of ``custom_imports=dict(imports=['labelwise'])`` in a config run by mmengine's Runner or
  mmpretrain's ``tools/train.py`` (:func:`install_if_mmengine_loaded`; importing labelwise
  never imports mmengine itself);
- importing :mod:`labelwise.registry` (mmengine does when a config names a ``labelwise.``
  type, before any checkpoint is read) or :mod:`labelwise.adapters.mmpretrain` (every labelwise
  command, workflow and training function that runs mmengine goes through it);
- calling :func:`install_safe_checkpoint_loader` yourself, e.g. in a script that imports
  labelwise before mmengine and builds a Runner from a config without ``labelwise.`` types.
"""
from __future__ import annotations

import logging
import os
import os.path as osp
import sys
import tempfile
from urllib.parse import urlparse

#: Marker attribute on the installed loaders, so installing twice is a no-op.
_MARKER = "__labelwise_safe_loader__"


def _safe(func):
    setattr(func, _MARKER, True)
    return func


@_safe
def load_from_local(filename, map_location=None):
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


@_safe
def load_from_http(filename, map_location=None, model_dir=None, progress=None):
    """``http(s)://`` checkpoints: fetched into the torch hub cache, then read weights-only.

    The cache is the one ``torch.hub.load_state_dict_from_url`` (and so mmengine) uses,
    ``<torch.hub.get_dir()>/checkpoints/<file name of the URL>`` unless ``model_dir`` is
    given; a file already there is read without downloading. In a distributed run rank 0
    downloads first and the other ranks read its copy after a barrier, as mmengine does.

    Raises:
        CheckpointError: the URL names no file, the download fails, or the file is not a
            checkpoint labelwise reads safely (the message names the URL and the cached file).
    """
    from mmengine.dist import get_dist_info

    rank, world_size = get_dist_info()
    if rank == 0:
        cached = fetch_url(filename, model_dir=model_dir, progress=progress)
    if world_size > 1:
        import torch.distributed

        torch.distributed.barrier()
        if rank > 0:
            cached = fetch_url(filename, model_dir=model_dir, progress=progress)
    return _load_cached(cached, filename, map_location)


@_safe
def load_from_torchvision(filename, map_location=None):
    """``torchvision://NAME`` (and the deprecated ``modelzoo://NAME``): the URL mmengine maps
    NAME to, through :func:`load_from_http`."""
    from mmengine.runner import checkpoint as mm

    if filename.startswith("modelzoo://"):
        mm.print_log('The URL scheme of "modelzoo://" is deprecated, please use '
                     '"torchvision://" instead', logger="current", level=logging.WARNING)
    name = filename.split("://", 1)[1]
    return load_from_http(_model_url(mm.get_torchvision_models(), name, filename),
                          map_location=map_location)


@_safe
def load_from_openmmlab(filename, map_location=None):
    """``open-mmlab://NAME`` / ``openmmlab://NAME``: a URL through :func:`load_from_http`, or a
    file under mmengine's home through :func:`load_from_local`, as mmengine resolves NAME."""
    from mmengine.runner import checkpoint as mm

    prefix, name = filename.split("://", 1)
    deprecated = mm.get_deprecated_model_names()
    if name in deprecated:
        mm.print_log(f"{prefix}://{name} is deprecated in favor of {prefix}://{deprecated[name]}",
                     logger="current", level=logging.WARNING)
        name = deprecated[name]
    url = _model_url(mm.get_external_models(), name, filename)
    if url.startswith(("http://", "https://")):
        return load_from_http(url, map_location=map_location)
    return load_from_local(osp.join(mm._get_mmengine_home(), url), map_location)


@_safe
def load_from_mmcls(filename, map_location=None):
    """``mmcls://NAME``: the URL mmengine maps NAME to, through :func:`load_from_http`, with
    mmengine's mmcls-to-mmpretrain key conversion."""
    from mmengine.runner import checkpoint as mm

    name = filename.split("://", 1)[1]
    checkpoint = load_from_http(_model_url(mm.get_mmcls_models(), name, filename),
                                map_location=map_location)
    return mm._process_mmcls_checkpoint(checkpoint)


@_safe
def load_from_ceph(filename, map_location=None, backend="petrel"):
    """``s3://`` / ``petrel://`` (optionally ``NAME:s3://``): the bytes mmengine's file backend
    returns, read weights-only with :func:`labelwise.checkpoint.load_checkpoint_bytes`."""
    from mmengine.fileio import get_file_backend

    from labelwise.checkpoint import load_checkpoint_bytes

    data = get_file_backend(filename, backend_args={"backend": backend}).get(filename)
    return load_checkpoint_bytes(data, source=filename, map_location=map_location)


@_safe
def load_from_pavi(filename, map_location=None):
    """``pavi://``: downloaded by the ``pavi`` package into a temporary folder, then read
    weights-only with :func:`labelwise.checkpoint.load_checkpoint`."""
    from labelwise.checkpoint import load_checkpoint

    try:
        from pavi import modelcloud
    except ImportError as e:
        raise ImportError("Please install pavi to load checkpoint from modelcloud.") from e
    model = modelcloud.get(filename[len("pavi://"):])
    with tempfile.TemporaryDirectory() as tmp:
        downloaded = osp.join(tmp, osp.basename(str(model.name)) or "checkpoint.pth")
        model.download(downloaded)
        return load_checkpoint(downloaded, map_location=map_location)


#: mmengine 0.10.7's schemes and the loader that replaces each. ``test_mmengine_url_schemes``
#: checks that no scheme mmengine registers is left out.
SAFE_SCHEMES = {
    "": load_from_local,
    "http://": load_from_http,
    "https://": load_from_http,
    "modelzoo://": load_from_torchvision,
    "torchvision://": load_from_torchvision,
    "open-mmlab://": load_from_openmmlab,
    "openmmlab://": load_from_openmmlab,
    "mmcls://": load_from_mmcls,
    r"(\S+\:)?s3://": load_from_ceph,
    r"(\S+\:)?petrel://": load_from_ceph,
    "pavi://": load_from_pavi,
}


def fetch_url(url: str, *, model_dir=None, progress=None) -> str:
    """Download ``url`` into the torch hub cache (unless it is there) and return the file's path.

    Args:
        url: an ``http://`` or ``https://`` URL naming a file.
        model_dir: the cache folder; defaults to ``<torch.hub.get_dir()>/checkpoints``, where
            ``torch.hub.load_state_dict_from_url`` keeps its files.
        progress: show a download progress bar; defaults to whether stdin is a terminal, as in
            mmengine.

    Raises:
        CheckpointError: the URL names no file, or the download fails.
    """
    import torch.hub

    from labelwise.errors import CheckpointError

    model_dir = model_dir or osp.join(torch.hub.get_dir(), "checkpoints")
    name = osp.basename(urlparse(url).path)
    if not name:
        raise CheckpointError(f"checkpoint URL {url} names no file (expected .../NAME.pth)")
    cached = osp.join(model_dir, name)
    if not osp.exists(cached):
        try:
            os.makedirs(model_dir, exist_ok=True)
            sys.stderr.write(f'Downloading: "{url}" to {cached}\n')
            # download_url_to_file writes a temporary file and renames it when complete
            torch.hub.download_url_to_file(
                url, cached, None, progress=os.isatty(0) if progress is None else progress)
        except (OSError, ValueError) as e:  # URLError is an OSError
            raise CheckpointError(
                f"cannot download checkpoint {url} to {cached}: {getattr(e, 'reason', e)}; "
                "without network access, put the file there first") from e
    return cached


def _load_cached(cached: str, url: str, map_location):
    """Read a file fetched from ``url``; a legacy zip (one ``torch.save`` file from
    torch < 1.6 inside a zip) is unpacked next to it first, as torch.hub does."""
    import torch.hub

    from labelwise.checkpoint import load_checkpoint

    if torch.hub._is_legacy_zip_format(cached):
        cached = _unpack_legacy_zip(cached)
    return load_checkpoint(cached, map_location=map_location)


def _unpack_legacy_zip(path: str) -> str:
    """Extract the zip's single member beside it (by its base name only) and return its path."""
    import shutil
    import zipfile

    from labelwise.utils.fileio import atomic_write

    with zipfile.ZipFile(path) as archive:
        (member,) = archive.infolist()
        target = osp.join(osp.dirname(path), osp.basename(member.filename))
        if not osp.exists(target):
            with archive.open(member) as src, atomic_write(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
    return target


def _model_url(urls: dict, name: str, filename: str) -> str:
    from labelwise.errors import CheckpointError

    if name not in urls:
        known = sorted(urls)
        raise CheckpointError(
            f"unknown model name {name!r} in checkpoint {filename}; mmengine knows "
            f"{len(known)} names, e.g. {known[:5]}")
    return urls[name]


def install_safe_checkpoint_loader() -> bool:
    """Register labelwise's loaders for all of mmengine's checkpoint schemes (idempotent).

    Returns:
        True if any loader was installed by this call, False if all already were.
    """
    from mmengine.runner.checkpoint import CheckpointLoader

    changed = False
    for prefix, loader in SAFE_SCHEMES.items():
        if not getattr(CheckpointLoader._schemes.get(prefix), _MARKER, False):
            CheckpointLoader.register_scheme(prefixes=prefix, loader=loader, force=True)
            changed = True
    return changed


_CHECKPOINT_MODULE = "mmengine.runner.checkpoint"


def install_if_mmengine_loaded() -> bool:
    """Install the safe loader if mmengine's checkpoint module is already imported (else do nothing).

    Returns:
        True if it is installed now (by this call or an earlier one).
    """
    if _CHECKPOINT_MODULE not in sys.modules:
        return False
    install_safe_checkpoint_loader()
    return True
