"""``converge agents run``: agents in a long-running process, fed from another process."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

import msgspec
import pytest
from typer.testing import CliRunner

from converge.cli import app
from converge.cli._agents_config import load_agents_config
from converge.coordination import PoolManager, TaskManager
from converge.core import Task, TaskState
from converge.core.pool import Pool
from converge.policy import ActionPolicy, ResourceLimits
from converge.policy.admission import token_admission
from converge.store import SQLiteStore
from tests.cli._processes import reaped, spawn

W = "tests.cli._workers"

CONFIG = f"""\
pools:
  crew:
    admission: token
    token_env: CREW_TOKEN
agents:
  alpha:
    ref: {W}:shout
    pools: [crew]
    key: keys/alpha.pem
  beta:
    ref: {W}:shout
    pools: [crew]
    max_batch: 5
"""


def _spawn(tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    return spawn(tmp_path, *args, env={"CREW_TOKEN": "s3cret"})


@pytest.mark.slow
def test_two_workers_in_another_process_complete_tasks_and_stop_on_ctrl_c(
    tmp_path: Path,
) -> None:
    config = tmp_path / "agents.yaml"
    config.write_text(CONFIG)
    db = tmp_path / "board.db"
    with reaped(_spawn(tmp_path, "agents", "run", str(config), "--store", str(db))) as proc:
        assert proc.stdout is not None
        started = [proc.stdout.readline().strip() for _ in range(2)]
        assert [line.split(" (")[0] for line in started] == [
            "agent alpha started",
            "agent beta started",
        ], proc.stderr.read() if proc.poll() is not None else started
        assert (tmp_path / "keys" / "alpha.pem").exists()  # generated on first start
        done = asyncio.run(_submit_and_wait(db, ["one", "two", "three", "four"]))
        assert {t.state for t in done} == {TaskState.COMPLETED}
        assert sorted(t.result["shouted"] for t in done) == ["FOUR", "ONE", "THREE", "TWO"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    lines = out.strip().splitlines()
    assert lines == [
        "agent beta stopped (signal)",
        "agent alpha stopped (signal)",
        f"stopped 2 agent(s); store {db} closed",
    ]
    stopped = asyncio.run(_kinds(db, "runtime.stopped"))
    assert len(stopped) == 2


async def _submit_and_wait(
    db: Path, objectives: list[str], pool: str | None = "crew"
) -> list[Task]:
    """Another process's board on the same file: submit, and wait for the agents' results."""
    async with await SQLiteStore.open(db) as store:
        board = TaskManager(store)
        tasks = [await board.submit(Task(objective=o, pool_id=pool)) for o in objectives]
        return [await board.wait(t.id, timeout=30) for t in tasks]


async def _kinds(db: Path, kind: str) -> list[object]:
    async with await SQLiteStore.open(db) as store:
        return list(await store.read(kinds=[kind]))


BAD = [
    ("agents:\n  alpha:\n    ref: nomodule\n", 3, "a reference is 'module:attr'"),
    ("agents:\n  alpha:\n    ref: a:b\n    colour: red\n", 4, "unknown key 'colour'"),
    ("agents:\n  alpha:\n    ref: a:b\n    pools: [nowhere]\n", 4, "pool 'nowhere'"),
    ("pools:\n  p:\n    admission: vip\nagents:\n  a:\n    ref: a:b\n", 3, "admission is"),
    (f"agents:\n  alpha:\n    ref: {W}:missing\n", 3, "has no attribute"),
    ("agents:\n  alpha:\n    ref: a:b\n    max_batch: 0\n", 4, "max_batch"),
    ("agents:\n  a:\n    ref: a:b\n    limits:\n      max_cost: -1\n", 5, "max_cost"),
    ("agents:\n  a:\n    ref: a:b\n    limits:\n      max_tokens: 1.5\n", 5, "an int"),
    ("agents:\n  a:\n    ref: a:b\n    limits:\n      max_coffee: 1\n", 5, "'max_coffee'"),
    ("agents:\n  a:\n    ref: a:b\n    limits: 5\n", 4, "limits must be a mapping"),
    ("agents:\n  a:\n    ref: a:b\n    policy:\n      deny_decisions: [fly]\n", 5, "fly"),
    ("agents:\n  a:\n    ref: a:b\n    policy:\n      allow_tools: [1]\n", 5, "string"),
    (
        "agents:\n  a:\n    ref: a:b\n    limits:\n      max_tokens: 5\n      max_cost: -2\n",
        6,
        "max_cost",
    ),
    ("agents:\n  a:\n    ref: a:b\n    policy:\n      deny_tools: ~\n", 5, "deny_tools"),
    ("agents:\n  a:\n    ref: a:b\n    max_consecutive_failures: 0\n", 4, "an int >= 1"),
    ("agents:\n  a:\n    ref: a:b\n    claim_batch: 0\n", 4, "claim_batch must be an int >= 1"),
    ("agents:\n  a:\n    ref: a:b\n    claim_batch: true\n", 4, "claim_batch"),
    (f"agents:\n  a:\n    ref: {W}:CannotStart\n    claim_batch: 3\n", 3, "board workers"),
    ("agents:\n  a:\n    ref: a:b\n    max_consecutive_failures: 2.5\n", 4, "an int >= 1"),
    ("agents:\n  a:\n    ref: a:b\n    max_consecutive_failures: ~\n", 4, "a number"),
    # hostile files: each a traceback (or, for max_batch, a runtime that died) before
    ("agents: " + "[" * 10_000 + "\n", 1, "nested deeper than 100 levels"),
    ("agents:\n  a:\n    ref: a:b\n    max_batch: " + "9" * 5000 + "\n", 4, "out of range"),
    ("agents:\n  a:\n    ref: a:b\n    max_batch: 100000000000000000000000000000\n", 4,
     "fits in 64 bits"),
    ("agents:\n  a:\n    ref: a:b\n    limits:\n      max_tokens: 1" + "0" * 29 + "\n", 5,
     "fits in 64 bits"),
    ("agents:\n  a:\n    ref: a:b\n    limits:\n      max_wall_time_s: 1.0e+10\n", 5,
     "<= 1,000,000,000"),
    ("agents:\n  a:\n    ref: a:b\n    limits:\n      max_cost: .nan\n", 5, "finite"),
    ("agents:\n  a:\n    ref: a:b\n    key: 2001-02-31\n", 4, "not a valid timestamp"),
    ("agents:\n  alpha:\n    ref: .os:system\n", 3, "a reference is 'module:attr'"),
    ("x:\n  l0: &l0 [a, a, a, a, a, a, a, a, a]\n"
     + "".join(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]\n" for i in range(1, 9))
     + "agents:\n  a: {ref: 'a:b', capabilities: *l8}\n", 7, "aliases stand for more than"),
]  # fmt: skip


def test_limits_and_policy_are_read_into_each_agent(tmp_path: Path) -> None:
    config = tmp_path / "agents.yaml"
    config.write_text(
        "agents:\n"
        "  alpha:\n"
        "    ref: a:b\n"
        "    limits:\n"
        "      max_wall_time_s: 60\n"
        "      max_claimed_tasks: 2\n"
        "    policy:\n"
        "      allow_decisions: [claim_task, report_task, fail_task]\n"
        "      allow_tools: []\n"
        "      deny_tools: shell\n"
        "  beta:\n"
        "    ref: a:b\n"
    )
    alpha, beta = load_agents_config(config).agents
    assert alpha.limits == ResourceLimits(max_wall_time_s=60, max_claimed_tasks=2)
    assert alpha.policy == ActionPolicy(
        allow_decisions=frozenset({"claim_task", "report_task", "fail_task"}),
        allow_tools=frozenset(),
        deny_tools=frozenset({"shell"}),
    )
    assert (beta.limits, beta.policy) == (ResourceLimits(), ActionPolicy.allow_all())


def test_the_claim_batch_is_read_into_each_agent(tmp_path: Path) -> None:
    config = tmp_path / "agents.yaml"
    config.write_text(
        "agents:\n  alpha:\n    ref: a:b\n    claim_batch: 8\n  beta:\n    ref: a:b\n"
    )
    alpha, beta = load_agents_config(config).agents
    assert (alpha.claim_batch, beta.claim_batch) == (8, 1)


async def test_a_board_worker_takes_up_to_its_claim_batch_and_claims_and_reports_in_rows() -> None:
    from converge.cli._agents_run import _WAKE, _BoardWorker
    from converge.core import ClaimTask, FailTask, ReportTask, SendMessage

    def work(task: Task) -> str:
        if task.objective == "bad":
            raise ValueError("no")
        return task.objective.upper()

    seen = [Task(objective=name) for name in ("a", "bad", "b", "c", "d")]
    worker = _BoardWorker(work, "w", claim_batch=3)
    async with asyncio.timeout(30):
        decisions = await worker.decide([], seen)
    claims = [d for d in decisions if isinstance(d, ClaimTask)]
    assert len(claims) == 3 and decisions[:3] == claims
    taken = {t.id: t for t in seen if t.id in {c.task_id for c in claims}}
    rest = decisions[3:]
    reports = [d for d in rest if isinstance(d, ReportTask)]
    fails = [d for d in rest if isinstance(d, FailTask)]
    assert rest == [*reports, *fails, SendMessage(kind=_WAKE, recipient=worker.did)]
    assert {r.task_id: r.result for r in reports} == {
        i: t.objective.upper() for i, t in taken.items() if t.objective != "bad"
    }
    assert [f.task_id for f in fails] == [i for i, t in taken.items() if t.objective == "bad"]


async def test_board_workers_with_a_claim_batch_complete_every_task_in_units() -> None:
    from converge.cli._agents_run import _BoardWorker
    from converge.network import LocalNetwork
    from converge.runtime import AgentRuntime, StandardExecutor
    from converge.store import MemoryStore

    async with MemoryStore() as store, LocalNetwork() as net:
        board = TaskManager(store)
        units: list[int] = []
        claim_next = board.claim_next

        async def counted(*args: object, **kwargs: object) -> list[Task]:
            claimed = await claim_next(*args, **kwargs)  # type: ignore[arg-type]
            units.append(len(claimed))
            return claimed

        board.claim_next = counted  # type: ignore[method-assign]
        executor = StandardExecutor(network=net, tasks=board)
        workers = [_BoardWorker(lambda t: t.inputs["n"] * 2, f"w{i}", 4) for i in range(2)]
        runtimes = [AgentRuntime(w, network=net, tasks=board, executor=executor) for w in workers]
        for rt in runtimes:
            rt.start()
        try:
            submitted = await board.submit_many(
                [Task(objective=f"job {n}", inputs={"n": n}) for n in range(20)]
            )
            done = [await board.wait(t.id, timeout=30) for t in submitted]
        finally:
            for rt in runtimes:
                await rt.shutdown()
    assert [(t.state, t.result) for t in done] == [(TaskState.COMPLETED, n * 2) for n in range(20)]
    assert units and max(units) > 1  # several claims in one unit of the board


def test_the_failure_limit_is_read_into_each_agent(tmp_path: Path) -> None:
    config = tmp_path / "agents.yaml"
    config.write_text(
        "agents:\n  alpha:\n    ref: a:b\n    max_consecutive_failures: 7\n  beta:\n    ref: a:b\n"
    )
    alpha, beta = load_agents_config(config).agents
    assert (alpha.max_consecutive_failures, beta.max_consecutive_failures) == (7, 100)


@pytest.mark.slow
def test_an_agent_whose_decisions_keep_failing_stops_as_a_failure(tmp_path: Path) -> None:
    config = tmp_path / "agents.yaml"
    config.write_text(f"agents:\n  bidder:\n    ref: {W}:Bidder\n    max_consecutive_failures: 2\n")
    db = tmp_path / "board.db"
    with reaped(_spawn(tmp_path, "agents", "run", str(config), "--store", str(db))) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().startswith("agent bidder started")
        asyncio.run(_submit(db, "bid on me"))
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert "agent bidder stopped on its own (failed: TooManyFailedDecisions: agent did:" in out
    assert "2 decisions failed in a row (the last: PolicyViolation:" in out
    assert "every agent stopped on its own: bidder failed: TooManyFailedDecisions" in err
    assert len(asyncio.run(_kinds(db, "decision.failed"))) == 2  # the third bid never ran


async def _submit(db: Path, objective: str) -> None:
    async with await SQLiteStore.open(db) as store:
        await TaskManager(store).submit(Task(objective=objective))


@pytest.mark.slow
def test_an_idle_agent_whose_budget_runs_out_stops_and_the_command_exits_0(
    tmp_path: Path,
) -> None:
    config = tmp_path / "agents.yaml"
    config.write_text(
        f"agents:\n  alpha:\n    ref: {W}:shout\n    limits:\n      max_wall_time_s: 0.3\n"
    )
    with reaped(
        _spawn(tmp_path, "agents", "run", str(config), "--store", str(tmp_path / "b.db"))
    ) as proc:
        out, err = proc.communicate(timeout=30)  # nothing to do: it ends when its time is up
    assert proc.returncode == 0, (out, err)
    assert out.splitlines()[0].startswith("agent alpha started")
    assert "agent alpha stopped on its own (budget exhausted: max_wall_time_s)" in out


def test_null_means_unlimited_or_every_name(tmp_path: Path) -> None:
    config = tmp_path / "agents.yaml"
    config.write_text(
        "agents:\n"
        "  alpha:\n"
        "    ref: a:b\n"
        "    limits:\n"
        "      max_cost: null\n"
        "      max_tokens: 100\n"
        "    policy:\n"
        "      allow_tools: ~\n"
        "  beta:\n"
        "    ref: a:b\n"
        "    limits:\n"
        "    policy:\n"
    )
    alpha, beta = load_agents_config(config).agents
    assert alpha.limits == ResourceLimits(max_tokens=100)
    assert alpha.policy == ActionPolicy.allow_all()
    assert (beta.limits, beta.policy) == (ResourceLimits(), ActionPolicy.allow_all())


@pytest.mark.slow
def test_an_agent_that_stops_on_its_own_is_reported_and_the_others_go_on(
    tmp_path: Path,
) -> None:
    config = tmp_path / "agents.yaml"
    config.write_text(
        f"agents:\n  alpha:\n    ref: {W}:shout\n  broken:\n    ref: {W}:CannotStart\n"
    )
    db = tmp_path / "board.db"
    with reaped(_spawn(tmp_path, "agents", "run", str(config), "--store", str(db))) as proc:
        assert proc.stdout is not None
        lines = [proc.stdout.readline().strip() for _ in range(3)]
        assert lines[2] == (
            "agent broken stopped on its own (failed: RuntimeError: no licence to start)"
        ), (lines, proc.stderr.read() if proc.poll() is not None else "")
        assert proc.poll() is None  # alpha still serves the board
        done = asyncio.run(_submit_and_wait(db, ["still"], pool=None))
        assert [t.result["shouted"] for t in done] == ["STILL"]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "agent alpha stopped (signal)" in out
    assert "agent broken stopped" not in out  # said once, when it happened


@pytest.mark.slow
def test_when_every_agent_stops_on_its_own_the_command_exits_1(tmp_path: Path) -> None:
    config = tmp_path / "agents.yaml"
    config.write_text(f"agents:\n  broken:\n    ref: {W}:CannotStart\n")
    with reaped(
        _spawn(tmp_path, "agents", "run", str(config), "--store", str(tmp_path / "b.db"))
    ) as proc:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert "agent broken stopped on its own (failed: RuntimeError: no licence to start)" in out
    assert "every agent stopped on its own: broken failed: RuntimeError" in err


@pytest.mark.slow
def test_an_agent_that_cannot_start_stops_the_ones_started_and_says_why(tmp_path: Path) -> None:
    db = tmp_path / "board.db"
    asyncio.run(_token_pool(db, "crew", "an older token"))
    config = tmp_path / "agents.yaml"
    config.write_text(
        "pools:\n  crew:\n    admission: token\n    token_env: CREW_TOKEN\n"
        f"agents:\n  alpha:\n    ref: {W}:shout\n  beta:\n    ref: {W}:shout\n"
        "    pools: [crew]\n"
    )
    with reaped(_spawn(tmp_path, "agents", "run", str(config), "--store", str(db))) as proc:
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert "agent alpha stopped (shutdown)" in out
    assert "may not join pool crew" in err and "Traceback" not in err


async def _token_pool(db: Path, pool_id: str, token: str) -> None:
    async with await SQLiteStore.open(db) as store:
        admission = msgspec.to_builtins(token_admission(token))
        await PoolManager(store).create_pool(Pool(name=pool_id, id=pool_id, admission=admission))


@pytest.mark.parametrize(("text", "line", "message"), BAD)
def test_a_bad_agents_file_exits_2_with_file_and_line(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    config = tmp_path / "agents.yaml"
    config.write_text(text)
    result = CliRunner().invoke(
        app, ["agents", "run", str(config), "--store", str(tmp_path / "x.db")]
    )
    assert result.exit_code == 2, result.output
    [err] = result.stderr.strip().splitlines()
    assert err.startswith(f"error: {config}:{line}: "), err
    assert message in err
    assert not (tmp_path / "x.db").exists()  # nothing was started


async def test_a_board_function_that_exits_fails_its_task_not_the_worker() -> None:
    """What a worker function raises fails its task, ``sys.exit()`` and a thread's
    ``StopIteration`` (which once left the call waiting for ever) too."""
    from converge.cli._agents_run import _BoardWorker
    from converge.core import ClaimTask, FailTask

    def exits(task: Task) -> None:
        raise SystemExit(3)

    def exhausted(task: Task) -> None:
        next(iter(()))

    task = Task(objective="x")
    for fn, reason in [
        (exits, "SystemExit: 3"),
        (exhausted, "RuntimeError: coroutine raised StopIteration"),
    ]:
        async with asyncio.timeout(30):
            decisions = await _BoardWorker(fn, "w").decide([], [task])
        assert decisions == [ClaimTask(task_id=task.id), FailTask(task_id=task.id, reason=reason)]
