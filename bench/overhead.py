"""Orchestration overhead of a 5-voter vote: wall time minus the stub's latency (200 ms).

    python -m bench.overhead [--quick]

Five ways to run the same vote, measured in one run, in interleaved rounds (each peer in turn,
round after round) so that the machine's noise falls on all of them alike:

- chorus on Redis, every outcome persisted in PostgreSQL (real worker processes);
- a bare Celery chord on the same Redis with chorus's reliability settings (late acks, reject on
  worker lost, prefetch ×1, task events, track_started: copied from `worker.make_app`);
- the same bare chord with Celery's defaults (early ack, prefetch ×4, no events);
- LangGraph's `Send` fan-out (in process);
- `asyncio.gather` over the async SDK client (in process): the floor.

Every voter makes the same Messages-API call through the real anthropic SDK to the same stub. The
worker processes' CPU time (user + system, from /proc) is summed over each peer's own turns and
reported per 1,000 outcomes.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench.harness import (
    CpuMeter,
    bench_main,
    configure_env,
    flushed_redis,
    fresh_postgres,
    goal_lines,
    machine,
    per_thousand,
    pids_of,
    summary_ms,
    workers,
)
from bench.peers import MODEL as PEER_MODEL

TEXT = "The kettle boils fast and the handle stays cool. I love it and would buy it again."
LATENCY_MS = 200
VOTERS = 5
GOAL_P50_MS, GOAL_P99_MS = 10.0, 30.0
# Issue 12: against the bare chord with chorus's settings (same) and with Celery's defaults.
GOAL_P50_SAME, GOAL_P50_DEFAULTS, GOAL_P99_SAME = 1.0, 1.3, 1.5
CHORUS, SAME, DEFAULTS = "chorus (Redis + PostgreSQL)", "bare chord, chorus's settings", "bare chord, Celery defaults"


def run(quick: bool = True, votes: int | None = None) -> dict[str, Any]:
    from chorus.embedded import WorkerProcess
    from chorus.testing.stub.testing import running_stub

    votes = votes or (50 if quick else 200)
    skipped: list[str] = []
    with running_stub(latency_ms=LATENCY_MS) as stub, fresh_postgres("chorus_bench_overhead"), \
            flushed_redis(12), flushed_redis(13):
        data = configure_env(redis_db=12, pg_db="chorus_bench_overhead", stub_url=stub.base_url,
                             extra={"BARE_BROKER_URL": "redis://127.0.0.1:6379/13",
                                    # chorus's votes on the peers' model: the same calls to the stub
                                    "CHORUS_DEFAULT_MODEL": PEER_MODEL})
        import anthropic

        from bench.peers import bare_celery, gather
        from chorus.runs import wait_for_run
        from chorus.vote import submit_vote

        chorus_runs: list[tuple[float, float, float, Any]] = []  # client clock: start, submitted, done; the run

        def chorus_vote() -> None:
            t0 = time.time()
            run_id = submit_vote(TEXT, "positive,negative,neutral", voters=VOTERS)
            t1 = time.time()
            run = wait_for_run(run_id, timeout=60)
            chorus_runs.append((t0, t1, time.time(), run))
            if run.status != "succeeded":
                raise SystemExit(f"chorus vote {run.id} ended {run.status}: {run.error}")

        bare_apps = {profile: bare_celery.build(profile) for profile in ("reliable", "defaults")}

        def bare_vote(profile: str) -> Callable[[], None]:
            def vote() -> None:
                result = bare_celery.chord_of(bare_apps[profile], TEXT, VOTERS)
                if result.get(timeout=60)["winner"] is None:
                    raise SystemExit(f"bare chord ({profile}) produced no winner")
            return vote

        try:
            from bench.peers import langgraph_fanout
        except ImportError:  # the bench extra is optional: the other peers still run
            langgraph_fanout = None  # type: ignore[assignment]
            skipped.append("LangGraph Send fan-out: langgraph is not installed (pip install -e '.[bench]')")
        graph = langgraph_fanout.build_graph() if langgraph_fanout else None

        def langgraph_vote() -> None:
            if langgraph_fanout is None or langgraph_fanout.vote(graph, TEXT, VOTERS) is None:
                raise SystemExit("langgraph vote produced no winner")

        loop = asyncio.new_event_loop()
        async_client = anthropic.AsyncAnthropic(max_retries=0)

        def gather_vote() -> None:
            if loop.run_until_complete(gather.vote(async_client, TEXT, VOTERS)) is None:
                raise SystemExit("gather vote produced no winner")

        peers: dict[str, Callable[[], None]] = {
            CHORUS: chorus_vote,
            SAME: bare_vote("reliable"),
            DEFAULTS: bare_vote("defaults"),
            **({"LangGraph Send fan-out": langgraph_vote} if graph is not None else {}),
            "asyncio.gather (floor)": gather_vote,
        }
        bares = {
            SAME: WorkerProcess([bare_celery.QUEUES["reliable"]], log_dir=data, name="bare-reliable", pool="threads",
                                concurrency=10, app="bench.peers.bare_celery:reliable"),
            DEFAULTS: WorkerProcess([bare_celery.QUEUES["defaults"]], log_dir=data, name="bare-defaults",
                                    pool="threads", concurrency=10, app="bench.peers.bare_celery:app"),
        }
        overheads: dict[str, list[float]] = {name: [] for name in peers}
        meters: dict[str, CpuMeter] = {}
        try:
            with workers(data, pool="threads", concurrency=10) as procs:
                for b in bares.values():
                    b.start()
                for b in bares.values():
                    b.wait_ready()
                meters[CHORUS] = CpuMeter(pids_of(procs))
                meters.update({name: CpuMeter(pids_of([b])) for name, b in bares.items()})
                for fn in peers.values():  # warm-up: connections, imports, first-call costs
                    for _ in range(3):
                        fn()
                chorus_runs.clear()
                rounds, per_round = max(1, votes // 10), min(10, votes)
                for _ in range(rounds):
                    for name, fn in peers.items():
                        with meters[name] if name in meters else contextlib.nullcontext():
                            for _ in range(per_round):
                                t0 = time.perf_counter()
                                fn()
                                overheads[name].append(time.perf_counter() - t0 - LATENCY_MS / 1000)
        finally:
            for b in bares.values():
                b.stop()
            loop.run_until_complete(async_client.close())
            loop.close()
    table = {name: summary_ms(values) for name, values in overheads.items()}
    for name, meter in meters.items():
        table[name]["worker_cpu_s_per_1000_outcomes"] = per_thousand(meter.seconds, len(overheads[name]) * VOTERS)
    ours, same, defaults = table[CHORUS], table[SAME], table[DEFAULTS]
    return {
        "benchmark": "overhead",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m bench.overhead" + (" --quick" if quick else ""),
        "params": {"votes_per_peer": votes, "voters": VOTERS, "stub_latency_ms": LATENCY_MS},
        "overhead_ms": table,
        "chorus_phases_p50_ms": vote_phases(chorus_runs),
        "skipped": skipped,
        "ratios": {
            "p50 / same-settings bare p50": round(ours["p50_ms"] / same["p50_ms"], 2),
            "p50 / default bare p50": round(ours["p50_ms"] / defaults["p50_ms"], 2),
            "p99 / same-settings bare p99": round(ours["p99_ms"] / same["p99_ms"], 2),
        },
        "goals": {
            f"chorus p50 ≤ {GOAL_P50_MS:.0f} ms": ours["p50_ms"] <= GOAL_P50_MS,
            f"chorus p99 ≤ {GOAL_P99_MS:.0f} ms": ours["p99_ms"] <= GOAL_P99_MS,
            f"chorus p50 ≤ {GOAL_P50_SAME}× the bare chord with chorus's settings (issue 12)":
                ours["p50_ms"] <= GOAL_P50_SAME * same["p50_ms"],
            f"chorus p50 ≤ {GOAL_P50_DEFAULTS}× the bare chord with Celery's defaults (issue 12)":
                ours["p50_ms"] <= GOAL_P50_DEFAULTS * defaults["p50_ms"],
            f"chorus p99 ≤ {GOAL_P99_SAME}× the bare chord with chorus's settings (issue 12)":
                ours["p99_ms"] <= GOAL_P99_SAME * same["p99_ms"],
        },
    }


def vote_phases(records: list[tuple[float, float, float, Any]]) -> dict[str, float]:
    """p50 of each phase of the chorus votes, in ms."""
    phases: dict[str, list[float]] = {}

    def add(name: str, seconds: float) -> None:
        phases.setdefault(name, []).append(seconds * 1000)

    for t0, t1, t2, run in records:
        starts = [o.started_at.timestamp() for o in run.outcomes if o.started_at]
        ends = [o.finished_at.timestamp() for o in run.outcomes if o.finished_at]
        calls = [(o.finished_at - o.started_at).total_seconds() for o in run.outcomes
                 if o.started_at and o.finished_at]
        if not (starts and ends and calls and run.finished_at):
            continue
        add("submit_vote called → first slot claimed", min(starts) - t0)
        add("first → last slot claimed", max(starts) - min(starts))
        add(f"a slot's claim → its outcome stored, beyond the stub's {LATENCY_MS} ms", statistics.mean(calls)
            - LATENCY_MS / 1000)
        add("last outcome stored → run tallied", run.finished_at.timestamp() - max(ends))
        add("tallied → the client has it", t2 - run.finished_at.timestamp())
        add("(submit_vote's own time, overlapping the first phases: store the run, send the chord)", t1 - t0)
    return {name: round(statistics.median(values), 1) for name, values in phases.items()}


def render(result: dict[str, Any]) -> str:
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}.",
        f"{result['params']['votes_per_peer']} votes per peer of {result['params']['voters']} voters, stub latency "
        f"{result['params']['stub_latency_ms']} ms, interleaved rounds of 10. Overhead = wall − stub latency.",
        "",
        "| peer | p50 ms | p90 ms | p99 ms | mean ms | p50 vs same-settings bare | p50 vs default bare "
        "| worker CPU s / 1,000 outcomes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    table = result["overhead_ms"]
    same, defaults = table[SAME]["p50_ms"], table[DEFAULTS]["p50_ms"]
    for name, row in table.items():
        vs_same = f"{row['p50_ms'] / same:.2f}×" if same > 0 else "-"
        vs_defaults = f"{row['p50_ms'] / defaults:.2f}×" if defaults > 0 else "-"
        cpu = row.get("worker_cpu_s_per_1000_outcomes", "- (in process)")
        lines.append(f"| {name} | {row['p50_ms']} | {row['p90_ms']} | {row['p99_ms']} | {row['mean_ms']} | "
                     f"{vs_same} | {vs_defaults} | {cpu} |")
    lines += [f"\nNot measured: {reason}." for reason in result.get("skipped", [])]
    lines += ["", "Ratios (same run): " + "; ".join(f"{k} = **{v}×**" for k, v in result["ratios"].items())]
    phases = result.get("chorus_phases_p50_ms") or {}
    if phases:
        lines += ["", "Where a chorus vote's time goes (p50 of each phase over the timed votes, from the client's "
                  "clock and the stored timestamps; a slot's `started_at` is its claim): "
                  + "; ".join(f"{k} {v:g} ms" for k, v in phases.items()) + "."]
    lines += [""]
    lines += goal_lines(result["goals"])
    return "\n".join(lines)


if __name__ == "__main__":
    bench_main(__doc__, run, render, votes=True)
