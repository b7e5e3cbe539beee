"""What the broker still holds: lets the reaper tell a lost task from one that is only queued.

kombu's Redis transport keeps a queue as a list (one key per priority step) and every message a
worker has taken but not acknowledged (running, prefetched, or waiting for its countdown) in the
`unacked` hash. A slot whose run is mentioned by any of them is not lost: its call, or the chain
that will send it (cache-aware dispatch sends the rest of a panel after its leaders), is still on
its way. Only the Redis broker is read; with another broker nothing is known, and the caller must
decide on its own evidence.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
from collections.abc import Iterable
from typing import Any

import redis
from celery import Celery

PRIORITY_SEP = "\x06\x16"  # kombu's Redis transport: QUEUE, QUEUE\x06\x163, ... for priorities
PRIORITY_STEPS = (3, 6, 9)
UNACKED_KEY = "unacked"
BATCH = 500


def is_redis(app: Celery) -> bool:
    return str(app.conf.broker_url or "").startswith(("redis://", "rediss://", "unix://"))


def queue_names(app: Celery) -> list[str]:
    return [q.name for q in app.conf.task_queues or ()]


def _decoded(raw: bytes | str) -> str:
    """A kombu message as text, its base64 body decoded, so ids inside the body can be found."""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    try:
        message: Any = json.loads(text)
    except json.JSONDecodeError:
        return text
    if isinstance(message, list) and message:  # the unacked hash holds [message, exchange, routing key]
        message = message[0]
    if not isinstance(message, dict):
        return text
    body = message.get("body")
    if isinstance(body, str) and (message.get("properties") or {}).get("body_encoding") == "base64":
        with contextlib.suppress(binascii.Error, ValueError):
            body = base64.b64decode(body).decode("utf-8", errors="replace")
    return f"{json.dumps(message.get('headers') or {})}\n{body}"


def runs_in_broker(app: Celery, run_ids: Iterable[str]) -> set[str]:
    """Those of `run_ids` that a queued or unacknowledged message of `app`'s Redis broker mentions."""
    wanted = set(run_ids)
    found: set[str] = set()
    if not wanted or not is_redis(app):
        return found
    client = redis.Redis.from_url(str(app.conf.broker_url), socket_timeout=10, socket_connect_timeout=5)
    try:
        suffixes = ("", *(f"{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS))
        keys = [q + suffix for q in queue_names(app) for suffix in suffixes]
        for key in keys:
            length = int(client.llen(key) or 0)
            for start in range(0, length, BATCH):
                _scan(client.lrange(key, start, start + BATCH - 1), wanted, found)
                if found == wanted:
                    return found
        for _, values in _hscan(client):
            _scan(values, wanted, found)
            if found == wanted:
                return found
        return found
    finally:
        client.close()


def _hscan(client: redis.Redis) -> Iterable[tuple[int, list[Any]]]:
    cursor = 0
    while True:
        cursor, page = client.hscan(UNACKED_KEY, cursor, count=BATCH)  # type: ignore[misc]
        yield cursor, list(page.values()) if isinstance(page, dict) else []
        if not cursor:
            return


def _scan(messages: Iterable[Any], wanted: set[str], found: set[str]) -> None:
    for raw in messages:
        text = _decoded(raw)
        for run_id in wanted - found:
            if run_id in text:
                found.add(run_id)
