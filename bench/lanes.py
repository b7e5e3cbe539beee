"""Cost, accuracy, calls and wall time of a 5-voter vote on the labelled man-page set, four ways:
synchronous, adaptive, the batch lane, and the batch lane + adaptive, in one run.

    python -m bench.lanes [--quick]

The documents are `bench.manpages` (manual pages of this machine labelled by section). Each way is a
`chorus batch` of the same documents through real workers on Redis + PostgreSQL and the real anthropic
SDK against the stub (its Messages API for the synchronous lane, its Message Batches API for the batch
lane, with a processing delay), the stub's prompt cache emptied before each way. Beat runs inside the
callbacks worker (`-B`), with the lane's collector and poller every second. "calls" counts the requests
the stub answered (its log), so a call that adaptive voting skipped, or that a batch carried, is counted
where the provider saw it. Costs are priced from the usage the stub reported, with the registry's batch
discount for lane calls. Accuracy is against the man page's section.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from bench.harness import configure_env, flushed_redis, fresh_postgres, machine
from bench.manpages import LABELS, build

REDIS_DB = 10
VOTERS = 5
WAYS = [("synchronous", False, "sync"), ("adaptive", True, "sync"), ("batch lane", False, "batch"),
        ("batch lane + adaptive", True, "batch")]


def run(quick: bool = True, per_section: int | None = None, latency_ms: int = 200,
        batch_delay_ms: int = 2000) -> dict[str, Any]:
    from chorus.testing.stub.testing import running_stub

    per = per_section or (3 if quick else 10)
    rows = build(per, min_chars=0)
    with running_stub(latency_ms=latency_ms) as stub, fresh_postgres("chorus_bench_lanes"), \
            flushed_redis(REDIS_DB):
        data = configure_env(redis_db=REDIS_DB, pg_db="chorus_bench_lanes", stub_url=stub.base_url,
                             extra={"CHORUS_LANE_COLLECT_S": "1", "CHORUS_LANE_POLL_S": "1"})
        source = data / "manpages.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows))
        results = []
        for name, adaptive, lane in WAYS:
            stub.reset()  # an empty prompt cache for each way: none reads what another wrote
            stub.batch_config(delay_ms=batch_delay_ms)
            results.append(_measure(name, adaptive, lane, source, stub, data))
    return {
        "benchmark": "lanes",
        "command": f"python -m bench.lanes{' --quick' if quick else ''}",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "params": {"docs": len(rows), "voters": VOTERS, "latency_ms": latency_ms, "batch_delay_ms": batch_delay_ms},
        "ways": results,
    }


def _measure(name: str, adaptive: bool, lane: str, source: Path, stub: Any, data: Path) -> dict[str, Any]:
    from chorus.batch import find_batch, run_batch, wait_for_batch
    from chorus.embedded import WorkerProcess
    from chorus.runs import get_run
    from models import Run, Session
    from settings import get_settings
    from workflows.queues import CALLBACK_QUEUE, all_queues

    get_settings.cache_clear()
    settings = get_settings()
    model_queues = [q for q in all_queues(settings.model_list) if q != CALLBACK_QUEUE]
    procs = [WorkerProcess(model_queues, log_dir=data, name=f"llm-{lane}", pool="threads", concurrency=16),
             WorkerProcess([CALLBACK_QUEUE], log_dir=data, name=f"callbacks-{lane}", pool="solo", concurrency=1,
                           extra_args=("-B", "-s", str(data / f"beat-{name.replace(' ', '-')}")))]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.wait_ready()
        batch_name = "lanes-" + name.replace(" ", "-").replace("+", "and")
        t0 = time.perf_counter()
        run_batch(source, pattern="vote", options={"labels": LABELS, "voters": VOTERS, "adaptive": adaptive},
                  name=batch_name, lane=lane, settings=settings)
        batch = find_batch(batch_name)
        wait_for_batch(batch.id, timeout=900)
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            p.stop()
    with Session() as s:
        run_ids = [r.id for r in s.query(Run).filter(Run.document.has(batch_id=batch.id))]
    runs = [get_run(r) for r in run_ids]
    wanted = set(run_ids)
    calls = sum(1 for r in stub.requests(bodies=False) if r.get("run") in wanted and r.get("status") == 200)
    correct = sum(1 for r in runs if r.gold_label is not None and r.answer == r.gold_label)
    cost = sum((r.to_json().get("cost") or {}).get("total_usd", 0.0) for r in runs)
    tokens = {kind: sum(getattr(o, kind) for r in runs for o in r.outcomes)
              for kind in ("input_tokens", "cache_write_tokens", "cache_read_tokens", "output_tokens")}
    checked = [o.cache_miss for r in runs for o in r.outcomes if o.cache_miss is not None]
    return {"tokens": tokens, "followers_checked": len(checked), "cache_misses": sum(1 for m in checked if m),
            "way": name, "adaptive": adaptive, "lane": lane, "docs": len(runs), "calls": calls,
            "calls_per_doc": round(calls / max(1, len(runs)), 2), "accuracy": round(correct / max(1, len(runs)), 4),
            "cost_per_doc_usd": round(cost / max(1, len(runs)), 8), "wall_s": round(wall, 1),
            "statuses": {s: sum(1 for r in runs if r.status == s) for s in sorted({r.status for r in runs})}}


def render(result: dict[str, Any]) -> str:
    p = result["params"]
    base = next(w for w in result["ways"] if w["way"] == "synchronous")
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}.",
        f"{p['docs']} man pages (`bench.manpages`, labelled by section), {p['voters']} voters of the default "
        f"model, stub latency {p['latency_ms']} ms, the stub's batches end {p['batch_delay_ms']} ms after they are "
        "created (Anthropic's end within about an hour, at most 24 h: the lane's wall time here is the stub's, "
        "not the provider's). Calls are the requests the stub answered; cost from the usage it reported.",
        "",
        "| way | calls / doc | cost / doc | × synchronous | accuracy | wall | tokens in / cache write / cache read / "
        "out | followers' cache misses | statuses |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for w in result["ways"]:
        ratio = w["cost_per_doc_usd"] / base["cost_per_doc_usd"] if base["cost_per_doc_usd"] else float("nan")
        statuses = ", ".join(f"{k} {v}" for k, v in w["statuses"].items())
        t = w["tokens"]
        lines.append(f"| {w['way']} | {w['calls_per_doc']} | ${w['cost_per_doc_usd']:.6f} | {ratio:.3f} | "
                     f"{w['accuracy']:.1%} | {w['wall_s']} s | {t['input_tokens']} / {t['cache_write_tokens']} / "
                     f"{t['cache_read_tokens']} / {t['output_tokens']} | {w['cache_misses']} of "
                     f"{w['followers_checked']} | {statuses} |")
    return "\n".join(lines)


if __name__ == "__main__":
    from bench.harness import bench_main

    bench_main(__doc__, run, render)
