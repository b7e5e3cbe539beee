"""Listing what is stored: runs (newest first, filtered) and batches, without their outcomes."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import asdict
from typing import Any

from chorus.batch import find_batch
from chorus.runs import not_found, prepare, store_exists
from models import RunStatus, in_session, repo
from settings import Settings, get_settings
from workflows.errors import ConfigError

MAX_LIMIT = 10_000
_AGO = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhd])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_since(value: str, *, now: dt.datetime | None = None) -> dt.datetime:
    """`30m`, `2h`, `7d` (ago) or an ISO date/time (UTC when it has no zone)."""
    text = value.strip()
    match = _AGO.match(text)
    now = now or dt.datetime.now(dt.UTC)
    if match:
        return now - dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ConfigError(f"--since {value!r}: give an age (30m, 2h, 7d) or an ISO date/time "
                          f"(2026-12-01 or 2026-12-01T08:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def list_runs(*, batch: str | None = None, status: str | None = None, since: str | dt.datetime | None = None,
              limit: int = 50, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Runs, newest first: id, pattern, status, document id, batch, answer, confidence, task, times."""
    settings = settings or get_settings()
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
    wanted: RunStatus | None = None
    if status is not None:
        try:
            wanted = RunStatus(status)
        except ValueError:
            raise ConfigError(f"unknown status {status!r}; use one of: "
                              f"{', '.join(s.value for s in RunStatus)}") from None
    after = parse_since(since) if isinstance(since, str) else since
    if not store_exists(settings):  # nothing stored yet: nothing to list, and nothing created by looking
        if batch:
            raise not_found("batch", batch, "give a batch id, a unique prefix of one, or its name (`chorus batches` "
                            "lists them)", settings)
        return []
    prepare(settings)
    batch_id = find_batch(batch, settings=settings).id if batch else None
    rows = in_session(lambda s: repo.list_runs(s, batch_id=batch_id, status=wanted, since=after, limit=limit),
                      write=False)
    return [asdict(r) for r in rows]


def list_batches(*, limit: int = 50, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Batches, newest first, with their documents counted per status."""
    settings = settings or get_settings()
    if not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT:
        raise ConfigError(f"limit must be a whole number from 1 to {MAX_LIMIT}, got {limit!r}")
    if not store_exists(settings):
        return []
    prepare(settings)
    rows = in_session(lambda s: repo.list_batches(s, limit=limit), write=False)
    return [{**asdict(r), "documents": sum(r.counts.values())} for r in rows]
