"""The Agent base: identity, capabilities, topics, and the two entry points."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from converge.core import Agent, ClaimTask, Decision, Identity, Message, Task, Topic
from converge.errors import AgentModeError, ValidationError


class Ctx:
    """A minimal RunContext."""

    run_id = "run-1"
    node_id = "node-1"
    attempt = 1
    idempotency_key = "run-1:node-1:1"

    def report_usage(
        self, tokens_in: int = 0, tokens_out: int = 0, tool_calls: int = 0, cost: float = 0.0
    ) -> None:
        pass

    async def emit(self, chunk: Any) -> None:
        pass

    async def progress(self, fraction: float, message: str = "") -> None:
        pass

    async def pause(self, question: str) -> Any:
        return None


class Decider(Agent):
    async def decide(self, messages: Sequence[Message], tasks: Sequence[Task]) -> list[Decision]:
        return [ClaimTask(task_id=t.id) for t in tasks]


class Runner(Agent):
    async def run(self, inputs: Mapping[str, Any], ctx: Any) -> Any:
        return {"echo": dict(inputs), "node": ctx.node_id}


class Both(Decider, Runner):
    pass


async def test_decide_only_agent_used_as_a_graph_node_says_run_is_missing() -> None:
    agent = Decider(name="planner")
    assert agent.supports_decide
    assert not agent.supports_run
    with pytest.raises(AgentModeError) as info:
        await agent.run({}, Ctx())
    err = info.value
    assert isinstance(err, NotImplementedError)
    assert isinstance(err, ValidationError)
    assert err.missing == "run"
    assert err.agent == "planner"
    assert "run()" in str(err)
    assert "planner" in str(err)
    task = Task(objective="o")
    assert await agent.decide([], [task]) == [ClaimTask(task_id=task.id)]


async def test_run_only_agent_used_in_the_runtime_says_decide_is_missing() -> None:
    agent = Runner()
    assert agent.supports_run
    assert not agent.supports_decide
    with pytest.raises(NotImplementedError) as info:
        await agent.decide([], [])
    assert isinstance(info.value, AgentModeError)
    assert info.value.missing == "decide"
    assert "decide()" in str(info.value)
    assert "Runner" in str(info.value)  # the class name is the default agent name
    assert await agent.run({"a": 1}, Ctx()) == {"echo": {"a": 1}, "node": "node-1"}


async def test_agent_with_both_entry_points_and_the_bare_base() -> None:
    both = Both()
    assert both.supports_run
    assert both.supports_decide
    bare = Agent()
    assert not bare.supports_run
    assert not bare.supports_decide
    with pytest.raises(AgentModeError):
        await bare.run({}, Ctx())
    with pytest.raises(AgentModeError):
        await bare.decide([], [])


async def test_lifecycle_hooks_default_to_doing_nothing() -> None:
    agent = Decider()
    await agent.on_start()
    await agent.on_error(RuntimeError("x"))
    await agent.on_stop()


def test_agent_identity_capabilities_and_topics() -> None:
    ident = Identity.generate()
    agent = Decider(
        ident, name="a1", capabilities=["summarize@1.4", "translate"], topics=["market.>", "chat"]
    )
    assert agent.identity is ident
    assert agent.did == ident.did
    assert agent.name == "a1"
    assert agent.capabilities.satisfies("summarize>=1.2,<2")
    assert "translate" in agent.capabilities
    assert agent.topics == (Topic("market.>"), Topic("chat"))
    assert ident.did in repr(agent)
    assert ident.private_bytes().hex() not in repr(agent)


def test_agents_get_their_own_identity_by_default() -> None:
    a, b = Decider(), Decider()
    assert a.identity.has_private_key
    assert a.did != b.did
    assert a.did.startswith("did:key:z6Mk")


@pytest.mark.parametrize(
    "kwargs", [{"topics": ["a..b"]}, {"capabilities": ["Not Valid"]}, {"topics": ["a.>.b"]}]
)
def test_invalid_topics_or_capabilities_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        Decider(**kwargs)
