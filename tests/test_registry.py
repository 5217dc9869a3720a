import pytest

from conftest import run_python


def test_child_registries_have_labelwise_scope_and_mmpretrain_parents():
    import mmpretrain.registry as mmp
    import labelwise.registry as reg

    for name in ("MODELS", "DATASETS", "TRANSFORMS", "HOOKS", "METRICS", "MODEL_WRAPPERS", "DATA_SAMPLERS"):
        child = getattr(reg, name)
        assert child.scope == "labelwise"
        assert child.parent is getattr(mmp, name)
        assert getattr(mmp, name)._children["labelwise"] is child


def test_builtin_type_builds_by_scope_without_custom_imports(tmp_path):
    # mmengine imports labelwise.registry by itself when it meets the 'labelwise.' prefix
    code = (
        "from mmpretrain.registry import DATASETS\n"
        "from mmengine.registry import init_default_scope\n"
        "init_default_scope('mmpretrain')\n"
        "cls = DATASETS.get('labelwise.PartialMultiLabelDataset')\n"
        "print(cls.__module__, cls.__name__)\n"
    )
    out = run_python("-c", code).stdout.strip().splitlines()[-1]
    assert out == "labelwise.adapters.mmpretrain.datasets PartialMultiLabelDataset"


def test_unknown_labelwise_type_names_the_type(tmp_path):
    code = (
        "from mmpretrain.registry import MODELS\n"
        "from mmengine.registry import init_default_scope\n"
        "init_default_scope('mmpretrain')\n"
        "MODELS.build(dict(type='labelwise.NoSuchLoss'))\n"
    )
    proc = run_python("-c", code, check=False)
    assert proc.returncode != 0
    assert "labelwise.NoSuchLoss" in proc.stderr


def test_register_plugin_modules_is_idempotent():
    import labelwise.registry as reg
    from labelwise.adapters.mmpretrain.datasets import PartialMultiLabelDataset

    reg.register_plugin_modules()
    reg.register_plugin_modules()
    assert reg.DATASETS.get("PartialMultiLabelDataset") is PartialMultiLabelDataset

    class Other:
        pass

    Other.__name__ = "PartialMultiLabelDataset"
    with pytest.raises(KeyError, match="PartialMultiLabelDataset"):
        reg.DATASETS.register_module(module=Other)


@pytest.mark.parametrize("method", [m.name for m in __import__("labelwise").list_methods()])
def test_every_declared_type_is_registered(method):
    """Each method's MethodInfo.types come from its registration table: every one resolves by scope."""
    import labelwise
    import labelwise.registry as reg
    from labelwise.plugin_manager import register_table, table_types

    info = next(m for m in labelwise.list_methods() if m.name == method)
    assert info.types
    reg.register_plugin_modules()
    registries = [getattr(reg.REGISTRIES, name) for name in vars(reg.REGISTRIES)]
    for name in info.types:
        short = name.split(".", 1)[1]
        assert any(r.get(short) is not None for r in registries), f"{name} of {method} is not registered"
    # the helpers by hand
    assert table_types({"MODELS": ("A", "B")}, {"HOOKS": ("B", "C")}) == ("labelwise.A", "labelwise.B", "labelwise.C")
    seen = []
    fake = type("R", (), {"register_module": lambda self, module: seen.append(module)})()
    register_table(type("Regs", (), {"MODELS": fake, "HOOKS": fake})(), type("M", (), {"A": 1, "B": 2})(),
                   {"MODELS": ("A", "B")}, {"MODELS": ("A",), "HOOKS": ("B",)})
    assert seen == [1, 2, 2]
