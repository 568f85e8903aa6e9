"""A small JSON Schema validator for structured memory.

It knows the keywords a record's schema uses.

Supported: ``type`` (one or a list), ``properties``, ``required``, ``additionalProperties``
(bool or schema), ``items``, ``enum``, ``const``, ``minimum``, ``maximum``,
``exclusiveMinimum``, ``exclusiveMaximum``, ``minLength``, ``maxLength``, ``pattern``,
``minItems``, ``maxItems``; annotations (``title``, ``description``, ``default``, ``examples``,
``$schema``, ``$id``, ``$comment``) are ignored. Any other keyword (``$ref``, ``oneOf``…) is
refused when the schema is given, rather than silently not checked; use a msgspec ``Struct``
type for richer shapes.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

from converge.errors import ValidationError

__all__ = ["check_schema", "validate"]

_CHECKED = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "const",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
}
_ANNOTATIONS = {"title", "description", "default", "examples", "$schema", "$id", "$comment"}
_TYPES = {"string", "integer", "number", "boolean", "object", "array", "null"}


def check_schema(schema: object, path: str = "") -> None:
    """Refuse a schema that uses keywords this validator does not check.

    Raises:
        ValidationError: naming the offending keyword's place in the schema.
    """
    where = path or "schema"
    if not isinstance(schema, Mapping):
        raise ValidationError(f"a JSON Schema is an object, not {schema!r}", field=where)
    for word in schema:
        if word not in _CHECKED and word not in _ANNOTATIONS:
            raise ValidationError(
                f"JSON Schema keyword {word!r} is not supported by structured memory "
                "(use a msgspec Struct type for it)",
                field=f"{path}.{word}" if path else word,
            )
    types = schema.get("type")
    for t in [types] if isinstance(types, str) else types or []:
        if t not in _TYPES:
            raise ValidationError(f"unknown JSON Schema type {t!r}", field=f"{where}.type")
    for name, sub in (schema.get("properties") or {}).items():
        check_schema(sub, f"{where}.properties.{name}")
    for word in ("items", "additionalProperties"):
        if isinstance(schema.get(word), Mapping):
            check_schema(schema[word], f"{where}.{word}")
    if "pattern" in schema:
        try:
            re.compile(schema["pattern"])
        except (re.error, TypeError) as exc:
            raise ValidationError(f"bad pattern: {exc}", field=f"{where}.pattern") from exc


def validate(value: Any, schema: Mapping[str, Any], path: str = "") -> None:
    """Check ``value`` against ``schema`` (already passed through ``check_schema``).

    Raises:
        ValidationError: with ``field`` the path of the offending value (``address.city``,
            ``tags[2]``; ``""`` becomes None for the record itself).
    """
    field = path or None
    where = f"`{path}`" if path else "the record"
    types = schema.get("type")
    if types is not None:
        allowed = [types] if isinstance(types, str) else list(types)
        if not any(_is(value, t) for t in allowed):
            raise ValidationError(
                f"{where} must be {' or '.join(allowed)}, not {_json_name(value)}", field=field
            )
    if "const" in schema and not _same(value, schema["const"]):
        raise ValidationError(f"{where} must be {schema['const']!r}", field=field)
    if "enum" in schema and not any(_same(value, e) for e in schema["enum"]):
        raise ValidationError(f"{where} must be one of {schema['enum']!r}", field=field)
    if _is(value, "number"):
        _check_number(value, schema, where, field)
    elif isinstance(value, str):
        _check_string(value, schema, where, field)
    elif isinstance(value, list):
        _check_array(value, schema, path, where, field)
    elif isinstance(value, dict):
        _check_object(value, schema, path, where, field)


_BOUNDS: tuple[tuple[str, Callable[[Any, Any], bool], str], ...] = (
    ("minimum", operator.ge, ">="),
    ("maximum", operator.le, "<="),
    ("exclusiveMinimum", operator.gt, ">"),
    ("exclusiveMaximum", operator.lt, "<"),
)


def _check_number(value: float, schema: Mapping[str, Any], where: str, field: str | None) -> None:
    for word, ok, op in _BOUNDS:
        if word in schema and not ok(value, schema[word]):
            raise ValidationError(f"{where} must be {op} {schema[word]}, not {value}", field=field)


def _check_string(value: str, schema: Mapping[str, Any], where: str, field: str | None) -> None:
    if "minLength" in schema and len(value) < schema["minLength"]:
        raise ValidationError(
            f"{where} must have at least {schema['minLength']} characters", field=field
        )
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        raise ValidationError(
            f"{where} must have at most {schema['maxLength']} characters", field=field
        )
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        raise ValidationError(f"{where} must match {schema['pattern']!r}", field=field)


def _check_array(
    value: list[Any], schema: Mapping[str, Any], path: str, where: str, field: str | None
) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        raise ValidationError(f"{where} must have at least {schema['minItems']} items", field=field)
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        raise ValidationError(f"{where} must have at most {schema['maxItems']} items", field=field)
    items = schema.get("items")
    if isinstance(items, Mapping):
        for i, item in enumerate(value):
            validate(item, items, f"{path}[{i}]")


def _check_object(
    value: dict[str, Any], schema: Mapping[str, Any], path: str, where: str, field: str | None
) -> None:
    for name in schema.get("required", ()):
        if name not in value:
            sub = f"{path}.{name}" if path else name
            raise ValidationError(f"missing required field `{sub}`", field=sub)
    properties: Mapping[str, Any] = schema.get("properties") or {}
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        sub = f"{path}.{name}" if path else str(name)
        if not isinstance(name, str):
            raise ValidationError(f"{where} has a non-string key {name!r}", field=field)
        if name in properties:
            validate(item, properties[name], sub)
        elif extra is False:
            raise ValidationError(f"unknown field `{sub}`", field=sub)
        elif isinstance(extra, Mapping):
            validate(item, extra, sub)


def _is(value: Any, json_type: str) -> bool:
    if json_type == "null":
        return value is None
    if json_type == "boolean":
        return isinstance(value, bool)
    if json_type == "integer":
        return (isinstance(value, int) and not isinstance(value, bool)) or (
            isinstance(value, float) and value.is_integer()
        )
    if json_type == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if json_type == "string":
        return isinstance(value, str)
    if json_type == "array":
        return isinstance(value, (list, tuple))
    return isinstance(value, dict)  # object


def _same(a: Any, b: Any) -> bool:
    # JSON equality: True is not 1.
    return type(a) is type(b) and a == b if isinstance(a, bool) or isinstance(b, bool) else a == b


def _json_name(value: Any) -> str:
    for t in ("null", "boolean", "integer", "number", "string", "array", "object"):
        if _is(value, t):
            return t
    return type(value).__name__
