"""The compose stack as local processes, shared by the compose smoke test and the Flower tests,
and stopped once the last test of tests/ops is done.

It gets a Redis database and a PostgreSQL database of its own, apart from the session's (whose
`workers` fixture consumes the same queue names and must not take this stack's tasks).
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_URL, STUB_PORT, claim_redis_db, clean_env
from tests.ops.stack import LocalStack, Target, compose_config

FLOWER_USER = "ops"
POSITIVE = "I love this kettle. It is excellent, fast and quiet, and I would happily buy it again."
MODELS = ("claude-haiku-5-5", "claude-sonnet-5-5", "claude-opus-5-5")  # the current line-up, one per worker


@pytest.fixture(scope="package")
def flower_password() -> str:
    # token_urlsafe may begin with "-", which a command line reads as an option: one in 64 runs failed so.
    return "p" + secrets.token_urlsafe(12)


@pytest.fixture(scope="package")
def compose_stack(stub: object, flower_password: str) -> Iterator[LocalStack]:
    import psycopg
    import redis

    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed; `bash .ci/run` installs it (apt-get install docker-compose)")
    redis_db = claim_redis_db()
    redis_url = f"redis://127.0.0.1:6379/{redis_db}"
    pg_db = f"chorus_ops_{uuid.uuid4().hex[:10]}"
    workdir = Path(tempfile.mkdtemp(prefix="chorus-compose-"))
    # What a user puts in .env, given as the environment (which wins over the env file): the real
    # SDK against the stub server, Flower's credentials, and a reaper every second.
    compose_env = clean_env(
        ANTHROPIC_API_KEY="test-key",
        ANTHROPIC_BASE_URL=f"http://127.0.0.1:{STUB_PORT}",
        FLOWER_USER=FLOWER_USER,
        FLOWER_PASSWORD=flower_password,
        CHORUS_REAP_INTERVAL_S="1",  # so beat has something due while the tests run
    )
    admin = redis.Redis.from_url(redis_url)
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{pg_db}"')
    stack: LocalStack | None = None
    try:
        admin.flushdb()
        stack = LocalStack(
            config=compose_config(compose_env),
            target=Target(redis_url=redis_url, postgres_url=f"postgresql://postgres@127.0.0.1:5432/{pg_db}"),
            workdir=workdir,
            base_env=clean_env(),
        )
        stack.prepare()
        stack.run_one_shots()
        stack.start_long_running()
        yield stack
    finally:
        if stack is not None:
            stack.down()
        admin.flushdb()
        root = redis.Redis(host="127.0.0.1", port=6379, db=0)
        root.delete(f"chorus-tests:db:{redis_db}")
        root.close()
        admin.close()
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{pg_db}" WITH (FORCE)')
        shutil.rmtree(workdir, ignore_errors=True)


@pytest.fixture(scope="package")
def compose_vote(compose_stack: LocalStack) -> dict[str, object]:
    """One vote through the stack, submitted the way a user would: `chorus vote` with the
    services' environment (as `docker compose run migrate chorus vote ...` would)."""
    client = compose_stack.services["migrate"]
    cmd = ["chorus", "vote", POSITIVE, "--labels", "positive,negative,neutral", "--voters", "5",
           *[arg for model in MODELS for arg in ("--model", model)], "--timeout", "60", "--json"]
    proc = subprocess.run(cmd, env=client.env, cwd=client.cwd, capture_output=True, text=True, timeout=90,
                          check=False)
    assert proc.returncode == 0, f"chorus vote exited {proc.returncode}: {proc.stderr[-3000:]}"
    run = json.loads(proc.stdout)
    assert isinstance(run, dict)
    return run
