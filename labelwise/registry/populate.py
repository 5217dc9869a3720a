"""Imported by the ``labelwise`` registries' ``locations``: registers every plugin's classes."""
from labelwise.registry import register_plugin_modules

register_plugin_modules()
