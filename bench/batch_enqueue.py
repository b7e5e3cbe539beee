"""How fast a batch is enqueued, and how much memory the submitter needs, for 1 000 vs 10 000 documents.

    python -m bench.batch_enqueue --docs 1000,10000 --voters 3

For each size, a JSONL file of that many documents is written, and a fresh submitter process
(`chorus.batch.run_batch`, the code behind `chorus batch`) enqueues it against the local Redis and
a fresh PostgreSQL database, the stub server answering with latency 0. Two phases per size:

* **enqueue only**: no worker is consuming, `max_in_flight` unbounded: the submitter's own rate
  (read and check each document, store documents/runs/outcomes in chunks, send one
  `chorus.batch.dispatch` message per 100 runs; the workers then send each document's chord);
* **with workers** (sizes up to `--e2e-max`): real worker processes drain the batch while it is
  submitted with `--max-in-flight 64` (back-pressure): documents finished per second, end to end.

The baseline beside them is the same submitter sending every chord itself (`send_here`), as the
first version did. The submitter's peak RSS is `ru_maxrss` of its own process; its RSS right after imports is the
baseline, so the growth is what the batch costs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import configure_env, flushed_redis, fresh_postgres, machine, workers

TEXTS = ["The kettle boils fast and the handle stays cool. I love it.",
         "It broke after a week and support never answered. Terrible.",
         "It works. Nothing special, an average kettle for the price."]


def write_jsonl(path: Path, n: int) -> None:
    labels = ("positive", "negative", "neutral")
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"id": f"doc-{i:06d}", "text": f"{TEXTS[i % 3]} Order {i}.", "label": labels[i % 3]})
                    + "\n")


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def child(source: str, name: str, voters: int, max_in_flight: int | None, wait: bool, send_here: bool
          ) -> dict[str, Any]:
    """Runs in its own process so its peak RSS is the submitter's alone."""
    from chorus.batch import prepare_batch, run_batch, wait_for_batch
    from chorus.runs import prepare
    from settings import get_settings

    settings = get_settings()
    prepare(settings)
    import tasks.vote  # noqa: F401  (the app and its tasks, as `chorus batch` has them loaded)

    base = rss_kb()
    t0 = time.perf_counter()
    prepared = prepare_batch(Path(source), pattern="vote", options={"labels": "positive,negative,neutral",
                                                                    "voters": voters},
                             name=name, max_in_flight=max_in_flight, settings=settings)
    sub = run_batch(prepared, settings=settings, send_here=send_here)
    enqueued = time.perf_counter() - t0
    done = None
    counts = None
    if wait:
        counts = wait_for_batch(sub.batch_id, timeout=1800).to_json()
        done = time.perf_counter() - t0
    return {"docs": sub.read, "sent": sub.sent, "enqueue_s": enqueued, "done_s": done, "counts": counts,
            "rss_after_imports_kb": base, "peak_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}


def run_child(source: Path, name: str, voters: int, max_in_flight: int | None, wait: bool,
              send_here: bool = False) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.batch_enqueue", "--child", str(source), "--name", name,
           "--voters", str(voters), "--max-in-flight", str(max_in_flight or 0)]
    cmd += (["--wait"] if wait else []) + (["--send-here"] if send_here else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=False, env=os.environ.copy())
    if out.returncode != 0:
        raise SystemExit(f"submitter failed ({out.returncode}): {out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def drain(redis_db: int) -> None:
    import redis

    redis.Redis(host="127.0.0.1", port=6379, db=redis_db).flushdb()


def claim_free_redis_db() -> int:
    """A Redis database no test session is using (claimed from the top, tests claim from the bottom)."""
    from chorus.testing import claim_redis_db

    db = claim_redis_db(range(15, 0, -1), f"bench-{os.getpid()}")
    if db is None:
        raise SystemExit("every Redis database 1-15 is claimed; try again later")
    return db


def run(sizes: list[int], voters: int, max_in_flight: int, concurrency: int, e2e_max: int, pool: str
        ) -> dict[str, Any]:
    from chorus.testing import release_redis_db

    db = claim_free_redis_db()
    try:
        return _run(sizes, voters, max_in_flight, concurrency, e2e_max, pool, db)
    finally:
        release_redis_db(db, f"bench-{os.getpid()}")


def _run(sizes: list[int], voters: int, max_in_flight: int, concurrency: int, e2e_max: int, pool: str, db: int
         ) -> dict[str, Any]:
    from chorus.testing.stub.testing import running_stub

    results: list[dict[str, Any]] = []
    tmp = Path(tempfile.mkdtemp(prefix="chorus-bench-batch-"))
    with running_stub(latency_ms=0) as stub, fresh_postgres("chorus_bench_batch"), flushed_redis(db):
        data = configure_env(redis_db=db, pg_db="chorus_bench_batch", stub_url=stub.base_url)
        from models import ensure_schema
        from settings import get_settings

        ensure_schema(get_settings().effective_database_url)
        for n in sizes:
            source = tmp / f"docs-{n}.jsonl"
            write_jsonl(source, n)
            here = run_child(source, f"baseline-{n}", voters, None, wait=False, send_here=True)
            drain(db)  # nobody consumes these: drop them so the next phase starts clean
            results.append({"phase": "baseline: enqueue only, submitter sends every chord", "docs": n, **here,
                            "docs_per_s": round(n / here["enqueue_s"], 1)})
            enq = run_child(source, f"enqueue-{n}", voters, None, wait=False)
            drain(db)
            results.append({"phase": "enqueue only", "docs": n, **enq,
                            "docs_per_s": round(n / enq["enqueue_s"], 1)})
            if n > e2e_max:
                continue
            with workers(data, pool=pool, concurrency=concurrency):
                e2e = run_child(source, f"e2e-{n}", voters, max_in_flight, wait=True)
            results.append({"phase": f"with workers, --max-in-flight {max_in_flight}", "docs": n, **e2e,
                            "docs_per_s": round(n / e2e["done_s"], 1)})
    return {
        "benchmark": "batch_enqueue",
        "command": f"python -m bench.batch_enqueue --docs {','.join(map(str, sizes))} --voters {voters} "
                   f"--max-in-flight {max_in_flight} --pool {pool} --concurrency {concurrency} --e2e-max {e2e_max}",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }


def render(result: dict[str, Any]) -> str:
    lines = [f"`{result['command']}`", "", f"Run on {result['date']}, {result['machine']}.", "",
             "| phase | documents | docs/s | time (s) | submitter RSS after imports (MB) | peak RSS (MB) |",
             "|---|---|---|---|---|---|"]
    for r in result["results"]:
        t = r["done_s"] if r["done_s"] is not None else r["enqueue_s"]
        lines.append(f"| {r['phase']} | {r['docs']} | {r['docs_per_s']:.0f} | {t:.1f} | "
                     f"{r['rss_after_imports_kb'] / 1024:.0f} | {r['peak_rss_kb'] / 1024:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", default="1000,10000")
    parser.add_argument("--voters", type=int, default=3)
    parser.add_argument("--max-in-flight", type=int, default=64)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--e2e-max", type=int, default=1000, help="Run the with-workers phase up to this size.")
    parser.add_argument("--child")
    parser.add_argument("--name", default="bench")
    parser.add_argument("--wait", action="store_true")
    parser.add_argument("--send-here", action="store_true")
    parser.add_argument("--pool", default="threads", help="Pool of the model-queue worker (threads or prefork).")
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child, args.name, args.voters, args.max_in_flight or None, args.wait,
                               args.send_here)))
        return 0
    result = run([int(x) for x in args.docs.split(",")], args.voters, args.max_in_flight, args.concurrency,
                 args.e2e_max, args.pool)
    print(json.dumps(result, indent=2))
    print(render(result), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
