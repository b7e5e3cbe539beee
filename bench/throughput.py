"""Throughput at zero provider latency: outcomes persisted per second, chorus vs a bare Celery chord.

    python -m bench.throughput [--quick]

Three systems run the same number of 5-voter votes with the same number of votes in flight,
against the same stub (latency 0), with one worker process for the calls (thread pool) each, in
the same run and interleaved: round after round, each system in turn runs `ROUND` votes, so the
machine's noise (2 shared cores) falls on all of them alike.

- chorus: every outcome persisted in PostgreSQL;
- the bare chord with chorus's reliability settings (`bench.peers.bare_celery:reliable`);
- the bare chord with Celery's defaults. Both bare chords keep results in Redis only.

The worker processes' CPU time (user + system, from /proc) is summed over each system's own rounds
and reported per 1,000 outcomes.
"""

from __future__ import annotations

import time
from collections import deque
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
    workers,
)
from bench.peers import MODEL as PEER_MODEL
from bench.profile import PySpy, render_profiles

VOTERS = 5
ROUND = 50  # votes per system per round
PROFILED_VOTES = 100  # after the timed rounds, per system, under py-spy
GOAL_RATIO = 0.9  # issue 12: ≥ 0.9× the bare chord with chorus's settings
CHORUS, SAME, DEFAULTS = "chorus", "bare_same_settings", "bare_defaults"
LABELS = {CHORUS: "chorus (each outcome persisted in PostgreSQL)",
          SAME: "bare Celery chord, chorus's settings (results in Redis only)",
          DEFAULTS: "bare Celery chord, Celery's defaults (results in Redis only)"}

PROFILE_NAMES = {CHORUS: "chorus", SAME: "bare chord, chorus's settings"}


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

    votes = votes or (150 if quick else 400)
    rounds = max(1, round(votes / ROUND))
    votes = rounds * min(ROUND, votes)
    text = "The kettle boils fast and the handle stays cool. I love it."
    with running_stub(latency_ms=0) as stub, fresh_postgres("chorus_bench_tput"), flushed_redis(12), \
            flushed_redis(13):
        data = configure_env(redis_db=12, pg_db="chorus_bench_tput", stub_url=stub.base_url,
                             extra={"BARE_BROKER_URL": "redis://127.0.0.1:6379/13",
                                    # chorus's votes on the peers' model: the same calls to the stub
                                    "CHORUS_DEFAULT_MODEL": PEER_MODEL})
        from bench.peers import bare_celery
        from chorus.runs import wait_for_run
        from chorus.vote import submit_vote

        def chorus_submit() -> str:
            return submit_vote(text, "positive,negative,neutral", voters=VOTERS)

        def chorus_wait(run_id: str) -> None:
            if wait_for_run(run_id, timeout=120).status != "succeeded":
                raise SystemExit(f"chorus run {run_id} did not succeed")

        bare_apps = {SAME: bare_celery.build("reliable"), DEFAULTS: bare_celery.build("defaults")}

        def bare_submit(name: str) -> Callable[[], Any]:
            return lambda: bare_celery.chord_of(bare_apps[name], text, VOTERS)

        def bare_wait(result: Any) -> None:
            result.get(timeout=120)

        systems: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {
            CHORUS: (chorus_submit, chorus_wait), SAME: (bare_submit(SAME), bare_wait),
            DEFAULTS: (bare_submit(DEFAULTS), bare_wait),
        }
        elapsed = dict.fromkeys(systems, 0.0)
        bares = {
            SAME: WorkerProcess([bare_celery.QUEUES["reliable"]], log_dir=data, name="bare-reliable", pool="threads",
                                concurrency=concurrency, app="bench.peers.bare_celery:reliable"),
            DEFAULTS: WorkerProcess([bare_celery.QUEUES["defaults"]], log_dir=data, name="bare-defaults",
                                    pool="threads", concurrency=concurrency, app="bench.peers.bare_celery:app"),
        }
        try:
            with workers(data, pool="threads", concurrency=concurrency) as procs:
                for b in bares.values():
                    b.start()
                for b in bares.values():
                    b.wait_ready()
                meters = {CHORUS: CpuMeter(pids_of(procs)),
                          **{name: CpuMeter(pids_of([b])) for name, b in bares.items()}}
                for submit, wait in systems.values():  # warm-up
                    _drive(submit, wait, 10, in_flight)
                for _ in range(rounds):
                    for name, (submit, wait) in systems.items():
                        with meters[name]:
                            elapsed[name] += _drive(submit, wait, votes // rounds, in_flight)
                # One more round each, untimed, under py-spy: where the worker CPU goes.
                spies = {CHORUS: PySpy(pids_of(procs), CHORUS), SAME: PySpy(pids_of([bares[SAME]]), SAME)}
                for name, spy in spies.items():
                    submit, wait = systems[name]
                    with spy:
                        _drive(submit, wait, PROFILED_VOTES, in_flight)
        finally:
            for b in bares.values():
                b.stop()
    outcomes = votes * VOTERS
    cpu = {k: per_thousand(m.seconds, outcomes) for k, m in meters.items()}
    rates = {name: outcomes / seconds for name, seconds in elapsed.items()}
    ratio, ratio_defaults = rates[CHORUS] / rates[SAME], rates[CHORUS] / rates[DEFAULTS]
    return {
        "benchmark": "throughput",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m bench.throughput" + (" --quick" if quick else ""),
        "params": {"votes": votes, "voters": VOTERS, "in_flight": in_flight, "pool": f"threads x{concurrency}",
                   "rounds": rounds},
        "outcomes_per_s": {k: round(v, 1) for k, v in rates.items()},
        "worker_cpu_s_per_1000_outcomes": cpu,
        "profiles": {PROFILE_NAMES[name]: spy.summary(cpu[name]) for name, spy in spies.items()},
        "ratio": round(ratio, 2),
        "ratio_vs_defaults": round(ratio_defaults, 2),
        "goals": {f"chorus ≥ {GOAL_RATIO}× the bare chord with chorus's settings (issue 12)": ratio >= GOAL_RATIO},
    }


def render(result: dict[str, Any]) -> str:
    p = result["params"]
    rates, cpu = result["outcomes_per_s"], result["worker_cpu_s_per_1000_outcomes"]
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}.",
        f"{p['votes']} votes × {p['voters']} voters per system in {p['rounds']} interleaved rounds, "
        f"{p['in_flight']} votes in flight, stub latency 0, one call worker ({p['pool']}) per system.",
        "",
        "| system | outcomes/s | vs same-settings bare | worker CPU s / 1,000 outcomes |",
        "|---|---|---|---|",
    ]
    for name, label in LABELS.items():
        lines.append(f"| {label} | {rates[name]} | {rates[name] / rates[SAME]:.2f}× | {cpu[name]} |")
    lines += ["", f"chorus / same-settings bare = **{result['ratio']}×**; chorus / default bare = "
              f"**{result['ratio_vs_defaults']}×** (outcomes/s, same run)."]
    lines += render_profiles(result.get("profiles", {}), f"one more round of {PROFILED_VOTES} votes per "
                             "system after the timed ones, all of each system's worker processes")
    lines += [""]
    lines += goal_lines(result["goals"])
    return "\n".join(lines)


if __name__ == "__main__":
    bench_main(__doc__, run, render, votes=True)
