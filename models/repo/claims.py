"""Claims and leases: a task takes a slot for one attempt, keeps it alive, gives it back."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import case, func, select, update
from sqlalchemy.orm import Session as OrmSession

from models.repo._common import as_utc
from models.tables import (
    TERMINAL_RUN,
    OutcomeRole,
    OutcomeStatus,
    Run,
    WorkerOutcome,
    utcnow,
)


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


def claim_slot(s: OrmSession, run_id: str, slot: int, *, task_id: str | None, hostname: str | None,
               lease_s: float) -> Claim | None:
    """Mark the slot running, count the attempt and hold it for `lease_s`, in one round trip.

    Returns None when the slot cannot be taken: it is terminal, its run is terminal (a redelivered
    task must not call the provider again, nor re-open a tallied run), another holder's lease is
    still live (`lease_holder` tells that case apart), or it does not exist.
    """
    now = utcnow()
    run_open = select(Run.id).where(Run.id == run_id, Run.status.not_in(TERMINAL_RUN)).exists()
    takeable = (WorkerOutcome.status.in_((OutcomeStatus.PENDING, OutcomeStatus.RETRYING))
                | ((WorkerOutcome.status == OutcomeStatus.RUNNING)
                   & (WorkerOutcome.lease_until.is_(None) | (WorkerOutcome.lease_until < now))))
    row = s.execute(
        update(WorkerOutcome)
        .where(WorkerOutcome.run_id == run_id, WorkerOutcome.slot == slot, takeable, run_open)
        .values(
            status=OutcomeStatus.RUNNING,
            attempts=WorkerOutcome.attempts + 1,
            started_at=func.coalesce(WorkerOutcome.started_at, now),
            lease_until=now + dt.timedelta(seconds=lease_s),
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


def lease_holder(s: OrmSession, run_id: str, slot: int) -> dt.datetime | None:
    """When another holder's lease on a running slot of an open run ends; None if nobody holds it."""
    row = s.execute(select(WorkerOutcome.status, WorkerOutcome.lease_until, Run.status)
                    .join(Run, Run.id == WorkerOutcome.run_id)
                    .where(WorkerOutcome.run_id == run_id, WorkerOutcome.slot == slot)).one_or_none()
    if row is None or row[0] is not OutcomeStatus.RUNNING or row[2] in TERMINAL_RUN:
        return None
    until = as_utc(row[1])
    return until if until is not None and until > utcnow() else None


def renew_lease(s: OrmSession, run_id: str, slot: int, *, task_id: str | None, lease_s: float) -> bool:
    """Extend the holder's lease on its running slot; False when the slot is no longer its own."""
    done = s.execute(update(WorkerOutcome).where(
        WorkerOutcome.run_id == run_id, WorkerOutcome.slot == slot, WorkerOutcome.status == OutcomeStatus.RUNNING,
        WorkerOutcome.task_id == task_id,
    ).values(lease_until=utcnow() + dt.timedelta(seconds=lease_s)))
    return bool(getattr(done, "rowcount", 0))


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
