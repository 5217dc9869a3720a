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
    from labelwise.plugin_manager import call_each, get_plugin_manager

    pm = get_plugin_manager() if pm is None else pm
    parser = argparse.ArgumentParser(
        prog="labelwise", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"labelwise {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _ in call_each(pm, "labelwise_add_commands", subparsers=subparsers):
        pass
    parser.set_defaults(func=None, _parser=parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``labelwise`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.func is None:
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        status = args.func(args)
    except LabelwiseError as exc:
        if args.debug:
            raise
        print(f"labelwise {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"labelwise {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(status or 0)
