"""Throughput at zero provider latency: outcomes persisted per second, chorus vs a bare Celery chord.

    python -m bench.throughput [--quick]

Both run the same number of 5-voter votes with the same number of votes in flight, against the
same stub (latency 0), with one worker process for the calls (thread pool) in the same run.
chorus persists every outcome in PostgreSQL; the bare chord keeps results in Redis only.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

from bench.harness import bench_main, configure_env, flushed_redis, fresh_postgres, goal_lines, machine, workers

VOTERS = 5
GOAL_RATIO = 0.9


def _drive(submit: Callable[[], Any], wait: Callable[[Any], None], votes: int, in_flight: int) -> float:
    """Keep `in_flight` votes outstanding until `votes` are done; return the elapsed seconds."""
    pending: deque[Any] = deque()
    sent = 0
    t0 = time.perf_counter()
    while sent < votes or pending:
        while sent < votes and len(pending) < in_flight:
            pending.append(submit())
            sent += 1
        wait(pending.popleft())
    return time.perf_counter() - t0


def run(quick: bool = True, votes: int | None = None, in_flight: int = 20, concurrency: int = 16) -> dict[str, Any]:
    from chorus.embedded import WorkerProcess
    from chorus.testing.stub.testing import running_stub

    votes = votes or (100 if quick else 400)
    text = "The kettle boils fast and the handle stays cool. I love it."
    with running_stub(latency_ms=0) as stub, fresh_postgres("chorus_bench_tput"), flushed_redis(12), \
            flushed_redis(13):
        data = configure_env(redis_db=12, pg_db="chorus_bench_tput", stub_url=stub.base_url,
                             extra={"BARE_BROKER_URL": "redis://127.0.0.1:6379/13"})
        from celery import chord

        from bench.peers import bare_celery
        from chorus.runs import wait_for_run
        from chorus.vote import submit_vote

        def chorus_submit() -> str:
            return submit_vote(text, "positive,negative,neutral", voters=VOTERS)

        def chorus_wait(run_id: str) -> None:
            if wait_for_run(run_id, timeout=120).status != "succeeded":
                raise SystemExit(f"chorus run {run_id} did not succeed")

        def bare_submit() -> Any:
            return chord([bare_celery.call.s(i, text) for i in range(VOTERS)])(bare_celery.tally.s())

        def bare_wait(result: Any) -> None:
            result.get(timeout=120)

        elapsed: dict[str, float] = {}
        bare = WorkerProcess(["bare"], log_dir=data, name="bare", pool="threads", concurrency=concurrency,
                             app="bench.peers.bare_celery")
        try:
            with workers(data, pool="threads", concurrency=concurrency):
                bare.start().wait_ready()
                _drive(chorus_submit, chorus_wait, 10, in_flight)  # warm-up
                _drive(bare_submit, bare_wait, 10, in_flight)
                elapsed["chorus"] = _drive(chorus_submit, chorus_wait, votes, in_flight)
                elapsed["bare"] = _drive(bare_submit, bare_wait, votes, in_flight)
        finally:
            bare.stop()
    rates = {name: votes * VOTERS / seconds for name, seconds in elapsed.items()}
    ratio = rates["chorus"] / rates["bare"]
    return {
        "benchmark": "throughput",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m bench.throughput" + (" --quick" if quick else ""),
        "params": {"votes": votes, "voters": VOTERS, "in_flight": in_flight, "pool": f"threads x{concurrency}"},
        "outcomes_per_s": {k: round(v, 1) for k, v in rates.items()},
        "ratio": round(ratio, 2),
        "goals": {f"chorus ≥ {GOAL_RATIO}× the bare chord": ratio >= GOAL_RATIO},
    }


def render(result: dict[str, Any]) -> str:
    p = result["params"]
    r = result["outcomes_per_s"]
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}.",
        f"{p['votes']} votes × {p['voters']} voters, {p['in_flight']} votes in flight, stub latency 0, "
        f"one call worker ({p['pool']}) per system.",
        "",
        "| system | outcomes/s | ratio |",
        "|---|---|---|",
        f"| chorus (each outcome persisted in PostgreSQL) | {r['chorus']} | {result['ratio']}× |",
        f"| bare Celery chord (results in Redis only) | {r['bare']} | 1.00× |",
        "",
    ]
    lines += goal_lines(result["goals"])
    return "\n".join(lines)


if __name__ == "__main__":
    bench_main(__doc__, run, render, votes=True)
