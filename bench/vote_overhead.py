"""Orchestration overhead of a vote: wall time minus the slowest voter's latency.

    python -m bench.vote_overhead --votes 50 --voters 5 --latency-ms 200

Runs real worker processes on the local Redis, persists every outcome in a fresh PostgreSQL
database, and calls the stub server through the real anthropic SDK. Votes run one after another,
so each wall time is one vote's, measured by the client from submit to the stored tally.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from bench.harness import configure_env, flushed_redis, fresh_postgres, machine, summary_ms, workers

TEXT = "The kettle boils fast and the handle stays cool. I love it and would buy it again."


def run(quick: bool = True, votes: int | None = None, voters: int = 5, latency_ms: int = 200, pool: str = "threads",
        concurrency: int = 10, warmup: int = 3) -> dict[str, Any]:
    votes = votes or 50
    from chorus.testing.stub.testing import running_stub

    with running_stub(latency_ms=latency_ms) as stub, fresh_postgres("chorus_bench"), flushed_redis(12):
        data = configure_env(redis_db=12, pg_db="chorus_bench", stub_url=stub.base_url)
        from chorus.runs import wait_for_run
        from chorus.vote import submit_vote

        with workers(data, pool=pool, concurrency=concurrency):
            walls, slowest, overheads, server_overheads = [], [], [], []
            for i in range(warmup + votes):
                t0 = time.perf_counter()
                run_id = submit_vote(TEXT, "positive,negative,neutral", voters=voters)
                view = wait_for_run(run_id, timeout=120)
                wall = time.perf_counter() - t0
                if view.status != "succeeded" or view.slowest_worker_s is None or view.wall_s is None:
                    raise SystemExit(f"vote {run_id} ended {view.status}: {view.error}")
                if i < warmup:
                    continue
                walls.append(wall)
                slowest.append(view.slowest_worker_s)
                overheads.append(wall - view.slowest_worker_s)
                server_overheads.append(view.wall_s - view.slowest_worker_s)
    return {
        "benchmark": "vote_overhead",
        "command": f"python -m bench.vote_overhead --votes {votes} --voters {voters} --latency-ms {latency_ms}",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "params": {"votes": votes, "voters": voters, "latency_ms": latency_ms, "pool": pool,
                   "concurrency": concurrency, "warmup": warmup},
        "wall": summary_ms(walls),
        "slowest_voter": summary_ms(slowest),
        "overhead_client": summary_ms(overheads),
        "overhead_stored": summary_ms(server_overheads),
    }


def render(result: dict[str, Any]) -> str:
    p = result["params"]
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}.",
        f"Pool `{p['pool']}` ×{p['concurrency']} on the model queues, `solo` on callbacks; {p['votes']} votes after "
        f"{p['warmup']} warm-up votes. Overhead = wall − the slowest voter's recorded latency.",
        "",
        "| measure | p50 ms | p90 ms | p99 ms | mean ms |",
        "|---|---|---|---|---|",
    ]
    names = {"wall": "vote wall time (client)", "slowest_voter": "slowest voter's latency",
             "overhead_client": "overhead, client (wall − slowest voter)",
             "overhead_stored": "overhead, stored (finished_at − submitted_at − slowest voter)"}
    for key, name in names.items():
        d = result[key]
        lines.append(f"| {name} | {d['p50_ms']} | {d['p90_ms']} | {d['p99_ms']} | {d['mean_ms']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--votes", type=int, default=50)
    ap.add_argument("--voters", type=int, default=5)
    ap.add_argument("--latency-ms", type=int, default=200)
    ap.add_argument("--pool", default="threads", choices=["threads", "prefork", "solo"])
    ap.add_argument("--concurrency", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--json", action="store_true", help="print only the JSON result")
    args = ap.parse_args(argv)
    result = run(votes=args.votes, voters=args.voters, latency_ms=args.latency_ms, pool=args.pool,
                 concurrency=args.concurrency, warmup=args.warmup)
    if args.json:
        print(json.dumps(result))
    else:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
