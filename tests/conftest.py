"""Shared test configuration. The repository root is on ``sys.path`` (``pythonpath`` in
pyproject.toml), so helpers are imported as ``tests.<dir>.<module>``."""
