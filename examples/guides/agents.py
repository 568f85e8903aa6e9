"""The agents the snippets of ``docs/guides/`` and the README reference as
``examples.guides.agents:<name>``.

Small, deterministic and offline, so every YAML snippet in the guides loads (a test checks it)
and runs with ``converge run`` from the repository's root.
"""

from __future__ import annotations

import asyncio
from typing import Any

from converge.orchestration import NodeContext


def _only(inputs: dict[str, Any]) -> Any:
    """The value of a node's only input."""
    (value,) = inputs.values()
    return value


async def shout(inputs: dict[str, Any]) -> str:
    """Its only input in capitals, with an exclamation mark."""
    return f"{str(_only(inputs)).upper()}!"


async def count_words(inputs: dict[str, Any]) -> dict[str, Any]:
    """``{"text": ..., "words": n}`` for its only input."""
    text = str(_only(inputs))
    return {"text": text, "words": len(text.split())}


async def draft(inputs: dict[str, Any]) -> str:
    """A draft on ``topic``; a longer one on each later pass (it reads ``critic.output``)."""
    review = inputs.get("critic.output")
    extra = 0 if not isinstance(review, dict) else int(review.get("round", 0))
    return f"a note on {inputs.get('topic', 'something')}" + " and more" * extra


async def critic(inputs: dict[str, Any]) -> dict[str, Any]:
    """``{"ok": bool, "round": n, "words": n, "text": draft}``: good from 8 words on."""
    text = str(_only(inputs))
    words = len(text.split())
    return {"ok": words >= 8, "round": max(1, words - 3), "words": words, "text": text}


async def publish(inputs: dict[str, Any]) -> str:
    """Publishes whatever it is given (here: returns it, marked)."""
    return f"published: {_only(inputs)}"


async def flaky(inputs: dict[str, Any]) -> str:
    """Always fails: for the retry, skip, fallback and human policies."""
    raise RuntimeError("the service is down")


async def backup(inputs: dict[str, Any]) -> str:
    """A fallback: says what it stands in for."""
    return f"backup answer for {_only(inputs)}"


async def approve(inputs: dict[str, Any], ctx: NodeContext) -> str:
    """Asks a person before going on: the run waits until ``converge resume --answer``."""
    answer = await ctx.pause(f"publish {_only(inputs)!r}? (yes/no)")
    return f"{_only(inputs)} ({'approved' if answer == 'yes' else 'rejected'})"


async def slow(inputs: dict[str, Any]) -> str:
    """Sleeps ``seconds`` (default 5) before answering: long enough to interrupt."""
    seconds = float(inputs.get("seconds", 5))
    await asyncio.sleep(seconds)
    return f"slept {seconds:g}s"
