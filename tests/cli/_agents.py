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


def flaky(inputs: dict[str, Any]) -> str:
    """Fails its first two tries (counted in the file named by input ``counter``)."""
    counter = Path(inputs["counter"])
    tries = int(counter.read_text()) + 1 if counter.exists() else 1
    counter.write_text(str(tries))
    if tries < 3:
        raise ValueError(f"try {tries} went wrong")
    return str(inputs["text"]).upper()


def priced(inputs: dict[str, Any], ctx: Any) -> str:
    """Reports what a small model call costs: a few hundred-thousandths of a dollar."""
    ctx.report_usage(tokens_in=120, tokens_out=30, cost=3.25e-05)
    return f"{inputs['up.output']}!"


async def holds_the_loop(inputs: dict[str, Any]) -> str:
    """Holds the event loop a while without awaiting, as an SDK's first import does."""
    import time

    time.sleep(0.2)  # noqa: ASYNC251 - the point: the loop is held, as by a blocking import
    return str(inputs["text"])


def warns(inputs: dict[str, Any]) -> str:
    """Logs a warning from inside the run."""
    import logging

    logging.getLogger("tests.cli.agent").warning("careful with %s", inputs["text"])
    return str(inputs["text"])


async def streams(inputs: dict[str, Any], ctx: Any) -> str:
    """Streams its answer in three chunks, as an LLM agent with ``stream: true`` does."""
    for piece in ("one ", "two ", "three"):
        await ctx.emit(piece)
    return "one two three"
