"""What the modules of `models.repo` share: the open statuses, time and hash helpers, and the SQL
conditions more than one of them uses."""

from __future__ import annotations

import datetime as dt
import hashlib
from typing import Any

from sqlalchemy import and_

from models.tables import OutcomeStatus, Run, WorkerOutcome

OPEN_OUTCOME = (OutcomeStatus.PENDING, OutcomeStatus.RUNNING, OutcomeStatus.RETRYING)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; every stamp chorus writes is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


def held_back() -> Any:
    """A slot an adaptive vote has not asked yet: pending and never queued."""
    return and_(WorkerOutcome.status == OutcomeStatus.PENDING, WorkerOutcome.queued_at.is_(None))


def is_lane_run() -> Any:
    """A run of the batch lane (its config says so), as an SQL condition on `Run`."""
    return Run.config["lane"].as_string() == "batch"
