"""Embedded mode: chord overhead on the filesystem broker with SQLite (no Redis, no PostgreSQL).

    python -m bench.embedded [--quick]

A 5-voter vote through the embedded worker (thread pool) that the CLI would start, the anthropic
provider calling the stub at 200 ms; overhead = wall time − 200 ms, votes one after another.
For comparison, the same votes with Celery's own `db+sqlite` result backend, whose chords wait for
`chord_unlock` polling (the first poll is one second out).
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.harness import bench_main, goal_lines, machine, summary_ms

LATENCY_MS = 200
VOTERS = 5
GOAL_P50_MS = 150.0


def _measure(stub_url: str, votes: int, result_backend: str | None) -> list[float]:
    """Run in a fresh process state: the settings and the Celery app are read once per process."""
    import subprocess
    import sys

    data = Path(tempfile.mkdtemp(prefix="chorus-bench-embedded-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))}
    env.update(CHORUS_DATA_DIR=str(data), ANTHROPIC_API_KEY="bench-key", ANTHROPIC_BASE_URL=stub_url)
    if result_backend:
        env["CHORUS_RESULT_BACKEND"] = result_backend.format(data=data)
    code = (
        "import json, time\n"
        "from chorus.embedded import embedded_worker\n"
        "from chorus import submit_vote, wait_for_run\n"
        "w = embedded_worker().start(); w.wait_ready()\n"
        "out = []\n"
        "try:\n"
        f"    for i in range({votes} + 3):\n"
        "        t0 = time.perf_counter()\n"
        f"        r = wait_for_run(submit_vote('The kettle is great.', 'positive,negative,neutral', voters={VOTERS}),"
        " timeout=120)\n"
        "        assert r.status == 'succeeded', r.error\n"
        "        out.append(time.perf_counter() - t0)\n"
        "finally:\n"
        "    w.stop()\n"
        "print(json.dumps(out[3:]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        raise SystemExit(f"embedded bench failed: {proc.stderr[-2000:]}")
    import json

    return [w - LATENCY_MS / 1000 for w in json.loads(proc.stdout.strip().splitlines()[-1])]


def run(quick: bool = True) -> dict[str, Any]:
    from chorus.testing.stub.testing import running_stub

    votes = 30 if quick else 100
    with running_stub(latency_ms=LATENCY_MS) as stub:
        ours = _measure(stub.base_url, votes, None)
        celery_sqlite = _measure(stub.base_url, max(5, votes // 3), "db+sqlite:///{data}/celery-results.db")
    rows = {
        "chorus embedded (SQLite KV backend, native chord join)": summary_ms(ours),
        "same, Celery's db+sqlite backend (chord_unlock polling)": summary_ms(celery_sqlite),
    }
    return {
        "benchmark": "embedded",
        "machine": machine(),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": "python -m bench.embedded" + (" --quick" if quick else ""),
        "params": {"votes": votes, "voters": VOTERS, "stub_latency_ms": LATENCY_MS},
        "overhead_ms": rows,
        "goals": {f"chorus embedded p50 ≤ {GOAL_P50_MS:.0f} ms": rows[next(iter(rows))]["p50_ms"] <= GOAL_P50_MS},
    }


def render(result: dict[str, Any]) -> str:
    lines = [
        f"`{result['command']}` — {result['date']}, {result['machine']}.",
        f"Votes of {result['params']['voters']} voters one after another, stub latency "
        f"{result['params']['stub_latency_ms']} ms; overhead = wall − stub latency.",
        "",
        "| configuration | n | p50 ms | p90 ms | p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name, row in result["overhead_ms"].items():
        lines.append(f"| {name} | {row['n']} | {row['p50_ms']} | {row['p90_ms']} | {row['p99_ms']} |")
    lines.append("")
    lines += goal_lines(result["goals"])
    return "\n".join(lines)


if __name__ == "__main__":
    bench_main(__doc__, run, render)
