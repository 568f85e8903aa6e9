"""Hostile YAML: a file costs work in proportion to its size, and every mistake in it is a
``ValidationError`` with the file and line, whatever the file holds.

Work is counted, never timed: ``constructions`` counts the scalars PyYAML builds (each read of
a value, aliases copied included) and fails the test past a budget, so a reader that expanded
an alias bomb fails at once instead of running for minutes.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from converge.cli._agents_config import load_agents_config
from converge.errors import ValidationError
from converge.orchestration import GraphConfig, RetryPolicy, load_graph, loads_graph

SOURCE = "hostile.yaml"


class TooMuchWork(AssertionError):
    """The reader built more values than the file holds."""


@contextmanager
def constructions(budget: int) -> Iterator[list[int]]:
    """Count PyYAML's value constructions; raise ``TooMuchWork`` past ``budget``."""
    count = [0]
    original = yaml.constructor.BaseConstructor.construct_object

    def counted(self: Any, node: Any, deep: bool = False) -> Any:
        count[0] += 1
        if count[0] > budget:
            raise TooMuchWork(f"more than {budget} values built")
        return original(self, node, deep)

    yaml.constructor.BaseConstructor.construct_object = counted  # type: ignore[method-assign]
    try:
        yield count
    finally:
        yaml.constructor.BaseConstructor.construct_object = original  # type: ignore[method-assign]


def refused(text: str, budget: int = 10_000) -> ValidationError:
    with constructions(budget), pytest.raises(ValidationError) as info:
        loads_graph(text, source=SOURCE)
    assert info.value.source == SOURCE
    return info.value


def graph(agent: str = "os:getcwd", node: str = "", top: str = "") -> str:
    """A graph of one node whose agent ``x`` is ``agent`` (a YAML value, may span lines)."""
    return f"name: g\n{top}nodes:\n  - {{id: a, agent: x{node}}}\nagents:\n  x: {agent}\n"


def laughs(levels: int, fan_out: int = 9, indent: str = "      ") -> str:
    """Anchors whose aliases nest ``levels`` deep: ``fan_out ** levels`` values for a few
    hundred bytes."""
    lines = [f"{indent}l0: &l0 [{', '.join(['lol'] * fan_out)}]"]
    lines += [
        f"{indent}l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * fan_out)}]" for i in range(1, levels)
    ]
    return "\n".join(lines)


BOMB = graph("\n    kind: worker\n    template: hi\n    routes:\n" + laughs(9))


def test_an_alias_bomb_in_a_kinds_options_is_refused_before_any_expansion() -> None:
    assert len(BOMB) < 700  # 9**9: some 387 million values
    with constructions(100) as count:
        with pytest.raises(ValidationError) as info:
            loads_graph(BOMB, source=SOURCE)
    error = info.value
    assert error.source == SOURCE
    assert error.line == 14  # l5: its aliases cross the cap
    assert "aliases stand for more than 100,000 nodes" in str(error)
    assert count[0] == 0  # refused while composing: nothing was built


def test_aliases_that_stay_under_the_cap_are_read() -> None:
    text = graph(
        "{kind: router, routes: &routes {billing: invoices, tech: bugs}, default: tech}\n"
        "  y: {kind: router, routes: *routes, default: billing}"
    )
    loaded = loads_graph(text, source=SOURCE)
    x, y = loaded.agents["x"], loaded.agents["y"]
    assert x.routes == y.routes == {"billing": "invoices", "tech": "bugs"}


def test_an_alias_inside_the_node_it_names_is_refused() -> None:
    error = refused(graph("{kind: worker, template: hi, routes: &r [1, *r]}"))
    assert error.line == 5
    assert "alias *r is inside the node it names" in str(error)


@pytest.mark.parametrize(
    ("nesting", "line"),
    [
        ("[" * 10_000, 2),
        ("{a: " * 10_000, 2),
        ("\n" + "".join(f"{'  ' * i}- \n" for i in range(1, 150)), 102),
    ],
)
def test_deep_nesting_is_refused_at_its_line(nesting: str, line: int) -> None:
    error = refused(f"name: g\nnodes: {nesting}")
    assert error.line == line
    assert "nested deeper than 100 levels" in str(error)


def test_aliases_count_at_the_depth_they_add() -> None:
    deep = "[" * 60 + "]" * 60
    text = graph(
        f"\n    kind: worker\n    template: hi\n    a: &a {deep}\n    b: [[[[[*a]]]]]"
        f"\n    c: &c {'[' * 40}*a{']' * 40}"
    )
    error = refused(text)
    assert (error.line, "alias *a nests deeper than 100 levels" in str(error)) == (10, True)


@pytest.mark.parametrize(
    ("where", "value", "words"),
    [
        ("node", "timeout: " + "9" * 5000, "5,000 characters: out of range"),
        ("node", "retry: 0x" + "f" * 100_000, "out of range"),
        ("node", "retry: 1" + ":1" * 50_000, "out of range"),
        ("node", "timeout: 1.0e+400", "finite"),
        ("node", "timeout: .nan", "finite"),
        ("node", "timeout: 2001-02-31", "is not a valid timestamp"),
        ("node", "timeout: !!float abc", "is not a valid float"),
        ("node", "timeout: !!timestamp soon", "is not a valid timestamp"),
        ("node", "timeout: 1.0e+10", "<= 1,000,000,000"),
        ("node", "retry: 100000000000000000000000000000", "fits in 64 bits"),
        ("top", "config: {max_iterations: 100000000000000000000000000000}\n", "64 bits"),
        ("top", "execution: {max_tokens_per_agent: -9223372036854775809}\n", "64 bits"),
        ("top", "execution: {total_timeout_seconds: 1.0e+300}\n", "<= 1,000,000,000"),
        ("agent", "{kind: worker, template: hi, routes: [.inf]}", "finite"),
    ],
)
def test_numbers_are_range_checked_where_they_are_read(where: str, value: str, words: str) -> None:
    if where == "node":
        text = graph(node=f", {value}")
    elif where == "top":
        text = graph(top=value)
    else:
        text = graph(value)
    error = refused(text)
    assert words in str(error)
    assert error.line == {"node": 3, "top": 2, "agent": 5}[where]


def test_counts_and_durations_are_bounded_from_python_too() -> None:
    with pytest.raises(ValidationError, match="64 bits"):
        GraphConfig(max_iterations=10**29)
    with pytest.raises(ValidationError, match="integer of 16,610 bits"):
        GraphConfig(max_iterations=10**5000)  # its repr alone would fail
    with pytest.raises(ValidationError, match="<= 1,000,000,000"):
        RetryPolicy(max_delay=1e12)


def test_an_exponential_backoff_never_overflows() -> None:
    policy = RetryPolicy(max_retries=5000, initial_delay=0.5, max_delay=30.0)
    assert [policy.delay(n) for n in (1, 2, 1025, 5000)] == [0.5, 1.0, 30.0, 30.0]


@pytest.mark.parametrize(
    "agent",
    [
        ".os:system",
        "'os:'",
        "':getcwd'",
        "os..path:join",
        "os:path..join",
        "'os:path:join'",
        "'1os:x'",
        "'os:get cwd'",
        "'" + "a" * 1001 + ":f'",
        "{kind: python, ref: .os:system}",
        "{kind: worker, fn: .os:system}",
        "{kind: supervisor, workers: [a], aggregate: '..x:y'}",
        "{kind: worker, prompt: hi, provider: .os:system}",
        "{kind: team, members: [a], key: .os:system}",
    ],
)
def test_a_malformed_reference_is_refused_by_the_one_checker(agent: str) -> None:
    error = refused(graph(agent))
    assert error.line == 5
    assert "a reference is 'module:attr'" in str(error)
    assert error.field is not None and error.field.startswith("agents.x")


def test_a_provider_factory_that_fails_is_located() -> None:
    error = refused(graph("{kind: worker, prompt: hi, provider: 'os:system'}"))
    assert (error.line, error.field) == (5, "agents.x.provider")
    assert "calling it with no arguments failed: TypeError" in str(error)


def _write(tmp_path: Path, name: str, agent: str) -> Path:
    path = tmp_path / name
    path.write_text(graph(agent))
    return path


def test_a_graph_file_that_names_itself_is_a_cycle(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path, "self.yaml", "{kind: subgraph, graph: self.yaml}")
    with pytest.raises(ValidationError) as info:
        load_graph(path)
    assert (info.value.source, info.value.line) == (str(path), 5)
    assert info.value.field == "agents.x.graph"
    assert "read each other in a cycle: self.yaml -> self.yaml" in str(info.value)


def test_graph_files_that_name_each_other_are_a_cycle_named_by_its_chain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    first = _write(tmp_path, "a.yaml", "{kind: subgraph, graph: sub/b.yaml}")
    (tmp_path / "sub").mkdir()
    _write(tmp_path / "sub", "b.yaml", "{kind: subgraph, graph: ../a.yaml}")
    with pytest.raises(ValidationError) as info:
        load_graph(first)
    assert (info.value.source, info.value.line) == (str(tmp_path / "sub" / "b.yaml"), 5)
    assert "a cycle: a.yaml -> sub/b.yaml -> a.yaml" in str(info.value)


def test_a_file_named_by_many_subgraphs_is_read_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # f0 names f1 eight times, f1 names f2 eight times...: 8**5 paths to f5, six files.
    for i in range(5):
        agents = "\n".join(f"  s{k}: {{kind: subgraph, graph: f{i + 1}.yaml}}" for k in range(8))
        nodes = "\n".join(f"  - {{id: n{k}, agent: s{k}, inputs: [t]}}" for k in range(8))
        (tmp_path / f"f{i}.yaml").write_text(f"name: f{i}\nnodes:\n{nodes}\nagents:\n{agents}\n")
    (tmp_path / "f5.yaml").write_text(graph("builtins:repr", node=", inputs: [t]"))
    reads: list[str] = []
    read_text = Path.read_text

    def counted(self: Path, *args: Any, **kwargs: Any) -> str:
        reads.append(self.name)
        if len(reads) > 50:
            raise TooMuchWork("graph files read again and again")
        return read_text(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", counted)
    loaded = load_graph(tmp_path / "f0.yaml")
    assert sorted(reads) == [f"f{i}.yaml" for i in range(6)]
    children = {id(loaded.agents[f"s{k}"].graph) for k in range(8)}
    assert len(children) == 1  # one Graph for the file, whichever subgraph names it


def test_graph_files_nest_at_most_sixteen_deep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for i in range(16):
        _write(tmp_path, f"f{i}.yaml", f"{{kind: subgraph, graph: f{i + 1}.yaml}}")
    _write(tmp_path, "f16.yaml", "builtins:repr")
    load_graph(tmp_path / "f1.yaml")  # sixteen files, the last one's agent a function
    with pytest.raises(ValidationError) as info:
        load_graph(tmp_path / "f0.yaml")
    assert (info.value.source, info.value.line) == (str(tmp_path / "f15.yaml"), 5)
    assert "graph files nest deeper than 16: f0.yaml -> f1.yaml" in str(info.value)


# -- the input classes above, generated ------------------------------------------------------

_FIELDS = st.sampled_from(
    [
        ("node", "timeout"),
        ("node", "retry"),
        ("top", "config.max_iterations"),
        ("top", "config.timeout_seconds"),
        ("top", "execution.max_concurrent_agents"),
        ("top", "execution.max_tokens_per_agent"),
        ("top", "execution.total_timeout_seconds"),
        ("agent", "routes"),
    ]
)
_NUMBERS = st.one_of(
    st.integers(min_value=1, max_value=6000).map(lambda n: "9" * n),
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.integers(min_value=1, max_value=3000).map(lambda n: "1" + ":5" * n),
    st.integers(min_value=1, max_value=3000).map(lambda n: "0x" + "f" * n),
    st.integers(min_value=-400, max_value=400).map(lambda e: f"1.5e{e:+d}"),
    st.sampled_from([".inf", "-.inf", ".nan", "2001-02-31", "!!float x", "!!int 0x", "0b2"]),
)
_MODULES = st.sampled_from(
    ["", ".", ".os", "os", "os.", "os..path", "1os", "ö", "a-b", " os", "no_such_mod_q",
     "no_such_mod_q.sub", "x" * 1100]
)  # fmt: skip
_ATTRS = st.sampled_from(["", "system", "getcwd", ".x", "x.", "1x", "a b", "path.join", "q:r"])
_REFERENCES = st.builds(
    lambda m, sep, a: f"{m}{sep}{a}", _MODULES, st.sampled_from([":", "::", "", ":x:"]), _ATTRS
)
_REFERENCE_PLACES = st.sampled_from(
    ["{ref}", "{{kind: python, ref: {ref}}}", "{{kind: worker, fn: {ref}}}",
     "{{kind: worker, prompt: hi, provider: {ref}}}", "{{kind: team, members: [a], key: {ref}}}",
     "{{kind: supervisor, workers: [a], aggregate: {ref}}}"]
)  # fmt: skip


def _nesting(depth: int, style: str) -> str:
    if style == "flow":
        return "[" * depth + "]" * depth
    if style == "map":
        return "{a: " * depth + "1" + "}" * depth
    return "".join(f"\n{'  ' * (i + 3)}- " for i in range(depth)) + "1"


def _with_number(field: tuple[str, str], number: str) -> str:
    where, key = field
    if where == "node":
        return graph(node=f", {key}: {number}")
    if where == "top":
        block, name = key.split(".")
        return graph(top=f"{block}: {{{name}: {number}}}\n")
    return graph(f"{{kind: worker, template: hi, routes: [{number}]}}")


_HOSTILE = st.one_of(
    st.builds(
        lambda levels, fan_out: graph(
            "\n    kind: worker\n    template: hi\n    routes:\n" + laughs(levels, fan_out)
        ),
        st.integers(min_value=1, max_value=12),
        st.integers(min_value=2, max_value=12),
    ),
    st.builds(
        lambda depth, style: (
            graph(f"{{kind: worker, template: hi, routes: {_nesting(depth, style)}}}")
            if style != "block"
            else graph("\n    kind: worker\n    template: hi\n    routes:" + _nesting(depth, style))
        ),
        st.integers(min_value=1, max_value=3000),
        st.sampled_from(["flow", "map", "block"]),
    ),
    st.builds(_with_number, _FIELDS, _NUMBERS),
    st.builds(
        lambda place, ref: graph(place.format(ref=repr(ref))), _REFERENCE_PLACES, _REFERENCES
    ),
)


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(_HOSTILE)
def test_any_hostile_graph_file_is_read_within_its_size_or_refused_with_its_line(
    text: str,
) -> None:
    # A scalar per character at most, plus the copies aliases may stand for.
    with constructions(len(text) + 100_000):
        try:
            loads_graph(text, source=SOURCE)
        except ValidationError as exc:
            assert exc.source == SOURCE
            assert exc.line is not None


_AGENT_KEYS = st.sampled_from(
    ["max_batch", "max_consecutive_failures", "limits: {max_tokens", "limits: {max_cost",
     "limits: {max_wall_time_s"]
)  # fmt: skip


def _agents_file(key: str, value: str) -> str:
    closing = "}" if key.startswith("limits") else ""
    return f"agents:\n  a:\n    ref: os:getcwd\n    {key}: {value}{closing}\n"


_HOSTILE_AGENTS = st.one_of(
    st.builds(_agents_file, _AGENT_KEYS, _NUMBERS),
    st.builds(lambda ref: f"agents:\n  a:\n    ref: {ref!r}\n", _REFERENCES),
    st.builds(
        lambda depth, style: (
            f"agents:\n  a:\n    ref: os:getcwd\n    capabilities: {_nesting(depth, style)}"
        ),
        st.integers(min_value=1, max_value=3000),
        st.sampled_from(["flow", "map"]),
    ),
    st.builds(
        lambda levels: (
            "x:\n" + laughs(levels, 9, "  ") + "\nagents:\n  a: {ref: 'os:getcwd', "
            f"capabilities: *l{levels - 1}}}\n"
        ),
        st.integers(min_value=1, max_value=10),
    ),
)


@settings(max_examples=80, suppress_health_check=[HealthCheck.too_slow])
@given(_HOSTILE_AGENTS)
def test_any_hostile_agents_file_is_refused_with_its_line_or_read(text: str) -> None:
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "agents.yaml"
        path.write_text(text, encoding="utf-8")
        with constructions(len(text) + 100_000):
            try:
                load_agents_config(path)
            except ValidationError as exc:
                assert exc.source == str(path)
                assert exc.line is not None
