"""The roles' structured LLM calls: checked, shown back, retried.

What the roles share in LLM mode: one structured call with checked, retried output, and the
error it raises when the model never answers well. The answer checked is ``parsed``, else the
content decoded as JSON.

A role asks ``provider.chat(messages, response_schema=schema)`` and checks the answer with its
own ``check`` (which raises ``ValueError`` naming the problem). A bad answer is shown back to
the model with the problem, and asked again, up to ``attempts`` calls in all; then
``StructuredOutputError`` says what went wrong each time. Provider failures (``LLMError``)
are not retried here: the node's retry policy decides, since ``retryable`` is on the error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import msgspec

from converge.agents.llm.base import ChatMessage, LLMProvider
from converge.core.agent import RunContext
from converge.errors import StructuredOutputError, ValidationError

__all__ = [
    "ask_structured",
    "check_attempts",
    "fields_of",
    "render",
    "text_of",
]

T = TypeVar("T")


async def ask_structured(
    provider: LLMProvider,
    messages: Sequence[ChatMessage],
    schema: dict[str, Any],
    check: Callable[[Any], T],
    *,
    role: str,
    attempts: int,
    ctx: RunContext | None = None,
) -> T:
    """Ask for an answer following ``schema`` and return ``check(answer)``.

    Raises:
        StructuredOutputError: ``attempts`` answers in a row failed ``check``.
        LLMError: the provider failed.
    """
    conversation = list(messages)
    problems: list[str] = []
    answer: Any = None
    for _ in range(attempts):
        response = await provider.chat(conversation, response_schema=schema)
        if ctx is not None:
            ctx.report_usage(response.usage.tokens_in, response.usage.tokens_out)
        answer = response.parsed
        try:
            if answer is None:
                answer = response.content
                answer = msgspec.json.decode(response.content)
            return check(answer)
        except (ValueError, TypeError, msgspec.ValidationError) as exc:
            problem = str(exc) or type(exc).__name__
            problems.append(problem)
            conversation += [
                ChatMessage("assistant", response.content),
                ChatMessage(
                    "user",
                    f"That answer is invalid: {problem}. Answer again, as JSON following the "
                    "schema exactly.",
                ),
            ]
    raise StructuredOutputError(role, attempts, problems, answer)


def check_attempts(attempts: int) -> int:
    """``attempts`` if it is an int >= 1, else a ``ValidationError``."""
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValidationError(f"attempts must be an int >= 1, not {attempts!r}", field="attempts")
    return attempts


def text_of(value: Any) -> str:
    """A value as text: a string as is, anything else as JSON (``repr`` if it is not JSON)."""
    if isinstance(value, str):
        return value
    try:
        return msgspec.json.encode(value, order="sorted").decode()
    except (TypeError, msgspec.EncodeError):
        return repr(value)


class _Fields(dict[str, Any]):
    """Template fields: a missing one is a clear error, not a bare ``KeyError``."""

    def __missing__(self, key: str) -> Any:
        raise ValidationError(
            f"the template names {{{key}}}, but the inputs give {', '.join(sorted(self))}",
            field="template",
        )


def fields_of(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """Names a template can use: each input by its reference's last part (``topic``,
    ``draft.output`` -> ``draft``, ``draft.output.summary`` -> ``summary``), ``inputs`` (all
    of them as text) and, when there is a single input, ``input``."""
    out: dict[str, Any] = {}
    for key, value in inputs.items():
        parts = key.split(".")
        out[parts[0] if parts[1:] == ["output"] else parts[-1]] = value
    out["inputs"] = "\n".join(f"{k}: {text_of(v)}" for k, v in inputs.items())
    if len(inputs) == 1:
        out["input"] = next(iter(inputs.values()))
    return out


def render(template: str, inputs: Mapping[str, Any]) -> str:
    """``template`` (``str.format`` syntax) filled from ``fields_of(inputs)``."""
    return template.format_map(_Fields(fields_of(inputs)))
