"""Built-in plugins: one module or package per method, registered like third-party plugins.

See :data:`labelwise.plugin_manager.BUILTIN_PLUGINS` for the list and order.
"""
