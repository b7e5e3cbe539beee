"""Concurrency: calls in flight and completed per second when the provider takes 2 s per call.

    python -m bench.concurrency [--quick]

Many votes are submitted at once; worker processes on Redis call the stub (latency 2 s) through
the real SDK and persist every outcome in PostgreSQL. The stub's request log gives, for every
call, when it arrived and how long it took, so the in-flight count at every moment and the
completion rate are measured at the provider, not inferred. Pools compared in the same run:
threads (the recommendation for I/O-bound calls) and prefork. Each row states its configured
ceiling (processes × concurrency): a pool can never have more calls in flight than that, so a peak
equal to the ceiling is the configuration, not a finding.
"""

from __future__ import annotations

import time
from typing import Any

from bench.harness import bench_main, configure_env, flushed_redis, fresh_postgres, goal_lines, machine

LATENCY_MS = 2000
VOTERS = 5
GOAL_IN_FLIGHT, GOAL_RATE = 500, 200.0


def in_flight_profile(log: list[dict[str, Any]]) -> tuple[int, float]:
    """(max calls in flight, completions per second over the busy window) from the stub's log."""
    spans = [(e["time"], e["time"] + e["latency_ms"] / 1000) for e in log if e.get("status") == 200]
    if not spans:
        return 0, 0.0
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    peak = level = 0
    for _, delta in events:
        level += delta
        peak = max(peak, level)
    ends = sorted(e for _, e in spans)
    # Steady state: between the first completion and the last one.
    window = ends[-1] - ends[0]
    rate = (len(ends) - 1) / window if window > 0 else 0.0
    return peak, rate


def measure(pool: str, processes: int, concurrency: int, votes: int) -> dict[str, Any]:
    from chorus.embedded import WorkerProcess
    from chorus.testing.stub.testing import running_stub

    pg_db = f"chorus_bench_conc_{pool}"  # one database per measurement: schema readiness is cached per URL
    with running_stub(latency_ms=LATENCY_MS) as stub, fresh_postgres(pg_db), flushed_redis(12):
        data = configure_env(redis_db=12, pg_db=pg_db, stub_url=stub.base_url,
                             extra={"CHORUS_RUN_TIMEOUT_S": "300"})
        from chorus.runs import wait_for_run
        from chorus.vote import submit_vote
        from settings import get_settings
        from workflows.queues import CALLBACK_QUEUE, all_queues

        get_settings.cache_clear()
        model_queues = [q for q in all_queues(get_settings().model_list) if q != CALLBACK_QUEUE]
        procs = [WorkerProcess(model_queues, log_dir=data, name=f"llm{i}", pool=pool, concurrency=concurrency)
                 for i in range(processes)]
        procs.append(WorkerProcess([CALLBACK_QUEUE], log_dir=data, name="callbacks", pool="threads",
                                   concurrency=8))
        try:
            for p in procs:
                p.start()
            for p in procs:
                p.wait_ready()
            stub.reset()
            t0 = time.perf_counter()
            run_ids = [submit_vote("A calm, neutral note about a lamp.", "positive,negative,neutral",
                                   voters=VOTERS) for _ in range(votes)]
            submitted = time.perf_counter() - t0
            statuses = [wait_for_run(r, timeout=600).status for r in run_ids]
            elapsed = time.perf_counter() - t0
        finally:
            for p in procs:
                p.stop()
        peak, rate = in_flight_profile(stub.requests())
    return {
        "pool": f"{pool} {processes}×{concurrency}",
        "ceiling": processes * concurrency,
        "calls": votes * VOTERS,
        "peak_in_flight": peak,
        "completed_per_s": round(rate, 1),
        "submit_s": round(submitted, 2),
        "elapsed_s": round(elapsed, 2),
        "succeeded": statuses.count("succeeded"),
        "votes": votes,
    }


def run(quick: bool = True) -> dict[str, Any]:
    votes = 150 if quick else 300
    rows = [
        measure("threads", 2, 300, votes),
        measure("prefork", 1, 8, max(20, votes // 5)),
    ]
    best = rows[0]
    return {
        "benchmark": "concurrency",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m bench.concurrency" + (" --quick" if quick else ""),
        "params": {"stub_latency_ms": LATENCY_MS, "voters": VOTERS},
        "rows": rows,
        "goals": {
            f"≥ {GOAL_IN_FLIGHT} calls in flight (threads)": best["peak_in_flight"] >= GOAL_IN_FLIGHT,
            f"≥ {GOAL_RATE:.0f} calls completed per second (threads)": best["completed_per_s"] >= GOAL_RATE,
        },
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}.",
        f"Stub latency {result['params']['stub_latency_ms']} ms; votes of {result['params']['voters']} voters all "
        "submitted at once; in-flight and completion rate read from the stub's request log.",
        "",
        "| pool (processes × concurrency) | configured ceiling (calls in flight) | calls | peak in flight (measured) "
        "| peak / ceiling | completed/s | runs succeeded | wall s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        ceiling = r.get("ceiling")
        share = f"{r['peak_in_flight'] / ceiling:.0%}" if ceiling else "-"
        lines.append(f"| {r['pool']} | {ceiling or '-'} | {r['calls']} | {r['peak_in_flight']} | {share} | "
                     f"{r['completed_per_s']} | {r['succeeded']}/{r['votes']} | {r['elapsed_s']} |")
    lines += ["", "A peak at its ceiling says only that the pool was full (the configuration); a peak below it "
              "says something else limited the calls in flight.", ""]
    lines += goal_lines(result["goals"])
    return "\n".join(lines)


if __name__ == "__main__":
    bench_main(__doc__, run, render)
