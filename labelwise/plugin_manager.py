"""Build the labelwise plugin manager: built-in plugins plus installed third-party ones."""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import importlib.metadata
import os
import warnings

import pluggy

from labelwise import hookspecs
from labelwise.errors import PluginError

#: Entry-point group that third-party plugins register under.
ENTRY_POINT_GROUP = "labelwise.plugins"
#: Set this environment variable to a non-empty value other than ``0`` to skip third-party
#: plugins (built-in plugins are always registered).
DISABLE_AUTOLOAD_ENV = "LABELWISE_DISABLE_PLUGIN_AUTOLOAD"
#: Modules of the built-in plugins, registered in this order.
BUILTIN_PLUGINS = (
    "labelwise.plugins.core",
    "labelwise.plugins.data",
    "labelwise.plugins.baseline",
    "labelwise.plugins.pumlc",
    "labelwise.plugins.labelpool",
    "labelwise.plugins.cleannet",
    "labelwise.plugins.refinery",
    "labelwise.plugins.cft",
    # one line per method plugin (labelwise/plugins/<method>/__init__.py)
)
#: Valid values of :attr:`MethodInfo.kind`.
METHOD_KINDS = ("loss", "head", "module", "transform", "hook", "dataset", "metric", "tool")


class PluginLoadWarning(UserWarning):
    """A third-party plugin could not be loaded or called; labelwise carries on without it."""


@dataclasses.dataclass(frozen=True)
class MethodInfo:
    """A method as declared by a plugin through ``labelwise_methods``."""

    name: str
    summary: str
    kind: str
    paper: str = ""
    types: tuple = ()
    plugin: str = ""

    def __post_init__(self):
        if self.kind not in METHOD_KINDS:
            raise PluginError(
                f"method {self.name!r} of plugin {self.plugin or '?'!r} has kind {self.kind!r}; "
                f"expected one of {', '.join(METHOD_KINDS)}"
            )
        object.__setattr__(self, "types", tuple(self.types))


@dataclasses.dataclass(frozen=True)
class PluginFailure:
    """Why a third-party plugin is missing from the manager."""

    name: str
    distribution: str
    error: str


class LabelwisePluginManager(pluggy.PluginManager):
    """A :class:`pluggy.PluginManager` that isolates broken third-party plugins.

    Hooks are called by pluggy itself (``pm.hook.<name>(...)`` or :func:`call_each`), so its
    contract holds: ``tryfirst`` / ``trylast``, wrappers (``wrapper=True`` and the old
    ``hookwrapper=True``), tracing (``pm.enable_tracing()``, ``pm.add_hookcall_monitoring``)
    and blocking a plugin by name (``get_plugin_manager(blocked=...)`` or ``pm.set_blocked``).
    Every implementation is guarded at registration: one of a third-party plugin that raises is
    skipped (its result is ``None``, a wrapper steps aside) with a :class:`PluginLoadWarning`
    and an entry in :attr:`failures`; a built-in that raises is a labelwise bug and raises.
    """

    def __init__(self):
        super().__init__(hookspecs.PROJECT_NAME)
        self.add_hookspecs(hookspecs)
        self.failures: list[PluginFailure] = []
        self.distributions: dict[str, str] = {}
        self._order: dict[str, int] = {}
        self._logs: list[list] = []  # results of the calls in progress (see collecting())

    def register(self, plugin, name: str | None = None):
        name = super().register(plugin, name)
        if name is None:  # blocked
            return None
        self._order.setdefault(name, len(self._order))
        for caller in self.get_hookcallers(plugin) or ():
            for impl in caller.get_hookimpls():
                if impl.plugin is plugin:
                    impl.function = self._guarded(impl)
        return name

    def order(self, name: str) -> int:
        """Registration index of plugin ``name`` (built-ins first, in :data:`BUILTIN_PLUGINS` order)."""
        return self._order.get(name, len(self._order))

    @contextlib.contextmanager
    def collecting(self, probe=None):
        """Record ``(plugin_name, result)`` of every non-wrapper implementation called in the block.

        Args:
            probe: optional callable, called after each implementation; its values are in the
                log's ``probed`` list (e.g. how many subcommands exist after each plugin ran).
        """
        log = _CallLog(probe)
        self._logs.append(log)
        try:
            yield log
        finally:
            self._logs.remove(log)

    def _failed(self, name: str, exc: BaseException) -> None:
        if self.is_builtin(name):
            raise exc
        self.record_failure(name, self.distributions.get(name, "?"), exc)

    def _guarded(self, impl):
        fn, name = impl.function, impl.plugin_name
        if impl.wrapper or impl.hookwrapper:
            return self._guarded_wrapper(fn, name)

        @functools.wraps(fn)
        def call(*args):
            try:
                result = fn(*args)
            except Exception as exc:  # a broken plugin must not break labelwise or the built-ins
                self._failed(name, exc)
                return None
            if self._logs:
                self._logs[-1].record(name, result)
            return result

        return call

    def _guarded_wrapper(self, fn, name):
        @functools.wraps(fn)
        def wrap(*args):
            try:
                gen = fn(*args)
                next(gen)
            except Exception as exc:  # failed before its yield: step aside, the call goes on
                self._failed(name, exc)
                return (yield)
            try:
                inner = yield
            except BaseException as exc:  # an inner implementation raised: the wrapper sees it
                try:
                    gen.throw(exc)
                except StopIteration as stop:
                    return stop.value
                raise RuntimeError(f"hook wrapper of plugin {name!r} yielded twice")
            try:
                gen.send(inner)
            except StopIteration as stop:
                return stop.value
            except Exception as exc:  # failed after its yield: the inner result stands
                self._failed(name, exc)
                return inner if not isinstance(inner, pluggy.Result) else None
            raise RuntimeError(f"hook wrapper of plugin {name!r} yielded twice")

        return wrap

    def record_failure(self, name: str, distribution: str, error: BaseException) -> None:
        failure = PluginFailure(name, distribution, f"{type(error).__name__}: {error}")
        self.failures.append(failure)
        warnings.warn(
            f"labelwise plugin {name!r} (from {distribution}) failed and is skipped: "
            f"{failure.error}",
            PluginLoadWarning,
            stacklevel=3,
        )

    def is_builtin(self, name: str) -> bool:
        return name in BUILTIN_PLUGINS


class _CallLog(list):
    """``(plugin_name, result)`` per implementation called, and the probe's value after each."""

    def __init__(self, probe=None):
        super().__init__()
        self.probe, self.probed = probe, []

    def record(self, name: str, result) -> None:
        self.append((name, result))
        if self.probe is not None:
            self.probed.append(self.probe())


def get_plugin_manager(*, autoload: bool | None = None, blocked=()) -> LabelwisePluginManager:
    """Return a fresh plugin manager with the built-in and third-party plugins registered.

    Args:
        autoload: load third-party plugins from the ``labelwise.plugins`` entry-point group.
            ``None`` (default) means yes unless the environment variable
            ``LABELWISE_DISABLE_PLUGIN_AUTOLOAD`` is set (to anything but ``""`` or ``"0"``).
        blocked: names of third-party plugins (entry-point names) not to load.

    Returns:
        A new :class:`LabelwisePluginManager`; nothing global is modified. A third-party plugin
        that fails to import or to register is skipped with a :class:`PluginLoadWarning`
        naming it and its distribution, and listed in ``manager.failures``.
    """
    pm = LabelwisePluginManager()
    for name in blocked:
        if name in BUILTIN_PLUGINS:
            raise PluginError(f"built-in plugin {name!r} cannot be blocked")
        pm.set_blocked(name)
    for modname in BUILTIN_PLUGINS:
        pm.register(importlib.import_module(modname), name=modname)
        pm.distributions[modname] = "labelwise (built-in)"
    if autoload is None:
        autoload = os.environ.get(DISABLE_AUTOLOAD_ENV, "") in ("", "0")
    if autoload:
        _load_entry_points(pm)
    return pm


def _load_entry_points(pm: LabelwisePluginManager) -> None:
    for ep in sorted(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = f"{ep.dist.name} {ep.dist.version}" if ep.dist is not None else ep.value
        if pm.has_plugin(ep.name) or pm.is_blocked(ep.name):
            continue
        try:
            plugin = ep.load()
            pm.register(plugin, name=ep.name)
        except Exception as exc:  # a broken plugin must not break labelwise or the built-ins
            pm.record_failure(ep.name, dist, exc)
            continue
        pm.distributions[ep.name] = dist


def call_each(pm: LabelwisePluginManager, hook_name: str, **kwargs) -> list:
    """Call one hook through pluggy; return ``(plugin_name, result)`` per implementation that ran.

    The list is in pluggy's call order (``tryfirst`` first, then the most recently registered
    first, ``trylast`` last; wrappers around all of them) and holds ``None`` results too. A
    failing third-party implementation is skipped with a :class:`PluginLoadWarning` (and
    recorded in ``pm.failures``); a failing built-in raises, since that is a labelwise bug.
    """
    with pm.collecting() as results:
        getattr(pm.hook, hook_name)(**kwargs)
    return results


def list_methods(pm: LabelwisePluginManager | None = None) -> list[MethodInfo]:
    """Return every method declared by the registered plugins, in registration order (built-ins first).

    Args:
        pm: a plugin manager; a fresh one from :func:`get_plugin_manager` if ``None``.

    Raises:
        PluginError: two plugins declare the same method name.
    """
    pm = get_plugin_manager() if pm is None else pm
    methods: list[MethodInfo] = []
    seen: dict[str, str] = {}
    declared_by = sorted(call_each(pm, "labelwise_methods"), key=lambda item: pm.order(item[0]))
    for plugin_name, declared in declared_by:
        try:
            infos = [_to_method_info(item, plugin_name) for item in declared or ()]
        except (PluginError, TypeError) as exc:
            if pm.is_builtin(plugin_name):
                raise
            pm.record_failure(plugin_name, pm.distributions.get(plugin_name, "?"), exc)
            continue
        for info in infos:
            if info.name in seen:
                raise PluginError(
                    f"method {info.name!r} is declared by both plugin {seen[info.name]!r} "
                    f"and plugin {plugin_name!r}"
                )
            seen[info.name] = plugin_name
            methods.append(info)
    return methods


def _to_method_info(item, plugin_name: str) -> MethodInfo:
    if isinstance(item, MethodInfo):
        return dataclasses.replace(item, plugin=plugin_name)
    if isinstance(item, dict):
        return MethodInfo(**{**item, "plugin": plugin_name})
    raise PluginError(
        f"plugin {plugin_name!r} declared a method as {type(item).__name__}; "
        "expected labelwise.MethodInfo or a dict"
    )


def table_types(*tables) -> tuple[str, ...]:
    """``('labelwise.Name', ...)`` of registration tables ``{registry name: (class names)}``, in order, once each.

    A plugin keeps one table per method and derives both its :attr:`MethodInfo.types` and its
    registrations from it (:func:`register_table`), so the two cannot drift apart.
    """
    names = []
    for table in tables:
        for classes in table.values():
            names.extend(f"labelwise.{name}" for name in classes if f"labelwise.{name}" not in names)
    return tuple(names)


def register_table(registries, module, *tables) -> None:
    """Register ``module``'s classes named in ``tables`` into ``registries`` (e.g. ``registries.MODELS``)."""
    done = set()
    for table in tables:
        for registry, classes in table.items():
            for name in classes:
                if (registry, name) not in done:
                    getattr(registries, registry).register_module(module=getattr(module, name))
                    done.add((registry, name))
