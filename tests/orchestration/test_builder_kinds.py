"""``Graph.add_node(id, {"kind": ...})`` and ``Graph(agents={...: {"kind": ...}})`` take the
same kind mappings as YAML's ``agents:``, read by the same kinds, refused the same way; a
tender node built so runs a real auction among a ``Market``'s providers."""

from __future__ import annotations

from typing import Any

import pytest

from converge.coordination.bidding import Provider
from converge.errors import ValidationError
from converge.orchestration import Engine, Graph, Services, Tender, loads_graph
from converge.orchestration.kinds.board import BoardTask
from converge.orchestration.kinds.team import Team
from converge.runtime import Market

TENDER = {"kind": "tender", "capability": "translate>=1.0", "strategy": "lowest_cost"}


def _yaml_agent(options: dict[str, Any]) -> Any:
    """The agent YAML builds from the same mapping."""
    inner = ", ".join(
        f"{k}: {v!r}" if isinstance(v, str) else f"{k}: {v}" for k, v in options.items()
    )
    graph = loads_graph(f"name: g\nnodes:\n  - {{id: n, agent: a}}\nagents:\n  a: {{{inner}}}\n")
    return graph.agents["a"]


@pytest.mark.parametrize(
    ("options", "cls", "attrs"),
    [
        (
            {**TENDER, "bid_window": 2, "max_cost": 9.5},
            Tender,
            ("capability", "strategy", "bid_window", "max_cost"),
        ),
        (
            {"kind": "board", "capabilities": ["translate>=1.0"], "priority": 5},
            BoardTask,
            ("capabilities", "priority"),
        ),
        (
            {
                "kind": "team",
                "members": ["examples.guides.agents:upper"] * 3,
                "resolution": "majority_vote",
            },
            Team,
            ("resolution",),
        ),
    ],
)
def test_add_node_reads_a_kind_mapping_as_yaml_does(
    options: dict[str, Any], cls: type, attrs: tuple[str, ...]
) -> None:
    graph = Graph("g").add_node("n", options)
    built = graph.agents["n"]
    assert isinstance(built, cls)
    from_yaml = _yaml_agent(options)
    assert [getattr(built, a) for a in attrs] == [getattr(from_yaml, a) for a in attrs]
    assert graph.compile().by_id["n"].agent.name == "n"


def test_graph_agents_take_kind_mappings_and_nodes_name_them() -> None:
    graph = Graph("g", agents={"translate": TENDER}).add_node("work", "translate")
    assert isinstance(graph.agents["translate"], Tender)
    graph.compile()


@pytest.mark.parametrize(
    ("options", "field", "message"),
    [
        ({"kind": "tendr"}, "agents.n.kind", "unknown agent kind 'tendr'"),
        ({"kind": 3}, "agents.n.kind", "a kind's name"),
        ({"kind": "tender"}, "agents.n.capability", "needs `capability`"),
        ({**TENDER, "colour": "red"}, "agents.n.colour", "unknown option 'colour'"),
        ({**TENDER, "strategy": "cheapest"}, "agents.n.strategy", "'cheapest' is not one of"),
        ({"ref": "nomodule"}, "agents.n.ref", "module:attr"),
    ],
)
def test_a_bad_kind_mapping_is_refused_when_added_naming_its_option(
    options: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(ValidationError) as info:
        Graph("g").add_node("n", options)
    assert info.value.field == field
    assert message in str(info.value)
    assert info.value.source is None  # a graph built in Python has no file


def test_a_capability_for_the_tenders_requirement_says_what_was_meant() -> None:
    with pytest.raises(ValidationError, match=r"write 'translate>=1\.0'") as info:
        Graph("g").add_node("n", {"kind": "tender", "capability": "translate@1.0"})
    assert info.value.field == "agents.n.capability"
    with pytest.raises(ValidationError, match="write 'x>=1'") as info:
        Graph("g", agents={"a": {"kind": "board", "capabilities": ["x@1"]}})
    assert info.value.field == "agents.a.capabilities"


async def test_a_tender_node_added_as_a_mapping_hires_a_markets_provider() -> None:
    def translate(inputs: dict[str, Any]) -> str:
        return {"hello": "bonjour"}[inputs["text"]]

    async with Market() as market:
        await market.add(
            Provider("alice", "translate@1.0", price=4.0, work=translate),
            Provider("bob", "translate@1.0", price=3.0, work=translate),
        )
        graph = Graph("g").add_node("translate", TENDER, inputs=["text"])
        services = Services(
            identity=market.bidding.identity, bidding=market.bidding, trust=market.trust
        )
        result = await Engine(market.store, services=services).execute(graph, {"text": "hello"})
    assert result.output == "bonjour"
    assert result.usage.cost == 3.0  # bob's price, the tender's cost
