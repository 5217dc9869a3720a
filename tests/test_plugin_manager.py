import json
import os
import sys

import pytest

import labelwise
from labelwise.plugin_manager import (
    BUILTIN_PLUGINS, DISABLE_AUTOLOAD_ENV, MethodInfo, PluginLoadWarning, get_plugin_manager,
    list_methods,
)
from labelwise.errors import PluginError
from conftest import run_python


def test_fresh_manager_each_call_with_builtins():
    pm1, pm2 = get_plugin_manager(autoload=False), get_plugin_manager(autoload=False)
    assert pm1 is not pm2
    names = [name for name, _ in pm1.list_name_plugin()]
    assert names == list(BUILTIN_PLUGINS)


def test_import_labelwise_stays_cheap():
    code = (
        "import sys, labelwise; labelwise.list_methods(labelwise.get_plugin_manager()); "
        "import labelwise.cli; labelwise.cli.build_parser(); "
        "print(','.join(m for m in ('mmengine','mmpretrain','mmcv','timm','onnxruntime','sklearn') "
        "if m in sys.modules))"
    )
    out = run_python("-c", code).stdout.strip()
    assert out == ""


def test_builtin_methods_declared_with_valid_kinds():
    methods = list_methods(get_plugin_manager(autoload=False))
    assert methods, "built-in plugins declare no method"
    for m in methods:
        assert m.plugin in BUILTIN_PLUGINS
        assert m.kind in labelwise.plugin_manager.METHOD_KINDS


def test_method_info_rejects_unknown_kind():
    with pytest.raises(PluginError, match="kind 'optimizer'"):
        MethodInfo(name="x", summary="y", kind="optimizer")


class _BadKindPlugin:
    @labelwise.hookimpl
    def labelwise_methods(self):
        return [{"name": "bad", "summary": "s", "kind": "nonsense"}]


class _RaisingPlugin:
    @labelwise.hookimpl
    def labelwise_methods(self):
        raise RuntimeError("boom")


@pytest.mark.parametrize("plugin", [_BadKindPlugin(), _RaisingPlugin()])
def test_broken_third_party_hook_is_skipped_with_warning(plugin):
    pm = get_plugin_manager(autoload=False)
    pm.register(plugin, name="thirdparty")
    with pytest.warns(PluginLoadWarning, match="'thirdparty'"):
        methods = list_methods(pm)
    assert {m.plugin for m in methods} == set(BUILTIN_PLUGINS) & {m.plugin for m in methods}
    assert [f.name for f in pm.failures] == ["thirdparty"]


def test_duplicate_method_name_is_an_error():
    class Dup:
        @labelwise.hookimpl
        def labelwise_methods(self):
            return [list_methods(get_plugin_manager(autoload=False))[0]]

    pm = get_plugin_manager(autoload=False)
    pm.register(Dup(), name="dup")
    with pytest.raises(PluginError, match="declared by both"):
        list_methods(pm)


def _plugins_json(env):
    out = run_python("-m", "labelwise", "plugins", "--json", env=env).stdout
    return json.loads(out)


def test_installed_third_party_plugin_is_loaded(dummy_plugin_path):
    env = {"PYTHONPATH": str(dummy_plugin_path), DISABLE_AUTOLOAD_ENV: ""}
    proc = run_python("-m", "labelwise", "plugins", "--json", env=env)
    data = json.loads(proc.stdout)
    plugin_names = [p["name"] for p in data["plugins"]]
    assert plugin_names[: len(BUILTIN_PLUGINS)] == list(BUILTIN_PLUGINS)
    assert "dummy" in plugin_names
    dummy = [m for m in data["methods"] if m["plugin"] == "dummy"]
    assert dummy == [{
        "name": "dummy-l1", "summary": "L1 distance between sigmoid scores and targets (test plugin)",
        "kind": "loss", "paper": "none", "types": ["labelwise.DummyL1Loss"], "plugin": "dummy",
    }]
    dist = {p["name"]: p["distribution"] for p in data["plugins"]}["dummy"]
    assert dist == "labelwise-dummy-plugin 0.0.1"
    # the broken entry point is reported by name and does not stop the others
    assert [f["name"] for f in data["failures"]] == ["broken"]
    assert "labelwise_dummy_plugin.broken needs a package" in data["failures"][0]["error"]
    assert "labelwise plugin 'broken' (from labelwise-dummy-plugin 0.0.1) failed" in proc.stderr


def test_table_output_lists_third_party_and_failures(dummy_plugin_path):
    out = run_python("-m", "labelwise", "plugins", env={"PYTHONPATH": str(dummy_plugin_path)}).stdout
    assert "dummy-l1" in out and "loss" in out
    assert "Failed plugins (skipped):" in out and "broken" in out


def test_env_var_disables_autoload(dummy_plugin_path):
    data = _plugins_json({"PYTHONPATH": str(dummy_plugin_path), DISABLE_AUTOLOAD_ENV: "1"})
    assert [p["name"] for p in data["plugins"]] == list(BUILTIN_PLUGINS)
    assert data["failures"] == []


def test_third_party_cli_command(dummy_plugin_path):
    proc = run_python("-m", "labelwise", "dummy", "--name", "tests",
                      env={"PYTHONPATH": str(dummy_plugin_path)})
    assert proc.stdout.strip() == "hello tests from labelwise-dummy-plugin"


def test_third_party_type_builds_from_mmpretrain_config(dummy_plugin_path, tmp_path):
    cfg = tmp_path / "cfg.py"
    cfg.write_text(
        "custom_imports = dict(imports=['labelwise'], allow_failed_imports=False)\n"
        "default_scope = 'mmpretrain'\n"
        "loss = dict(type='labelwise.DummyL1Loss', loss_weight=2.0)\n"
    )
    code = (
        "import sys, torch\n"
        "from mmengine.config import Config\n"
        "from mmengine.registry import init_default_scope\n"
        "from mmpretrain.registry import MODELS\n"
        f"cfg = Config.fromfile({str(cfg)!r})\n"
        "init_default_scope('mmpretrain')\n"
        "loss = MODELS.build(cfg.loss)\n"
        "print(type(loss).__module__, type(loss).__name__, loss.loss_weight)\n"
    )
    out = run_python("-c", code, env={"PYTHONPATH": str(dummy_plugin_path)}).stdout.strip().splitlines()[-1]
    assert out == "labelwise_dummy_plugin.loss DummyL1Loss 2.0"


def test_commands_and_methods_come_in_registration_order(dummy_plugin_path):
    out = run_python("-m", "labelwise", "--help", env={"PYTHONPATH": str(dummy_plugin_path)}).stdout
    positions = [out.index(f"\n    {name} ") for name in ("plugins", "data", "train", "demo", "dummy")]
    assert positions == sorted(positions)
    data = _plugins_json({"PYTHONPATH": str(dummy_plugin_path)})
    assert data["methods"][-1]["plugin"] == "dummy"


def _declaring(name, **opts):
    class Plugin:
        @labelwise.hookimpl(**opts)
        def labelwise_methods(self):
            order.append(name)
            return [{"name": name, "summary": "s", "kind": "tool"}]

    return Plugin()


order: list = []


def test_hooks_are_called_by_pluggy_with_tryfirst_and_trylast():
    order.clear()
    pm = get_plugin_manager(autoload=False)
    for name, opts in (("first", {"tryfirst": True}), ("plain", {}), ("last", {"trylast": True})):
        pm.register(_declaring(name, **opts), name=name)
    methods = list_methods(pm)
    # pluggy's call order: tryfirst, then the most recently registered, trylast after them
    assert order == ["first", "plain", "last"]
    # the list stays in registration order: built-ins first, then these three as registered
    assert [m.name for m in methods][-3:] == ["first", "plain", "last"]
    assert {m.name: m.plugin for m in methods}["first"] == "first"


def test_a_wrapper_wraps_the_call_and_tracing_sees_it():
    class Wrapper:
        @labelwise.hookimpl(wrapper=True)
        def labelwise_methods(self):
            result = yield
            return [*result, [{"name": "added-by-wrapper", "summary": "s", "kind": "tool"}]]

    pm = get_plugin_manager(autoload=False)
    pm.register(Wrapper(), name="wrapper")
    seen = []
    undo = pm.add_hookcall_monitoring(lambda hook, impls, kw: seen.append(hook), lambda *a: None)
    results = pm.hook.labelwise_methods()
    undo()
    assert seen == ["labelwise_methods"]
    assert results[-1][0]["name"] == "added-by-wrapper"
    assert not pm.failures  # not mistaken for a broken plugin


@pytest.mark.parametrize("where", ["before", "after"])
def test_a_broken_wrapper_steps_aside(where):
    class Broken:
        @labelwise.hookimpl(wrapper=True)
        def labelwise_methods(self):
            if where == "before":
                raise RuntimeError("broken before its yield")
            yield
            raise RuntimeError("broken after its yield")

    pm = get_plugin_manager(autoload=False)
    pm.register(Broken(), name="brokenwrapper")
    with pytest.warns(PluginLoadWarning, match=f"'brokenwrapper'.*broken {where} its yield"):
        methods = list_methods(pm)
    assert {m.plugin for m in methods} <= set(BUILTIN_PLUGINS) and methods
    assert [f.name for f in pm.failures] == ["brokenwrapper"]


def test_a_failing_builtin_raises():
    pm = get_plugin_manager(autoload=False)

    class Exploding:
        @labelwise.hookimpl
        def labelwise_methods(self):
            raise RuntimeError("labelwise bug")

    pm.register(Exploding(), name=BUILTIN_PLUGINS[0] + ".extra")
    pm.is_builtin = lambda name: True  # as if it were one of the built-ins
    with pytest.raises(RuntimeError, match="labelwise bug"):
        list_methods(pm)


def test_blocked_plugins_are_not_loaded():
    pm = get_plugin_manager(autoload=False, blocked=("thirdparty",))
    assert pm.register(_declaring("x"), name="thirdparty") is None
    assert not pm.has_plugin("thirdparty")
    with pytest.raises(PluginError, match="cannot be blocked"):
        get_plugin_manager(autoload=False, blocked=(BUILTIN_PLUGINS[0],))
