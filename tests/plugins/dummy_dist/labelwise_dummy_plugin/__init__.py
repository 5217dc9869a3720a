"""A third-party labelwise plugin: one loss, registered for mmengine, plus a CLI command."""
import labelwise


@labelwise.hookimpl
def labelwise_methods():
    return [
        labelwise.MethodInfo(
            name="dummy-l1",
            summary="L1 distance between sigmoid scores and targets (test plugin)",
            kind="loss",
            paper="none",
            types=("labelwise.DummyL1Loss",),
        )
    ]


@labelwise.hookimpl
def labelwise_register_mm_modules(registries):
    from labelwise_dummy_plugin.loss import DummyL1Loss

    registries.MODELS.register_module(module=DummyL1Loss)


@labelwise.hookimpl
def labelwise_add_commands(subparsers):
    parser = subparsers.add_parser("dummy", help="say hello from the dummy plugin")
    parser.add_argument("--name", default="world")
    parser.set_defaults(func=lambda args: print(f"hello {args.name} from labelwise-dummy-plugin"))
