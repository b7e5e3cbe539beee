"""The engine, the one sessionmaker, and schema upgrades through Alembic."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import sessionmaker

from workflows.errors import ConfigError

T = TypeVar("T")
log = logging.getLogger("chorus.db")
# PostgreSQL SQLSTATEs worth another try: serialization failure, deadlock, the server shutting down
# or refusing for now (pg_terminate_backend is 57P01 admin_shutdown), and lost connections.
TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "57P01", "57P02", "57P03", "08000", "08001", "08003", "08004",
                                 "08006"})

# The one sessionmaker. It is bound to an engine by `get_engine(url)`; callers use
# `with Session.begin() as s:` and pass `s` on.
Session = sessionmaker(expire_on_commit=False)

_engines: dict[str, Engine] = {}
_lock = threading.Lock()
MIGRATIONS = Path(__file__).with_name("migrations")


def engine_for(url: str) -> Engine:
    """One engine per URL per process, so connections are pooled and reused."""
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _create(url)
            _engines[url] = engine
        return engine


def _create(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            # WAL lets the CLI read while worker threads write; busy_timeout waits out short locks.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    engine = create_engine(url, pool_size=10, max_overflow=20)
    _ping_when_idle(engine)
    return engine


# A pooled connection that sat unused this long is pinged before use. SQLAlchemy's `pool_pre_ping`
# pings on every checkout: a round trip per unit of work, a tenth of a call worker's time under load
# (py-spy, issue 12). A connection in steady use needs no ping: if the server dropped it anyway (a
# restart, pg_terminate_backend), the statement fails as a lost connection, SQLAlchemy invalidates the
# pool, and `in_session` runs the work again on a fresh connection.
PING_AFTER_IDLE_S = 10.0


def _ping_when_idle(engine: Engine) -> None:
    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_conn: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:  # noqa: BLE001 - any failure of the ping means a dead connection
            raise DisconnectionError(f"an idle pooled connection is gone: {exc}") from exc
        if not alive:
            raise DisconnectionError("an idle pooled connection is gone")


def get_engine(url: str) -> Engine:
    """The engine for `url`, with the one sessionmaker bound to it."""
    engine = engine_for(url)
    if Session.kw.get("bind") is not engine:
        Session.configure(bind=engine)
    return engine


def is_transient(exc: BaseException) -> bool:
    """A database error that another try, on a fresh connection, can get past."""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in TRANSIENT_SQLSTATES:
        return True
    message = str(exc.orig).lower()
    return "database is locked" in message or "server closed the connection" in message


def in_session(work: Callable[[OrmSession], T], *, write: bool = True, attempts: int = 6, base_s: float = 0.05,
               cap_s: float = 2.0) -> T:
    """`work(session)` in one transaction (`write`) or a plain session, tried again with a short
    backoff when the database fails transiently (a connection terminated, a serialization failure),
    so a blip never throws away work already done, such as a provider answer that was paid for.
    `work` may run more than once: it must only touch the database, never count or send."""
    for attempt in range(1, attempts + 1):
        try:
            if write:
                with Session.begin() as s:
                    return work(s)
            with Session() as s:
                return work(s)
        except DBAPIError as exc:
            if attempt == attempts or not is_transient(exc):
                raise
            delay = min(cap_s, base_s * 2 ** (attempt - 1))
            log.warning("database error (%s), trying again in %.2f s (%d of %d)", type(exc.orig).__name__, delay,
                        attempt, attempts)
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def dispose_engine() -> None:
    """After a fork, drop inherited pooled connections without closing the parent's sockets."""
    for engine in _engines.values():
        engine.dispose(close=False)


def alembic_config(url: str) -> Any:
    # Alembic is imported only where the schema is checked or upgraded: it costs ~0.6 s of import
    # time, which every worker process and every command that never touches the schema would pay.
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def ensure_schema(url: str) -> Engine:
    """Upgrade the database to the newest migration (cheap when it is already there)."""
    from alembic import command  # heavy; see alembic_config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    engine = get_engine(url)
    cfg = alembic_config(str(engine.url.render_as_string(hide_password=False)))
    head = ScriptDirectory.from_config(cfg).get_current_head()
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    except Exception as exc:  # noqa: BLE001 - any driver error here means we cannot reach the DB
        raise ConfigError(f"cannot open the database {engine.url!r}: {exc}. Check CHORUS_DATABASE_URL.") from exc
    if current != head:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    return engine


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())
