"""A batch at the rate limit: `chorus batch` of 2,000 documents × 3 voters against a stub limited to
3,000 RPM, beside a one-process asyncio script doing the same calls.

    python -m bench.batch_limit [--quick]

One stub (Anthropic's token bucket at 3,000 requests per minute, refilled continuously at 50 per
second; latency 1,000 ms ± 300 ms, uniform, seeded) serves both sides, one after the other:

- chorus: `CHORUS_RATE_LIMITS=claude-haiku-4-5:rpm=3000`, 2 worker processes on the model's queue
  (threads pool, 64 threads each: 128 calls could be in flight, while the limit needs about 50 × 1.3 s
  = 65) and one callback worker (threads, 8); the `chorus batch` command line in a subprocess (`--json`,
  its default `--max-in-flight 64` runs), every outcome stored in PostgreSQL.
- asyncio: `bench.peers.asyncio_batch` in a subprocess: `AsyncAnthropic` (SDK default retries),
  `asyncio.Semaphore(128)`, a token bucket at 3,000 RPM starting empty; the same documents, the same
  request bodies; nothing is stored.

`--quick` changes nothing: the goal is about this batch, and it takes about two minutes per side.

Before each side the stub's request bucket is spent with direct calls (latency off meanwhile), as
after a long busy minute, and chorus's own bucket in Redis is emptied to match; the drain ends on a
429 whose `anthropic-ratelimit-requests-remaining` header gives the provider's level at that moment.
So no side starts with a minute of burst in hand.

Steady state is measured at the provider, from the stub's request log: the window runs from the
10th to the 90th percentile of the accepted calls' admission times (so the start-up and the tail
are outside it). The rate is the accepted calls in the window less what they drew from the
provider's bucket (its replayed level at the window's start minus its level at the end, when
positive), over the refill of the window (50 per second): tokens that piled up before the window
cannot count, and the figure can only reach 100 % by using every token that refilled. The levels
are replayed from the drain's 429 over the log (and the replay is checked against every decision
the stub logged). Every 429 of the whole run is counted.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench.batch_enqueue import write_jsonl
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
)
from bench.stub_bucket import admitted_at, drain_stub, replay_levels

RPM = 3000
MODEL = "claude-haiku-4-5"  # bench.peers.MODEL: the peer's request bodies are for it
DOCS, VOTERS = 2000, 3
LABELS = "positive,negative,neutral"
WORKERS, POOL, CONCURRENCY = 2, "threads", 64
CALLBACK_POOL, CALLBACK_CONCURRENCY = "threads", 8
MAX_IN_FLIGHT = 64  # `chorus batch --max-in-flight`'s default (runs sent and unfinished)
PEER_CONCURRENCY = WORKERS * CONCURRENCY
LATENCY_MS, JITTER_MS, SEED = 1000, 300, 12
WINDOW_Q = (0.10, 0.90)
GOAL_SHARE = 0.95
REDIS_DB = 10
PG_DB = "chorus_bench_batchlimit"
BATCH_NAME = "batch-limit"
SIDE_TIMEOUT_S = 900.0
GOALS = {
    "share": "chorus batch: steady-state request rate ≥ 95 % of 3,000 RPM (issue 12)",
    "429": "chorus batch: 0 × 429 (issue 12)",
}


# ----- the provider's side: the stub's log ------------------------------------------------------
def in_flight_mean(log: list[dict[str, Any]], start: float, end: float) -> float:
    """Calls in flight at the provider, on average over [start, end) (accepted calls, arrival to answer)."""
    busy = sum(max(0.0, min(end, e["time"] + e["latency_ms"] / 1000) - max(start, e["time"]))
               for e in log if e["status"] == 200)
    return busy / (end - start) if end > start else float("nan")


def measure(log: list[dict[str, Any]], drained: tuple[float, float]) -> dict[str, Any]:
    accepted = sorted(admitted_at(e) for e in log if e["status"] == 200)
    statuses = Counter(e["status"] for e in log)
    base = {"requests": len(log), "accepted": len(accepted), "429s": statuses.get(429, 0),
            "other_errors": sum(n for s, n in statuses.items() if s not in (200, 429)),
            "statuses": {str(s): n for s, n in sorted(statuses.items())}}
    if len(accepted) < 20:
        return {**base, "share_of_limit": float("nan"), "raw_share_of_limit": float("nan"), "window_s": 0.0}
    start = accepted[int(WINDOW_Q[0] * (len(accepted) - 1))]
    end = accepted[int(WINDOW_Q[1] * (len(accepted) - 1))]
    window = end - start
    in_window = bisect.bisect_left(accepted, end) - bisect.bisect_left(accepted, start)
    replay = replay_levels(drained, log, [start, end], RPM)
    level_start, level_end = replay["levels"]
    drawn_down = max(0.0, level_start - level_end)  # tokens saved up before the window are not refill
    refill = RPM / 60 * window
    first, last = accepted[0], accepted[-1]
    return {
        **base,
        "window": [start, end],
        "window_s": round(window, 2),
        "window_from_first_call_s": [round(start - min(e["time"] for e in log), 2),
                                     round(end - min(e["time"] for e in log), 2)],
        "accepted_in_window": in_window,
        "429s_in_window": sum(1 for e in log if e["status"] == 429 and start <= admitted_at(e) < end),
        "provider_bucket_at_window": [round(level_start, 1), round(level_end, 1)],
        "bucket_drawn_down_in_window": round(drawn_down, 1),
        "replay_disagreements": replay["disagreements"],
        "share_of_limit": round((in_window - drawn_down) / refill, 4),
        "raw_share_of_limit": round(in_window / refill, 4),
        "accepted_per_s_whole_run": round((len(accepted) - 1) / (last - first), 2) if last > first else float("nan"),
        "calls_in_flight_mean_in_window": round(in_flight_mean(log, start, end), 1),
        "provider_span_s": round(max(e["time"] + e["latency_ms"] / 1000 for e in log) - min(e["time"] for e in log), 2),
        "delay_ms_range": [round(min(e["delay_ms"] for e in log if "delay_ms" in e), 1),
                           round(max(e["delay_ms"] for e in log if "delay_ms" in e), 1)],
        "input_tokens_mean": round(sum(e["input_tokens"] for e in log if e["status"] == 200) / len(accepted), 1),
    }


def drain(stub: Any) -> tuple[float, float]:
    """`drain_stub` with the latency off meanwhile, then set back, its jitter's draws restarted."""
    stub.set_latency(0)
    try:
        return drain_stub(stub, RPM, MODEL)
    finally:
        stub.set_latency(LATENCY_MS, jitter_ms=JITTER_MS, seed=SEED)


class BucketSampler(threading.Thread):
    """chorus's own request bucket (Redis), read every half second while the batch runs."""

    def __init__(self, limiter: Any, key: str, limits: Any) -> None:
        super().__init__(daemon=True)
        self.limiter, self.key, self.limits = limiter, key, limits
        self.samples: list[tuple[float, float]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.5):
            with contextlib.suppress(Exception):  # a diagnostic only
                self.samples.append((time.time(), self.limiter.levels(self.key, self.limits)["requests"]))

    def mean_between(self, start: float, end: float) -> float:
        values = [v for t, v in self.samples if start <= t < end]
        return round(sum(values) / len(values), 1) if values else float("nan")


def child_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ----- the two sides ------------------------------------------------------------------------------
def slot_counts(database_url: str) -> dict[str, Any]:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as c:
            rows = c.execute(text(
                "SELECT o.status, count(*), sum(o.attempts), sum(CASE WHEN o.attempts > 1 THEN 1 ELSE 0 END) "
                "FROM worker_outcome o JOIN run r ON r.id = o.run_id JOIN document d ON d.id = r.document_id "
                "JOIN batch b ON b.id = d.batch_id WHERE b.name = :name GROUP BY o.status"), {"name": BATCH_NAME}).all()
            errors = c.execute(text(
                "SELECT left(o.error, 80), count(*) FROM worker_outcome o WHERE o.status = 'failed' "
                "GROUP BY 1 ORDER BY 2 DESC LIMIT 3")).all()
    finally:
        engine.dispose()
    by = {str(status): (int(n), int(attempts or 0), int(retried or 0)) for status, n, attempts, retried in rows}
    return {"slots": sum(v[0] for v in by.values()),
            "slots_succeeded": by.get("succeeded", (0, 0, 0))[0],
            "slots_failed": by.get("failed", (0, 0, 0))[0],
            "slots_other": {s: v[0] for s, v in by.items() if s not in ("succeeded", "failed")},
            "attempts": sum(v[1] for v in by.values()),
            "slots_with_more_than_one_attempt": sum(v[2] for v in by.values()),
            "failure_reasons": [[str(e), int(n)] for e, n in errors]}


def phases(database_url: str, start: float, end: float) -> dict[str, Any]:
    """Where a run's time goes, from the stored timestamps of the runs sent (marked running by the
    dispatch task) inside the window: dispatch to its first slot taken, first slot taken to last slot
    finished (the calls, with any limiter wait), last slot to the tally's end. The submitter keeps
    MAX_IN_FLIGHT runs unfinished, so runs finished per second × cycle = MAX_IN_FLIGHT: the cycle less
    those three phases is what a run spends before its dispatch task marks it (the submitter noticing
    room, the dispatch message waiting on the callback queue)."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as c:
            rows = c.execute(text(
                "SELECT extract(epoch FROM r.submitted_at), extract(epoch FROM min(o.started_at)), "
                "extract(epoch FROM max(o.finished_at)), extract(epoch FROM r.finished_at) "
                "FROM run r JOIN worker_outcome o ON o.run_id = r.id GROUP BY r.id")).all()
    finally:
        engine.dispose()
    runs = [tuple(float(x) for x in row) for row in rows if None not in row]
    inside = [r for r in runs if start <= r[0] < end]
    finished = sum(1 for r in runs if start <= r[3] < end)
    if not inside or end <= start:
        return {}

    def mean(values: list[float]) -> float:
        return round(sum(values) / len(values), 3)

    to_first = mean([r[1] - r[0] for r in inside])
    calls = mean([r[2] - r[1] for r in inside])
    tally = mean([r[3] - r[2] for r in inside])
    per_s = finished / (end - start)
    cycle = MAX_IN_FLIGHT / per_s if per_s else float("nan")
    return {"runs_in_window": len(inside), "runs_finished_per_s": round(per_s, 2),
            "dispatch_to_first_slot_s": to_first, "first_slot_to_last_slot_s": calls,
            "last_slot_to_tally_end_s": tally, "cycle_s": round(cycle, 3),
            "before_dispatch_s": round(cycle - to_first - calls - tally, 3)}


def run_chorus(stub: Any, source: Path, data: Path, database_url: str) -> dict[str, Any]:
    from chorus.embedded import WorkerProcess
    from settings import get_settings
    from tasks.limiter import RedisLimiter, pool_key, pool_limits
    from workflows.queues import CALLBACK_QUEUE, queue_for_model

    settings = get_settings()
    limits = pool_limits(settings.queue_limits, MODEL)
    limiter = RedisLimiter(settings.effective_broker_url)
    procs = [WorkerProcess([queue_for_model(MODEL)], log_dir=data, name=f"llm{i}", pool=POOL,
                           concurrency=CONCURRENCY) for i in range(WORKERS)]
    procs.append(WorkerProcess([CALLBACK_QUEUE], log_dir=data, name="callbacks", pool=CALLBACK_POOL,
                               concurrency=CALLBACK_CONCURRENCY))
    sampler = BucketSampler(limiter, pool_key(MODEL), limits)
    meter, callback_meter = CpuMeter([]), CpuMeter([])
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.wait_ready(timeout=180)
        meter.pids, callback_meter.pids = pids_of(procs[:WORKERS]), pids_of(procs[WORKERS:])
        drained = drain(stub)
        # chorus's bucket as empty as the provider's: a fresh one is full (a minute's burst).
        limiter.acquire(pool_key(MODEL), "bench-drain", limits, {"requests": RPM}, max_wait_s=0)
        chorus_after_drain = limiter.levels(pool_key(MODEL), limits)["requests"]
        sampler.start()
        cmd = [sys.executable, "-m", "chorus.cli", "batch", str(source), "--labels", LABELS, "--voters", str(VOTERS),
               "--name", BATCH_NAME, "--max-in-flight", str(MAX_IN_FLIGHT), "--timeout", str(SIDE_TIMEOUT_S),
               "--json"]
        cpu0, t0 = child_cpu_s(), time.perf_counter()
        with meter, callback_meter:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=SIDE_TIMEOUT_S + 120,
                                 env=os.environ.copy(), check=False)
        wall = time.perf_counter() - t0
        submitter_cpu = child_cpu_s() - cpu0
        sampler.stop.set()
        if out.returncode != 0:
            raise SystemExit(f"chorus batch exited with {out.returncode}: {out.stderr[-3000:]}")
        summary = json.loads(out.stdout)
        log = stub.requests(bodies=False)
    finally:
        sampler.stop.set()
        limiter.client.close()
        for p in procs:
            p.stop()
    (data / "stub-log-chorus.json").write_text(json.dumps(log))
    measured = measure(log, drained)
    slots = slot_counts(database_url)
    window = measured.get("window") or [0.0, 0.0]
    outcomes = slots["slots_succeeded"] + slots["slots_failed"]
    return {
        "side": "chorus",
        "drained": {"time": drained[0], "level": drained[1], "chorus_bucket_after": round(chorus_after_drain, 1)},
        **measured,
        "chorus_bucket_mean_in_window": sampler.mean_between(*window),
        "documents": summary["counts"]["total"],
        "documents_finished": sum(summary["counts"][k] for k in ("succeeded", "partial", "failed", "cancelled")),
        "documents_succeeded": summary["counts"]["succeeded"],
        "counts": summary["counts"],
        **slots,
        "wall_s": round(wall, 2),
        "phases": phases(database_url, *window),
        "worker_cpu_s": round(meter.seconds, 1),
        "worker_cpu_s_per_1000": per_thousand(meter.seconds, outcomes),
        "callback_worker_cpu_s": round(callback_meter.seconds, 1),
        "callback_worker_cpu_s_per_1000": per_thousand(callback_meter.seconds, outcomes),
        "submitter_cpu_s": round(submitter_cpu, 1),
        "worker_logs": str(data),
    }


def run_peer(stub: Any, source: Path, data: Path) -> dict[str, Any]:
    drained = drain(stub)
    cmd = [sys.executable, "-m", "bench.peers.asyncio_batch", str(source), "--base-url", stub.base_url,
           "--rpm", str(RPM), "--concurrency", str(PEER_CONCURRENCY), "--voters", str(VOTERS), "--tokens", "0"]
    cpu0, t0 = child_cpu_s(), time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=SIDE_TIMEOUT_S, env=os.environ.copy(),
                         check=False)
    wall = time.perf_counter() - t0
    cpu = child_cpu_s() - cpu0
    if out.returncode != 0:
        raise SystemExit(f"the asyncio peer exited with {out.returncode}: {out.stderr[-3000:]}")
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    log = stub.requests(bodies=False)
    (data / "stub-log-asyncio.json").write_text(json.dumps(log))
    return {
        "side": "asyncio",
        "drained": {"time": drained[0], "level": drained[1]},
        **measure(log, drained),
        "documents": summary["docs"],
        "documents_finished": summary["docs"],
        "documents_with_answer": summary["docs_with_answer"],
        "slots": summary["calls"], "slots_succeeded": summary["succeeded"], "slots_failed": summary["failed"],
        "failure_reasons": [[k, v] for k, v in summary["failures"].items()],
        "wall_s": round(wall, 2),
        "script_wall_s": summary["wall_s"],
        "process_cpu_s": round(cpu, 1),
        "process_cpu_s_per_1000": per_thousand(cpu, summary["calls"]),
    }


def run(quick: bool = True) -> dict[str, Any]:
    from chorus.testing.stub.testing import running_stub

    folder = Path(tempfile.mkdtemp(prefix="chorus-bench-batchlimit-"))
    source = folder / "docs.jsonl"
    write_jsonl(source, DOCS)
    stub_args = ("--rpm", str(RPM), "--latency-jitter-ms", str(JITTER_MS), "--latency-seed", str(SEED))
    with fresh_postgres(PG_DB), flushed_redis(REDIS_DB), \
            running_stub(latency_ms=LATENCY_MS, extra_args=stub_args) as stub:
        data = configure_env(redis_db=REDIS_DB, pg_db=PG_DB, stub_url=stub.base_url,
                             extra={"CHORUS_RATE_LIMITS": f"{MODEL}:rpm={RPM}", "CHORUS_DEFAULT_MODEL": MODEL,
                                    "CHORUS_RUN_TIMEOUT_S": str(SIDE_TIMEOUT_S)})
        from models import ensure_schema
        from settings import get_settings

        get_settings.cache_clear()
        url = get_settings().effective_database_url
        ensure_schema(url)
        chorus = run_chorus(stub, source, data, url)
        peer = run_peer(stub, source, data)
    return {
        "benchmark": "batch_limit",
        "command": "python -m bench.batch_limit" + (" --quick" if quick else ""),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "params": {"rpm": RPM, "model": MODEL, "documents": DOCS, "voters": VOTERS, "latency_ms": LATENCY_MS,
                   "jitter_ms": JITTER_MS, "seed": SEED, "workers": WORKERS, "pool": POOL,
                   "concurrency": CONCURRENCY, "callback_pool": f"{CALLBACK_POOL} {CALLBACK_CONCURRENCY}",
                   "max_in_flight": MAX_IN_FLIGHT, "peer_concurrency": PEER_CONCURRENCY,
                   "window_quantiles": list(WINDOW_Q)},
        "results": [chorus, peer],
        "goals": {
            GOALS["share"]: not math.isnan(chorus["share_of_limit"]) and chorus["share_of_limit"] >= GOAL_SHARE,
            GOALS["429"]: chorus["429s"] == 0 and chorus["requests"] > 0,
        },
    }


def render(r: dict[str, Any]) -> str:
    p = r["params"]
    lines = [
        f"`{r['command']}` — {r['date']}, {r['machine']}.",
        f"{p['documents']:,} documents × {p['voters']} voters of {p['model']}; the stub limited to {p['rpm']:,} RPM "
        f"(token bucket, continuous refill, spent before each side), latency {p['latency_ms']} ms ± "
        f"{p['jitter_ms']} ms (uniform, seed {p['seed']}). chorus: "
        f"`chorus batch --max-in-flight {p['max_in_flight']}`, "
        f"`CHORUS_RATE_LIMITS={p['model']}:rpm={p['rpm']}`, {p['workers']} worker processes ({p['pool']}, "
        f"{p['concurrency']} each) + 1 callback worker ({p['callback_pool']}), every outcome stored in PostgreSQL. "
        f"asyncio: one process, `AsyncAnthropic` (SDK default retries) + `Semaphore({p['peer_concurrency']})` + a "
        f"token bucket at {p['rpm']:,} RPM starting empty, nothing stored. The sides run one after the other on the "
        "same stub.",
        "",
        "| side | steady-state rate, share of the limit | accepted in window (raw share) | window (s after first call) "
        "| provider bucket at window start → end | 429s (whole run) | other errors | documents finished "
        "| calls succeeded / failed | wall s | CPU s / 1,000 calls |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in r["results"]:
        a, b = v.get("provider_bucket_at_window", [float("nan")] * 2)
        w0, w1 = v.get("window_from_first_call_s", [float("nan")] * 2)
        cpu = (f"{v['worker_cpu_s_per_1000']} model workers + {v['callback_worker_cpu_s_per_1000']} callback worker "
               f"(submitter: {v['submitter_cpu_s']} s in all)"
               if v["side"] == "chorus" else f"{v['process_cpu_s_per_1000']} (the one process)")
        lines.append(
            f"| {v['side']} | {v['share_of_limit']:.1%} | "
            f"{v.get('accepted_in_window', 0)} ({v['raw_share_of_limit']:.1%}) "
            f"| {w0:g}–{w1:g} | {a:g} → {b:g} | {v['429s']} | {v['other_errors']} | "
            f"{v['documents_finished']} of {v['documents']} | {v['slots_succeeded']} / {v['slots_failed']} | "
            f"{v['wall_s']:g} | {cpu} |")
    chorus = r["results"][0]
    lines += [
        "",
        f"Window: from the {r['params']['window_quantiles'][0]:.0%} to the {r['params']['window_quantiles'][1]:.0%} "
        "percentile of the accepted calls' admission times at the stub. Share = (accepted in the window − what they "
        "drew from the provider's bucket) ÷ (50/s × window); the bucket levels are replayed from each drain's last 429 "
        f"over the stub's log (the replay disagreed with {sum(v.get('replay_disagreements', 0) for v in r['results'])} "
        "of the stub's decisions). Mean calls in flight at the provider in the window: "
        + ", ".join(f"{v['side']} {v.get('calls_in_flight_mean_in_window', float('nan')):g}" for v in r["results"])
        + f"; chorus's own bucket (Redis) held {chorus.get('chorus_bucket_mean_in_window', float('nan')):g} tokens "
        "on average in the window (below zero: tokens already reserved for calls waiting their turn).",
    ]
    ph = chorus.get("phases") or {}
    if ph:
        lines += ["", f"Where a chorus run's time goes (means over the {ph['runs_in_window']} runs dispatched in the "
                  f"window): dispatch → first slot taken {ph['dispatch_to_first_slot_s']:.2f} s, calls (first slot "
                  f"taken → last slot stored) {ph['first_slot_to_last_slot_s']:.2f} s, last slot → tally done "
                  f"{ph['last_slot_to_tally_end_s']:.2f} s. {ph['runs_finished_per_s']:g} runs finished per second "
                  f"with {p['max_in_flight']} in flight is a cycle of {ph['cycle_s']:.2f} s per run, so "
                  f"{ph['before_dispatch_s']:.2f} s of it is before the dispatch task marks the run (the submitter "
                  "noticing room, the dispatch message on the callback queue)."]
    for v in r["results"]:
        if v.get("failure_reasons"):
            reasons = "; ".join(f"{reason} ×{n}" for reason, n in v["failure_reasons"])
            lines.append(f"Failed calls, {v['side']}: {reasons}.")
    lines.append("")
    lines += goal_lines(r["goals"])
    return "\n".join(lines)


if __name__ == "__main__":
    bench_main(__doc__, run, render)
