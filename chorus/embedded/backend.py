"""A Celery result backend on one SQLite file, with a native chord counter.

Why: Celery's `db+sqlite` backend has no atomic increment, so chords fall back to polling with a
`chord_unlock` task whose first run is hard-coded one second out (`fallback_chord_unlock`). A
key-value backend that implements `incr` joins a chord the way the Redis backend does: the last
header task to finish bumps the counter to the chord size and sends the callback at once.

Used only in embedded mode (`CHORUS_RESULT_BACKEND` unset and no broker configured).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from celery.backends.base import KeyValueStoreBackend

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL, expires REAL)"
)


class SQLiteKVBackend(KeyValueStoreBackend):
    implements_incr = True
    supports_native_join = True
    supports_autoexpire = False

    def __init__(self, url: str | None = None, **kwargs: Any) -> None:
        super().__init__(url=url, **kwargs)
        path = (url or "").split("://", 1)[-1]
        if not path:
            raise ValueError("SQLiteKVBackend needs a file path: chorus.embedded.backend:SQLiteKVBackend:///PATH")
        self.path = str(Path(path))
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._conn() as conn:
            conn.execute(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    def as_uri(self, include_password: bool = False) -> str:
        return f"sqlite-kv://{self.path}"

    def _now(self) -> float:
        return time.time()

    def get(self, key: bytes) -> bytes | None:
        row = self._conn().execute(
            "SELECT value FROM kv WHERE key = ? AND (expires IS NULL OR expires > ?)", (key, self._now())
        ).fetchone()
        return row[0] if row else None

    def mget(self, keys: list[bytes]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    def set(self, key: bytes, value: Any) -> None:
        expires = self._now() + self.expires if self.expires else None
        self._conn().execute(
            "INSERT INTO kv (key, value, expires) VALUES (?, ?, ?) "
            "ON CONFLICT(key) DO UPDATE SET value = excluded.value, expires = excluded.expires",
            (key, value, expires),
        )

    def delete(self, key: bytes) -> None:
        self._conn().execute("DELETE FROM kv WHERE key = ?", (key,))

    def incr(self, key: bytes) -> int:
        # One statement, so the increment is atomic across processes sharing the file.
        row = self._conn().execute(
            "INSERT INTO kv (key, value) VALUES (?, 1) "
            "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1 RETURNING value",
            (key,),
        ).fetchone()
        return int(row[0])

    def expire(self, key: bytes, value: int) -> None:
        self._conn().execute("UPDATE kv SET expires = ? WHERE key = ?", (self._now() + value, key))

    def cleanup(self) -> None:
        self._conn().execute("DELETE FROM kv WHERE expires IS NOT NULL AND expires <= ?", (self._now(),))
