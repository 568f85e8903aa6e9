"""``SafeTools``: the one path every tool call takes.

The executor and LLM agents both call tools through it.

```python
tools = SafeTools(
    registry,
    policy=ActionPolicy(allow_tools={"search", "fetch"}),
    limits=ResourceLimits(max_tool_calls=20),
    timeout_s=10,
)
specs = tools.specs()                                  # what a model is offered
result = await tools.call(agent.did, "search", {"q": "converge"})
```

A call goes through, in order:

1. **Policy and limits**: the call is checked as an ``InvokeTool`` decision by
   ``validate_safety`` — the decision and tool allow/deny lists, the agent's exhausted budgets,
   and ``max_tool_calls`` — so the rules are the same as for the runtime's decisions. A refused
   call is a ``ToolCallRefused`` (a ``PolicyViolation``) carrying the rule.
2. **Lookup**: an unknown tool is a ``ValidationError`` that lists the known ones.
3. **Arguments**: checked against the tool's schema (converted to the annotated types for a
   function tool; for any other ``Tool`` the top level of its JSON Schema is checked: an
   object, required properties present, no unknown ones when ``additionalProperties`` is
   false, and each property's JSON type). A bad argument is a ``ValidationError`` naming it.
4. **Counting**: the call counts against ``max_tool_calls`` from here on, whatever its outcome
   (a tool that fails or hangs still used a call: a runaway loop of failing calls stops).
5. **Running**, under ``timeout_s``: a tool marked ``unsafe`` (``FunctionTool(fn, unsafe=True)``)
   runs in a sandboxed child process (see ``converge.runtime.sandbox``); others run here (a
   sync function in a worker thread). Whatever the tool raises becomes a ``ToolError`` naming
   the tool, with the exception chained — ``sys.exit()`` and its own ``KeyboardInterrupt``
   too (``converge.core.user_code``; a cancellation or a signal's goes on); running out of time
   is a ``ToolTimeout``.

Usage is kept per agent id in ``usage`` (a mapping you may share, or read back). A runtime that
already passes the agent's decisions through ``validate_safety`` counts tool calls itself, so
the executor's own ``SafeTools`` allows everything by default and adds the timeout and the
error translation; give it a policy to enforce one at the executor as well.

A thread running a sync tool cannot be stopped: on timeout it is abandoned (and finishes in the
background). Mark a tool that may hang ``unsafe``: a sandboxed tool is killed.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from converge.core.clock import Clock, system_clock
from converge.core.decisions import InvokeTool
from converge.core.tools import FunctionTool, Tool, ToolRegistry, ToolSpec
from converge.core.user_code import is_interruption
from converge.errors import ToolCallRefused, ToolError, ToolTimeout, ValidationError
from converge.policy.safety import ActionPolicy, AgentUsage, ResourceLimits, validate_safety
from converge.runtime.sandbox import SandboxedTool, SandboxLimits

__all__ = ["SafeTools"]

_JSON_TYPES: dict[str, type | tuple[type, ...]] = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": (list, tuple),
    "object": Mapping,
    "null": type(None),
}


class SafeTools:
    """Tool calls under policy, limits, a timeout and a sandbox for unsafe tools.

    Args:
        tools: the tools (a ``ToolRegistry``, or any iterable of ``Tool``).
        policy: which tools may be called (``allow_tools``/``deny_tools``; ``invoke_tool`` in
            the decision lists); everything by default.
        limits: ``max_tool_calls`` per agent, and the lifetime budgets that stop an agent.
        usage: per-agent usage, by agent id; filled in as agents call (new entries start at
            the clock's ``now``). Pass the runtime's records to share its counts.
        timeout_s: the most seconds one call may take (None: no limit of its own; a sandboxed
            tool keeps its wall-time limit).
        sandbox: limits for tools marked ``unsafe`` that are not already ``SandboxedTool``s.
        clock: the time source for usage and budgets.
    """

    def __init__(
        self,
        tools: ToolRegistry | Iterable[Tool],
        *,
        policy: ActionPolicy | None = None,
        limits: ResourceLimits | None = None,
        usage: MutableMapping[str, AgentUsage] | None = None,
        timeout_s: float | None = 30.0,
        sandbox: SandboxLimits | None = None,
        clock: Clock = system_clock,
    ) -> None:
        if isinstance(tools, ToolRegistry):
            registry = tools
        else:
            registry = ToolRegistry()
            for tool in tools:
                registry.register(tool)
        if timeout_s is not None and not timeout_s > 0:
            raise ValidationError(f"timeout_s must be > 0, not {timeout_s!r}", field="timeout_s")
        self.registry = registry
        """The tools."""
        self.policy = policy or ActionPolicy.allow_all()
        self.limits = limits or ResourceLimits()
        self.usage: MutableMapping[str, AgentUsage] = {} if usage is None else usage
        """What each agent has used, by agent id."""
        self.timeout_s = timeout_s
        self.sandbox = sandbox or SandboxLimits()
        self.clock = clock
        self._sandboxed: dict[str, SandboxedTool] = {}

    def usage_for(self, agent_id: str) -> AgentUsage:
        """The usage record of ``agent_id`` (created on first use)."""
        usage = self.usage.get(agent_id)
        if usage is None:
            usage = self.usage[agent_id] = AgentUsage(self.clock.now())
        return usage

    def allowed(self, name: str) -> bool:
        """Whether the policy lets any agent call ``name`` (limits aside)."""
        p = self.policy
        if "invoke_tool" in p.deny_decisions or name in p.deny_tools:
            return False
        if p.allow_decisions is not None and "invoke_tool" not in p.allow_decisions:
            return False
        return p.allow_tools is None or name in p.allow_tools

    def specs(self) -> list[ToolSpec]:
        """The tools the policy allows, as a model is offered them (name, description, schema)."""
        return [
            ToolSpec(name=t.name, description=t.description, parameters=t.parameters)
            for t in self.registry
            if self.allowed(t.name)
        ]

    async def call(
        self, agent_id: str, name: str, arguments: Mapping[str, Any] | None = None
    ) -> Any:
        """Call tool ``name`` for ``agent_id`` with ``arguments``; see the module doc.

        Raises:
            ToolCallRefused: the policy or a limit refuses the call (the tool did not run).
            ValidationError: no such tool, or the arguments do not meet its schema.
            ToolTimeout: the call took longer than ``timeout_s`` (or the sandbox's wall time).
            ToolMemoryExceeded: a sandboxed tool went past its memory limit.
            ToolError: the tool raised, crashed or returned something unusable.
        """
        arguments = {} if arguments is None else arguments
        if not isinstance(arguments, Mapping):
            raise ValidationError(
                f"arguments of tool {name!r} must be an object, not {type(arguments).__name__}",
                field="arguments",
            )
        decision = InvokeTool(tool=name, arguments=dict(arguments))
        usage, now = self.usage_for(agent_id), self.clock.now()
        violations = validate_safety(
            [decision], limits=self.limits, policy=self.policy, usage=usage, now=now
        )
        if violations:
            raise ToolCallRefused(name, agent_id, violations)
        tool = self._runnable(self.registry.get(name))
        check = getattr(tool, "check", None)
        if callable(check):
            check(arguments)
        else:
            check_arguments(tool.parameters, arguments, name)
        usage.apply(decision, now)
        return await self._run(tool, arguments, agent_id)

    async def _run(self, tool: Tool, arguments: Mapping[str, Any], agent_id: str) -> Any:
        name = tool.name
        try:
            async with asyncio.timeout(self.timeout_s) as scope:
                return await tool.invoke(arguments)
        except ToolError as exc:
            if exc.agent_id is None:
                exc.agent_id = agent_id
            raise
        except TimeoutError as exc:
            if scope.expired():
                assert self.timeout_s is not None
                killed = isinstance(tool, SandboxedTool)
                raise ToolTimeout(name, self.timeout_s, killed=killed, agent_id=agent_id) from None
            raise _wrap(name, agent_id, exc) from exc
        except BaseException as exc:  # a tool's ``sys.exit()`` too: the tool's failure
            if is_interruption(exc):
                raise
            raise _wrap(name, agent_id, exc) from exc

    def _runnable(self, tool: Tool) -> Tool:
        """An unsafe function tool's sandboxed twin (made once); any other tool as it is."""
        if not (isinstance(tool, FunctionTool) and tool.unsafe):
            return tool
        twin = self._sandboxed.get(tool.name)
        if twin is None or twin._inner.fn is not tool.fn:
            twin = SandboxedTool(
                tool.fn, name=tool.name, description=tool.description, limits=self.sandbox
            )
            self._sandboxed[tool.name] = twin
        return twin

    def __repr__(self) -> str:
        return f"SafeTools({self.registry.names!r}, timeout_s={self.timeout_s!r})"


def _wrap(name: str, agent_id: str, exc: BaseException) -> ToolError:
    return ToolError(name, str(exc), error_type=type(exc).__name__, agent_id=agent_id)


def check_arguments(schema: Mapping[str, Any], arguments: Mapping[str, Any], tool: str) -> None:
    """Check the top level of ``arguments`` against a JSON Schema object (see the module doc).

    Raises:
        ValidationError: naming the offending argument.
    """
    props: Mapping[str, Any] = schema.get("properties") or {}
    for key in schema.get("required") or ():
        if key not in arguments:
            raise ValidationError(
                f"invalid arguments for tool {tool!r}: missing required argument `{key}`",
                field=key,
            )
    for key, value in arguments.items():
        spec = props.get(key)
        if spec is None:
            if schema.get("additionalProperties") is False:
                raise ValidationError(
                    f"invalid arguments for tool {tool!r}: unknown argument `{key}`", field=key
                )
            continue
        kinds = spec.get("type") if isinstance(spec, Mapping) else None
        names = [kinds] if isinstance(kinds, str) else list(kinds or ())
        known = [_JSON_TYPES[n] for n in names if n in _JSON_TYPES]
        if not known:
            continue
        bool_ok = "boolean" in names
        if any(isinstance(value, k) for k in known) and (bool_ok or not isinstance(value, bool)):
            continue
        raise ValidationError(
            f"invalid arguments for tool {tool!r}: `{key}` must be {' or '.join(names)}, "
            f"not {type(value).__name__}",
            field=key,
        )
