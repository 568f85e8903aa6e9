"""Checking a JSON value against the schema subset answers use.

Check a decoded JSON value against the JSON Schema subset structured output uses.

Supported: ``type`` (one or a list), ``properties``, ``required``, ``additionalProperties``
(``false`` or a schema), ``items``, ``enum``, ``const``, ``anyOf``/``oneOf`` (as "any of"),
``minItems``/``maxItems``, ``minimum``/``maximum``, ``minLength``/``maxLength``. Other keywords
are ignored, so an unsupported one never refuses a good answer; the providers' own
structured-output modes enforce the rest. ``$ref`` is not followed.
"""

from __future__ import annotations

from typing import Any

__all__ = ["schema_error"]

_TYPES: dict[str, tuple[type, ...]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def schema_error(value: Any, schema: dict[str, Any], path: str = "$") -> str | None:
    """The first way ``value`` breaks ``schema``, as ``"<path>: <what>"``; ``None`` if it fits."""
    expected = schema.get("type")
    if expected is not None:
        names = [expected] if isinstance(expected, str) else list(expected)
        if not any(_is(value, name) for name in names):
            return f"{path}: expected {' or '.join(names)}, got {_kind(value)}"
    if "const" in schema and value != schema["const"]:
        return f"{path}: expected {schema['const']!r}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{path}: {value!r} is not one of {schema['enum']!r}"
    for key in ("anyOf", "oneOf"):
        if key in schema and all(schema_error(value, s, path) for s in schema[key]):
            return f"{path}: matches none of the {key} alternatives"
    if isinstance(value, dict):
        return _object(value, schema, path)
    if isinstance(value, list):
        return _array(value, schema, path)
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            return f"{path}: shorter than {schema['minLength']}"
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            return f"{path}: longer than {schema['maxLength']}"
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            return f"{path}: {value} is below the minimum {schema['minimum']}"
        if "maximum" in schema and value > schema["maximum"]:
            return f"{path}: {value} is above the maximum {schema['maximum']}"
    return None


def _object(value: dict[str, Any], schema: dict[str, Any], path: str) -> str | None:
    for name in schema.get("required", ()):
        if name not in value:
            return f"{path}: missing required property {name!r}"
    properties: dict[str, Any] = schema.get("properties", {})
    extra = schema.get("additionalProperties", True)
    for name, item in value.items():
        sub = properties.get(name)
        if sub is None:
            if extra is False:
                return f"{path}: unexpected property {name!r}"
            sub = extra if isinstance(extra, dict) else None
        if sub is not None:
            error = schema_error(item, sub, f"{path}.{name}")
            if error:
                return error
    return None


def _array(value: list[Any], schema: dict[str, Any], path: str) -> str | None:
    if len(value) < schema.get("minItems", 0):
        return f"{path}: fewer than {schema['minItems']} items"
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        return f"{path}: more than {schema['maxItems']} items"
    items = schema.get("items")
    if isinstance(items, dict):
        for i, item in enumerate(value):
            error = schema_error(item, items, f"{path}[{i}]")
            if error:
                return error
    return None


def _is(value: Any, name: str) -> bool:
    if isinstance(value, bool) and name in ("integer", "number"):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, (object,)))


def _kind(value: Any) -> str:
    for name in _TYPES:
        if _is(value, name):
            return name
    return type(value).__name__
