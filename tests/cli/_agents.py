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


def exits(inputs: dict[str, Any]) -> str:
    raise SystemExit(0)


async def exits_async(inputs: dict[str, Any]) -> str:
    raise SystemExit(0)


def interrupts(inputs: dict[str, Any]) -> str:
    raise KeyboardInterrupt


async def interrupts_async(inputs: dict[str, Any]) -> str:
    raise KeyboardInterrupt


async def exits_in_a_task(inputs: dict[str, Any]) -> str:
    """``sys.exit()`` in a task the agent starts: asyncio stops its event loop for it."""

    async def child() -> None:
        raise SystemExit(0)

    async with asyncio.TaskGroup() as group:
        group.create_task(child())
    return "never"


async def spin(inputs: dict[str, Any]) -> str:
    """Hold the event loop (never awaiting) until Ctrl-C is pressed twice: the first cancels
    the main task (``asyncio.run``'s handler; this node cannot see it), the second raises
    ``KeyboardInterrupt`` here. Files beside ``gate`` say how far it got."""
    here = Path(inputs["gate"]).parent
    (here / "holding").write_text("yes")
    while not any(t.cancelling() for t in asyncio.all_tasks()):
        pass
    (here / "cancelled").write_text("yes")
    while True:
        pass


def scores(inputs: dict[str, Any]) -> dict[str, Any]:
    """A score computed as 0/0 would be: NaN."""
    return {"text": inputs["text"], "score": float("nan")}
