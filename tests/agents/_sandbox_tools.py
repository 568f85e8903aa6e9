"""Functions the sandbox tests run in a child process (importable by ``module:attr``)."""

from __future__ import annotations

import os
import time
from typing import Any


def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


async def shout(text: str) -> str:
    """An async tool: the text in capitals, printed too (prints must not corrupt the answer)."""
    print("shouting", text)  # noqa: T201 - a tool that prints
    return text.upper()


def sleepy(seconds: float) -> str:
    """Sleep, then answer."""
    time.sleep(seconds)
    return "woke"


def hog(mib: int) -> int:
    """Allocate ``mib`` MiB at once."""
    block = bytearray(mib * 2**20)
    return len(block)


def env(name: str) -> str | None:
    """The value of the environment variable ``name`` in the process that runs the tool."""
    return os.environ.get(name)


def env_names() -> list[str]:
    """Every environment variable name the tool sees."""
    return sorted(os.environ)


def broken(key: str) -> Any:
    """Raise a KeyError."""
    return {}[key]


def not_json() -> Any:
    """Return something JSON cannot carry."""
    return {1, 2}


def crash() -> None:
    """Exit the process without answering."""
    os._exit(3)
