"""Built-in plugin: the ``labelwise plugins`` command."""
from __future__ import annotations

from labelwise.hookspecs import hookimpl


@hookimpl
def labelwise_add_commands(subparsers):
    parser = subparsers.add_parser(
        "plugins",
        help="list registered plugins and the methods they provide",
        description="List the plugins labelwise loaded (built-in and from the "
        "'labelwise.plugins' entry-point group) and the methods they declare.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=_run_plugins)


def _run_plugins(args) -> int:
    import dataclasses
    import json

    from labelwise.plugin_manager import get_plugin_manager, list_methods

    pm = get_plugin_manager()
    methods = list_methods(pm)
    plugins = [
        {"name": name, "distribution": pm.distributions.get(name, "?")}
        for name, _ in pm.list_name_plugin()
    ]
    if args.json:
        print(json.dumps({
            "plugins": plugins,
            "methods": [dataclasses.asdict(m) for m in methods],
            "failures": [dataclasses.asdict(f) for f in pm.failures],
        }, indent=1))
        return 0
    print("Plugins:")
    print(_table([(p["name"], p["distribution"]) for p in plugins], ("plugin", "from")))
    print("\nMethods:")
    if methods:
        rows = [(m.name, m.kind, m.plugin, m.paper, m.summary) for m in methods]
        print(_table(rows, ("method", "kind", "plugin", "paper", "summary")))
    else:
        print("  (none)")
    if pm.failures:
        print("\nFailed plugins (skipped):")
        print(_table([(f.name, f.distribution, f.error) for f in pm.failures], ("plugin", "from", "error")))
    return 0


def _table(rows, header) -> str:
    rows = [tuple(str(c) for c in r) for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    fmt = "  " + "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r).rstrip() for r in rows]
    return "\n".join(lines)
