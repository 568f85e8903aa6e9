"""Every code block of the README and the guides runs as pasted, or says why not.

How blocks are run, and the marker that excuses one: ``tests/docs/code_blocks.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from converge.agents.llm.testing import FakeLLMServer
from tests.docs.code_blocks import (
    ROOT,
    Mismatch,
    Session,
    blocks_of,
    doc_env,
    iter_docs,
    match_output,
    prepare,
    run_doc,
    stray_markers,
    transcript,
)

DOCS = list(iter_docs())


@pytest.fixture(scope="module")
def llm_url() -> Iterator[str]:
    """A fake model server for the blocks that call a model (answers ``ok``)."""
    with FakeLLMServer() as server:
        yield server.url


def _session(tmp_path: Path, llm_url: str) -> Session:
    prepare(tmp_path)
    return Session(tmp_path, doc_env(llm_url))


@pytest.fixture(scope="module")
def failures(
    request: pytest.FixtureRequest, llm_url: str, tmp_path_factory: pytest.TempPathFactory
) -> dict[Path, list[str]]:
    """The failures of each file whose test was collected, its blocks run in order; two
    files at a time (most of the time is spent starting processes)."""
    wanted = [
        item.callspec.params["doc"]
        for item in request.session.items
        if isinstance(item, pytest.Function)
        and item.originalname == test_every_block_runs_or_says_why_not.__name__
    ]
    with ThreadPoolExecutor(max_workers=2) as pool:
        running = {
            doc: pool.submit(run_doc, doc, tmp_path_factory.mktemp("doc"), llm_url)
            for doc in wanted
        }
        return {doc: future.result() for doc, future in running.items()}


@pytest.mark.slow
@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_block_runs_or_says_why_not(doc: Path, failures: dict[Path, list[str]]) -> None:
    assert not failures[doc], "\n\n".join(failures[doc])


def test_every_marker_marks_a_block() -> None:
    problems = [problem for doc in DOCS for problem in stray_markers(doc)]
    assert not problems, "\n".join(problems)


def test_the_docs_have_blocks_that_run() -> None:
    # a parser that found nothing would pass everything
    ran = [block for doc in DOCS for block in blocks_of(doc) if block.not_run is None]
    assert {block.lang for block in ran} >= {"sh", "python", "yaml", "toml"}
    assert len(ran) >= 25
    assert any(transcript(block.text) for block in ran)


# -- the harness itself ---------------------------------------------------------------------------


def _doc(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "doc.md"
    path.write_text(text, encoding="utf-8")
    return path


def test_blocks_are_found_with_their_line_language_and_marker(tmp_path: Path) -> None:
    doc = _doc(
        tmp_path,
        "# T\n\n```python\nprint(1)\n```\n\n1. a step:\n\n"
        "   <!-- not run: installs packages -->\n   ```sh\n   pip install x\n   ```\n"
        "~~~\nplain\n~~~\n",
    )
    found = blocks_of(doc)
    assert [(b.line, b.lang, b.text, b.not_run) for b in found] == [
        (3, "python", "print(1)\n", None),
        (10, "sh", "pip install x\n", "installs packages"),
        (13, "", "plain\n", None),
    ]
    assert found[0].where.endswith("doc.md:3")


def test_a_marker_must_be_exact_and_right_before_a_fence(tmp_path: Path) -> None:
    doc = _doc(
        tmp_path,
        "<!-- not run: fine -->\n```sh\nx\n```\n"
        "<!-- not run: a blank line follows -->\n\n```sh\nx\n```\n"
        "<!-- not-run because -->\n```sh\nx\n```\n"
        "<!-- not run: -->\n```sh\nx\n```\n",
    )
    problems = stray_markers(doc)
    assert len(problems) == 3
    assert "doc.md:5: this marker is not on the line right before a code fence" in problems[0]
    assert "doc.md:10: a marker is written `<!-- not run: REASON -->`" in problems[1]
    assert "doc.md:14:" in problems[2]


def test_an_unclosed_fence_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"doc\.md:2: a code fence that is never closed"):
        blocks_of(_doc(tmp_path, "x\n```sh\necho\n"))


def test_a_transcript_is_split_into_commands_and_their_output() -> None:
    steps = transcript("$ a --x \\\n  --y\nout 1\nout 2\n$ b\n")
    assert steps is not None
    assert [(s.command, s.offset, s.expected) for s in steps] == [
        ("a --x \n  --y", 0, ["out 1", "out 2"]),
        ("b", 4, []),
    ]
    assert transcript("a\nb\n") is None
    with pytest.raises(ValueError, match="before its first"):
        transcript("out\n$ a\n")


def test_output_is_compared_after_normalising_ids_and_times() -> None:
    doc_id, real = "01M8MA6BAP1NHX156KFTFEGFSR", "01M95622N157XVR1PBYCFFNHJV"
    expected = [
        "first: done  0.00s",
        "...",
        f"run {doc_id} is waiting; answer with:",
        f"  converge resume {doc_id} --answer ANSWER",
        "started 2026-01-02 10:11:12, took 6.5 ms, cost ...",
    ]
    actual = [
        "first: done 1.25s",
        "second: running",
        "second: done 0.01s",
        f"run {real} is waiting; answer with:",
        f"  converge resume {real}   --answer ANSWER",
        "started 2026-12-06 08:03:14, took 589 ms, cost 3.25e-05 USD",
        "",
    ]
    assert match_output(expected, actual, {}) == {doc_id: real}
    # a bound id must be the same id again
    with pytest.raises(Mismatch):
        match_output([f"run {doc_id}"], ["run 01M9561TD3F7K6P480Z47PAVPF"], {doc_id: real})
    # one doc id cannot stand for two real ones
    with pytest.raises(Mismatch, match="stands for two ids"):
        match_output(
            [f"a {doc_id}", f"b {doc_id}"], [f"a {real}", "b 01M9561TD3F7K6P480Z47PAVPF"], {}
        )


def test_a_mismatch_shows_a_diff() -> None:
    with pytest.raises(Mismatch) as caught:
        match_output(["hello", "world"], ["hello", "there"], {})
    assert "-world" in str(caught.value)
    assert "+there" in str(caught.value)


@pytest.mark.slow
def test_a_block_calling_the_api_wrongly_fails_naming_its_line(
    tmp_path: Path, llm_url: str
) -> None:
    # the class of mistake a guide made: a keyword the method does not take
    doc = _doc(
        tmp_path,
        "Usage:\n\n```python\nfrom converge.orchestration import Graph\n\n\n"
        "def node(inputs, ctx):\n    ctx.report_usage(tokens=12, cost=0.001)\n    return 1\n\n\n"
        'Graph("g").add_node("n", node).run_sync()\n```\n',
    )
    session = _session(tmp_path / "run", llm_url)
    (block,) = blocks_of(doc)
    failure = session.run(block)
    assert failure is not None
    # the line of the block that raised: here the call that ran the graph
    assert failure.startswith(f"{block.name}:12: the Python block exited 1")
    assert "unexpected keyword argument 'tokens'" in failure


@pytest.mark.slow
def test_scripts_transcripts_and_data_blocks_report_where_they_fail(
    tmp_path: Path, llm_url: str
) -> None:
    doc = _doc(
        tmp_path,
        "```sh\necho fine\nfalse   # fails\necho never\n```\n\n"
        "```console\n$ echo 01M8MA6BAP1NHX156KFTFEGFSR\n01M8MA6BAP1NHX156KFTFEGFSR\n"
        "$ echo nope\nyes\n```\n\n"
        "```yaml\nname: g\nnodes:\n  - {id: a, agent: nowhere}\n```\n\n"
        '```toml\nstore = "x.db"\ncolour = "red"\n```\n\n'
        "```\nsome output\n```\n\n"
        "```yaml\nagents:\n  a: {ref: examples.guides.agents:shout}\n"
        "  b: {ref: x:y, colour: red}\n```\n\n"
        "```yaml\nagents:\n  a: {ref: examples.guides.agents:shout, pools: [p]}\n"
        "pools: {p: {}}\n```\n\n"
        "```yaml\nsummarizer: {kind: llm}\n```\n",
    )
    session = _session(tmp_path / "run", llm_url)
    found = blocks_of(doc)
    checked = session.check_data(found)  # the data blocks all at once, as run_doc does
    script, steps, graph, toml, output, agents, good_agents, fragment = (
        (failure or "").replace(found[0].name, "doc.md")
        for failure in (checked[b.line] if b.line in checked else session.run(b) for b in found)
    )
    assert script.startswith("doc.md:3: `false   # fails` exited 1\n    fine")
    assert "never" not in script
    assert steps.startswith("doc.md:10: `$ echo nope` (exit 0) printed")
    assert "-yes" in steps and "+nope" in steps
    assert graph.startswith("doc.md:14: the graph does not load: ")
    assert "doc.md:17: node 'a' names agent 'nowhere'" in graph
    assert toml.startswith("doc.md:20: the converge.toml is refused: error: ")
    assert "colour" in toml
    assert output.startswith("doc.md:25: a block without a language")
    assert agents.startswith("doc.md:29: the agents file does not load: doc.md:32: unknown key")
    assert good_agents == ""
    assert fragment.startswith("doc.md:41: a YAML block that is neither a graph")


@pytest.mark.slow
def test_ids_bound_in_one_block_reach_the_next(tmp_path: Path, llm_url: str) -> None:
    doc = _doc(
        tmp_path,
        "```sh\n$ echo run 01M95622N157XVR1PBYCFFNHJV > id.txt; cat id.txt\n"
        "run 01M8MA6BAP1NHX156KFTFEGFSR\n```\n\n"
        "```sh\ntest \"$(cat id.txt)\" = 'run 01M8MA6BAP1NHX156KFTFEGFSR'\n```\n",
    )
    session = _session(tmp_path / "run", llm_url)
    assert [session.run(b) for b in blocks_of(doc)] == [None, None]
    assert session.bound == {"01M8MA6BAP1NHX156KFTFEGFSR": "01M95622N157XVR1PBYCFFNHJV"}
