"""Pooled PostgreSQL connections are pinged only after sitting idle (models.db._ping_when_idle); a
connection the server dropped while in steady use is recovered by in_session's retry."""

from __future__ import annotations

import psycopg
import pytest
from sqlalchemy import text

from models import db

pytestmark = pytest.mark.integration
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _backend_pid(engine) -> int:
    with engine.connect() as conn:
        return conn.execute(text("SELECT pg_backend_pid()")).scalar_one()


def _terminate(pid: int) -> None:
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as admin:
        assert admin.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone() == (True,)


@pytest.fixture
def engine(postgres):
    engine = db._create(postgres)  # a private engine; used one unit of work at a time, it pools one connection
    yield engine
    engine.dispose()


def _count_pings(engine) -> list[int]:
    pings: list[int] = []
    original = engine.dialect.do_ping

    def counting(conn):
        pings.append(1)
        return original(conn)

    engine.dialect.do_ping = counting
    return pings


def test_a_connection_dropped_while_idle_is_replaced_at_checkout_without_an_error(engine, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)  # every pooled connection counts as idle
    pings = _count_pings(engine)
    first = _backend_pid(engine)
    _terminate(first)
    second = _backend_pid(engine)  # no error: the ping found it dead and the pool reconnected
    assert second != first
    assert pings  # the dead connection was pinged


def test_a_connection_in_steady_use_is_not_pinged(engine, monkeypatch):
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)
    pings = _count_pings(engine)
    pids = {_backend_pid(engine) for _ in range(20)}
    assert len(pids) == 1  # one pooled connection, reused
    assert pings == []


def test_a_connection_dropped_while_in_use_is_recovered_by_in_session(engine, monkeypatch):
    """No ping (the connection was used a moment ago), so the first try fails as a lost connection; the
    work runs again on a fresh one and succeeds."""
    monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)
    monkeypatch.setattr(db, "Session", db.sessionmaker(bind=engine, expire_on_commit=False))
    first = _backend_pid(engine)
    _terminate(first)
    tries: list[int] = []

    def work(s):
        tries.append(1)
        return s.execute(text("SELECT pg_backend_pid()")).scalar_one()

    second = db.in_session(work, write=False)
    assert second != first
    assert len(tries) == 2  # the first try met the dropped connection
