"""Shared set-up for benchmarks: a Redis database, a fresh PostgreSQL database, the stub server and
real worker processes, all on loopback, all stopped at the end."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def machine() -> str:
    return f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary_ms(values_s: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values_s]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p90_ms": round(percentile(ms, 0.9), 1),
        "p99_ms": round(percentile(ms, 0.99), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


def configure_env(*, redis_db: int, pg_db: str, stub_url: str, extra: dict[str, str] | None = None) -> Path:
    """Point this process (and the workers it starts) at Redis, PostgreSQL and the stub."""
    for name in [n for n in os.environ if n.startswith(("CHORUS_", "ANTHROPIC_"))]:
        del os.environ[name]
    data = Path(tempfile.mkdtemp(prefix="chorus-bench-"))
    os.environ.update(
        CHORUS_BROKER_URL=f"redis://127.0.0.1:6379/{redis_db}",
        CHORUS_RESULT_BACKEND=f"redis://127.0.0.1:6379/{redis_db}",
        CHORUS_DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_db}",
        CHORUS_DATA_DIR=str(data),
        ANTHROPIC_API_KEY="bench-key",
        ANTHROPIC_BASE_URL=stub_url,
        **(extra or {}),
    )
    return data


@contextlib.contextmanager
def fresh_postgres(name: str) -> Iterator[str]:
    import psycopg

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        from models.db import _engines

        for engine in _engines.values():
            engine.dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def flushed_redis(db: int) -> Iterator[None]:
    """Database `db` of the machine's Redis, claimed the way test sessions claim theirs (so neither
    flushes the other's queues), empty at the start and at the end."""
    import redis

    from chorus.testing import claim_redis_db, redis_db_holder, release_redis_db

    owner = f"bench-{os.getpid()}"
    # A benchmark that claimed `db` itself (bench.batch_enqueue) passes it on here.
    if redis_db_holder(db) != owner and claim_redis_db([db], owner) is None:
        raise SystemExit(f"Redis database {db} is in use by a chorus test session; run the benchmark after it")
    client = redis.Redis(host="127.0.0.1", port=6379, db=db)
    client.flushdb()
    try:
        yield
    finally:
        client.flushdb()
        client.close()
        release_redis_db(db, owner)


@contextlib.contextmanager
def workers(data: Path, *, pool: str, concurrency: int) -> Iterator[list[Any]]:
    """One worker on the model queues and one on callbacks."""
    from chorus.embedded import WorkerProcess
    from settings import get_settings
    from workflows.queues import CALLBACK_QUEUE, all_queues

    model_queues = [q for q in all_queues(get_settings().model_list) if q != CALLBACK_QUEUE]
    procs = [
        WorkerProcess(model_queues, log_dir=data, name="llm", pool=pool, concurrency=concurrency),
        WorkerProcess([CALLBACK_QUEUE], log_dir=data, name="callbacks", pool="solo", concurrency=1),
    ]
    try:
        for p in procs:
            p.start()
        for p in procs:
            p.wait_ready()
        yield procs
    finally:
        for p in procs:
            p.stop()


def tree_pids(pid: int) -> list[int]:
    """`pid` and its live descendants (a prefork worker's pool children), from /proc."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def cpu_seconds(pids: list[int]) -> float:
    """CPU time (user + system) so far of the processes `pids` and their descendants, live or reaped,
    read from /proc/<pid>/stat (no psutil: it is not a dependency)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for root in pids:
        for pid in tree_pids(root):
            with contextlib.suppress(OSError):
                # Fields after the command name (which may hold spaces) start at field 3 (state).
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
                total += utime + stime + cutime + cstime
    return total / tick


def pids_of(procs: list[Any]) -> list[int]:
    """The pids of started WorkerProcess objects."""
    return [p.proc.pid for p in procs if p.proc is not None]


class CpuMeter:
    """Worker CPU spent while one peer's work runs: `with meter:` around each of its turns, so the
    turns of the other peers (interleaved) are not counted against it."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.seconds = 0.0
        self._start = 0.0

    def __enter__(self) -> CpuMeter:
        self._start = cpu_seconds(self.pids)
        return self

    def __exit__(self, *_: object) -> None:
        self.seconds += cpu_seconds(self.pids) - self._start


def per_thousand(seconds: float, outcomes: int) -> float:
    return round(seconds / outcomes * 1000, 2) if outcomes else float("nan")


def goal_lines(goals: dict[str, bool]) -> list[str]:
    return [f"- {goal}: **{'met' if ok else 'not met'}**" for goal, ok in goals.items()]


def bench_main(doc: str | None, run: Any, render: Any, *, votes: bool = False) -> None:
    """The command line of one benchmark module: `--quick` (and `--votes N`), JSON then the table."""
    import argparse
    import json

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    if votes:
        ap.add_argument("--votes", type=int)
    args = ap.parse_args()
    res = run(quick=args.quick, votes=args.votes) if votes else run(quick=args.quick)
    print(json.dumps(res, indent=2))
    print(render(res))
