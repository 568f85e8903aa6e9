from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from converge.coordination import PoolManager
from converge.core import Agent, Pool
from converge.errors import ValidationError
from converge.orchestration import Engine, Graph, RunFailed, Services, Team, loads_graph
from converge.store import Store
from tests.orchestration._crash_harness import append, crash_and_resume, crashing, hang


class Scores:
    """A trust source with fixed scores (0.5 for anyone not named)."""

    def __init__(self, scores: Mapping[str, float]) -> None:
        self.scores = dict(scores)

    async def score(self, agent_id: str) -> float:
        return self.scores.get(agent_id, 0.5)


def says(answer: Any, ran: list[str] | None = None, name: str = "") -> Any:
    async def member(inputs: dict[str, Any]) -> Any:
        if ran is not None:
            ran.append(name)
        return answer

    return member


def panel(honest: int, liars: int) -> dict[str, Any]:
    """``honest`` members who answer 4 and ``liars`` who answer 5."""
    agents = {f"honest{i}": says(4) for i in range(honest)}
    agents.update({f"liar{i}": says(5) for i in range(liars)})
    return agents


def team_graph(team: Team) -> Graph:
    return Graph("sum").add_node("answer", team, inputs=["question"])


async def test_a_team_with_two_lying_members(store: Store) -> None:
    agents = panel(honest=5, liars=2)
    names = sorted(agents)
    engine = Engine(store, services=Services(agents=agents, trust=Scores({})))
    for strategy in ("majority_vote", "trust_weighted"):
        graph = team_graph(Team(names, resolution=strategy))
        result = await engine.execute(graph, {"question": "2 + 2?"})
        assert result.output == 4, strategy
    with pytest.raises(RunFailed) as info:
        graph = team_graph(Team(names, resolution="fail_on_conflict"))
        await engine.execute(graph, {"question": "2 + 2?"})
    error = info.value.result.error or ""
    assert "fail_on_conflict" in error
    assert "4 from honest0, honest1, honest2, honest3, honest4" in error
    assert "5 from liar0, liar1" in error


async def test_trust_outweighs_numbers_under_trust_weighted(store: Store) -> None:
    agents = panel(honest=2, liars=3)
    trust = Scores({"honest0": 0.9, "honest1": 0.9, "liar0": 0.2, "liar1": 0.2, "liar2": 0.2})
    engine = Engine(store, services=Services(agents=agents, trust=trust))
    weighted = await engine.execute(
        team_graph(Team(sorted(agents), resolution="trust_weighted")), {"question": "2 + 2?"}
    )
    assert weighted.output == 4
    counted = await engine.execute(
        team_graph(Team(sorted(agents), resolution="majority_vote")), {"question": "2 + 2?"}
    )
    assert counted.output == 5  # by numbers alone the liars win


async def test_free_text_answers_compare_by_key(store: Store) -> None:
    agents = {"a": says("Paris"), "b": says("  paris "), "c": says("PARIS"), "d": says("Lyon")}
    engine = Engine(store, services=Services(agents=agents))
    keyed = Team(sorted(agents), resolution="majority_vote", key="normalize_text")
    result = await engine.execute(team_graph(keyed), {"question": "capital?"})
    assert result.output == "Paris"  # the output of the winner with the smallest id
    with pytest.raises(RunFailed) as info:
        await engine.execute(team_graph(Team(sorted(agents))), {"question": "capital?"})
    assert "tie: the top answers have 1 of 4" in (info.value.result.error or "")


async def test_the_resolution_and_its_dissent_are_recorded(store: Store) -> None:
    agents = panel(honest=3, liars=1)

    async def broken(inputs: dict[str, Any]) -> Any:
        raise RuntimeError("no idea")

    agents["broken"] = broken
    engine = Engine(store, services=Services(agents=agents))
    team = Team(sorted(agents), output="resolution")
    result = await engine.execute(team_graph(team), {"question": "2 + 2?"})
    resolved = result.output
    assert (resolved["output"], resolved["support"]) == (4, 3)
    assert resolved["dissent"] == ["liar0"]
    assert resolved["failed"] == ["broken"]
    progress = await store.read(trace_id=result.run_id, kinds=["node.progress"])
    message = progress[-1].data["message"]
    assert message.startswith("majority_vote: 3 of 4 successful results agree")
    assert "dissent: liar0" in message and "failed: broken" in message


async def test_the_leader_decides_against_the_majority(store: Store) -> None:
    agents = panel(honest=3, liars=1)
    engine = Engine(store, services=Services(agents=agents))
    team = Team(sorted(agents), resolution="leader_decides", leader="liar0")
    assert (await engine.execute(team_graph(team), {"question": "?"})).output == 5


class Reviewer(Agent):
    def __init__(self, seed: int, verdict: str, ran: list[str], capabilities: list[str]) -> None:
        super().__init__(name=f"r{seed}", capabilities=capabilities)
        self.verdict = verdict
        self.ran = ran

    async def run(self, inputs: Mapping[str, Any], ctx: Any) -> Any:
        self.ran.append(self.name)
        return self.verdict


async def test_a_team_picked_from_a_pool_by_capability_and_trust(store: Store) -> None:
    ran: list[str] = []
    pools = PoolManager(store)
    pool = await pools.create_pool(Pool(name="reviewers", id="reviewers"))
    reviewers = [
        Reviewer(0, "ok", ran, ["review"]),
        Reviewer(1, "ok", ran, ["review"]),
        Reviewer(2, "bad", ran, ["review"]),  # distrusted: left out
        Reviewer(3, "bad", ran, ["translate"]),  # cannot review: left out
        Reviewer(4, "ok", ran, ["review"]),  # trusted least of the rest: beyond `size`
    ]
    for r in reviewers:
        await pools.join_pool(r.did, pool.id)
    trust = Scores({reviewers[0].did: 0.9, reviewers[1].did: 0.8, reviewers[2].did: 0.1})
    by_name = {r.name: r for r in reviewers}
    services = Services(pools=pools, trust=trust, agents=by_name)
    team = Team(pool="reviewers", capability="review", min_trust=0.3, size=2)
    result = await Engine(store, services=services).execute(team_graph(team), {"question": "?"})
    assert result.output == "ok"
    assert sorted(ran) == ["r0", "r1"]


async def test_teams_in_yaml() -> None:
    agents = {"a": says("Yes."), "b": says("yes"), "c": says("no")}
    graph = loads_graph(
        "name: g\n"
        "nodes:\n"
        "  - {id: vote, agent: panel, inputs: [q]}\n"
        "agents:\n"
        "  panel: {kind: team, members: [a, b, c], key: 'tests.orchestration.test_team:loose'}\n",
        agents=agents,
    )
    assert (await graph.execute({"q": "?"})).output == "Yes."
    for options, field in (
        ("{kind: team, members: [a], resolutoin: majority_vote}", "agents.panel.resolutoin"),
        ("{kind: team, members: [a], resolution: loudest}", "agents.panel.resolution"),
        ("{kind: team, members: [a], pool: p}", "agents.panel.members"),
        ("{kind: team, members: [a], key: 'nowhere:x'}", "agents.panel.key"),
        ("{kind: team, pool: p, min_trust: 2}", "agents.panel.min_trust"),
    ):
        with pytest.raises(ValidationError) as info:
            loads_graph(
                f"name: g\nnodes:\n  - {{id: v, agent: panel}}\nagents:\n  panel: {options}\n",
                source="g.yaml",
                agents=agents,
            )
        assert (info.value.field, info.value.source, info.value.line) == (field, "g.yaml", 5)


def loose(value: Any) -> Any:
    """A key: the text's first word, lower case, without punctuation."""
    return str(value).split()[0].strip(".!").lower()


async def test_a_member_the_engine_does_not_know_fails_the_node_naming_it(store: Store) -> None:
    engine = Engine(store, services=Services(agents={"a": says(1)}))
    with pytest.raises(RunFailed) as info:
        await engine.execute(team_graph(Team(["a", "ghost"])), {"question": "?"})
    assert "no agent named 'ghost'" in (info.value.result.error or "")


@contextlib.asynccontextmanager
async def crash_setup(
    store: Store, log: Path, crash: bool
) -> AsyncIterator[tuple[Graph, Services, dict[str, Any]]]:
    """A team of five (one liar) whose slowest member hangs in the child process."""

    def member(name: str, answer: int) -> Any:
        async def run(inputs: dict[str, Any]) -> int:
            append(log, f"{name} start")
            if name == "m4" and crashing():
                await hang(log)
            append(log, f"{name} done")
            return answer

        return run

    async def ask(inputs: dict[str, Any]) -> str:
        append(log, "ask done")
        return str(inputs["question"])

    async def report(inputs: dict[str, Any]) -> str:
        append(log, "report done")
        return f"answer {inputs['answer.output']}"

    agents = {f"m{i}": member(f"m{i}", 5 if i == 0 else 4) for i in range(5)}
    graph = (
        Graph("team")
        .add_node("ask", ask, inputs=["question"])
        .add_node("answer", Team(sorted(agents)), inputs=["ask.output"])
        .add_node("report", report, inputs=["answer.output"])
    )
    yield graph, Services(agents=agents), {"question": "2 + 2?"}


@pytest.mark.slow
async def test_a_team_killed_mid_run_resumes_in_a_new_process(tmp_path: Path) -> None:
    result, lines = await crash_and_resume(tmp_path, "tests.orchestration.test_team:crash_setup")
    assert result.output == "answer 4"
    assert lines.count("m4 start") == 2  # it hung in the child, ran again here
    assert lines.count("m4 done") == 1
    assert lines.count("ask done") == lines.count("report done") == 1
