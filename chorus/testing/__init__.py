"""A private cluster for fault tests and benchmarks: a `redis-server` of our own on a free loopback
port (which a test may stop and restart), the environment of workers pointed at it, a submitter
process, and a bounded wait on the runs in the database. Everything started here is stopped here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis

from models import Session, get_engine, repo

ROOT = Path(__file__).resolve().parents[2]  # the checkout (or site-packages) holding chorus


REDIS_CLAIM = "chorus-tests:db:{db}"


def claim_redis_db(candidates: Sequence[int] | range, owner: str) -> int | None:
    """The first database of `candidates` on the machine's Redis that no test session or benchmark
    holds, now held by `owner` for an hour (sessions and benchmarks may overlap); None if all are
    held. Raises redis.ConnectionError when Redis is down."""
    client = redis.Redis(host="127.0.0.1", port=6379, db=0, socket_connect_timeout=5)
    try:
        for db in candidates:
            if client.set(REDIS_CLAIM.format(db=db), owner, nx=True, ex=3600):
                return db
        return None
    finally:
        client.close()


def redis_db_holder(db: int) -> str | None:
    client = redis.Redis(host="127.0.0.1", port=6379, db=0, socket_connect_timeout=2)
    try:
        value = client.get(REDIS_CLAIM.format(db=db))
        return value.decode() if isinstance(value, bytes) else value
    finally:
        client.close()


def release_redis_db(db: int, owner: str) -> None:
    client = redis.Redis(host="127.0.0.1", port=6379, db=0, socket_connect_timeout=2)
    try:
        if client.get(REDIS_CLAIM.format(db=db)) == owner.encode():
            client.delete(REDIS_CLAIM.format(db=db))
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivateRedis:
    """`redis-server` on 127.0.0.1:`port` with an append-only file, so a stop and a start keep the queues."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> PrivateRedis:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.folder),
               "--protected-mode", "yes", "--logfile", str(self.folder / "redis.log")]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        try:
            while True:
                try:
                    client.ping()
                    return self
                except redis.RedisError:
                    if self.proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"redis-server on port {self.port} did not start; see "
                                           f"{self.folder / 'redis.log'}") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM: Redis flushes its append-only file and exits (SIGKILL if it will not)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def private_redis(folder: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(folder).start()
    try:
        yield server
    finally:
        server.stop()


def worker_env(*, broker_url: str, database_url: str, data_dir: Path, stub_url: str,
               **extra: str) -> dict[str, str]:
    """A fresh environment (no inherited CHORUS_/ANTHROPIC_ variables) for workers and submitters."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))}
    env.update(CHORUS_BROKER_URL=broker_url, CHORUS_RESULT_BACKEND=broker_url, CHORUS_DATABASE_URL=database_url,
               CHORUS_DATA_DIR=str(data_dir), ANTHROPIC_API_KEY="test-key", ANTHROPIC_BASE_URL=stub_url)
    env.update(extra)
    return env


_SUBMIT = """
import json, sys
from chorus.vote import plan_vote, submit_plan
job = json.loads(sys.stdin.read())
ids = [submit_plan(plan_vote(text, job["labels"], voters=job["voters"], cache_aware=False,
                             external_id=f"doc-{i}"))
       for i, text in enumerate(job["texts"])]
print(json.dumps(ids))
"""


def submit_votes(env: Mapping[str, str], texts: Sequence[str], labels: str, voters: int,
                 timeout: float = 120.0) -> list[str]:
    """Submit one vote per text through the chorus API in a process configured by `env`; the run ids."""
    proc = subprocess.run([sys.executable, "-c", _SUBMIT], cwd=ROOT, env=dict(env), capture_output=True, text=True,
                          input=json.dumps({"texts": list(texts), "labels": labels, "voters": voters}),
                          timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"submitting failed: {proc.stderr[-2000:]}")
    return list(json.loads(proc.stdout.strip().splitlines()[-1]))


def wait_terminal(run_ids: Sequence[str], timeout: float, database_url: str) -> dict[str, str]:
    """Poll the runs' statuses until all are terminal or `timeout` passes; the last statuses seen."""
    get_engine(database_url)
    deadline = time.monotonic() + timeout
    while True:
        with Session() as s:
            statuses = {r: st.value for r, st in repo.run_statuses(s, run_ids).items()}
        finished = ("succeeded", "partial", "failed", "cancelled")
        if len(statuses) == len(run_ids) and all(v in finished for v in statuses.values()):
            return statuses
        if time.monotonic() > deadline:
            return statuses
        time.sleep(0.2)


def outcome_rows(run_ids: Sequence[str], database_url: str) -> list[dict[str, Any]]:
    get_engine(database_url)
    with Session() as s:
        rows = repo.outcomes_of(s, run_ids)
        return [{"run": o.run_id, "slot": o.slot, "status": o.status.value, "attempts": o.attempts,
                 "error": o.error, "answer": o.answer} for o in rows]
