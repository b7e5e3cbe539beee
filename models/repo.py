"""Reads and writes shared by the tasks and the API. Every function takes the session it works in."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session as OrmSession
from sqlalchemy.orm import selectinload

from models.tables import (
    TERMINAL_RUN,
    Document,
    OutcomeRole,
    OutcomeStatus,
    Pattern,
    Run,
    RunStatus,
    WorkerOutcome,
    utcnow,
)

OPEN_OUTCOME = (OutcomeStatus.PENDING, OutcomeStatus.RUNNING, OutcomeStatus.RETRYING)


def content_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def as_utc(value: dt.datetime | None) -> dt.datetime | None:
    """SQLite hands back naive datetimes; every stamp chorus writes is UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


@dataclass(frozen=True)
class SlotSpec:
    slot: int
    role: OutcomeRole
    model: str
    prompt_variant: str | None = None
    temperature: float | None = None


def create_run(
    s: OrmSession,
    *,
    text: str,
    external_id: str,
    pattern: Pattern,
    provider: str,
    config: dict[str, Any],
    slots: list[SlotSpec],
    batch_id: str | None = None,
    gold_label: str | None = None,
) -> Run:
    """A Document, its Run and one pending WorkerOutcome per slot, in the caller's transaction."""
    doc = Document(
        batch_id=batch_id, external_id=external_id, content_hash=content_hash(text), text=text, gold_label=gold_label
    )
    now = utcnow()
    run = Run(document=doc, pattern=pattern, provider=provider, config=config, status=RunStatus.PENDING)
    run.outcomes = [
        WorkerOutcome(
            slot=spec.slot,
            role=spec.role,
            model=spec.model,
            prompt_variant=spec.prompt_variant,
            temperature=spec.temperature,
            status=OutcomeStatus.PENDING,
            queued_at=now,
        )
        for spec in slots
    ]
    s.add(run)
    s.flush()
    return run


@dataclass(frozen=True)
class Claim:
    """A slot that a task has taken for one attempt."""

    run_id: str
    slot: int
    role: OutcomeRole
    model: str
    prompt_variant: str | None
    temperature: float | None
    attempts: int
    started_at: dt.datetime


def claim_slot(s: OrmSession, run_id: str, slot: int, *, task_id: str | None, hostname: str | None) -> Claim | None:
    """Mark the slot running and count the attempt, in one round trip.

    Returns None when the slot is already terminal (a redelivered task must not call the
    provider again) or does not exist.
    """
    now = utcnow()
    row = s.execute(
        update(WorkerOutcome)
        .where(WorkerOutcome.run_id == run_id, WorkerOutcome.slot == slot, WorkerOutcome.status.in_(OPEN_OUTCOME))
        .values(
            status=OutcomeStatus.RUNNING,
            attempts=WorkerOutcome.attempts + 1,
            started_at=func.coalesce(WorkerOutcome.started_at, now),
            task_id=task_id,
            hostname=hostname,
        )
        .returning(
            WorkerOutcome.role,
            WorkerOutcome.model,
            WorkerOutcome.prompt_variant,
            WorkerOutcome.temperature,
            WorkerOutcome.attempts,
            WorkerOutcome.started_at,
        )
    ).one_or_none()
    if row is None:
        return None
    return Claim(run_id, slot, row.role, row.model, row.prompt_variant, row.temperature, row.attempts,
                 as_utc(row.started_at) or now)


def release_slot(s: OrmSession, run_id: str, slot: int, *, note: str) -> None:
    """Undo a claim whose call never went out (it waits for a rate-limit token): the attempt is not
    counted, and a slot that never ran is pending again, so a wait never shows up as latency."""
    s.execute(
        update(WorkerOutcome)
        .where(WorkerOutcome.run_id == run_id, WorkerOutcome.slot == slot,
               WorkerOutcome.status == OutcomeStatus.RUNNING)
        .values(
            attempts=WorkerOutcome.attempts - 1,
            status=case((WorkerOutcome.attempts > 1, OutcomeStatus.RETRYING), else_=OutcomeStatus.PENDING),
            started_at=case((WorkerOutcome.attempts > 1, WorkerOutcome.started_at), else_=None),
            error=note,
        )
    )


def count_open_slots(s: OrmSession, run_id: str) -> int:
    """Slots of the run that are not terminal yet (pending, running or retrying)."""
    return s.scalar(select(func.count()).select_from(WorkerOutcome).where(
        WorkerOutcome.run_id == run_id, WorkerOutcome.status.in_(OPEN_OUTCOME))) or 0


def run_inputs(s: OrmSession, run_id: str) -> tuple[dict[str, Any], str]:
    """The run's config and its document text (both immutable once submitted)."""
    row = s.execute(
        select(Run.config, Document.text).join(Document, Run.document_id == Document.id).where(Run.id == run_id)
    ).one()
    return row.config, row.text


def update_slot(s: OrmSession, run_id: str, slot: int, **values: Any) -> None:
    s.execute(update(WorkerOutcome).where(WorkerOutcome.run_id == run_id, WorkerOutcome.slot == slot).values(**values))


def load_run(s: OrmSession, run_id: str) -> Run | None:
    return s.execute(
        select(Run).options(selectinload(Run.outcomes), selectinload(Run.document)).where(Run.id == run_id)
    ).scalar_one_or_none()


def find_run(s: OrmSession, prefix: str) -> list[Run]:
    """Runs whose id starts with `prefix` (ids are long; users type the first few characters)."""
    return list(
        s.execute(
            select(Run).options(selectinload(Run.outcomes), selectinload(Run.document))
            .where(Run.id.startswith(prefix)).limit(2)
        ).scalars()
    )


def finish_run(
    s: OrmSession,
    run: Run,
    *,
    status: RunStatus,
    result: dict[str, Any],
    answer: str | None = None,
    confidence: float | None = None,
    low_agreement: bool | None = None,
    error: str | None = None,
) -> None:
    assert status in TERMINAL_RUN
    run.status = status
    run.result = result
    run.answer = answer
    run.confidence = confidence
    run.low_agreement = low_agreement
    run.error = error
    run.finished_at = utcnow()
    run.document.status = status
    run.document.error = error
