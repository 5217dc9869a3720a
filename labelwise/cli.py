"""The ``labelwise`` command line. Subcommands come from plugins (``labelwise_add_commands``)."""
from __future__ import annotations

import argparse
import sys

from labelwise.errors import LabelwiseError

DESCRIPTION = """\
labelwise: learning from imperfect labels (partial, noisy, single-label-for-multi-object)
as plugins for mmpretrain, timm and plain PyTorch.

Start with:
  labelwise plugins            list the methods provided by built-in and installed plugins
  labelwise data make ROOT     generate the built-in digit-scenes benchmark data
  labelwise train ...          train a baseline (mmpretrain Runner, timm or plain PyTorch)
  labelwise demo               the end-to-end demo on the built-in data

Run `labelwise COMMAND --help` for a command's options. Errors in the input are reported
without a traceback; add --debug to see it.
"""


def build_parser(pm=None) -> argparse.ArgumentParser:
    """Return the ``labelwise`` parser with every plugin's subcommands added."""
    from labelwise import __version__
    from labelwise.plugin_manager import get_plugin_manager

    pm = get_plugin_manager() if pm is None else pm
    parser = argparse.ArgumentParser(
        prog="labelwise", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"labelwise {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    with pm.collecting(probe=lambda: len(subparsers._choices_actions)) as log:
        pm.hook.labelwise_add_commands(subparsers=subparsers)
    _list_in_registration_order(subparsers, log, pm)
    parser.set_defaults(func=None, _parser=parser)
    return parser


def _list_in_registration_order(subparsers, log, pm) -> None:
    """List the commands in ``--help`` by plugin registration order (built-ins first).

    pluggy calls the most recently registered plugin first; the help lists each plugin's
    commands in the order it added them, plugins in the order they were registered.
    """
    actions, owners, start = subparsers._choices_actions, [], 0
    for (name, _), end in zip(log, log.probed):
        owners += [name] * (end - start)
        start = end
    owners += [None] * (len(actions) - len(owners))  # added by a wrapper: listed last
    ranked = sorted(range(len(actions)), key=lambda i: pm.order(owners[i]) if owners[i] else float("inf"))
    actions[:] = [actions[i] for i in ranked]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``labelwise`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.func is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        check_device(getattr(args, "device", None))
        status = args.func(args)
    except (LabelwiseError, OSError, MemoryError) as exc:
        if args.debug:
            raise
        message = exc if isinstance(exc, LabelwiseError) else resource_error_message(exc)
        print(f"labelwise {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"labelwise {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)


def check_device(device) -> None:
    """Refuse a ``--device`` this machine does not have, before any work starts.

    Raises:
        ConfigError: not a torch device string, or a CUDA / MPS device that is not available.
    """
    if device is None or str(device) == "cpu":
        return
    import torch

    from labelwise.errors import ConfigError

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"--device {device!r} is not a torch device (e.g. cpu, cuda, cuda:1)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {device}: CUDA is not available here (torch {torch.__version__}, "
                              f"built for CUDA {torch.version.cuda or 'none'}); use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ConfigError(f"--device {device}: MPS is not available here; use --device cpu")


def resource_error_message(exc: BaseException) -> str:
    """One line for an error of the machine rather than of the input: the path and what to do."""
    import errno

    if isinstance(exc, MemoryError):
        detail = f" ({exc})" if str(exc) else ""
        return (f"out of memory{detail}; an input may be far larger than it should be (check its size and "
                "header) or the batch too large for this machine")
    name = exc.filename if exc.filename is not None else "a file"
    if exc.filename2 is not None:
        name = f"{name} -> {exc.filename2}"
    if isinstance(exc, PermissionError):
        return f"permission denied: {name}; choose a path you can read / write, or change its permissions"
    if isinstance(exc, NotADirectoryError):
        return f"{name}: a file is where a folder is expected (part of this path is a file); choose another path"
    if isinstance(exc, IsADirectoryError):
        return f"{name} is a folder where a file is expected; give a file name"
    if isinstance(exc, FileNotFoundError):
        return f"{name}: no such file or folder"
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device writing {name}; free some space and run the same command "
                "again (finished work is kept)")
    if exc.errno == errno.EROFS:
        return f"{name} is on a read-only file system; choose another path"
    return f"{name}: {exc.strerror or exc}"
