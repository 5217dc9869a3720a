"""The labelwise plugin interface (pluggy hook specifications).

A plugin is any module or object with functions named like the hooks below, each decorated
with :data:`labelwise.hookimpl`. Built-in methods are plugins too: they are registered through
exactly these hooks. Third-party plugins are found through the ``labelwise.plugins``
entry-point group::

    # setup.cfg of a third-party package
    [options.entry_points]
    labelwise.plugins =
        my_method = my_package.labelwise_plugin

All hooks are called with keyword arguments; a plugin may implement any subset of them and
may accept any subset of a hook's arguments.
"""
from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Union

import pluggy

if TYPE_CHECKING:  # for the annotations only: importing labelwise's manager here would be a cycle
    from labelwise.plugin_manager import MethodInfo

PROJECT_NAME = "labelwise"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def labelwise_methods() -> Iterable[Union[MethodInfo, Mapping[str, Any]]] | None:
    """Declare the methods this plugin provides.

    Called by :func:`labelwise.list_methods` and ``labelwise plugins``. Every plugin's result
    is collected (no first-result short-cut).

    Returns:
        A list of :class:`labelwise.MethodInfo` (or dicts with the same keys):

        * ``name`` (str): short unique method name, e.g. ``"pumlc"``;
        * ``summary`` (str): one line saying what the method does;
        * ``kind`` (str): one of :data:`labelwise.plugin_manager.METHOD_KINDS`
          (``"loss"``, ``"head"``, ``"module"``, ``"transform"``, ``"hook"``,
          ``"dataset"``, ``"metric"``, ``"tool"``);
        * ``paper`` (str): citation or URL of the method's paper (may be empty for tools);
        * ``types`` (tuple of str, optional): the mmengine registry names it registers,
          e.g. ``("labelwise.PUMLCLoss",)``.

        Return an empty list (or ``None``) to declare nothing.
    """


@hookspec
def labelwise_register_mm_modules(registries: Any) -> None:
    """Register this plugin's classes into labelwise's mmengine registries.

    Called once per process, the first time mmengine looks up a ``labelwise.*`` type (through
    the registries' ``locations=``), or explicitly by
    :func:`labelwise.registry.register_plugin_modules`. Import mmengine / mmpretrain code
    inside the implementation, never at the plugin module's top level, so that importing
    labelwise stays cheap.

    Args:
        registries: namespace with the child registries of scope ``labelwise``:
            ``MODELS``, ``TRANSFORMS``, ``DATASETS``, ``HOOKS``, ``METRICS``,
            ``MODEL_WRAPPERS`` and ``DATA_SAMPLERS``. Register with
            ``registries.MODELS.register_module(module=MyLoss)``; configs then use
            ``type='labelwise.MyLoss'``.

    Returns:
        Nothing; the return value is ignored.
    """


@hookspec
def labelwise_add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Contribute subcommands to the ``labelwise`` command line.

    Called once while the CLI parser is built, for every plugin.

    Args:
        subparsers: the :class:`argparse._SubParsersAction` of the ``labelwise`` parser. Add a
            command with ``parser = subparsers.add_parser("name", help=...)`` and set the
            function that runs it with ``parser.set_defaults(func=run)``, where
            ``run(args) -> int | None`` returns the exit status. Raise
            :class:`labelwise.LabelwiseError` for bad input: the CLI prints its message without
            a traceback.

    Returns:
        Nothing; the return value is ignored.
    """
