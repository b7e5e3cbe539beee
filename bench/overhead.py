"""Orchestration overhead of a 5-voter vote: wall time minus the stub's latency (200 ms).

    python -m bench.overhead [--quick]

Four ways to run the same vote, measured in one run, in interleaved rounds so that the machine's
noise falls on all of them alike:

- chorus on Redis, every outcome persisted in PostgreSQL (real worker processes);
- a bare Celery chord on the same Redis (real worker processes, no database);
- LangGraph's `Send` fan-out (in process);
- `asyncio.gather` over the async SDK client (in process): the floor.

Every voter makes the same Messages-API call through the real anthropic SDK to the same stub.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bench.harness import (
    bench_main,
    configure_env,
    flushed_redis,
    fresh_postgres,
    goal_lines,
    machine,
    summary_ms,
    workers,
)

TEXT = "The kettle boils fast and the handle stays cool. I love it and would buy it again."
LATENCY_MS = 200
VOTERS = 5
GOAL_P50_MS, GOAL_P99_MS = 10.0, 30.0


def run(quick: bool = True, votes: int | None = None) -> dict[str, Any]:
    from chorus.embedded import WorkerProcess
    from chorus.testing.stub.testing import running_stub

    votes = votes or (50 if quick else 200)
    with running_stub(latency_ms=LATENCY_MS) as stub, fresh_postgres("chorus_bench_overhead"), \
            flushed_redis(12), flushed_redis(13):
        data = configure_env(redis_db=12, pg_db="chorus_bench_overhead", stub_url=stub.base_url,
                             extra={"BARE_BROKER_URL": "redis://127.0.0.1:6379/13"})
        import anthropic

        from bench.peers import bare_celery, gather, langgraph_fanout
        from chorus.runs import wait_for_run
        from chorus.vote import submit_vote

        def chorus_vote() -> None:
            run = wait_for_run(submit_vote(TEXT, "positive,negative,neutral", voters=VOTERS), timeout=60)
            if run.status != "succeeded":
                raise SystemExit(f"chorus vote {run.id} ended {run.status}: {run.error}")

        def bare_vote() -> None:
            from celery import chord

            result = chord([bare_celery.call.s(i, TEXT) for i in range(VOTERS)])(bare_celery.tally.s())
            if result.get(timeout=60)["winner"] is None:
                raise SystemExit("bare chord produced no winner")

        graph = langgraph_fanout.build_graph()

        def langgraph_vote() -> None:
            if langgraph_fanout.vote(graph, TEXT, VOTERS) is None:
                raise SystemExit("langgraph vote produced no winner")

        loop = asyncio.new_event_loop()
        async_client = anthropic.AsyncAnthropic(max_retries=0)

        def gather_vote() -> None:
            if loop.run_until_complete(gather.vote(async_client, TEXT, VOTERS)) is None:
                raise SystemExit("gather vote produced no winner")

        peers: dict[str, Callable[[], None]] = {
            "chorus (Redis + PostgreSQL)": chorus_vote,
            "bare Celery chord (Redis)": bare_vote,
            "LangGraph Send fan-out": langgraph_vote,
            "asyncio.gather (floor)": gather_vote,
        }
        bare = WorkerProcess(["bare"], log_dir=data, name="bare", pool="threads", concurrency=10,
                             app="bench.peers.bare_celery")
        overheads: dict[str, list[float]] = {name: [] for name in peers}
        try:
            with workers(data, pool="threads", concurrency=10):
                bare.start().wait_ready()
                for fn in peers.values():  # warm-up: connections, imports, first-call costs
                    for _ in range(3):
                        fn()
                rounds, per_round = max(1, votes // 10), min(10, votes)
                for _ in range(rounds):
                    for name, fn in peers.items():
                        for _ in range(per_round):
                            t0 = time.perf_counter()
                            fn()
                            overheads[name].append(time.perf_counter() - t0 - LATENCY_MS / 1000)
        finally:
            bare.stop()
            loop.run_until_complete(async_client.close())
            loop.close()
    table = {name: summary_ms(values) for name, values in overheads.items()}
    ours, bare_row = table["chorus (Redis + PostgreSQL)"], table["bare Celery chord (Redis)"]
    return {
        "benchmark": "overhead",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m bench.overhead" + (" --quick" if quick else ""),
        "params": {"votes_per_peer": votes, "voters": VOTERS, "stub_latency_ms": LATENCY_MS},
        "overhead_ms": table,
        "goals": {
            f"chorus p50 ≤ {GOAL_P50_MS:.0f} ms": ours["p50_ms"] <= GOAL_P50_MS,
            f"chorus p99 ≤ {GOAL_P99_MS:.0f} ms": ours["p99_ms"] <= GOAL_P99_MS,
            "chorus p50 ahead of the bare Celery chord": ours["p50_ms"] < bare_row["p50_ms"],
        },
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}.",
        f"{result['params']['votes_per_peer']} votes per peer of {result['params']['voters']} voters, stub latency "
        f"{result['params']['stub_latency_ms']} ms, interleaved rounds of 10. Overhead = wall − stub latency.",
        "",
        "| peer | p50 ms | p90 ms | p99 ms | mean ms | p50 vs bare chord |",
        "|---|---|---|---|---|---|",
    ]
    bare = result["overhead_ms"]["bare Celery chord (Redis)"]["p50_ms"]
    for name, row in result["overhead_ms"].items():
        ratio = f"{row['p50_ms'] / bare:.2f}×" if bare > 0 else "-"
        lines.append(f"| {name} | {row['p50_ms']} | {row['p90_ms']} | {row['p99_ms']} | {row['mean_ms']} | {ratio} |")
    lines.append("")
    lines += goal_lines(result["goals"])
    return "\n".join(lines)


if __name__ == "__main__":
    bench_main(__doc__, run, render, votes=True)
