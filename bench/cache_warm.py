"""Cache warm-up: today's leader-first dispatch against the `max_tokens: 0` pre-warm (and voters sent at
once), in one run.

    python -m bench.cache_warm [--quick]

Long man pages (`bench.manpages --min-chars 20000`, a shared prefix above the model's cache minimum) go
through real workers on Redis + PostgreSQL and the real anthropic SDK against the stub, one vote at a
time, the three ways interleaved per document and the stub's cache emptied before each vote. The stub's
latency is a time to the first token (when a written prefix becomes readable) plus a time per output
token, so a pre-warm, which generates nothing, ends at the first token while a leader ends after its
answer. Wall is the vote's submit-to-tally time; cost is priced from the usage the stub reported; the
hit rate counts the voters that should have read the prefix and did (`cache_miss` on the outcome).
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.harness import configure_env, flushed_redis, fresh_postgres, machine, workers
from bench.manpages import LABELS, build

REDIS_DB = 9
MODEL, VOTERS = "claude-haiku-4-5", 3
WAYS = [("leader first", True, "leader"), ("pre-warm", True, "prewarm"), ("all at once", False, "leader")]


def run(quick: bool = True, docs: int | None = None, ttft_ms: int = 300, ms_per_token: float = 10.0) -> dict[str, Any]:
    from chorus.testing.stub.testing import running_stub

    n = docs or (5 if quick else 15)
    rows = build(max(1, n // 5 + 1), min_chars=20000)[:n]
    with running_stub() as stub, fresh_postgres("chorus_bench_warm"), flushed_redis(REDIS_DB):
        data = configure_env(redis_db=REDIS_DB, pg_db="chorus_bench_warm", stub_url=stub.base_url)
        stub.set_latency(ttft_ms, ms_per_token)
        from chorus.runs import wait_for_run
        from chorus.vote import plan_vote, submit_plan
        from settings import get_settings

        get_settings.cache_clear()
        settings = get_settings()
        measured: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in WAYS}
        with workers(data, pool="threads", concurrency=8):
            for row in rows:
                for name, aware, warm in WAYS:
                    stub.reset()
                    plan = plan_vote(row["text"], LABELS, voters=VOTERS, models=[MODEL], cache_aware=aware,
                                     cache_warm=warm, settings=settings)
                    t0 = time.perf_counter()
                    view = wait_for_run(submit_plan(plan, settings=settings), timeout=120, settings=settings)
                    wall = time.perf_counter() - t0
                    data_json = view.to_json()
                    checked = [o.cache_miss for o in view.outcomes if o.cache_miss is not None]
                    measured[name].append({"wall_s": wall, "cost": (data_json.get("cost") or {}).get("total_usd", 0.0),
                                           "calls": len(view.outcomes), "checked": len(checked),
                                           "misses": sum(1 for m in checked if m),
                                           "correct": view.answer == row["label"], "status": view.status})
    ways = []
    for name, _, _ in WAYS:
        rs = measured[name]
        checked = sum(r["checked"] for r in rs)
        wall_p50 = statistics.median(r["wall_s"] for r in rs)
        ways.append({"way": name, "docs": len(rs), "wall_p50_ms": round(wall_p50 * 1000),
                     "cost_per_doc_usd": round(sum(r["cost"] for r in rs) / len(rs), 8),
                     "calls_per_doc": round(sum(r["calls"] for r in rs) / len(rs), 2),
                     "hit_rate": round(1 - sum(r["misses"] for r in rs) / checked, 4) if checked else None,
                     "succeeded": sum(1 for r in rs if r["status"] == "succeeded")})
    return {"benchmark": "cache_warm", "command": f"python -m bench.cache_warm{' --quick' if quick else ''}",
            "machine": machine(), "date": time.strftime("%Y-%m-%d"),
            "params": {"docs": len(rows), "model": MODEL, "voters": VOTERS, "ttft_ms": ttft_ms,
                       "ms_per_output_token": ms_per_token,
                       "mean_chars": round(sum(len(r["text"]) for r in rows) / max(1, len(rows)))},
            "ways": ways}


def render(result: dict[str, Any]) -> str:
    p = result["params"]
    base = next(w for w in result["ways"] if w["way"] == "leader first")
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}.",
        f"{p['docs']} man pages of at least 20,000 characters (mean {p['mean_chars']}), {p['voters']} voters of "
        f"{p['model']}, one vote at a time, the stub's cache emptied before each; stub latency {p['ttft_ms']} ms to "
        f"the first token + {p['ms_per_output_token']} ms per output token.",
        "",
        "| way | calls / doc | wall p50 | × leader | cost / doc | × leader | followers' cache hit rate | succeeded |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for w in result["ways"]:
        hit = "-" if w["hit_rate"] is None else f"{w['hit_rate']:.0%}"
        lines.append(f"| {w['way']} | {w['calls_per_doc']} | {w['wall_p50_ms']} ms | "
                     f"{w['wall_p50_ms'] / base['wall_p50_ms']:.2f} | ${w['cost_per_doc_usd']:.6f} | "
                     f"{w['cost_per_doc_usd'] / base['cost_per_doc_usd']:.3f} | {hit} | {w['succeeded']}/{w['docs']} |")
    return "\n".join(lines)


if __name__ == "__main__":
    from bench.harness import bench_main

    bench_main(__doc__, run, render)
