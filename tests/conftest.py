"""Shared fixtures. Integration tests use the machine's real Redis and PostgreSQL, real Celery
worker processes, and the real anthropic SDK against the project's stub server.

The test process is configured through the environment before anything reads the settings:
a Redis database of its own, a fresh PostgreSQL database per session, and the stub on a free port.
"""

from __future__ import annotations

import contextlib
import os
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chorus.embedded import WorkerProcess

ROOT = Path(__file__).resolve().parent.parent
pytest_plugins = ("tests.lanes",)  # the fast lane and the integration lane: which test is in which


def claim_redis_db() -> int:
    """A Redis database no other test session on this machine is using (sessions may overlap)."""
    import redis

    from chorus.testing import claim_redis_db as claim

    try:
        db = claim(range(1, 16), str(os.getpid()))
    except redis.ConnectionError:
        return 15  # the `redis_db` fixture reports Redis as down
    if db is None:
        raise RuntimeError("all Redis databases 1-15 are claimed by other chorus test sessions")
    return db


REDIS_DB = claim_redis_db()
REDIS_URL = f"redis://127.0.0.1:6379/{REDIS_DB}"
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"
PG_DB = f"chorus_test_{uuid.uuid4().hex[:10]}"
PG_URL = f"postgresql+psycopg://postgres@127.0.0.1:5432/{PG_DB}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


STUB_PORT = free_port()
DATA_DIR = Path(tempfile.mkdtemp(prefix="chorus-tests-"))

for _name in [n for n in os.environ if n.startswith(("CHORUS_", "ANTHROPIC_"))]:
    del os.environ[_name]
os.environ.update(
    CHORUS_BROKER_URL=REDIS_URL,
    CHORUS_RESULT_BACKEND=REDIS_URL,
    CHORUS_DATABASE_URL=PG_URL,
    CHORUS_DATA_DIR=str(DATA_DIR),
    ANTHROPIC_API_KEY="test-key",
    ANTHROPIC_BASE_URL=f"http://127.0.0.1:{STUB_PORT}",
    CHORUS_RETRY_BACKOFF_S="0.2",
)


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a fresh user: no CHORUS_* or ANTHROPIC_* variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CHORUS_", "ANTHROPIC_"))}
    env.update(extra)
    return env


@pytest.fixture(autouse=True)
def _own_user_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test is a user of its own: platformdirs reads XDG_DATA_HOME on Linux, so embedded mode run by a
    test (with `clean_env`, no CHORUS_DATA_DIR) stores in `user_store(tmp_path)`, never in the real
    ~/.local/share/chorus nor in another test's store."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))


def user_store(home: Path) -> Path:
    """Where embedded mode stores, from any folder, for the test whose tmp_path is `home`."""
    return home / "xdg-data" / "chorus"


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    import psycopg

    from tests.lanes import require_integration

    require_integration("uses PostgreSQL")  # reached with request.getfixturevalue, past the collection's check

    try:
        admin = psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable at 127.0.0.1:5432 ({exc}); `bash .ci/run` starts it")
    with admin:
        admin.execute(f'CREATE DATABASE "{PG_DB}"')
    try:
        yield PG_URL
    finally:
        from models.db import _engines

        for engine in _engines.values():
            engine.dispose()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_db() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at 127.0.0.1:6379 ({exc}); `bash .ci/run` starts it")
    client.flushdb()
    try:
        yield REDIS_URL
    finally:
        client.flushdb()
        client.close()


def pytest_make_parametrize_id(config: pytest.Config, val: object, argname: str) -> str | None:
    """Bytes made at collection (a zip's timestamps, an encrypted PDF's key) are no test id: two collections
    of the same suite must name the same tests (pytest-xdist's workers compare them). Such a parameter is
    named by its argument; pytest numbers the repeats."""
    if isinstance(val, bytes | bytearray) and len(val) > 40:
        return argname
    return None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    import redis

    from chorus.testing import release_redis_db

    with contextlib.suppress(redis.RedisError):
        release_redis_db(REDIS_DB, str(os.getpid()))


@pytest.fixture(scope="session")
def stub() -> Iterator[object]:
    from chorus.testing.stub.testing import running_stub

    with running_stub(latency_ms=0, extra_args=("--port", str(STUB_PORT))) as handle:
        yield handle


@pytest.fixture
def stub_state() -> Any:
    """A fresh stub (its request log, rules, cache and limits) for `stub_client`: `stub_state.log()` is
    what the HTTP stub's GET /_stub/requests shows."""
    from chorus.testing.stub.answering import StubState

    return StubState()


@pytest.fixture
def stub_client(stub_state: Any) -> Iterator[Any]:
    """A real anthropic.Anthropic client answered by the stub in this process (no socket, no thread):
    for unit tests of the Messages and token counting routes. Anything else needs the HTTP stub."""
    from chorus.testing.stub.inprocess import stub_client as client_of

    client = client_of(stub_state)
    try:
        yield client
    finally:
        client.close()


class WorkerProcs:
    """Real `celery -A worker worker` processes, stopped by their process group at the end."""

    def __init__(self) -> None:
        self.procs: list[WorkerProcess] = []

    def start(self, name: str, queues: list[str], pool: str = "prefork", concurrency: int = 4,
              env: dict[str, str] | None = None) -> WorkerProcess:
        proc = WorkerProcess(queues, log_dir=DATA_DIR, name=name, pool=pool, concurrency=concurrency, env=env)
        self.procs.append(proc)
        return proc.start().wait_ready()

    def stop_all(self) -> None:
        for proc in self.procs:
            proc.stop()
        self.procs.clear()


@pytest.fixture(scope="session")
def workers(postgres: str, redis_db: str, stub: object) -> Iterator[WorkerProcs]:
    """One prefork worker for the model queues and one for callbacks, on Redis + PostgreSQL."""
    from models import ensure_schema
    from settings import get_settings
    from workflows.queues import all_queues

    ensure_schema(PG_URL)
    procs = WorkerProcs()
    try:
        models = [q for q in all_queues(get_settings().model_list) if q != "callbacks"]
        procs.start("llm", models, pool="prefork", concurrency=5)
        procs.start("callbacks", ["callbacks"], pool="solo", concurrency=1)
        yield procs
    finally:
        procs.stop_all()


def pids_matching(fragment: str) -> list[int]:
    """Live processes whose command line contains `fragment` (used to prove nothing kept running)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((line for line in (entry / "status").read_text().splitlines()
                          if line.startswith("State:")), "")
        except OSError:
            continue
        if fragment in cmdline and "zombie" not in state:
            found.append(int(entry.name))
    return found
