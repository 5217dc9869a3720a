"""A plugin module that fails on import, as a broken third-party plugin would."""
raise ImportError("labelwise_dummy_plugin.broken needs a package that is not installed")
