"""The ``converge`` command line."""

from __future__ import annotations

from converge.cli.app import app, main

__all__ = ["app", "main"]
