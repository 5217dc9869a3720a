import inspect
from pathlib import Path

import pytest

from labelwise import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction) if name.startswith("labelwise_")]


def test_there_are_the_three_kinds_of_hook():
    assert set(HOOKS) >= {"labelwise_methods", "labelwise_register_mm_modules", "labelwise_add_commands"}


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_a_documented_stub(name):
    fn = getattr(hookspecs, name)
    doc = inspect.getdoc(fn)
    assert doc and "Returns:" in doc
    params = list(inspect.signature(fn).parameters)
    if params:
        assert "Args:" in doc and all(p in doc for p in params)
    body = inspect.getsource(fn).split('"""')[-1].strip()
    assert body == "", f"{name} must be an empty stub"


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_has_a_doc_entry(name):
    assert f"### `{name}(" in (ROOT / "docs" / "plugins.md").read_text()


@pytest.mark.parametrize("name", HOOKS)
def test_hookspec_is_typed(name):
    """Every argument and the return value carry an annotation (what a plugin author's type checker reads)."""
    signature = inspect.signature(getattr(hookspecs, name))
    assert signature.return_annotation is not inspect.Signature.empty
    for param in signature.parameters.values():
        assert param.annotation is not inspect.Parameter.empty, f"{name}({param.name}) has no annotation"
