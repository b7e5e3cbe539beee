"""A cluster of its own for a fault test: a private redis-server on a free loopback port (broker, results,
the shared buckets), its own stub server, real `celery worker` processes pointed at both, and the
session's PostgreSQL database. Votes are submitted through the chorus API, or by `chorus batch`, from
separate processes configured for that cluster.

The `cluster` fixture (tests/integration/conftest.py) starts Redis and the stub as a `ClusterSpec` says
(`@pytest.mark.cluster(stub_latency_ms=300, env={...})`, or an indirect parametrization) and stops
everything after the test; the test starts the workers it needs (`cluster.start_llm`,
`cluster.start_callbacks`), since that is where fault tests differ most.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from chorus.embedded import WorkerProcess
from chorus.testing import PrivateRedis, outcome_rows, submit_votes, wait_terminal, worker_env
from chorus.testing.stub.testing import StubHandle, running_stub
from models import OutcomeStatus, Run, Session, get_engine
from tests.clirunner import command
from workflows.voting import TiePolicy, tally

T = TypeVar("T")

LABELS = "positive,negative,neutral"
MODEL = "claude-haiku-4-5"  # every vote's model (not the default, which may change), the workers' queue
QUEUES = f"llm.{MODEL}"
TEXTS = [
    "I love this kettle. It is excellent, fast and quiet.",
    "Terrible. It broke after a day and support never answered.",
    "It is a kettle. It boils water. The box was blue.",
    "Great value, works perfectly, would buy again.",
]
TERMINAL = ("succeeded", "partial", "failed")


def documents(n: int) -> list[str]:
    return [f"{TEXTS[i % len(TEXTS)]} (review {i})" for i in range(n)]


def write_jsonl(path: Path, n: int) -> Path:
    """`n` documents as the JSONL a user gives `chorus batch` (ids d0, d1, ...)."""
    path.write_text("".join(json.dumps({"id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(documents(n))))
    return path


def cluster_env(**options: Any) -> dict[str, str]:
    """`worker_env` with the votes' model as the default model, unless `options` name another."""
    return worker_env(**{"CHORUS_DEFAULT_MODEL": MODEL, **options})


class Fleet:
    """Worker processes by name, stopped together."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.procs: dict[str, WorkerProcess] = {}

    def start(self, name: str, queues: str = QUEUES, pool: str = "threads", concurrency: int = 4,
              extra_args: tuple[str, ...] = (), restarts: int = 0) -> WorkerProcess:
        proc = WorkerProcess(queues.split(","), log_dir=self.folder, name=name, pool=pool, concurrency=concurrency,
                             env=self.env, extra_args=extra_args, restarts=restarts)
        self.procs[name] = proc
        return proc.start()

    def ready(self) -> None:
        for proc in self.procs.values():
            proc.wait_ready()

    def signal(self, name: str, signum: int) -> None:
        """Send `signum` to the worker and its pool children."""
        proc = self.procs[name]
        assert proc.proc is not None
        os.killpg(proc.proc.pid, signum)

    def kill(self, name: str) -> None:
        proc = self.procs[name]
        assert proc.proc is not None
        os.killpg(proc.proc.pid, signal.SIGKILL)  # the worker and its pool children, no warm shutdown
        proc.proc.wait(10)
        proc.proc = None

    def stop_all(self) -> None:
        for proc in self.procs.values():
            proc.stop(timeout=5)


@contextlib.contextmanager
def fleet(folder: Path, env: dict[str, str]) -> Iterator[Fleet]:
    f = Fleet(folder, env)
    try:
        yield f
    finally:
        f.stop_all()


@dataclass(frozen=True)
class ClusterSpec:
    """What a fault test asks of its cluster: the stub's latency and options (`chorus stub --help`) and
    CHORUS_* settings for the workers and the submitters, over `cluster_env`'s."""

    stub_latency_ms: float = 0
    stub_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)


class Cluster:
    """A running cluster: `redis` (stop and start it for an outage), `stub`, `env` (for workers and
    submitters), `workers` (a `Fleet`), `folder` (worker logs, the beat schedule) and `database_url`."""

    def __init__(self, folder: Path, database_url: str, spec: ClusterSpec) -> None:
        self.folder = folder
        self.database_url = database_url
        self.spec = spec
        self._stack = contextlib.ExitStack()
        self.redis = PrivateRedis(folder / "redis")
        self.stub: StubHandle
        self.env: dict[str, str] = {}
        self.workers = Fleet(folder, self.env)

    def start(self) -> Cluster:
        self.redis.start()
        self._stack.callback(self.redis.stop)  # last out: whatever process it runs then (outages restart it)
        self.stub = self._stack.enter_context(running_stub(latency_ms=self.spec.stub_latency_ms,
                                                           extra_args=self.spec.stub_args))
        self.env.update(cluster_env(broker_url=self.redis.url, database_url=self.database_url, data_dir=self.folder,
                                    stub_url=self.stub.base_url, **self.spec.env))
        self._stack.callback(self.workers.stop_all)  # first out
        return self

    def stop(self) -> None:
        """Stop the workers, then the stub, then Redis (again: a no-op)."""
        self._stack.close()

    def start_llm(self, name: str = "llm", pool: str = "threads", concurrency: int = 4, restarts: int = 0,
                  extra_args: tuple[str, ...] = ()) -> WorkerProcess:
        """A worker on the votes' model queue."""
        return self.workers.start(name, QUEUES, pool=pool, concurrency=concurrency, restarts=restarts,
                                  extra_args=extra_args)

    def start_callbacks(self, beat: bool = False, pool: str = "solo", concurrency: int = 1,
                        restarts: int = 0) -> WorkerProcess:
        """The callbacks worker; with `beat`, it runs beat too (the reaper, every CHORUS_REAP_INTERVAL_S)."""
        extra = ("--beat", "--schedule", str(self.folder / "beat-schedule")) if beat else ()
        return self.workers.start("callbacks", "callbacks", pool=pool, concurrency=concurrency, restarts=restarts,
                                  extra_args=extra)

    def ready(self) -> None:
        self.workers.ready()

    def submit_votes(self, texts: Sequence[str], voters: int, labels: str = LABELS) -> list[str]:
        return submit_votes(self.env, texts, labels, voters=voters)

    def wait_terminal(self, run_ids: Sequence[str], timeout: float) -> dict[str, str]:
        return wait_terminal(run_ids, timeout=timeout, database_url=self.database_url)

    def outcome_rows(self, run_ids: Sequence[str]) -> list[dict[str, Any]]:
        return outcome_rows(run_ids, self.database_url)

    def chorus(self, *args: str, **popen: Any) -> subprocess.Popen[str]:
        """`chorus *args` started against this cluster (stdout and stderr piped); the caller waits for it
        (`chorus_finished` stops it if the test fails first)."""
        return subprocess.Popen(command(*args), env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                stdin=subprocess.DEVNULL, text=True, **popen)


@contextlib.contextmanager
def running_cluster(folder: Path, database_url: str, spec: ClusterSpec) -> Iterator[Cluster]:
    cluster = Cluster(folder, database_url, spec)
    try:
        yield cluster.start()
    finally:
        cluster.stop()


@contextlib.contextmanager
def chorus_finished(proc: subprocess.Popen[str]) -> Iterator[subprocess.Popen[str]]:
    """A started command that never outlives the test: killed when the body raises before it ended."""
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


# ----- waiting and reading what happened -----------------------------------------------------------
def wait_for(condition: Callable[[], T | None], timeout: float, what: str, every: float = 0.05) -> T:
    """Poll `condition` until it returns something other than None (or False); fail naming `what`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)


def logged_at_least(stub: StubHandle, n: int) -> list[dict[str, Any]] | None:
    log = stub.requests(bodies=False)
    return log if len(log) >= n else None


def requests_by_slot(log: list[dict]) -> dict[tuple[str, int], list[dict]]:
    by_slot: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for entry in sorted(log, key=lambda e: e["time"]):
        if entry.get("run"):
            by_slot[(entry["run"], int(entry["slot"]))].append(entry)
    return by_slot


def calls_per_slot(log: list[dict]) -> Counter[tuple[str, int]]:
    return Counter((e["run"], int(e["slot"])) for e in log if e.get("run"))


def stored_runs(run_ids: list[str], database_url: str) -> dict[str, Run]:
    get_engine(database_url)
    with Session() as s:
        runs = s.scalars(select(Run).options(selectinload(Run.outcomes)).where(Run.id.in_(run_ids))).all()
        s.expunge_all()
    return {run.id: run for run in runs}


def assert_every_run_agrees_with_its_slots(run_ids: list[str], database_url: str) -> Counter[str]:
    """Each stored run's status and answer are what `tally`, under the run's own stored vote rules, makes
    of its stored slots: succeeded iff at least the quorum gave a valid answer and one label won;
    partial when some answered but below quorum or tied; failed when none did. A run finished early
    (its callback fired before a slot ended) or tallied by the reaper from other rows would differ."""
    runs = stored_runs(run_ids, database_url)
    assert set(runs) == set(run_ids)
    wrong = {}
    for run_id, run in runs.items():
        config = run.config
        answers = [o.answer for o in run.outcomes if o.status is OutcomeStatus.SUCCEEDED]
        expected = tally(answers, config["labels"], failed=len(run.outcomes) - len(answers), quorum=config["quorum"],
                         tie_policy=TiePolicy(config["tie_policy"]),
                         low_agreement_below=config["low_agreement_below"])
        if (run.status.value, run.answer) != (expected.status.value, expected.winner):
            wrong[run_id] = ((run.status.value, run.answer), (expected.status.value, expected.winner),
                             [(o.slot, o.status.value, o.answer) for o in run.outcomes])
    assert wrong == {}
    return Counter(run.status.value for run in runs.values())


def assert_one_row_per_slot_and_all_terminal(run_ids: list[str], rows: list[dict], voters: int) -> None:
    per_run = Counter(r["run"] for r in rows)
    assert per_run == dict.fromkeys(run_ids, voters)  # none lost, none duplicated
    assert len({(r["run"], r["slot"]) for r in rows}) == len(rows)
    assert {r["status"] for r in rows} <= {"succeeded", "failed"}
