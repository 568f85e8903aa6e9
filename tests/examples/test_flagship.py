"""The flagship examples run end to end, offline, and say something true about their input."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from converge.orchestration import RunStatus, load_graph
from converge.store import SQLiteStore
from examples.code_review import run as code_review
from examples.debate import run as debate_script
from examples.marketplace import run as market_script
from examples.marketplace.market import MIN_TRUST, STRATEGIES, run_market

CODE_REVIEW = Path(code_review.__file__).parent


# -- code review -----------------------------------------------------------------------------------


def test_the_code_review_graph_is_seed_002s_as_written() -> None:
    graph = load_graph(CODE_REVIEW / "graph.yaml")
    nodes = {n.id: (n.inputs, n.parallel_group, n.wait_for) for n in graph.nodes}
    reviewers = ("security_reviewer", "performance_reviewer", "style_reviewer")
    assert list(nodes) == ["analyzer", *reviewers, "aggregator", "reporter"]
    assert all(nodes[r] == (("analyzer.output",), "reviewers", ()) for r in reviewers)
    assert nodes["aggregator"][2] == ("reviewers",)


async def test_the_code_review_finds_the_sample_files_problems(tmp_path: Path) -> None:
    store = tmp_path / "converge.db"
    result = await code_review.review(code_review.SAMPLE.read_text(), store_path=store)
    assert result.status is RunStatus.COMPLETED
    assert store.exists()
    findings = result.outputs["aggregator"]["findings"]
    where = {(f["rule"], f["line"]) for f in findings}
    sample = code_review.SAMPLE.read_text().splitlines()

    def line_of(text: str) -> int:
        return next(i for i, line in enumerate(sample, start=1) if text in line)

    assert ("eval", line_of("eval(")) in where
    assert ("hardcoded-secret", line_of("API_KEY =")) in where
    assert ("hardcoded-secret", line_of("DB_PASSWORD =")) in where
    assert ("shell-true", line_of("shell=True")) in where
    assert ("unsafe-deserialization", line_of("pickle.loads")) in where
    assert ("nested-loops", line_of("for order in self.orders")) in where
    assert ("string-concat-in-loop", line_of("report +=")) in where
    assert ("naming", line_of("class order_book")) in where
    assert ("naming", line_of("def Total")) in where
    report = result.output
    assert report.startswith("# Code review\n")
    assert "**Verdict: changes requested**" in report
    critical = report.split("## Critical")[1].split("## High")[0]
    assert f"line {line_of('API_KEY =')}" in critical
    assert "hunter2" not in report  # the secret itself is masked


async def test_clean_code_gets_an_approval(tmp_path: Path) -> None:
    source = '"""Tidy."""\n\n\ndef add(a: int, b: int) -> int:\n    """Sum."""\n    return a + b\n'
    result = await code_review.review(source, store_path=tmp_path / "c.db")
    assert result.outputs["aggregator"]["findings"] == []
    assert "**Verdict: approve**" in result.output
    assert "| `add` | 4 | 3 | 1 |" in result.output


async def test_a_file_that_does_not_parse_is_reported_not_crashed(tmp_path: Path) -> None:
    result = await code_review.review("def broken(:\n", store_path=tmp_path / "c.db")
    assert "syntax-error" in result.output


def test_the_code_review_script_prints_markdown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "target.py"
    target.write_text("x = eval(input())\n")
    assert code_review.main([str(target), "--store", str(tmp_path / "c.db")]) == 0
    out = capsys.readouterr().out
    assert "`eval()` runs arbitrary code" in out
    assert code_review.main([str(tmp_path / "missing.py")]) == 2


# -- marketplace -----------------------------------------------------------------------------------


async def test_the_market_awards_by_strategy_and_trust_follows_the_work(tmp_path: Path) -> None:
    async with await SQLiteStore.open(tmp_path / "m.db") as store:
        report = await run_market(store, rounds=6, seed=7)
    assert [r.strategy for r in report.rounds] == [*STRATEGIES, STRATEGIES[0]]
    first = report.rounds[0]
    # Round 1, lowest cost among a dozen equal newcomers: the cheapest, least reliable one.
    assert (first.invited, first.offers, first.winner) == (12, 12, "budgetbot")
    assert report.rounds[3].winner == "premium"  # highest_quality
    for r in report.rounds:
        assert r.receipt is not None and r.receipt["verified"]
        paid = r.receipt["cost"]
        assert paid == (r.price if r.receipt["status"] == "completed" else 0.0)
    # budgetbot failed its job (seed 7): its trust fell, and it is no longer invited.
    assert first.receipt is not None and first.receipt["status"] == "failed"
    assert report.trust["budgetbot"][0] == 0.5 > report.trust["budgetbot"][1]
    assert report.trust["budgetbot"][-1] < MIN_TRUST
    assert all(r.invited < 12 for r in report.rounds[1:])
    assert report.trust["premium"][-1] > 0.5


def test_the_market_script_prints_awards_and_trust(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    console = Console(width=120, force_terminal=False, color_system=None)
    assert market_script.main(["--rounds", "3", "--store", str(tmp_path / "m.db")], console) == 0
    out = capsys.readouterr().out
    assert "Awards and receipts" in out
    assert "budgetbot" in out
    assert "verified, paid" in out


# -- debate ----------------------------------------------------------------------------------------


async def test_the_debate_ends_with_a_verdict_from_the_judge_and_the_jury(tmp_path: Path) -> None:
    result = await debate_script.run_debate(store_path=tmp_path / "d.db")
    judged, voted = result.judged.output, result.voted.output
    assert judged["verdict"] == "against"
    assert judged["scores"] == {"for": 3.5, "against": 4.0}
    assert voted["verdict"] == "against" and voted["count"] == 3
    # In round 2 each side answered the other's round-1 point.
    assert result.judged.outputs["proponent_2"]["rebutted"] == ["A1"]
    assert result.judged.outputs["opponent_2"]["rebutted"] == ["F1"]


async def test_a_split_jury_decides_by_majority(tmp_path: Path) -> None:
    result = await debate_script.run_debate(rounds=3, store_path=tmp_path / "d.db")
    assert result.judged.output["verdict"] == "for"
    assert result.voted.output["votes"] == {
        "evidence_judge": "for",
        "rebuttal_judge": "against",
        "cautious_judge": "against",
    }
    assert result.voted.output["verdict"] == "against"


def test_the_debate_script_prints_the_transcript_and_both_verdicts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert debate_script.main(["--store", str(tmp_path / "d.db")]) == 0
    out = capsys.readouterr().out
    assert "round 2 · opponent (against)" in out
    assert "Judge: against" in out
    assert "Jury:  against (3 of 3" in out
