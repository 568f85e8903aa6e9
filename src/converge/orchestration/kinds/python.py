"""``kind: python``, the default: an agent named by ``module:attr``.

The reference names an agent or a callable.

```yaml
agents:
  writer: mypackage.agents:write                  # a bare string is this kind
  fast:   {kind: python, ref: "mypackage.agents:quick", inline: true}
```
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from converge.orchestration._agents import AgentSpec
from converge.orchestration.kinds import Kind, KindContext
from converge.orchestration.object_refs import check_object_ref

__all__ = ["KIND"]

_OPTIONS = {
    "ref": "``module:attr`` of the agent: an ``Agent`` (instance or class) or a callable "
    "``fn(inputs)`` / ``fn(inputs, ctx)``, async or not.",
    "inline": "``true``: run a sync callable on the event loop instead of the thread pool "
    "(default false).",
}


def _read(options: Mapping[str, Any], ctx: KindContext) -> AgentSpec:
    found = ctx.options(options, _OPTIONS, required=("ref",))
    ref, inline = found["ref"], found.get("inline", False)
    # Only its form here: the module is imported when the graph is compiled.
    check_object_ref(ref, field=f"agents.{ctx.name}.ref", source=ctx.source, line=ctx.line)
    if not isinstance(inline, bool):
        raise ctx.fail(f"inline must be true or false, not {inline!r}", "inline")
    return AgentSpec(ref, inline=inline)


KIND = Kind(
    "python",
    _read,
    options=_OPTIONS,
    required=("ref",),
    doc="The default: an agent or callable named by ``module:attr`` (a bare string is this kind).",
)
