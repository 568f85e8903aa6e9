"""Tools: function tools with schemas from their signatures, and the registry."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import pytest

from converge.core import FunctionTool, Tool, ToolRegistry
from converge.errors import ValidationError


def search(query: str, limit: int = 10, tags: list[str] | None = None) -> dict[str, Any]:
    """Search the index.

    Longer explanation that is not part of the short description.
    """
    return {"query": query, "limit": limit, "tags": tags, "thread": threading.get_ident()}


async def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def test_schema_is_read_from_the_signature() -> None:
    tool = FunctionTool(search)
    assert tool.name == "search"
    assert tool.description == "Search the index."
    params = tool.parameters
    assert params["type"] == "object"
    assert params["required"] == ["query"]
    assert params["additionalProperties"] is False
    props = params["properties"]
    assert set(props) == {"query", "limit", "tags"}
    assert props["query"] == {"type": "string"}
    assert props["limit"] == {"type": "integer", "default": 10}
    assert {"type": "array", "items": {"type": "string"}} in props["tags"]["anyOf"]
    assert {"type": "null"} in props["tags"]["anyOf"]
    assert isinstance(tool, Tool)


def test_name_and_description_can_be_given() -> None:
    tool = FunctionTool(search, name="web-search", description="Find pages.")
    assert tool.name == "web-search"
    assert tool.description == "Find pages."
    assert FunctionTool(lambda x: x, name="identity").description == ""


def _named(name: str) -> Any:
    def fn() -> None:
        pass

    fn.__name__ = name
    return fn


@pytest.mark.parametrize("name", ["", "1abc", "has space", "a" * 65, "dot.ted", "<lambda>"])
def test_invalid_tool_names_are_refused(name: str) -> None:
    with pytest.raises(ValidationError) as info:
        FunctionTool(_named(name))
    assert info.value.field == "name"
    if name:
        with pytest.raises(ValidationError):
            FunctionTool(_named("fine"), name=name)


def test_functions_with_star_args_or_positional_only_parameters_are_refused() -> None:
    def star(*args: int) -> None:
        pass

    def kw(**kwargs: int) -> None:
        pass

    def pos(a: int, /) -> None:
        pass

    for fn, param in ((star, "args"), (kw, "kwargs"), (pos, "a")):
        with pytest.raises(ValidationError) as info:
            FunctionTool(fn)
        assert info.value.field == param


async def test_sync_tool_runs_off_the_event_loop_thread() -> None:
    tool = FunctionTool(search)
    result = await tool.invoke({"query": "q"})
    assert result["query"] == "q"
    assert result["limit"] == 10
    assert result["tags"] is None
    assert result["thread"] != threading.get_ident()


async def test_async_tool_is_awaited() -> None:
    assert await FunctionTool(add).invoke({"a": 2, "b": 3}) == 5


async def test_arguments_are_converted_to_the_annotated_types() -> None:
    tool = FunctionTool(search)
    assert tool.check({"query": "q", "limit": "5", "tags": ["a"]}) == {
        "query": "q",
        "limit": 5,
        "tags": ["a"],
    }


@pytest.mark.parametrize(
    ("arguments", "field"),
    [
        ({"query": "q", "limit": "many"}, "limit"),
        ({"query": 3}, "query"),
        ({"query": "q", "tags": [1]}, "tags"),
        ({"query": "q", "colour": "red"}, "colour"),
    ],
)
async def test_bad_arguments_are_validation_errors_naming_the_argument(
    arguments: dict[str, Any], field: str
) -> None:
    tool = FunctionTool(search)
    with pytest.raises(ValidationError) as info:
        await tool.invoke(arguments)
    assert info.value.field is not None
    assert info.value.field.split("[")[0] == field
    assert field in str(info.value)
    assert "search" in str(info.value)


async def test_missing_argument_is_named_in_the_message() -> None:
    with pytest.raises(ValidationError, match="`a`"):
        await FunctionTool(add).invoke({"b": 1})


async def test_arguments_must_be_a_mapping() -> None:
    with pytest.raises(ValidationError) as info:
        await FunctionTool(add).invoke([1, 2])  # type: ignore[arg-type]
    assert info.value.field == "arguments"


class Echo:
    """A hand-written Tool (not a function)."""

    name = "echo"
    description = "Echo the arguments."
    parameters: dict[str, Any] = {"type": "object"}  # noqa: RUF012

    async def invoke(self, arguments: Mapping[str, Any]) -> Any:
        return dict(arguments)


async def test_registry_registers_functions_and_tools_and_invokes_by_name() -> None:
    registry = ToolRegistry()

    @registry.register
    def shout(text: str) -> str:
        """Upper-case it."""
        return text.upper()

    assert shout("x") == "X"  # the decorator returns the function itself
    registry.register(add)
    registry.register(Echo())
    registry.register(FunctionTool(search, name="find"))
    assert registry.names == ["shout", "add", "echo", "find"]
    assert len(registry) == 4
    assert "echo" in registry
    assert "nope" not in registry
    assert await registry.invoke("shout", {"text": "hi"}) == "HI"
    assert await registry.invoke("add", {"a": 1, "b": 2}) == 3
    assert await registry.invoke("echo", {"k": 1}) == {"k": 1}
    assert {t.name for t in registry} == {"shout", "add", "echo", "find"}
    schemas = {s["name"]: s for s in registry.schemas()}
    assert schemas["shout"]["description"] == "Upper-case it."
    assert schemas["shout"]["parameters"]["required"] == ["text"]
    assert schemas["echo"]["parameters"] == {"type": "object"}


def test_registry_refuses_a_second_tool_of_the_same_name() -> None:
    registry = ToolRegistry()
    registry.register(add)
    with pytest.raises(ValidationError, match="add"):
        registry.register(add)

    async def other(x: int) -> int:
        return x

    with pytest.raises(ValidationError):
        registry.register(other, name="add")
    assert len(registry) == 1


async def test_unknown_tool_lists_the_known_ones() -> None:
    registry = ToolRegistry()
    with pytest.raises(ValidationError, match="known: none"):
        registry.get("search")
    registry.register(search)
    registry.register(add)
    with pytest.raises(ValidationError) as info:
        await registry.invoke("serch", {"query": "q"})
    assert info.value.field == "tool"
    assert "'serch'" in str(info.value)
    assert "known: add, search" in str(info.value)
