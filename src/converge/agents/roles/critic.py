"""``Critic``: scores an output against criteria and says why.

```python
review = Critic(Criteria(min_length=200, required=["conclusion"], forbidden=["TODO"]))
verdict = await review.run({"draft.output": text}, ctx)
# {"score": 0.67, "passed": False, "reasons": ["missing required word 'conclusion'"]}
```

The verdict is plain data, ``{"score": float in [0, 1], "passed": bool, "reasons": [str]}``,
so a graph's conditions read it (``when: "not review.output.passed"`` loops a writer back).

What is judged is the critic's single input, or the input named by ``subject`` when it has
several (a text, or any JSON value).

Rule mode (no provider): each criterion set in ``Criteria`` is one check; the score is the
share of checks met, ``passed`` is ``score >= threshold`` (default 1: every check), and the
reasons are the failed checks (or one line saying all were met). LLM mode (a provider is
given): the model judges against ``rubric`` and answers a verdict (checked: a score in [0, 1],
a boolean, a list of strings; retried while invalid). Checkable criteria, if also given, still
apply: their failures are added to the reasons, fail the verdict, and the score is the lower
of the two.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from converge.agents._structured import ask_structured, check_attempts, text_of
from converge.agents.llm.base import ChatMessage, LLMProvider
from converge.core.agent import Agent, RunContext
from converge.core.capability import Capability
from converge.errors import ValidationError

__all__ = ["Criteria", "Critic"]


class Criteria(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Checkable criteria; each one set is a check of its own."""

    min_length: int | None = None
    """The fewest characters the text may have."""
    max_length: int | None = None
    """The most characters the text may have."""
    required: tuple[str, ...] = ()
    """Words (or phrases) that must occur, case-insensitively; one check each."""
    forbidden: tuple[str, ...] = ()
    """Words (or phrases) that must not occur, case-insensitively; one check each."""
    required_patterns: tuple[str, ...] = ()
    """Regular expressions that must match somewhere; one check each."""
    forbidden_patterns: tuple[str, ...] = ()
    """Regular expressions that must match nowhere; one check each."""
    json_schema: dict[str, Any] | None = None
    """A JSON Schema the output (or the text, decoded as JSON) must meet (``schema`` extra)."""

    def __post_init__(self) -> None:
        for key in ("min_length", "max_length"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or value < 0):
                raise ValidationError(f"{key} must be an int >= 0, not {value!r}", field=key)
        for key in ("required_patterns", "forbidden_patterns"):
            for i, pattern in enumerate(getattr(self, key)):
                try:
                    re.compile(pattern)
                except re.error as exc:
                    raise ValidationError(
                        f"{pattern!r} is not a regular expression: {exc}", field=f"{key}.{i}"
                    ) from None
        if self.json_schema is not None:
            _schema_validator(self.json_schema)

    @property
    def empty(self) -> bool:
        """Whether no criterion is set."""
        return self == Criteria()

    def check(self, subject: Any) -> tuple[int, list[str]]:
        """``(checks met, reasons of the failed ones)`` for ``subject``; the checks count is
        ``count``."""
        text = text_of(subject)
        lowered = text.lower()
        failed: list[str] = []
        if self.min_length is not None and len(text) < self.min_length:
            failed.append(f"too short: {len(text)} < {self.min_length} characters")
        if self.max_length is not None and len(text) > self.max_length:
            failed.append(f"too long: {len(text)} > {self.max_length} characters")
        failed += [f"missing required {w!r}" for w in self.required if w.lower() not in lowered]
        failed += [f"contains forbidden {w!r}" for w in self.forbidden if w.lower() in lowered]
        failed += [
            f"does not match required pattern {p!r}"
            for p in self.required_patterns
            if not re.search(p, text)
        ]
        failed += [
            f"matches forbidden pattern {p!r}"
            for p in self.forbidden_patterns
            if re.search(p, text)
        ]
        if self.json_schema is not None:
            failed += _schema_problems(self.json_schema, subject)
        return self.count - len(failed), failed

    @property
    def count(self) -> int:
        """How many checks these criteria make."""
        return (
            (self.min_length is not None)
            + (self.max_length is not None)
            + len(self.required)
            + len(self.forbidden)
            + len(self.required_patterns)
            + len(self.forbidden_patterns)
            + (self.json_schema is not None)
        )


class Critic(Agent):
    """Scores an output against criteria and returns a verdict with reasons.

    Args:
        criteria: checkable criteria (a ``Criteria`` or a mapping of its fields).
        provider: switches on LLM mode.
        rubric: LLM mode: what the model judges against (text, or one line per criterion).
        threshold: the score at or above which the verdict passes (rule mode; and what the
            model is told in LLM mode).
        subject: the input reference to judge when the critic has several inputs.
        attempts: LLM mode: calls before an invalid verdict is an error.
        name: the agent's name.
        capabilities: what it can do.

    Raises:
        ValidationError: bad criteria, or no criteria in rule mode.
    """

    def __init__(
        self,
        criteria: Criteria | Mapping[str, Any] | None = None,
        *,
        provider: LLMProvider | None = None,
        rubric: str | Sequence[str] = "",
        threshold: float = 1.0,
        subject: str | None = None,
        attempts: int = 3,
        name: str | None = None,
        capabilities: Iterable[Capability | str] = (),
    ) -> None:
        super().__init__(name=name or "critic", capabilities=capabilities)
        if isinstance(criteria, Mapping):
            try:
                criteria = msgspec.convert(criteria, Criteria)
            except msgspec.ValidationError as exc:
                if isinstance(exc.__cause__, ValidationError):  # raised by __post_init__
                    raise exc.__cause__ from None
                raise ValidationError(f"bad criteria: {exc}", field="criteria") from None
        self.criteria = criteria or Criteria()
        if provider is None and self.criteria.empty:
            raise ValidationError(
                "a critic without a provider needs at least one criterion", field="criteria"
            )
        if isinstance(threshold, bool) or not 0.0 <= float(threshold) <= 1.0:
            raise ValidationError(f"threshold is in [0, 1], not {threshold!r}", field="threshold")
        self.provider = provider
        self.rubric = rubric if isinstance(rubric, str) else "\n".join(f"- {r}" for r in rubric)
        self.threshold = float(threshold)
        self.subject = subject
        self.attempts = check_attempts(attempts)

    @property
    def mode(self) -> str:
        """``"llm"`` when a provider is configured, else ``"rule"``."""
        return "llm" if self.provider is not None else "rule"

    async def run(self, inputs: Mapping[str, Any], ctx: RunContext) -> dict[str, Any]:
        """The verdict on the judged input: ``{"score", "passed", "reasons"}``."""
        subject = self._subject(inputs)
        if self.provider is None:
            return self.judge(subject)
        verdict = await ask_structured(
            self.provider,
            self._messages(subject),
            _VERDICT_SCHEMA,
            _check_verdict,
            role=self.name,
            attempts=self.attempts,
            ctx=ctx,
        )
        if self.criteria.empty:
            return verdict
        rules = self.judge(subject)
        return {
            "score": min(verdict["score"], rules["score"]),
            "passed": verdict["passed"] and rules["passed"],
            "reasons": verdict["reasons"] + ([] if rules["passed"] else rules["reasons"]),
        }

    def judge(self, subject: Any) -> dict[str, Any]:
        """Rule mode: the verdict of the checkable criteria on ``subject``."""
        met, failed = self.criteria.check(subject)
        total = self.criteria.count
        score = met / total if total else 1.0
        reasons = failed or [f"meets all {total} criteria"]
        return {"score": score, "passed": score >= self.threshold, "reasons": reasons}

    def _subject(self, inputs: Mapping[str, Any]) -> Any:
        if self.subject is not None:
            if self.subject not in inputs:
                raise ValidationError(
                    f"critic {self.name!r} judges {self.subject!r}, but its inputs are "
                    f"{', '.join(inputs)}",
                    field="subject",
                )
            return inputs[self.subject]
        if len(inputs) != 1:
            raise ValidationError(
                f"critic {self.name!r} has inputs {', '.join(inputs) or '(none)'}: name the one "
                "to judge with `subject`",
                field="subject",
            )
        return next(iter(inputs.values()))

    def _messages(self, subject: Any) -> list[ChatMessage]:
        system = (
            "You are a critic. Judge the output you are given against these criteria:\n"
            f"{self.rubric or '- overall quality'}\n"
            f"Score it from 0 to 1; it passes at {self.threshold:g} or above. Answer as JSON: "
            '{"score": <number>, "passed": <true|false>, "reasons": ["<reason>", ...]}.'
        )
        return [ChatMessage("system", system), ChatMessage("user", text_of(subject))]


_VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "passed": {"type": "boolean"},
        "reasons": {"type": "array", "items": {"type": "string"}},
    },
    "required": ["score", "passed", "reasons"],
    "additionalProperties": False,
}


class _Verdict(msgspec.Struct, frozen=True):
    score: float
    passed: bool
    reasons: list[str]


def _check_verdict(answer: Any) -> dict[str, Any]:
    verdict = msgspec.convert(answer, _Verdict)  # raises msgspec.ValidationError, retried
    if not 0.0 <= verdict.score <= 1.0:
        raise ValueError(f"score must be in [0, 1], not {verdict.score}")
    return {"score": verdict.score, "passed": verdict.passed, "reasons": list(verdict.reasons)}


def _schema_validator(schema: dict[str, Any]) -> Any:
    try:
        import jsonschema
    except ImportError:  # pragma: no cover - the extra is part of the dev install
        raise ValidationError(
            "a json_schema criterion needs the jsonschema package: "
            "pip install 'converge-agents[schema]'",
            field="json_schema",
        ) from None
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValidationError(
            f"json_schema is not a valid JSON Schema: {exc.message}", field="json_schema"
        ) from None
    return cls(schema)


def _schema_problems(schema: dict[str, Any], subject: Any) -> list[str]:
    value = subject
    if isinstance(subject, str):
        try:
            value = msgspec.json.decode(subject)
        except msgspec.DecodeError:
            return ["is not JSON, so it cannot meet the JSON schema"]
    errors = sorted(_schema_validator(schema).iter_errors(value), key=lambda e: list(e.path))
    if not errors:
        return []
    first = errors[0]
    where = "/".join(str(p) for p in first.path) or "(root)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return [f"does not meet the JSON schema at {where}: {first.message}{more}"]
