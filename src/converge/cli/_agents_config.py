"""The file ``converge agents run`` reads.

It says which agents to start, in which pools.

```yaml
pools:                         # optional: pools created if absent, then joined by agents
  reviewers:                   # the pool id
    name: Reviewers            # default: the id
    admission: open            # open (default) or token
    token_env: REVIEWERS_TOKEN # token admission: the environment variable holding the token
agents:                        # required: one runtime per agent, by name
  alpha:
    ref: mypkg.agents:Reviewer # module:attr — see below
    capabilities: [review@1.0] # optional: replaces the agent's own
    pools: [reviewers]         # optional: pools it joins before it starts
    max_batch: 10              # optional: messages and tasks per decide() (default 100)
    claim_batch: 10            # optional, board workers: tasks taken per decide() (default 1)
    max_consecutive_failures: 20  # optional: failed decisions in a row that stop it (default 100)
    key: keys/alpha.pem        # optional: its Ed25519 key; created (mode 0600) if absent
    limits:                    # optional: its ResourceLimits, each optional
      max_wall_time_s: 3600    #   also max_claimed_tasks, max_messages_per_second,
      max_cost: 5.0            #   max_decide_calls_per_second, max_tool_calls, max_tokens,
                               #   max_decisions_per_call
    policy:                    # optional: its ActionPolicy (lists of names)
      deny_decisions: [submit_task]  # also allow_decisions, allow_tools, deny_tools
```

``ref`` names an ``Agent`` class (instantiated without arguments) or instance that implements
``decide``, or any other callable, which becomes a *board worker*: it is shown the tasks it can
see, claims one, and reports ``fn(task)`` (sync or async; a raise fails the task). With
``claim_batch: N`` it takes up to N of them at a time, runs ``fn`` on them concurrently, and
claims and reports them as one unit of the board each (``TaskManager.claim_next`` and
``report_many``); ``claim_batch`` is for board workers only (an ``Agent`` decides how many tasks
it claims). A board worker computes the result before its claim is applied, so two workers
racing for one task may both compute it (the loser's report is refused and logged): use it for
idempotent work, and write an ``Agent`` when work must happen once.

A budget in ``limits`` (``max_wall_time_s``, ``max_tokens``, ``max_cost``) that runs out stops
the agent's runtime (wall time when it is up, even for an idle agent); the other limits refuse
the decisions that break them, except ``max_decide_calls_per_second``, which makes the runtime
wait. A limit that is null is unlimited; one left out is unlimited too, except the two rates,
which keep ``ResourceLimits``' defaults (10,000 messages and 1,000 ``decide()`` calls a second:
a board worker, one task per call, does at most 1,000 tasks a second). An ``allow_*`` list that
is empty allows nothing; one left out or null allows everything. ``max_consecutive_failures``
decisions failing in a row (a refused claim, a tool that raises…) also stop the agent's runtime,
as a failure.

``capabilities`` are what the agent has, each a name and one version (``translate@1.0``); a
requirement written there (``translate>=1.0``, what a task asks for) is a ``CapabilityError`` at
its item's line whose ``hint`` is the capability meant. Every key, with its type, default and
meaning, is in ``TOP_KEYS``, ``POOL_KEYS`` and ``AGENT_KEYS``, which the loader checks keys
against and ``agents_reference`` renders (``docs/guides/agents-file-reference.md``).

Relative ``key`` paths are relative to the file. A token pool's token is read from the
environment, never from the file; agents joining it present the same variable's value. Every
mistake is a ``ValidationError`` with the file and line. The file is read by
``orchestration.yaml_reader`` (its limits on aliases, nesting and numbers apply), ``ref`` is
checked by ``orchestration.object_refs`` as it is read, and ``max_wall_time_s`` is at most
``MAX_SECONDS`` (about 31 years).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from converge.core.capability import Capability
from converge.core.clip import clip
from converge.errors import CapabilityError, ValidationError
from converge.orchestration.object_refs import check_object_ref
from converge.orchestration.yaml_reader import YamlReader, compose
from converge.policy.safety import ActionPolicy, ResourceLimits

__all__ = [
    "AGENT_KEYS",
    "POOL_KEYS",
    "TOP_KEYS",
    "AgentEntry",
    "AgentsConfig",
    "KeyDoc",
    "PoolSpec",
    "load_agents_config",
]

KeyDoc = tuple[str, str, str]
"""A key of the file: its type, its default and what it means (for ``agents_reference``)."""

TOP_KEYS: dict[str, KeyDoc] = {
    "pools": (
        "mapping",
        "—",
        "Pools by id, created if absent and then joined by the agents that name them: see "
        "[pools](#pools).",
    ),
    "agents": (
        "mapping",
        "required",
        "The agents by name, one runtime each (the name is printed and given to the agent): "
        "see [agents](#agents).",
    ),
}
"""The file's top-level keys."""
POOL_KEYS: dict[str, KeyDoc] = {
    "name": ("str", "the id", "The pool's human-readable name."),
    "admission": (
        "str",
        "`open`",
        "`open`: anyone may join; `token`: an agent joins with the token in `token_env`.",
    ),
    "token_env": (
        "str",
        "—",
        "For `token` admission: the environment variable holding the token (never the token "
        "itself); agents joining the pool present the same variable's value.",
    ),
}
"""The keys of a pool under ``pools``."""
AGENT_KEYS: dict[str, KeyDoc] = {
    "ref": (
        "module:attr",
        "required",
        "What runs: an `Agent` class (made without arguments) or instance that implements "
        "`decide()`, or any other callable, which becomes a *board worker*: see "
        "[What `ref` names](#what-ref-names).",
    ),
    "capabilities": (
        "list of str",
        "the agent's own",
        "Capabilities replacing the agent's own: a name and one version, `translate@1.0` "
        "(`translate` is version 1.0.0). Not a requirement such as `translate>=1.0`: see "
        "[Capabilities and requirements](#capabilities-and-requirements).",
    ),
    "pools": ("list of str", "`[]`", "Ids of pools (declared under `pools`) it joins first."),
    "max_batch": ("int", "`100`", "The most messages, and visible tasks, per `decide()` call."),
    "claim_batch": (
        "int",
        "`1`",
        "For a board worker: the most tasks it claims at a time (one unit of the board), "
        "running its function on them concurrently.",
    ),
    "max_consecutive_failures": (
        "int",
        "`100`",
        "Decisions failing in a row (a refused claim, a tool that raises…) that stop its "
        "runtime, as a failure.",
    ),
    "key": (
        "path",
        "—",
        "Its Ed25519 key file (PKCS#8 PEM), relative to this file; created with mode 0600 if "
        "absent. Without one the agent has a new identity at each start.",
    ),
    "limits": (
        "mapping",
        "—",
        "Its quotas and budgets (`ResourceLimits`): see [limits](#limits).",
    ),
    "policy": (
        "mapping",
        "—",
        "What it may do (`ActionPolicy`): see [policy](#policy).",
    ),
}
"""The keys of an agent under ``agents``."""

_TOP = tuple(TOP_KEYS)
_POOL = tuple(POOL_KEYS)
_AGENT = tuple(AGENT_KEYS)
_LIMITS = tuple(ResourceLimits.__struct_fields__)
_POLICY = tuple(ActionPolicy.__struct_fields__)
_ADMISSIONS = ("open", "token")


@dataclass(frozen=True)
class PoolSpec:
    """A pool the agents use."""

    id: str
    """The pool id."""
    name: str
    """Its human-readable name."""
    admission: str
    """``open`` or ``token``."""
    token_env: str | None
    """For token admission: the environment variable holding the token."""
    line: int
    """Where it is declared."""


@dataclass(frozen=True)
class AgentEntry:
    """One agent to run."""

    name: str
    """Its name (printed, and given to the agent)."""
    ref: str
    """``module:attr`` of an ``Agent`` class or instance, or a callable."""
    capabilities: tuple[str, ...] | None
    """Capabilities replacing the agent's own; None keeps them."""
    pools: tuple[str, ...]
    """Pool ids it joins."""
    max_batch: int
    """Messages and tasks per ``decide()``."""
    key: Path | None
    """Its key file; None: a new identity each start."""
    line: int
    """Where it is declared."""
    limits: ResourceLimits = dataclasses.field(default_factory=ResourceLimits)
    """Its quotas and budgets."""
    policy: ActionPolicy = dataclasses.field(default_factory=ActionPolicy)
    """What it may do."""
    max_consecutive_failures: int = 100
    """Failed decisions in a row that stop its runtime (``AgentRuntime``'s default)."""
    claim_batch: int = 1
    """For a board worker: the most tasks it takes per ``decide()``."""


@dataclass(frozen=True)
class AgentsConfig:
    """A parsed agents file."""

    source: str
    """The file."""
    pools: tuple[PoolSpec, ...]
    """The pools, in file order."""
    agents: tuple[AgentEntry, ...]
    """The agents, in file order."""


def load_agents_config(path: Path) -> AgentsConfig:
    """Read and check the agents file at ``path`` (``ValidationError`` with file and line)."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ValidationError(f"cannot read agents file: {exc.strerror}", source=source) from None
    except UnicodeDecodeError:
        raise ValidationError("the agents file is not UTF-8 text", source=source) from None
    root = compose(text, source)
    if not isinstance(root, yaml.MappingNode):
        raise ValidationError("the agents file must be a mapping with `agents`", source=source)
    reader = YamlReader(source)
    top = reader.mapping(root, "", _TOP)
    pools: list[PoolSpec] = []
    if "pools" in top and not reader.is_null(top["pools"]):
        for pool_id, node in reader.mapping(top["pools"], "pools", None).items():
            pools.append(_pool(reader, pool_id, node))
    if "agents" not in top or reader.is_null(top["agents"]):
        raise ValidationError(
            "an agents file needs `agents`", field="agents", source=source, line=1
        )
    known = {p.id for p in pools}
    agents = [
        _agent(reader, name, node, path.parent, known)
        for name, node in reader.mapping(top["agents"], "agents", None).items()
    ]
    if not agents:
        raise reader.fail("`agents` is empty: name at least one", top["agents"], "agents")
    return AgentsConfig(source, tuple(pools), tuple(agents))


def _pool(reader: YamlReader, pool_id: str, node: yaml.Node) -> PoolSpec:
    field = f"pools.{pool_id}"
    spec = {} if reader.is_null(node) else reader.mapping(node, field, _POOL)
    name = reader.string(spec["name"], f"{field}.name") if "name" in spec else pool_id
    admission = "open"
    if "admission" in spec:
        admission = reader.string(spec["admission"], f"{field}.admission")
        if admission not in _ADMISSIONS:
            raise reader.fail(
                f"admission is {' or '.join(_ADMISSIONS)}, not {admission!r}",
                spec["admission"],
                f"{field}.admission",
            )
    token_env = (
        reader.string(spec["token_env"], f"{field}.token_env") if "token_env" in spec else None
    )
    if admission == "token":
        if token_env is None:
            raise reader.fail("token admission needs `token_env`", node, f"{field}.token_env")
        if not os.environ.get(token_env):
            raise reader.fail(
                f"environment variable {token_env} (the pool's token) is not set or empty",
                spec["token_env"],
                f"{field}.token_env",
            )
    return PoolSpec(pool_id, name, admission, token_env, node.start_mark.line + 1)


def _agent(
    reader: YamlReader, name: str, node: yaml.Node, base: Path, pools: set[str]
) -> AgentEntry:
    field = f"agents.{name}"
    spec = reader.mapping(node, field, _AGENT)
    if "ref" not in spec:
        raise reader.fail("an agent needs `ref: module:attr`", node, f"{field}.ref")
    ref = reader.string(spec["ref"], f"{field}.ref")
    line = spec["ref"].start_mark.line + 1
    check_object_ref(ref, field=f"{field}.ref", source=reader.source, line=line)
    caps = None
    if "capabilities" in spec:
        caps = _capabilities(reader, spec["capabilities"], f"{field}.capabilities")
    joins = reader.strings(spec["pools"], f"{field}.pools") if "pools" in spec else ()
    for pool in joins:
        if pool not in pools:
            raise reader.fail(
                f"agent {name!r} joins pool {pool!r}, which `pools` does not declare",
                spec["pools"],
                f"{field}.pools",
            )
    max_batch = _count(reader, spec, "max_batch", field, 100)
    # AgentRuntime's defaults, repeated: this module is read before the runtime is imported.
    failures = _count(reader, spec, "max_consecutive_failures", field, 100)
    claim_batch = _count(reader, spec, "claim_batch", field, 1)
    key = None
    if "key" in spec:
        key = base / Path(reader.string(spec["key"], f"{field}.key")).expanduser()
    limits = ResourceLimits()
    if "limits" in spec and not reader.is_null(spec["limits"]):
        where = f"{field}.limits"
        given = reader.mapping(spec["limits"], where, _LIMITS)
        amounts = {k: _amount(reader, k, v, f"{where}.{k}") for k, v in given.items()}
        limits = reader.build(ResourceLimits, spec["limits"], where, amounts, given)
    policy = ActionPolicy()
    if "policy" in spec and not reader.is_null(spec["policy"]):
        where = f"{field}.policy"
        given = reader.mapping(spec["policy"], where, _POLICY)
        names = {k: _names(reader, v, f"{where}.{k}") for k, v in given.items()}
        policy = reader.build(ActionPolicy, spec["policy"], where, names, given)
    line = node.start_mark.line + 1
    return AgentEntry(
        name, ref, caps, joins, max_batch, key, line, limits, policy, failures, claim_batch
    )


def _capabilities(reader: YamlReader, node: yaml.Node, field: str) -> tuple[str, ...]:
    """Capabilities (``translate@1.0``), each checked at its own line: a requirement written
    in their place (``translate>=1.0``) is a ``CapabilityError`` with the form meant."""
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    out = []
    for i, item in enumerate(items):
        where = f"{field}[{i}]" if isinstance(node, yaml.SequenceNode) else field
        text = reader.string(item, where)
        line = item.start_mark.line + 1
        try:
            Capability.parse(text)
        except CapabilityError as exc:
            raise CapabilityError(
                exc.detail,
                text=exc.text,
                expected=exc.expected,
                hint=exc.hint,
                field=where,
                source=reader.source,
                line=line,
            ) from None
        except ValidationError:  # a bad version
            raise reader.fail(
                f"invalid capability {clip(text)!r}: a name and an optional version, such as "
                "'translate' or 'translate@1.0'",
                item,
                where,
            ) from None
        out.append(text)
    return tuple(out)


def _amount(reader: YamlReader, key: str, node: yaml.Node, field: str) -> float | None:
    """A limit: null (unlimited), seconds for the wall time, else a number."""
    if reader.is_null(node):
        return None
    if key == "max_wall_time_s":
        return reader.seconds(node, field)
    value: float = reader.number(node, field)
    return value


def _count(
    reader: YamlReader, spec: dict[str, yaml.Node], key: str, field: str, default: int
) -> int:
    """The agent's ``key``, an int >= 1, or ``default`` when absent."""
    if key not in spec:
        return default
    value = reader.number(spec[key], f"{field}.{key}")
    if not isinstance(value, int) or value < 1:
        raise reader.fail(f"{key} must be an int >= 1, not {value!r}", spec[key], f"{field}.{key}")
    return value


def _names(reader: YamlReader, node: yaml.Node, field: str) -> frozenset[str] | None:
    """A list of names (``[]``: none; null: every one); a single name is a list of one."""
    if reader.is_null(node):
        return None
    if isinstance(node, yaml.SequenceNode) and not node.value:
        return frozenset()
    return frozenset(reader.strings(node, field))
