"""What converge adds to an LLM call: an ``LLMAgent`` against the bare ``openai`` SDK, both
talking to the same local server (``FakeLLMServer``, in a child process so its work is not
counted) over the OpenAI chat completions API.

1. ``agent_call_cpu_overhead``: CPU time (``time.process_time``) of ``--calls`` sequential
   calls with a zero-latency server, ``LLMAgent.run`` (prompt rendering, provider translation,
   pricing, usage report to a context) minus ``client.chat.completions.create``; per call, best
   of ``--rounds`` interleaved rounds. Target (issue 7): <= 0.5 ms. The same difference in
   wall time is ``wall_overhead_ms``. Both are differences of two ~2 ms figures: a few
   hundredths of a millisecond either way is noise.
2. ``graph_200_nodes_vs_bare_sdk``: 200 independent graph nodes, each an ``LLMAgent``, with
   ``max_concurrent_agents: 50`` on the engine (memory store), against the bare SDK making the
   same 200 calls 50 at a time, with the server answering after 100 ms. Value: the ratio of
   wall times (best of ``--rounds``). Target: <= 1.2.

Run: ``.venv/bin/python bench/bench_llm.py`` (``--calls``, ``--rounds``)
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from typing import Any

from _common import emit
from converge.agents.llm import LLMAgent, OpenAIProvider
from converge.orchestration import Engine, ExecutionConfig, Graph
from converge.store import MemoryStore

_SERVER = """
import sys, time
from converge.agents.llm.testing import FakeLLMServer
server = FakeLLMServer(latency=float(sys.argv[1])).start()
server.record = False
print(server.openai_url, flush=True)
sys.stdin.read()
server.stop()
"""
MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Summarize: the tide comes in."}]


class _Ctx:
    run_id = "bench"
    node_id = "n"
    attempt = 1
    idempotency_key = "bench/n/1"

    def report_usage(
        self, tokens_in: int = 0, tokens_out: int = 0, tool_calls: int = 0, cost: float = 0.0
    ) -> None:
        pass

    async def emit(self, chunk: Any) -> None:
        pass

    async def progress(self, fraction: float, message: str = "") -> None:
        pass

    async def pause(self, question: str) -> Any:
        raise RuntimeError


class _Server:
    def __init__(self, latency: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(latency)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


async def _cpu_overhead(calls: int, rounds: int) -> None:
    server = _Server(0.0)
    try:
        provider = OpenAIProvider(MODEL, api_key="bench", base_url=server.url)
        agent = LLMAgent(provider, system=None, prompt="Summarize: {text}")
        bare = provider._connect()[1]  # the same SDK client, same connection pool
        ctx = _Ctx()
        inputs = {"text": "the tide comes in."}

        async def with_agent() -> None:
            for _ in range(calls):
                await agent.run(inputs, ctx)

        async def with_sdk() -> None:
            for _ in range(calls):
                await bare.chat.completions.create(model=MODEL, messages=MESSAGES)

        await with_agent()  # warm up: imports, connections
        await with_sdk()
        best = {"agent": float("inf"), "sdk": float("inf")}
        wall = {"agent": float("inf"), "sdk": float("inf")}
        for _ in range(rounds):
            for name, fn in (("agent", with_agent), ("sdk", with_sdk)):
                start, start_wall = time.process_time(), time.perf_counter()
                await fn()
                best[name] = min(best[name], time.process_time() - start)
                wall[name] = min(wall[name], time.perf_counter() - start_wall)
        overhead_ms = (best["agent"] - best["sdk"]) / calls * 1000
        wall_overhead_ms = (wall["agent"] - wall["sdk"]) / calls * 1000
        emit(
            bench="llm",
            case="agent_call_cpu_overhead",
            value=round(overhead_ms, 4),
            unit="ms CPU per call",
            sdk_ms=round(best["sdk"] / calls * 1000, 4),
            agent_ms=round(best["agent"] / calls * 1000, 4),
            wall_overhead_ms=round(wall_overhead_ms, 4),
            sdk_wall_ms=round(wall["sdk"] / calls * 1000, 4),
            calls=calls,
            target=0.5,
            ok=overhead_ms <= 0.5,
        )
        await provider.aclose()
    finally:
        server.stop()


async def _graph_vs_sdk(nodes: int, concurrency: int, latency: float, rounds: int) -> None:
    server = _Server(latency)
    try:
        provider = OpenAIProvider(MODEL, api_key="bench", base_url=server.url)
        agent = LLMAgent(provider, prompt="Summarize: {text}")
        graph = Graph(
            "llm_fan",
            agents={"llm": agent},
            execution=ExecutionConfig(max_concurrent_agents=concurrency),
        )
        for i in range(nodes):
            graph.add_node(f"n{i}", "llm", inputs=["text"])
        bare = provider._connect()[1]

        async def with_graph() -> float:
            async with MemoryStore() as store:
                engine = Engine(store)
                start = time.perf_counter()
                await engine.execute(graph, {"text": "the tide comes in."})
                return time.perf_counter() - start

        async def with_sdk() -> float:
            gate = asyncio.Semaphore(concurrency)

            async def one() -> None:
                async with gate:
                    await bare.chat.completions.create(model=MODEL, messages=MESSAGES)

            start = time.perf_counter()
            async with asyncio.TaskGroup() as tg:
                for _ in range(nodes):
                    tg.create_task(one())
            return time.perf_counter() - start

        await with_sdk()  # warm up: open the connections
        best = {"graph": float("inf"), "sdk": float("inf")}
        for _ in range(rounds):
            best["graph"] = min(best["graph"], await with_graph())
            best["sdk"] = min(best["sdk"], await with_sdk())
        ratio = best["graph"] / best["sdk"]
        emit(
            bench="llm",
            case="graph_200_nodes_vs_bare_sdk",
            value=round(ratio, 3),
            unit="x bare SDK wall time",
            graph_s=round(best["graph"], 4),
            sdk_s=round(best["sdk"], 4),
            nodes=nodes,
            max_concurrent_agents=concurrency,
            latency_ms=latency * 1000,
            target=1.2,
            ok=ratio <= 1.2,
        )
        await provider.aclose()
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(_cpu_overhead(args.calls, args.rounds))
    asyncio.run(_graph_vs_sdk(200, 50, 0.1, args.rounds))


if __name__ == "__main__":
    main()
