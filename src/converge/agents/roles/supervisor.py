"""``Supervisor``: splits work, assigns it to workers, aggregates.

It fits the ``supervisor`` pattern's contract.

```python
boss = Supervisor(["en", "fr"])                                   # rule mode
graph = supervisor(boss, {"en": translate_en, "fr": translate_fr})
```

Each pass it returns ``{"assign": {worker: part}}`` or ``{"done": result}``; it reads its task
(the input ``task``, or its only other input) and, after a round, ``gather.output``:
``{worker: output}`` of that round (``MISSING`` on the first pass).

Rule mode (no provider), one round: the task is split into parts — a list into its items, a
text into its non-empty lines (``separator`` changes that) — and dealt round-robin over the
workers in order: worker ``i`` gets parts ``i, i + n, ...``; a text worker gets its parts
joined by the separator, a list worker a list of its items (a worker with no part is not
assigned). On the next pass the outputs are aggregated, in worker order, by ``aggregate``
(default: a list of the outputs, or for a text task the string outputs joined by the
separator) and it declares done. An empty task is done at once with the aggregate of nothing.

LLM mode (a provider is given): each pass the model sees the task, the workers and their
descriptions and the last round's results, and answers ``{"assign": {worker: part}}`` or
``{"done": result}`` (checked: known workers, at least one; retried while invalid). The
rounds are bounded by the pattern's ``max_iterations``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from converge.agents._structured import ask_structured, check_attempts, text_of
from converge.agents.llm.base import ChatMessage, LLMProvider
from converge.core.agent import Agent, RunContext
from converge.core.capability import Capability
from converge.core.missing import MISSING
from converge.errors import ValidationError

__all__ = ["Supervisor"]

_RESULTS = "gather.output"


class Supervisor(Agent):
    """Splits a task over workers, then aggregates what they did.

    Args:
        workers: the worker ids (the pattern's node ids), or ``{id: description}``.
        separator: rule mode: what splits a text task, and joins text parts and results.
        aggregate: rule mode: ``aggregate([output, ...]) -> result`` (worker order).
        provider: switches on LLM mode.
        instructions: LLM mode: added to the system message.
        attempts: LLM mode: calls before an invalid answer is an error.
        name: the agent's name (the node id the pattern gives it).
        capabilities: what it can do.
    """

    def __init__(
        self,
        workers: Sequence[str] | Mapping[str, str],
        *,
        separator: str = "\n",
        aggregate: Callable[[list[Any]], Any] | None = None,
        provider: LLMProvider | None = None,
        instructions: str = "",
        attempts: int = 3,
        name: str | None = None,
        capabilities: Iterable[Capability | str] = (),
    ) -> None:
        super().__init__(name=name or "supervisor", capabilities=capabilities)
        if isinstance(workers, str) or not isinstance(workers, Mapping | Sequence):
            raise ValidationError(f"workers are a list of ids, not {workers!r}", field="workers")
        described = dict(workers) if isinstance(workers, Mapping) else dict.fromkeys(workers, "")
        if not described or not all(isinstance(w, str) and w for w in described):
            raise ValidationError("a supervisor needs at least one worker", field="workers")
        if not separator:
            raise ValidationError("separator must not be empty", field="separator")
        self.workers: dict[str, str] = {w: str(d or "") for w, d in described.items()}
        self.separator = separator
        self.aggregate = aggregate
        self.provider = provider
        self.instructions = instructions
        self.attempts = check_attempts(attempts)

    @property
    def mode(self) -> str:
        """``"llm"`` when a provider is configured, else ``"rule"``."""
        return "llm" if self.provider is not None else "rule"

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        """``{"assign": {worker: part}}`` or ``{"done": result}``."""
        task = self._task(inputs)
        results = inputs.get(_RESULTS, MISSING)
        if self.provider is not None:
            return await ask_structured(
                self.provider,
                self._messages(task, results),
                self.schema(),
                self._check,
                role=self.name,
                attempts=self.attempts,
                ctx=ctx,
            )
        if results is MISSING or results is None:
            assignment = self.split(task)
            return {"assign": assignment} if assignment else {"done": self._aggregate(task, [])}
        if not isinstance(results, Mapping):
            raise ValidationError(f"{_RESULTS} is {{worker: output}}, not {results!r}")
        outputs = [results[w] for w in self.workers if w in results]
        return {"done": self._aggregate(task, outputs)}

    def split(self, task: Any) -> dict[str, Any]:
        """Rule mode: ``{worker: part}``, the task's parts dealt round-robin."""
        if isinstance(task, str):
            parts: list[Any] = [p for p in task.split(self.separator) if p.strip()]
        elif isinstance(task, Sequence):
            parts = list(task)
        else:
            raise ValidationError(
                f"a rule-mode supervisor splits a text or a list, not {type(task).__name__}",
                field="task",
            )
        n = len(self.workers)
        assignment: dict[str, Any] = {}
        for i, worker in enumerate(self.workers):
            mine = parts[i::n]
            if mine:
                assignment[worker] = self.separator.join(mine) if isinstance(task, str) else mine
        return assignment

    def _aggregate(self, task: Any, outputs: list[Any]) -> Any:
        if self.aggregate is not None:
            return self.aggregate(outputs)
        if isinstance(task, str) and all(isinstance(o, str) for o in outputs):
            return self.separator.join(outputs)
        return outputs

    def _task(self, inputs: Mapping[str, Any]) -> Any:
        if "task" in inputs:
            return inputs["task"]
        others = [k for k in inputs if k != _RESULTS]
        if len(others) != 1:
            raise ValidationError(
                f"supervisor {self.name!r} reads its task from the input `task` or its only "
                f"input besides {_RESULTS}; it has {', '.join(others) or 'none'}",
                field="task",
            )
        return inputs[others[0]]

    def schema(self) -> dict[str, Any]:
        """The JSON schema of the model's answer."""
        return {
            "type": "object",
            "properties": {
                "assign": {
                    "type": "object",
                    "properties": {w: {"type": "string"} for w in self.workers},
                    "additionalProperties": False,
                },
                "done": {},
            },
            "additionalProperties": False,
        }

    def _messages(self, task: Any, results: Any) -> list[ChatMessage]:
        listed = "\n".join(f"- {w}: {d}" if d else f"- {w}" for w, d in self.workers.items())
        system = (
            "You supervise these workers:\n"
            f"{listed}\n"
            "Split the task into parts and assign them, or, once the results are enough, "
            'finish. Answer as JSON, either {"assign": {"<worker>": "<part>", ...}} or '
            '{"done": <the final result>}.'
        )
        if self.instructions:
            system += "\n" + self.instructions
        user = f"Task:\n{text_of(task)}"
        if results is not MISSING and results is not None:
            user += f"\n\nResults of the last round:\n{text_of(results)}"
        return [ChatMessage("system", system), ChatMessage("user", user)]

    def _check(self, answer: Any) -> dict[str, Any]:
        if (
            not isinstance(answer, Mapping)
            or len(answer) != 1
            or not {"assign", "done"} & set(answer)
        ):
            raise ValueError(f'expected {{"assign": {{...}}}} or {{"done": ...}}, got {answer!r}')
        if "done" in answer:
            return {"done": answer["done"]}
        assignment = answer["assign"]
        if not isinstance(assignment, Mapping) or not assignment:
            raise ValueError("assign must map at least one worker to its part")
        unknown = [w for w in assignment if w not in self.workers]
        if unknown:
            raise ValueError(
                f"unknown worker(s) {', '.join(map(repr, unknown))}; "
                f"the workers are {', '.join(self.workers)}"
            )
        return {"assign": dict(assignment)}
