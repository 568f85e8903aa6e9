"""Function agents the CLI tests' graph files name as ``tests.cli._agents:<name>``."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any


def upper(inputs: dict[str, Any]) -> str:
    return str(inputs["text"]).upper()


def count(inputs: dict[str, Any]) -> dict[str, Any]:
    return {"chars": len(inputs["up.output"])}


def echo(inputs: dict[str, Any]) -> str:
    return ", ".join(f"{v}: after" for v in inputs.values())


def boom(inputs: dict[str, Any]) -> str:
    raise RuntimeError("the agent broke")


async def approve(inputs: dict[str, Any], ctx: Any) -> str:
    answer = await ctx.pause(f"publish {inputs['up.output']}?")
    return f"{inputs['up.output']}: {answer}"


async def hold(inputs: dict[str, Any]) -> str:
    """Wait until the file named by input ``gate`` exists (the test creates it or interrupts)."""
    gate = Path(inputs["gate"])
    (gate.parent / "holding").write_text("yes")
    # the gate is opened by another process (the test): poll for it
    while not os.path.exists(gate):  # noqa: ASYNC110, ASYNC240
        await asyncio.sleep(0.02)
    return "released"


def hostile(inputs: dict[str, Any]) -> str:
    """Fails with an error that tries to drive the terminal (``tests.observability._hostile``)."""
    from tests.observability._hostile import HOSTILE

    raise RuntimeError(HOSTILE)


def hostile_output(inputs: dict[str, Any]) -> str:
    """Returns text that tries to drive the terminal, on several lines."""
    from tests.observability._hostile import HOSTILE

    return f"first line\n{HOSTILE}"
