"""The agents the pattern examples reference as ``examples.patterns.agents:<name>``.

Deterministic stand-ins for model-backed agents: each returns a string that says what it did,
so a run's output shows which agents ran, in which order, on what.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from converge.orchestration import MISSING

Agent = Callable[[dict[str, Any]], Awaitable[Any]]


def _only(inputs: dict[str, Any]) -> Any:
    (value,) = inputs.values()
    return value


# -- pipeline: draft -> review -> polish -----------------------------------------------------------


async def draft(inputs: dict[str, Any]) -> str:
    return f"draft on {inputs['topic']}"


async def review(inputs: dict[str, Any]) -> str:
    return f"reviewed {_only(inputs)}"


async def polish(inputs: dict[str, Any]) -> str:
    return f"polished {_only(inputs)}"


# -- fan-out: three searches, merged ---------------------------------------------------------------


def _search(source: str) -> Agent:
    async def search(inputs: dict[str, Any]) -> str:
        return f"{source} results for {inputs['topic']}"

    return search


web = _search("web")
papers = _search("papers")
code = _search("code")


# -- supervisor and hierarchy: leads that split a task among their members -------------------------


def lead(*members: str) -> Agent:
    """A supervisor that gives every member the task in round one, then reports their work."""

    async def supervise(inputs: dict[str, Any]) -> dict[str, Any]:
        results = inputs["gather.output"]
        if results is MISSING:
            task = inputs["task"]
            return {"assign": {m: f"{task} / part {i + 1}" for i, m in enumerate(members)}}
        return {"done": "; ".join(f"{m}: {results[m]}" for m in members)}

    return supervise


editor = lead("writer", "fact_checker")
ceo = lead("research", "engineering")
research_lead = lead("searcher", "reader")
engineering_lead = lead("coder", "tester")


def _worker(role: str) -> Agent:
    async def work(inputs: dict[str, Any]) -> str:
        return f"{role} did ({_only(inputs)})"

    return work


writer = _worker("writer")
fact_checker = _worker("fact_checker")
searcher = _worker("searcher")
reader = _worker("reader")
coder = _worker("coder")
tester = _worker("tester")


# -- debate: two debaters, a judge -----------------------------------------------------------------


def _debater(stance: str) -> Agent:
    async def argue(inputs: dict[str, Any]) -> str:
        heard = [v for k, v in inputs.items() if k.endswith(".output")]
        rebuttal = f", answering {len(heard)} argument(s)" if heard else ""
        return f"{stance} on {inputs['topic']}{rebuttal}"

    return argue


optimist = _debater("for")
skeptic = _debater("against")


async def judge(inputs: dict[str, Any]) -> str:
    arguments = sorted(k.split("_")[0] for k in inputs if k.endswith(".output"))
    return f"heard {', '.join(arguments)} on {inputs['topic']}: for wins"


# -- router: triage to a specialist ----------------------------------------------------------------


async def triage(inputs: dict[str, Any]) -> str:
    query = str(inputs["query"]).lower()
    if "invoice" in query or "refund" in query:
        return "billing"
    if "error" in query or "crash" in query:
        return "technical"
    return "general"


def _specialist(desk: str) -> Agent:
    async def answer(inputs: dict[str, Any]) -> str:
        return f"{desk} desk answers: {inputs['query']}"

    return answer


billing = _specialist("billing")
technical = _specialist("technical")
general = _specialist("general")
