"""Prompts from a node's inputs: ``{name}`` placeholders filled in.

A placeholder names an input exactly as the node receives it, dots included
(``{analyzer.output}``); ``{{`` and ``}}`` are literal braces. A string value is inserted as
is, anything else as JSON. With no template, the prompt is the inputs themselves: a lone input's
value, or one ``name: value`` line per input.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import msgspec

from converge.errors import ValidationError

__all__ = ["render_prompt"]

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][\w.\-]*)\}")


def render_prompt(template: str | None, inputs: Mapping[str, Any]) -> str:
    """``template`` with its placeholders filled from ``inputs`` (see the module doc).

    Raises:
        ValidationError: a placeholder names no input (the message lists the inputs).
    """
    if template is None:
        if len(inputs) == 1:
            return _text(next(iter(inputs.values())))
        return "\n".join(f"{name}: {_text(value)}" for name, value in inputs.items())

    def fill(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            return match.group(0)[0]
        try:
            return _text(inputs[name])
        except KeyError:
            known = ", ".join(sorted(inputs)) or "none"
            raise ValidationError(
                f"the prompt names {{{name}}}, which is not an input (inputs: {known})",
                field="prompt",
            ) from None

    return _PLACEHOLDER.sub(fill, template)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return msgspec.json.encode(value).decode()
    except (TypeError, msgspec.EncodeError):
        return str(value)
