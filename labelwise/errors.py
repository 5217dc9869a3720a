"""Exceptions that carry a message meant for the user.

Every error raised on bad input derives from :class:`LabelwiseError`; the CLI prints its
message without a traceback (``--debug`` shows it). Messages name the offending file, key or
value and say what was expected.
"""


class LabelwiseError(Exception):
    """Base class of labelwise's user-facing errors."""


class ConfigError(LabelwiseError, ValueError):
    """An option, config value or command-line argument is invalid."""


class DataError(LabelwiseError, ValueError):
    """Input data (labels, features, annotation files, data roots) is malformed or missing."""


class CheckpointError(LabelwiseError):
    """A checkpoint cannot be read safely, or does not hold what was expected."""


class PluginError(LabelwiseError):
    """A third-party plugin failed to load or declared something invalid."""
