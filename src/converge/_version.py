"""The version of converge."""

__version__ = "0.1.0"
