"""A shared rate limit vs Celery's per-worker `rate_limit`: 4 worker processes, a stub limited to 600 RPM.

    python -m bench.ratelimit [--quick] [--window 30]

Three limiters, one after the other in the same run, each on a private redis-server and a fresh
stub (Anthropic's token bucket: 600 requests, refilled continuously at 10 per second), with 4
worker processes (prefork, Celery's default pool) and the same demand: 5-voter votes of the same
model submitted at once, more than the limit lets through in the window.

- chorus: `CHORUS_RATE_LIMITS=claude-haiku-4-5:rpm=600`, one bucket shared in Redis; chorus's own
  retry policy.
- Celery, naive: a bare Celery chord (`bench.peers.bare_celery`, with chorus's reliability settings)
  whose call task has `rate_limit="600/m"`, which each of the 4 workers applies to itself.
- Celery, careful: the same with `rate_limit="150/m"`, the limit divided by the worker processes.
  Both Celery variants retry a 429 the way a Celery user would write it: `autoretry_for` the SDK's
  `RateLimitError`, `retry_backoff=True`, `retry_jitter=True`, Celery's default `max_retries` (3);
  the SDK's own retries are off.

Before each variant the stub's bucket is spent with direct calls (and chorus's bucket emptied to
match), as after a long busy period, so the whole run is steady state: a limiter that overshoots
meets 429s at once instead of hiding behind the first full minute.

"Share of the limit used" is measured over a window of at least 30 s that starts `warmup` seconds
after the first call: the requests the stub accepted in the window, less what the window drew
from the provider's bucket (its level at the start minus its level at the end), over what refilled
in the window (10 per second). The levels are not assumed: the drain ends on a 429 whose
`anthropic-ratelimit-requests-remaining` header gives the level at that moment, and the accepted
requests of the stub's log are replayed from there (the replay is checked against every 429 and
every acceptance the stub logged). For chorus, its own shared bucket is also read from Redis at the
start and end of the window and shown beside it.

Afterwards every run is waited for (up to 300 s) and every slot counted: a limiter that keeps the
rate but drops slots has not done its job.
"""

from __future__ import annotations

import gc
import json
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from bench.harness import fresh_postgres, goal_lines, machine
from bench.stub_bucket import admitted_at, drain_stub, replay_levels

RPM = 600
MODEL = "claude-haiku-4-5"
VOTERS = 5
WORKERS = 4
POOL, CONCURRENCY = "prefork", 6
GOAL_SHARE = 0.95
STUB_LATENCY_MS = 50
MIN_WINDOW_S = 30.0
COMPLETION_TIMEOUT_S = 300.0
VARIANTS = {
    "chorus": "chorus shared bucket (Redis), chorus's retry",
    "celery-naive": f"Celery `rate_limit=\"{RPM}/m\"` per worker (naive), Celery's retry",
    "celery-careful": f"Celery `rate_limit=\"{RPM // WORKERS}/m\"` per worker (limit ÷ {WORKERS}), Celery's retry",
}
RATE_LIMITS = {"celery-naive": f"{RPM}/m", "celery-careful": f"{RPM // WORKERS}/m"}


def measure(log: list[dict[str, Any]], drained: tuple[float, float], start: float, end: float) -> dict[str, Any]:
    window = end - start
    accepted = [admitted_at(e) for e in log if e["status"] == 200]
    in_window = [t for t in accepted if start <= t < end]
    replay = replay_levels(drained, log, [start, end], RPM)
    level_start, level_end = replay["levels"]
    # Tokens the window took from what the bucket held at its start are not refill; a bucket that
    # filled up meanwhile is refill left unused.
    drawn_down = level_start - level_end
    refill_used = len(in_window) - max(0.0, drawn_down)
    return {
        "requests": len(log),
        "accepted": len(accepted),
        "429s": sum(1 for e in log if e["status"] == 429),
        "429s_in_window": sum(1 for e in log if e["status"] == 429 and start <= admitted_at(e) < end),
        "other_errors": sum(1 for e in log if e["status"] not in (200, 429)),
        "accepted_in_window": len(in_window),
        "provider_bucket_at_window": [round(level_start, 1), round(level_end, 1)],
        "bucket_drawn_down_in_window": round(drawn_down, 1),
        "replay_disagreements": replay["disagreements"],
        "window_s": round(window, 2),
        "share_of_limit_used": round(refill_used / (RPM / 60 * window), 4),
    }


def completion_of(run_ids: list[str], statuses: dict[str, str], rows: list[dict[str, Any]],
                  waited_s: float) -> dict[str, Any]:
    """Every slot's end after the window: how many were called to success, failed (with why), or never ended."""
    slot_status = Counter(r["status"] for r in rows)
    return {
        "runs": len(run_ids),
        "runs_terminal": sum(1 for r in run_ids if statuses.get(r) in ("succeeded", "partial", "failed")),
        "runs_succeeded": sum(1 for r in run_ids if statuses.get(r) == "succeeded"),
        "slots": len(rows),
        "slots_succeeded": slot_status.get("succeeded", 0),
        "slots_failed": slot_status.get("failed", 0),
        "slots_unfinished": sum(n for s, n in slot_status.items() if s not in ("succeeded", "failed")),
        "failure_reasons": Counter((r["error"] or "")[:60] for r in rows if r["status"] == "failed").most_common(3),
        "completed_within_s": round(waited_s, 1),
    }


class CeleryVotes:
    """Votes as bare Celery chords, each slot's task id known, so every slot's end can be read back."""

    def __init__(self, broker_url: str) -> None:
        from bench.peers import bare_celery

        self.app = bare_celery.build("reliable", broker_url)
        self.runs: list[tuple[str, list[str]]] = []  # (tally id, slot ids)

    def submit(self, texts: list[str]) -> None:
        from celery import chord

        call, tally = self.app.tasks["bare.call"], self.app.tasks["bare.tally"]
        for text in texts:
            slots = [str(uuid.uuid4()) for _ in range(VOTERS)]
            result = chord([call.s(i, text).set(task_id=slots[i]) for i in range(VOTERS)], app=self.app)(tally.s())
            self.runs.append((result.id, slots))

    def wait(self, timeout: float) -> dict[str, Any]:
        began = time.monotonic()
        while True:
            states = {tid: self.app.AsyncResult(tid).state for tid, _ in self.runs}
            if all(s in ("SUCCESS", "FAILURE") for s in states.values()) or time.monotonic() - began > timeout:
                break
            time.sleep(0.5)
        slots = [self.app.AsyncResult(sid) for _, ids in self.runs for sid in ids]
        slot_states = Counter(r.state for r in slots)
        failures = Counter(f"{type(r.result).__name__}: {r.result}"[:60] for r in slots if r.state == "FAILURE")
        return {
            "runs": len(self.runs),
            "runs_terminal": sum(1 for s in states.values() if s in ("SUCCESS", "FAILURE")),
            "runs_succeeded": sum(1 for s in states.values() if s == "SUCCESS"),
            "slots": len(slots),
            "slots_succeeded": slot_states.get("SUCCESS", 0),
            "slots_failed": slot_states.get("FAILURE", 0),
            "slots_unfinished": sum(n for s, n in slot_states.items() if s not in ("SUCCESS", "FAILURE")),
            "failure_reasons": failures.most_common(3),
            "completed_within_s": round(time.monotonic() - began, 1),
        }


def run_variant(name: str, database_url: str, folder: Path, runs: int, warmup: float,
                window: float) -> dict[str, Any]:
    from chorus.embedded import WorkerProcess
    from chorus.testing import outcome_rows, private_redis, submit_votes, wait_terminal, worker_env
    from chorus.testing.stub.testing import running_stub
    from settings import load_settings
    from tasks.limiter import RedisLimiter, pool_key, pool_limits

    folder.mkdir(parents=True, exist_ok=True)
    with private_redis(folder / "redis") as redis, \
            running_stub(latency_ms=STUB_LATENCY_MS, extra_args=("--rpm", str(RPM))) as stub:
        if name == "chorus":
            extra = {"CHORUS_RATE_LIMITS": f"{MODEL}:rpm={RPM}", "CHORUS_DEFAULT_MODEL": MODEL}
            env = worker_env(broker_url=redis.url, database_url=database_url, data_dir=folder,
                             stub_url=stub.base_url, **extra)
            procs = [WorkerProcess([f"llm.{MODEL}"], log_dir=folder, name=f"llm-{i}", pool=POOL,
                                   concurrency=CONCURRENCY, env=env) for i in range(WORKERS)]
            procs.append(WorkerProcess(["callbacks"], log_dir=folder, name="callbacks", pool="threads",
                                       concurrency=4, env=env))
        else:
            from bench.peers.bare_celery import QUEUES

            env = worker_env(broker_url=redis.url, database_url=database_url, data_dir=folder,
                             stub_url=stub.base_url, BARE_BROKER_URL=redis.url, BARE_RATE_LIMIT=RATE_LIMITS[name])
            procs = [WorkerProcess([QUEUES["reliable"]], log_dir=folder, name=f"bare-{i}", pool=POOL,
                                   concurrency=CONCURRENCY, env=env, app="bench.peers.bare_celery:reliable")
                     for i in range(WORKERS)]
        settings = load_settings(broker_url=redis.url, result_backend=redis.url, database_url=database_url,
                                 rate_limits=f"{MODEL}:rpm={RPM}")
        limits = pool_limits(settings.queue_limits, MODEL)
        limiter = RedisLimiter(redis.url)
        chorus_levels: list[float] = []
        try:
            for p in procs:
                p.start()
            for p in procs:
                p.wait_ready(timeout=180)
            drained = drain_stub(stub, RPM, MODEL)  # every limiter starts against an exhausted provider bucket
            if name == "chorus":
                limiter.acquire(pool_key(MODEL), "bench-drain", limits, {"requests": RPM}, max_wait_s=0)
            texts = [f"The kettle boils fast and the handle stays cool ({i})." for i in range(runs)]
            celery_votes = None
            if name == "chorus":
                run_ids = submit_votes(env, texts, "positive,negative,neutral", VOTERS, timeout=300)
            else:
                celery_votes = CeleryVotes(redis.url)
                celery_votes.submit(texts)
            started = time.monotonic()
            first = None
            while first is None:
                first = min((e["time"] for e in stub.requests(bodies=False)), default=None)
                if time.monotonic() - started > 120:
                    raise SystemExit(f"{name}: no call reached the stub within 120 s")
                time.sleep(0.1)
            start, end = first + warmup, first + warmup + window
            for mark in (start, end):
                time.sleep(max(0.0, mark - time.time()))
                if name == "chorus":
                    chorus_levels.append(limiter.levels(pool_key(MODEL), limits)["requests"])
            began = time.monotonic()
            if celery_votes is not None:
                completion = celery_votes.wait(COMPLETION_TIMEOUT_S)
            else:
                statuses = wait_terminal(run_ids, timeout=COMPLETION_TIMEOUT_S, database_url=database_url)
                completion = completion_of(run_ids, statuses, outcome_rows(run_ids, database_url),
                                           time.monotonic() - began)
            log = stub.requests(bodies=False)  # the whole run; the window is cut from it by time
            (folder / "stub-log.json").write_text(json.dumps(log))
        finally:
            # Celery's result objects unsubscribe when collected: let them, while their Redis is up.
            celery_votes = None
            gc.collect()
            limiter.client.close()
            for p in procs:
                p.stop(timeout=5)
    result: dict[str, Any] = {"variant": name, "drained": {"time": drained[0], "level": drained[1]},
                              "window": [start, end], **measure(log, drained, start, end),
                              **completion}
    if chorus_levels:
        result["chorus_bucket_at_window"] = [round(v, 1) for v in chorus_levels]
        result["chorus_bucket_drawn_down"] = round(chorus_levels[0] - chorus_levels[1], 1)
    return result


def run(quick: bool = True, window: float | None = None) -> dict[str, Any]:
    window = window or MIN_WINDOW_S
    if window < MIN_WINDOW_S:
        raise SystemExit(f"--window {window:g} is too short: the window must be at least {MIN_WINDOW_S:g} s of "
                         "steady state (--quick shortens the work after it, not the window)")
    warmup = 5.0
    # Demand: more than the warm-up and the window can take, so every limiter is busy all through
    # the window; --quick leaves less work after it.
    runs = int(RPM / 60 * (warmup + window) / VOTERS * (1.5 if quick else 2.5))
    folder = Path(tempfile.mkdtemp(prefix="chorus-bench-ratelimit-"))
    with fresh_postgres("chorus_bench_ratelimit") as pg:
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg}"
        from models import ensure_schema

        ensure_schema(url)
        results = [run_variant(v, url, folder / v, runs, warmup, window) for v in VARIANTS]
    by = {r["variant"]: r for r in results}
    chorus = by["chorus"]
    return {
        "benchmark": "ratelimit",
        "command": f"python -m bench.ratelimit{' --quick' if quick else ''} --window {window:g}",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(),
        "rpm": RPM, "model": MODEL, "workers": WORKERS, "pool": POOL, "concurrency": CONCURRENCY,
        "votes": runs, "voters": VOTERS, "warmup_s": warmup, "window_s": window,
        "results": results,
        "goals": {
            f"chorus ≥ {GOAL_SHARE:.0%} of the limit used, 0 × 429, every slot ended":
                chorus["share_of_limit_used"] >= GOAL_SHARE and chorus["429s"] == 0
                and chorus["slots_unfinished"] == 0 and chorus["runs_terminal"] == chorus["runs"],
        },
    }


def render(r: dict[str, Any]) -> str:
    lines = [
        f"`{r['command']}` — {r['date']}, {r['machine']}.",
        f"{r['workers']} worker processes ({r['pool']}, concurrency {r['concurrency']} each) against the stub "
        f"limited to {r['rpm']} RPM (token bucket, continuous refill, spent before each variant); "
        f"{r['votes']} votes × {r['voters']} voters of {r['model']} submitted at once; window "
        f"{r['window_s']:g} s starting {r['warmup_s']:g} s after the first call. The variants run one after "
        "the other, each on its own redis-server and stub.",
        "",
        "| limiter | share of the limit used (window) | provider bucket at window start → end | 429s (whole run) "
        "| 429s in window | requests | accepted | runs ended (succeeded) | slots succeeded / failed / unfinished |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for v in r["results"]:
        a, b = v["provider_bucket_at_window"]
        lines.append(f"| {VARIANTS[v['variant']]} | {v['share_of_limit_used']:.1%} | {a:g} → {b:g} | {v['429s']} | "
                     f"{v['429s_in_window']} | {v['requests']} | {v['accepted']} | "
                     f"{v['runs_terminal']} of {v['runs']} ({v['runs_succeeded']}) | "
                     f"{v['slots_succeeded']} / {v['slots_failed']} / {v['slots_unfinished']} |")
    lines.append("")
    chorus = next(v for v in r["results"] if v["variant"] == "chorus")
    if "chorus_bucket_at_window" in chorus:
        a, b = chorus["chorus_bucket_at_window"]
        lines.append(f"Provider bucket levels are replayed from the drain's last 429 (its `remaining` header) over "
                     f"the stub's log; the replay disagreed with "
                     f"{sum(v['replay_disagreements'] for v in r['results'])} of the stub's decisions. chorus's own "
                     f"bucket, read from Redis: {a:g} → {b:g} tokens over the window.")
    failing = [v for v in r["results"] if v["failure_reasons"]]
    for v in failing:
        reasons = "; ".join(f"{reason} ×{n}" for reason, n in v["failure_reasons"])
        lines.append(f"Failed slots, {v['variant']}: {reasons}.")
    lines.append("")
    lines += goal_lines(r["goals"])
    return "\n".join(lines)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="less work after the window (the window stays)")
    parser.add_argument("--window", type=float, default=MIN_WINDOW_S,
                        help=f"seconds of steady state measured (at least {MIN_WINDOW_S:g})")
    args = parser.parse_args()
    result = run(quick=args.quick, window=args.window)
    print(json.dumps(result, indent=2))
    print(render(result))


if __name__ == "__main__":
    main()
