"""Shared rate limit vs Celery's per-worker `rate_limit`: 4 worker processes, a stub limited to 600 RPM.

    python -m bench.ratelimit [--window 30]

Both variants run in the same process, one after the other, each on a private redis-server and a
fresh stub (Anthropic's token bucket: 600 requests, refilled continuously at 10 per second), with
the same 4 worker processes (thread pools) and the same demand: 5-voter votes submitted through
the chorus API faster than the limit allows.

- chorus: CHORUS_RATE_LIMITS=claude-haiku-4-5:rpm=600, the bucket shared in Redis.
- celery: no chorus limit; `celery control rate_limit chorus.vote.call 600/m`, which every worker
  applies to itself.

Before each variant the stub's bucket is spent with direct calls (and chorus's own bucket is
emptied to match), as after a long busy period; so the whole run is steady state, where a limiter
that overshoots meets 429s at once instead of hiding behind the first full minute.

"Share of the limit used" is measured over a window that starts `warmup` seconds after the first
call: the requests the stub accepted in the window, less any drop of the bucket's level over the
window (replayed from the stub's request log), over what refilled in the window (10 per second).
So it counts only the refill that was used, whatever the initial full bucket did.

Both variants use the prefork pool (Celery's default). With a thread pool Celery's consumer runs
its blocking loop, whose timer releases rate-limited tasks only between polls, about once a
second per worker, so `rate_limit` then under-uses the limit instead of overshooting it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, cast

from bench.harness import fresh_postgres, machine

RPM = 600
MODEL = "claude-haiku-4-5"
VOTERS = 5
WORKERS = 4
POOL, CONCURRENCY = "prefork", 6
GOAL_SHARE = 0.95
COMPLETION_TIMEOUT_S = 300.0


def bucket_level(times: list[float], at: float) -> float:
    """Replay the stub's request bucket over the accepted requests' times; its level at `at`."""
    from workflows.ratelimit import Level, Limit, refill, settle

    limit, level = Limit(RPM), cast("Level | None", None)
    for t in times:
        if t > at:
            break
        level = settle(limit, level, -1.0, t)
    return refill(limit, level, at) if level is not None else float(RPM)


def measure(log: list[dict[str, Any]], warmup: float, window: float) -> dict[str, Any]:
    if not log:
        return {"error": "no request reached the stub"}
    t0 = min(e["time"] for e in log)
    start, end = t0 + warmup, t0 + warmup + window
    accepted = sorted(e["time"] for e in log if e["status"] == 200)
    in_window = [t for t in accepted if start <= t < end]
    # Tokens the window took from what the bucket held at its start are not refill; a bucket that
    # filled up meanwhile is refill left unused.
    drawn_down = bucket_level(accepted, start) - bucket_level(accepted, end)
    refill_used = len(in_window) - max(0.0, drawn_down)
    return {
        "requests": len(log),
        "accepted": len(accepted),
        "429s": sum(1 for e in log if e["status"] == 429),
        "429s_in_window": sum(1 for e in log if e["status"] == 429 and start <= e["time"] < end),
        "accepted_in_window": len(in_window),
        "bucket_drawn_down_in_window": round(drawn_down, 1),
        "share_of_limit_used": round(refill_used / (RPM / 60 * window), 4),
    }


def drain_stub(stub: Any) -> int:
    """Spend the stub's request bucket (as a long busy period would have); the number of calls it took."""
    import http.client

    body = json.dumps({"model": MODEL, "max_tokens": 1, "messages": [{"role": "user", "content": "drain"}]})
    conn = http.client.HTTPConnection(stub.host, stub.port, timeout=10)
    n = 0
    try:
        while n < 10 * RPM:
            n += 1
            conn.request("POST", "/v1/messages", body=body, headers={"content-type": "application/json"})
            response = conn.getresponse()
            response.read()
            if response.status == 429:
                break
    finally:
        conn.close()
    stub.reset()  # the drain is not part of the measurement
    return n


def run_variant(name: str, database_url: str, folder: Path, runs: int, warmup: float,
                window: float) -> dict[str, Any]:
    from chorus.embedded import WorkerProcess
    from chorus.testing import outcome_rows, private_redis, submit_votes, wait_terminal, worker_env
    from chorus.testing.stub.testing import running_stub
    from settings import load_settings
    from worker import make_app

    folder.mkdir(parents=True, exist_ok=True)
    extra = {"CHORUS_RATE_LIMITS": f"{MODEL}:rpm={RPM}"} if name == "chorus" else {}
    with private_redis(folder / "redis") as redis, running_stub(latency_ms=50, extra_args=("--rpm", str(RPM))) as stub:
        env = worker_env(broker_url=redis.url, database_url=database_url, data_dir=folder, stub_url=stub.base_url,
                         **extra)
        procs = [WorkerProcess([f"llm.{MODEL}"], log_dir=folder, name=f"llm-{i}", pool=POOL,
                               concurrency=CONCURRENCY, env=env) for i in range(WORKERS)]
        procs.append(WorkerProcess(["callbacks"], log_dir=folder, name="callbacks", pool="threads", concurrency=4,
                                   env=env))
        try:
            for p in procs:
                p.start()
            for p in procs:
                p.wait_ready()
            drain_stub(stub)  # both limiters start against an exhausted provider bucket: steady state
            if name == "chorus":
                from tasks.limiter import RedisLimiter
                from workflows.ratelimit import QueueLimits

                RedisLimiter(redis.url).acquire(f"llm.{MODEL}", "bench-drain", QueueLimits(rpm=RPM),
                                                {"requests": RPM}, max_wait_s=0)
            if name == "celery":
                control = make_app(load_settings(broker_url=redis.url, result_backend=redis.url,
                                                 database_url=database_url))
                replies = control.control.rate_limit("chorus.vote.call", f"{RPM}/m", reply=True, timeout=5)
                if len(replies) < WORKERS:
                    raise SystemExit(f"only {len(replies)} workers took the rate limit")
            texts = [f"The kettle boils fast and the handle stays cool ({i})." for i in range(runs)]
            run_ids = submit_votes(env, texts, "positive,negative,neutral", VOTERS, timeout=300)
            started = time.monotonic()
            while True:
                log = stub.requests()
                first = min((e["time"] for e in log), default=None)
                if first is not None and time.time() > first + warmup + window + 1:
                    break
                if time.monotonic() - started > warmup + window + 120:
                    raise SystemExit(f"{name}: the window never completed")
                time.sleep(1.0)
            # Completion: a limiter that keeps the rate but drops slots has not done its job.
            began = time.monotonic()
            statuses = wait_terminal(run_ids, timeout=COMPLETION_TIMEOUT_S, database_url=database_url)
            completion = completion_of(run_ids, statuses, outcome_rows(run_ids, database_url),
                                       time.monotonic() - began)
        finally:
            for p in procs:
                p.stop(timeout=5)
    return {"variant": name, **measure(log, warmup, window), **completion}


def completion_of(run_ids: list[str], statuses: dict[str, str], rows: list[dict[str, Any]],
                  waited_s: float) -> dict[str, Any]:
    """Every slot's end after the window: how many were called to success, failed (with why), or never ended."""
    slot_status = Counter(r["status"] for r in rows)
    return {
        "runs": len(run_ids),
        "runs_terminal": sum(1 for r in run_ids if statuses.get(r) in ("succeeded", "partial", "failed")),
        "slots": len(rows),
        "slots_succeeded": slot_status.get("succeeded", 0),
        "slots_failed": slot_status.get("failed", 0),
        "slots_unfinished": sum(n for s, n in slot_status.items() if s not in ("succeeded", "failed")),
        "failure_reasons": Counter((r["error"] or "")[:60] for r in rows if r["status"] == "failed").most_common(3),
        "completed_within_s": round(waited_s, 1),
    }


def run(quick: bool = True, window: float | None = None) -> dict[str, Any]:
    window = window or (30.0 if quick else 60.0)
    warmup = 5.0
    # Demand: the first full bucket plus more than the window can take.
    runs = int(RPM / 60 * (warmup + window) / VOTERS * 2.5)
    folder = Path(tempfile.mkdtemp(prefix="chorus-bench-ratelimit-"))
    with fresh_postgres("chorus_bench_ratelimit") as pg:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg}"
        from models import ensure_schema

        ensure_schema(url)
        results = [run_variant(v, url, folder / v, runs, warmup, window) for v in ("chorus", "celery")]
    chorus, celery = results
    return {
        "command": f"python -m bench.ratelimit --window {window:g}",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "rpm": RPM, "workers": WORKERS, "pool": POOL, "concurrency": CONCURRENCY,
        "votes": runs, "voters": VOTERS, "warmup_s": warmup, "window_s": window,
        "results": results,
        "goal_met": chorus.get("share_of_limit_used", 0) >= GOAL_SHARE and chorus.get("429s") == 0
        and chorus.get("slots_unfinished") == 0 and chorus.get("runs_terminal") == chorus.get("runs"),
        "ratio_429s_celery_vs_chorus": None if not chorus.get("429s") else celery["429s"] / chorus["429s"],
    }


def render(r: dict[str, Any]) -> str:
    lines = [
        f"`{r['command']}` — {r['date']}, {r['machine']}.",
        f"{r['workers']} worker processes ({r['pool']}, concurrency {r['concurrency']} each) against the stub "
        f"limited to {r['rpm']} RPM (token "
        f"bucket, continuous refill, spent before each variant); {r['votes']} votes x {r['voters']} voters "
        f"submitted at once; window "
        f"{r['window_s']:g} s starting {r['warmup_s']:g} s after the first call.",
        "",
        "| limiter | share of the limit used (window) | 429s (whole run) | 429s in window | requests | accepted "
        "| runs ended | slots succeeded / failed / unfinished |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in r["results"]:
        label = {"chorus": "chorus shared bucket (Redis)", "celery": "Celery `rate_limit` per worker"}[v["variant"]]
        lines.append(f"| {label} | {v['share_of_limit_used']:.1%} | {v['429s']} | {v['429s_in_window']} | "
                     f"{v['requests']} | {v['accepted']} | {v['runs_terminal']} of {v['runs']} | "
                     f"{v['slots_succeeded']} / {v['slots_failed']} / {v['slots_unfinished']} |")
    lines += ["", f"Goal (chorus ≥ 95 % used, 0 × 429, every slot ended): **{'met' if r['goal_met'] else 'not met'}**."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--window", type=float, default=30.0, help="seconds of steady state measured")
    args = parser.parse_args()
    result = run(quick=True, window=args.window)
    print(json.dumps(result, indent=2))
    print(render(result))


if __name__ == "__main__":
    main()
